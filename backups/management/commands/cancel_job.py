"""Cancel a pending or running backup, restore or verification."""

from backups import services
from covet.errors import NotFoundError
from backups.management.base import CovetCommand
from restores.models import RestoreRequest
from verification.models import VerificationRun


class Command(CovetCommand):
    help = "Cancel a job: --backup-id ID, --restore-id N or --verification-id N. Exit 3 when it does not exist."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--backup-id")
        which.add_argument("--restore-id", type=int)
        which.add_argument("--verification-id", type=int)

    def handle(self, *args, **opts):
        if opts["backup_id"]:
            row = services.get_backup(opts["backup_id"])
        else:
            model = RestoreRequest if opts["restore_id"] else VerificationRun
            pk = opts["restore_id"] or opts["verification_id"]
            row = model.objects.filter(pk=pk).first()
            if row is None:
                raise NotFoundError(f"no {model._meta.verbose_name} with id {pk}")
        self.stdout.write(services.request_cancel(row, services.cli_source(), services.cli_source()))
