"""What archiving does when the backups app says something happened."""

from django.conf import settings
from django.dispatch import receiver

from archiving.services.windows import await_base_wal
from backups.signals import backup_completed


@receiver(backup_completed)
def mark_base_backup_usable(sender, backup, **kwargs) -> None:
    """Wait (COVET_BASE_WAL_WAIT) for a new base backup's WAL to reach the archive; it is usable once it has."""
    if backup.backup_type == "base":
        await_base_wal(backup, settings.COVET_BASE_WAL_WAIT)
