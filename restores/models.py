"""Restore requests: what was restored, where, by whom, with what result."""

from django.db import models

from backups.models import Backup, TrackedJob


class RestoreRequest(TrackedJob):
    """A request to restore one backup into a new target (or only download it)."""

    # Kept when the backup is deleted: restores are part of the audit trail.
    backup = models.ForeignKey(Backup, null=True, on_delete=models.SET_NULL, related_name="restores")
    target_database = models.CharField(max_length=1024, blank=True, help_text="New database name or file path")
    download_only = models.BooleanField(default=False)
    output_path = models.CharField(max_length=1024, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="clean, tables, with_globals, parallel")
    pitr = models.JSONField(
        default=dict, blank=True,
        help_text="Point-in-time recovery: the recovery target, destination and start options (see restores/services/pitr.py)",
    )
    requested_by = models.CharField(max_length=150, blank=True)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"restore {self.pk} of {self.backup_id}"
