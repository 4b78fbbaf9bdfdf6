"""Verification pages."""

from django.urls import path

from verification import views

urlpatterns = [
    path("backups/<str:backup_id>/verify/", views.backup_verify, name="backup_verify"),
]
