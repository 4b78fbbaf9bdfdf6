"""Register, list and remove database targets."""

import json


from core.commands import CovetCommand
from covet.engines import ENGINES
from backups.models import DatabaseTarget
from backups.services.targets import add_target, remove_target
from core.audit import cli_source


class Command(CovetCommand):
    help = "Manage targets: 'target add NAME --database KIND --name DB ...', 'target list', 'target remove NAME'."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a target")
        add.add_argument("target_name", metavar="NAME")
        add.add_argument("--database", required=True, choices=list(ENGINES), help="engine")
        add.add_argument("--name", required=True, help="database name; for SQLite the database file")
        add.add_argument("--host", default="")
        add.add_argument("--port", type=int)
        add.add_argument("--user", default="")
        add.add_argument("--password-file", help="file holding the password; only its path is kept")
        listing = sub.add_parser("list", help="list targets")
        listing.add_argument("--output-format", choices=["text", "json"], default="text")
        remove = sub.add_parser("remove", help="remove a target that has no backups")
        remove.add_argument("target_name", metavar="NAME")

    def handle(self, *args, **opts):
        source = cli_source()
        if opts["action"] == "add":
            target = add_target(opts["target_name"], opts["database"], opts["name"], opts["host"],
                                         opts["port"], opts["user"], opts["password_file"], source, source)
            self.stdout.write(f"target {target.name} added ({target.engine}: {target.database})")
        elif opts["action"] == "remove":
            remove_target(opts["target_name"], source, source)
            self.stdout.write(f"target {opts['target_name']} removed")
        else:
            rows = [{"name": t.name, "engine": t.engine, "database": t.database, "host": t.host, "port": t.port,
                     "user": t.user, "password": "set" if t.password_ref else "none"}
                    for t in DatabaseTarget.objects.all()]
            if opts["output_format"] == "json":
                self.stdout.write(json.dumps(rows, indent=2))
            else:
                for row in rows:
                    where = f"{row['host']}:{row['port']} " if row["host"] else ""
                    self.stdout.write(f"{row['name']:<24} {row['engine']:<10} {where}{row['database']}")
