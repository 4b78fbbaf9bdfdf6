"""Point-in-time recovery requests: the recovery target, and the engine module that carries them out.

A PITR restore names a recovery target (a time, ``latest``, or an engine's
own position: LSN, xid or restore point name for PostgreSQL; binlog
position or GTID for MySQL/MariaDB) and a destination (a new data
directory for PostgreSQL, a new schema for MySQL). Everything that can be
checked is checked when the request is made, before anything is touched;
the engine modules (restores/services/pitr_postgres.py, restores/services/pitr_mysql.py) each
offer ``choose_backup``, ``check`` and ``run``.
"""

import importlib
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone as dt_timezone

from django.utils.dateparse import parse_datetime


from covet.errors import NotFoundError, UsageError
from backups.models import Backup, DatabaseTarget, JobStatus
from restores.models import RestoreRequest
from core.audit import audit

ENGINE_MODULES = {"postgresql": "restores.services.pitr_postgres", "mysql": "restores.services.pitr_mysql"}


@dataclass
class RecoveryTarget:
    """Where recovery stops. Exactly one of time, latest, lsn, xid, name, stop_position, stop_gtid is set."""

    time: datetime | None = None
    latest: bool = False
    lsn: str = ""
    xid: str = ""
    name: str = ""
    stop_position: str = ""
    stop_gtid: str = ""
    inclusive: bool = True
    timeline: str = "latest"
    action: str = "promote"

    def __post_init__(self):
        chosen = [f.name for f in fields(self) if f.name in self.STOPS and getattr(self, f.name)]
        if len(chosen) != 1:
            raise UsageError("name one recovery target: --pitr-target TIME|latest, --target-lsn, --target-xid, "
                             "--target-name, --stop-position or --stop-gtid"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        if self.action not in ("promote", "pause"):
            raise UsageError(f"the recovery target action is promote or pause, not {self.action!r}")
        if self.timeline not in ("latest", "current") and not str(self.timeline).isdigit():
            raise UsageError(f"--target-timeline is latest, current or a timeline number, not {self.timeline!r}")

    STOPS = ("time", "latest", "lsn", "xid", "name", "stop_position", "stop_gtid")

    @property
    def kind(self) -> str:
        return next(name for name in self.STOPS if getattr(self, name))

    def describe(self) -> str:
        """Return the target as an operator would say it, e.g. 'time 2026-11-24 14:30:06+00:00'."""
        if self.latest:
            return "the latest archived transaction"
        value = self.time.isoformat(sep=" ") if self.time else getattr(self, self.kind)
        return f"{self.kind.replace('_', ' ')} {value}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["time"] = self.time.isoformat() if self.time else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RecoveryTarget":
        data = dict(data)
        data["time"] = parse_datetime(data["time"]) if data.get("time") else None
        return cls(**data)


def parse_time(text: str) -> datetime:
    """Parse a recovery time; without an offset it is UTC (times are UTC unless an offset is given)."""
    value = parse_datetime(text.strip().replace("T", " ", 1))
    if value is None:
        raise UsageError(f"{text!r} is not a time; write it like '2026-11-24 14:30:06+00' (UTC without an offset)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt_timezone.utc)
    return value


def recovery_target(pitr_target: str | None = None, **kwargs) -> RecoveryTarget:
    """Build a RecoveryTarget from the CLI's or API's values; ``pitr_target`` is a time or 'latest'."""
    if pitr_target:
        if pitr_target.strip().lower() == "latest":
            kwargs["latest"] = True
        else:
            kwargs["time"] = parse_time(pitr_target)
    return RecoveryTarget(**{key: value for key, value in kwargs.items() if value is not None})


def destination(data_directory: str | None = None, host: str | None = None, start: bool = False,
                port: int | None = None, database: str | None = None) -> dict:
    """Return a recovery's destination with only the values given: a new data directory on a host (PostgreSQL,
    optionally started on a port) or a new schema (MySQL)."""
    values = {"data_directory": data_directory, "host": host, "start": start, "port": port, "database": database}
    return {key: value for key, value in values.items() if value not in (None, "", False)}


def engine_module(target: DatabaseTarget):
    """Return the module that carries out PITR for the target's engine."""
    if target.engine not in ENGINE_MODULES:
        raise UsageError(f"target {target.name} is {target.engine}: point-in-time recovery is for "
                         "PostgreSQL and MySQL/MariaDB targets")
    return importlib.import_module(ENGINE_MODULES[target.engine])


def create_pitr_restore(target: DatabaseTarget, recovery: RecoveryTarget, destination: dict,
                        backup: Backup | None = None, requested_by: str = "", source: str = "") -> RestoreRequest:
    """Check and record a pending PITR restore; refuse (before anything is touched) what cannot succeed.

    ``destination`` is engine-specific: {"data_directory", "start", "port"}
    for PostgreSQL, {"database"} for MySQL. Without ``backup`` the engine
    picks the newest suitable one before the recovery target.
    """
    module = engine_module(target)
    if backup is not None:
        if backup.target_id != target.pk:
            raise UsageError(f"backup {backup.id} belongs to target {backup.target.name}, not {target.name}")
        if backup.status != JobStatus.COMPLETED:
            raise UsageError(f"backup {backup.id} is {backup.status}; only completed backups can be restored")
    else:
        backup = module.choose_backup(target, recovery)
    plan = module.check(backup, recovery, destination)
    location = destination.get("data_directory") or destination.get("database") or ""
    request = RestoreRequest.objects.create(
        backup=backup, target_database=location, output_path=location, requested_by=requested_by,
        pitr={"recovery": recovery.to_json(), "destination": destination, "plan": plan})
    audit(requested_by, "restore.create", "backup", backup.id, source, restore=request.pk,
                   pitr=recovery.describe(), destination=location)
    return request


def run_pitr(request: RestoreRequest, passphrase_file: str | None, key_file: str | None, on_progress) -> dict:
    """Carry out a recorded PITR restore; return its result for the request row (engine modules track progress)."""
    backup = request.backup
    if backup is None:
        raise NotFoundError(f"the backup of restore {request.pk} was deleted")
    recovery = RecoveryTarget.from_json(request.pitr["recovery"])
    return engine_module(backup.target).run(request, recovery, passphrase_file, key_file, on_progress)


def clean_up_dead(request: RestoreRequest) -> str:
    """Remove what a point-in-time recovery whose worker died left behind; return a note of what is left."""
    if request.backup is None:
        return ""
    return engine_module(request.backup.target).clean_up_dead(request)
