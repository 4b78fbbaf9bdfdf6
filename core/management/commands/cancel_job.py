"""Cancel a pending or running backup, restore or verification."""

from core import registry
from core.audit import cli_source
from core.cancel import request_cancel
from core.commands import CovetCommand


class Command(CovetCommand):
    help = "Cancel a job: --backup-id ID, --restore-id N or --verification-id N. Exit 3 when it does not exist."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--backup-id")
        which.add_argument("--restore-id", type=int)
        which.add_argument("--verification-id", type=int)

    def handle(self, *args, **opts):
        name, pk = next((name, opts[f"{name}_id"]) for name in ("backup", "restore", "verification")
                        if opts[f"{name}_id"])
        row = registry.kind(name).get(pk)
        self.stdout.write(request_cancel(row, cli_source(), cli_source()))
