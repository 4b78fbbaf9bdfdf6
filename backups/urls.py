"""Dashboard pages."""

from django.urls import path

from backups import views

BACKUP = "backups/<str:backup_id>/"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("backups/new/", views.backup_create, name="backup_create"),
    path(BACKUP, views.backup_detail, name="backup_detail"),
    path(BACKUP + "verify/", views.backup_verify, name="backup_verify"),
    path(BACKUP + "restore/", views.backup_restore, name="backup_restore"),
    path(BACKUP + "cancel/", views.backup_cancel, name="backup_cancel"),
    path(BACKUP + "delete/", views.backup_delete, name="backup_delete"),
    path("targets/<slug:name>/", views.target_detail, name="target_detail"),
    path("targets/<slug:name>/recover/", views.target_recover, name="target_recover"),
]
