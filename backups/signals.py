"""What the backups app tells the apps built on it, without importing them."""

from django.dispatch import Signal

# Sent by run_backup once a backup is completed and copied, with ``backup``:
# archiving marks a base backup usable when its WAL has arrived.
backup_completed = Signal()
