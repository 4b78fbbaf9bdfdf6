"""Restore pages."""

from django.urls import path

from restores import views

urlpatterns = [
    path("backups/<str:backup_id>/restore/", views.backup_restore, name="backup_restore"),
    path("targets/<slug:name>/", views.target_detail, name="target_detail"),
    path("targets/<slug:name>/recover/", views.target_recover, name="target_recover"),
]
