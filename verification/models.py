"""Verification runs: proof that a stored backup can still be read back whole."""

from django.db import models

from backups.models import Backup, TrackedJob


class VerificationRun(TrackedJob):
    """One verification of one backup, with the result of each check."""

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="verifications")
    requested_by = models.CharField(max_length=150, blank=True)
    checks = models.JSONField(default=dict, blank=True, help_text="check name -> {ok, detail}")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"verification {self.pk} of {self.backup_id}"
