"""List the targets whose archiver make run supervises: one 'engine name' line each."""

from core.commands import CovetCommand
from backups.models import DatabaseTarget


class Command(CovetCommand):
    help = ("Print 'ENGINE NAME' for every target with PITR on (postgresql: run_shipper, mysql: binlog_archive); "
            "scripts/run.sh starts one archiver per line.")

    def handle(self, *args, **opts):
        for engine, name in DatabaseTarget.objects.filter(pitr_enabled=True).values_list("engine", "name"):
            self.stdout.write(f"{engine} {name}")
