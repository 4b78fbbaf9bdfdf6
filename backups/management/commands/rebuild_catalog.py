"""Recreate missing catalog rows from the sidecars on a storage."""

import json
from dataclasses import asdict


from core.commands import CovetCommand
from archiving.services.rebuild import rebuild_catalog
from backups.services.storages import get_storage
from core.audit import cli_source


class Command(CovetCommand):
    help = ("Recreate missing Backup rows (and their targets) from the sidecars on a storage; existing rows are "
            "never duplicated or overwritten. Exit codes: 0 ok, 3 unknown storage, 6 storage failed.")

    def add_arguments(self, parser):
        parser.add_argument("--storage", required=True, help="the storage to read sidecars from")
        parser.add_argument("--output-format", choices=["text", "json"], default="text")

    def handle(self, *args, **opts):
        storage = get_storage(opts["storage"])
        report = rebuild_catalog(storage, cli_source())
        if opts["output_format"] == "json":
            self.stdout.write(json.dumps(asdict(report), indent=2))
            return
        self.stdout.write(f"{len(report.created)} backup(s) added to the catalog, {len(report.copies)} copy record(s) "
                          f"added, {len(report.existing)} already known, {len(report.archived)} archived WAL/binlog "
                          "file(s) added")
        for problem in report.problems:
            self.stderr.write(f"skipped {problem}")
