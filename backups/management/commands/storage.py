"""Register, list, check and remove storages (local, s3, azure)."""

import json


from covet.errors import UsageError
from covet.storage import KINDS
from core.commands import CovetCommand
from backups.models import Storage
from backups.services.storages import add_storage, check_storage, get_storage, remove_storage, storage_backend
from core.audit import cli_source


def parse_config(pairs: list[str]) -> dict:
    """Turn KEY=VALUE arguments into a config mapping; numbers and true/false become JSON values."""
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"bad setting {pair!r}: settings are KEY=VALUE (e.g. bucket=my-backups)")
        try:
            config[key] = json.loads(value)
        except ValueError:
            config[key] = value
    return config


class Command(CovetCommand):
    help = ("Manage storages: 'storage add NAME s3 bucket=B region=R [--default]', 'storage list', "
            "'storage check NAME', 'storage remove NAME'. Settings hold references to secrets "
            "(env var or file names), never the secrets. Exit codes: 2 usage, 3 not found, 6 storage failed.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a storage")
        add.add_argument("storage_name", metavar="NAME")
        add.add_argument("kind", choices=list(KINDS))
        add.add_argument("config_pairs", nargs="*", metavar="KEY=VALUE")
        add.add_argument("--default", action="store_true", help="make it the default storage")
        listing = sub.add_parser("list", help="list storages with free space where the backend can tell")
        listing.add_argument("--output-format", choices=["text", "json"], default="text")
        check = sub.add_parser("check", help="write, read back and delete a small object")
        check.add_argument("storage_name", metavar="NAME")
        remove = sub.add_parser("remove", help="remove a storage that holds no backups")
        remove.add_argument("storage_name", metavar="NAME")

    def handle(self, *args, **opts):
        source = cli_source()
        name = opts.get("storage_name")
        if opts["action"] == "add":
            storage = add_storage(name, opts["kind"], parse_config(opts["config_pairs"]), opts["default"], source,
                                  source)
            self.stdout.write(f"storage {storage.name} added ({storage.kind})")
        elif opts["action"] == "check":
            self.stdout.write(check_storage(get_storage(name)))
        elif opts["action"] == "remove":
            remove_storage(name, source, source)
            self.stdout.write(f"storage {name} removed")
        else:
            rows = [{"name": s.name, "kind": s.kind, "default": s.is_default, "config": s.config,
                     "free_bytes": storage_backend(s).free_bytes()} for s in Storage.objects.all()]
            if opts["output_format"] == "json":
                self.stdout.write(json.dumps(rows, indent=2))
                return
            for row in rows:
                free = "" if row["free_bytes"] is None else f"  free {row['free_bytes'] / 2**30:.1f} GiB"
                mark = " (default)" if row["default"] else ""
                self.stdout.write(f"{row['name']:<20} {row['kind']:<6} {json.dumps(row['config'])}{free}{mark}")
