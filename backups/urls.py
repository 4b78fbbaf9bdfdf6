"""Backup pages: the catalog, one backup, and its buttons."""

from django.urls import path

from backups import views

BACKUP = "backups/<str:backup_id>/"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("backups/new/", views.backup_create, name="backup_create"),
    path(BACKUP, views.backup_detail, name="backup_detail"),
    path(BACKUP + "cancel/", views.backup_cancel, name="backup_cancel"),
    path(BACKUP + "delete/", views.backup_delete, name="backup_delete"),
]
