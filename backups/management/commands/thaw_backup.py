"""Ask an archive storage tier (S3 Glacier/Deep Archive, Azure Archive) to make a backup readable again."""


from core.commands import CovetCommand
from backups.services.catalog import get_backup
from backups.services.objects import thaw_backup
from core.audit import cli_source


class Command(CovetCommand):
    help = ("Request the thaw (S3 restore-object, Azure rehydration) of every object of a backup; restore it once "
            "the storage has finished. Exit codes: 0 requested, 2 usage (storage has no archive tier), 3 not found, "
            "6 storage failed.")

    def add_arguments(self, parser):
        parser.add_argument("--backup-id", required=True)
        parser.add_argument("--days", type=int, help="S3: how long the thawed copy stays readable (default 7)")
        parser.add_argument("--tier", help="S3: Standard, Bulk or Expedited; Azure: the tier to rehydrate into (Hot)")
        parser.add_argument("--priority", help="Azure: Standard or High")

    def handle(self, *args, **opts):
        backup = get_backup(opts["backup_id"])
        options = {name: opts[name] for name in ("days", "tier", "priority") if opts[name] is not None}
        for key, outcome in thaw_backup(backup, options, cli_source()):
            self.stdout.write(f"{key}: {outcome or 'requested'}")
