"""Kept for archive_command and restore_command lines written by earlier versions of setup_pitr.

Their path names backups/shipper/covet_wal.py; it runs archiving/covet_wal.py.
"""
