"""MySQL/MariaDB point-in-time recovery: a full dump restored into a new schema, then archived binlogs replayed.

The dump's recorded binlog coordinates (file and position, read under the
backup's brief global read lock) say where the replay starts. The archived
binlogs from there are fetched, authenticated and decrypted into a private
spool, read here event by event to find where to stop and what would be
replayed, and only then is anything created: the dump goes into the new
schema and ``mariadb-binlog --database=SRC --rewrite-db=SRC->NEW`` replays
each file into one ``mariadb`` client session that writes no binlog
(``--disable-log-bin`` and ``sql_log_bin=0``), so a recovery never re-enters
the archive or reaches replicas.

Where to stop is decided on whole transactions, from the binlog itself:

- a time: before the first transaction whose commit is later than the time
  (at or later, with --no-target-inclusive). Binlog event times have
  one-second resolution, so two transactions in the same second cannot be
  told apart by time: --stop-position or --stop-gtid can;
- ``--stop-position FILE:POS``: before the event at POS (a position inside a
  transaction stops before that whole transaction);
- ``--stop-gtid``: before the transaction with that GTID;
- ``latest``: the end of the archive (the live binlog up to its last partial).

Row events carry their schema in a table map, which the rewrite renames.
A statement (DDL, or DML logged in statement format) is replayed with the new
schema as its default, so one that names the source schema explicitly
(``DROP TABLE prod.t``) would act on the source: such a statement inside the
replayed range makes the recovery refuse before anything is touched, naming
its position, so the operator can stop just before it.
"""

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pymysql

from archiving.services import binlog_window
from archiving.services.archive import Archive
from covet.engines import RestoreOptions, mysql_restore, mysql_tools
from covet.engines.mysql_grants import quote_identifier
from covet.engines.tools import EndHook, private_dir, stderr_tail, tool_env
from covet.errors import NotFoundError, ToolError, UsageError, WrongKeyError
from backups.models import ArchivedLog, Backup, DatabaseTarget
from core.progress import JobTracker
from archiving.services.binlog_archiver import BINLOG_TOOLS
from covet.engines.mysql_binlog import FIRST_EVENT, BinlogFile, Group, gtid_in_range, parse_gtid
from restores.models import RestoreRequest
from backups.services.reading import open_plaintext
from backups.services.targets import target_engine
from core.lifecycle import job_tmp_dir
from covet.streams import COPY_BUFFER

RESOLUTION = ("binlog event times have one-second resolution: transactions in the same second as the target "
              "cannot be told apart by time; use --stop-position FILE:POS or --stop-gtid for a finer stop")


# Choosing the backup and checking the request ------------------------------------------------------


def choose_backup(target: DatabaseTarget, recovery) -> Backup:
    """Return the newest full backup with binlog coordinates before the target; NotFoundError saying what to do."""
    by_number = binlog_window.archived(target)
    for backup in binlog_window.pitr_backups(target):
        if target.database and backup.database_name != target.database:
            continue
        if _starts_before(backup, recovery, by_number):
            return backup
    raise NotFoundError(
        f"no full backup of target {target.name} with binlog coordinates before {recovery.describe()}; "
        f"take one with 'manage.py backup_database --target {target.name}' (binlog on, and its user allowed "
        "RELOAD and BINLOG MONITOR so the coordinates are recorded), or choose a later target")


def _starts_before(backup: Backup, recovery, by_number: dict[int, ArchivedLog]) -> bool:
    name, position = binlog_window.coordinates(backup)
    number = binlog_window.split_name(name)[1]
    if recovery.time:
        return binlog_window.snapshot_time(backup) <= recovery.time
    if recovery.stop_position:
        stop_name, stop = _stop_position(recovery.stop_position)
        return (number, position) <= (binlog_window.split_name(stop_name)[1], stop)
    if recovery.stop_gtid:
        gtid = _stop_gtid(recovery.stop_gtid)
        holding = [n for n, row in by_number.items() if gtid_in_range(gtid, row.gtid_range)]
        return bool(holding) and number <= min(holding) and not _gtid_in_dump(backup, gtid)
    return True


def _gtid_in_dump(backup: Backup, gtid: str) -> bool:
    # MariaDB's gtid_binlog_pos holds the last GTID per domain the dump contains.
    if ":" in gtid:
        return False  # MySQL GTID sets: the replay's scan decides
    domain, _, seq = gtid.split("-")
    for part in filter(None, backup.engine_meta.get("gtid", "").split(",")):
        pieces = part.strip().split("-")
        if len(pieces) == 3 and pieces[0] == domain and int(pieces[2]) >= int(seq):
            return True
    return False


def _stop_position(text: str) -> tuple[str, int]:
    name, sep, position = text.strip().rpartition(":")
    try:
        binlog_window.split_name(name)
        if not sep or int(position) < FIRST_EVENT:
            raise ValueError(text)
    except ValueError:
        raise UsageError(f"--stop-position is FILE:POS, such as binlog.000042:1234 (POS at least {FIRST_EVENT}), "
                         f"not {text!r}") from None
    return name, int(position)


def _stop_gtid(text: str) -> str:
    try:
        return parse_gtid(text)
    except ValueError:
        raise UsageError(f"--stop-gtid is one GTID, such as 0-1-1234 (MariaDB) or UUID:N (MySQL), not {text!r}") \
            from None


def _source_database(backup: Backup) -> str:
    if not backup.database_name or backup.database_name == "all":
        raise UsageError(f"backup {backup.id} holds every database; point-in-time recovery replays one schema into "
                         "a new one: recover from a backup of one database")
    return backup.database_name


def _new_database(destination: dict, source: str) -> str:
    name = (destination or {}).get("database") or ""
    if not name:
        raise UsageError("say which new database to recover into: --target-database NEW")
    mysql_restore.check_schema_name(name)
    if name == source:
        raise UsageError(f"recover into a new database, not into the source {source!r}: --target-database NEW")
    if "->" in name or "->" in source:
        raise UsageError("database names containing '->' cannot be rewritten by mariadb-binlog --rewrite-db")
    return name


def _refuse_existing(engine, name: str) -> None:
    conn = engine._connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            if cur.fetchone()[0]:
                raise UsageError(f"database {name!r} already exists; a recovery creates a new database: "
                                 "choose another --target-database")
    except pymysql.MySQLError as exc:
        raise ToolError(f"cannot check database {name!r}: {mysql_tools.server_message(exc)}") from None
    finally:
        conn.close()


def _needed_files(backup: Backup, recovery) -> list[ArchivedLog]:
    """Return the archived binlogs from the backup's coordinates to (at least) the target; refuse what cannot work.

    Refuse a target outside the recoverable window (UsageError) and a binlog
    missing in between (NotFoundError, naming it).
    """
    target = backup.target
    name, position = binlog_window.coordinates(backup)
    base, first = binlog_window.split_name(name)
    by_number = binlog_window.archived(target)
    if not by_number or max(by_number) < first:
        raise NotFoundError(f"no binlog of target {target.name} is archived since backup {backup.id} "
                            f"({name}:{position}); is 'manage.py binlog_archive --target {target.name}' running? "
                            "(the target's archiver status says)")
    last = max(by_number)
    if recovery.time:
        taken = binlog_window.snapshot_time(backup)
        if recovery.time < taken:
            raise UsageError(f"{recovery.describe()} is before backup {backup.id} ({taken.isoformat(sep=' ')}); "
                             "choose an older backup, or omit --backup-id to pick one")
        newest = max((row.last_event_at for n, row in by_number.items() if n >= first and row.last_event_at),
                     default=None)
        if newest is None or recovery.time > newest:
            reach = newest.isoformat(sep=" ") if newest else "nothing after the backup"
            raise UsageError(f"{recovery.describe()} is outside the recoverable window of {target.name}: the archive "
                             f"reaches {reach}; wait until the archiver ships the live binlog (every "
                             "--archive-timeout seconds) or choose an earlier time")
        after = [n for n, row in by_number.items() if n >= first and row.last_event_at
                 and row.last_event_at.timestamp() >= recovery.time.timestamp()]
        last = min(after) if after else last
    elif recovery.stop_position:
        stop_name, stop = _stop_position(recovery.stop_position)
        stop_base, last = binlog_window.split_name(stop_name)
        if stop_base != base or (last, stop) < (first, position):
            raise UsageError(f"--stop-position {stop_name}:{stop} is before backup {backup.id}'s coordinates "
                             f"({name}:{position}); choose an older backup or a later position")
        row = by_number.get(last)
        if row is None and last > max(by_number):
            raise UsageError(f"{stop_name} is not archived yet (the archive ends with "
                             f"{by_number[max(by_number)].name}); wait for the archiver or choose an earlier position")
        if row is not None and row.end_position and stop > row.end_position:
            state = "archived so far" if row.partial else "long"
            raise UsageError(f"--stop-position {stop_name}:{stop} is past the end of {stop_name} "
                             f"({row.end_position} bytes {state})")
    elif recovery.stop_gtid:
        gtid = _stop_gtid(recovery.stop_gtid)
        holding = [n for n, row in by_number.items() if n >= first and gtid_in_range(gtid, row.gtid_range)]
        if not holding:
            raise UsageError(f"GTID {gtid} is not in the binlogs archived after backup {backup.id} ({name}:{position}); "
                             "check the GTID, or wait for the archiver to ship it")
        last = min(holding)
    elif not recovery.latest:
        raise UsageError(f"a MySQL/MariaDB recovery stops at a time, 'latest', --stop-position or --stop-gtid, "
                         f"not {recovery.kind.replace('_', ' ')}")
    missing = [n for n in range(first, last + 1) if n not in by_number]
    if missing:
        gap = binlog_window.file_name(base, missing[0])
        raise NotFoundError(f"binlog {gap} of target {target.name} is missing from the archive, between backup "
                            f"{backup.id} ({name}:{position}) and {recovery.describe()}; recovery cannot cross it: "
                            "choose a target before it or a backup taken after it")
    cut = [by_number[n] for n in range(first, last) if by_number[n].partial]
    if cut:
        raise NotFoundError(f"binlog {cut[0].name} of target {target.name} is archived only up to position "
                            f"{cut[0].end_position} although the server has moved on; let the archiver ship it "
                            "complete, or recover to a point before that position")
    return [by_number[n] for n in range(first, last + 1)]


def check(backup: Backup, recovery, destination: dict) -> dict:
    """Refuse, before anything is touched, a recovery that cannot succeed; return its plan (JSON-able)."""
    source = _source_database(backup)
    database = _new_database(destination, source)
    if binlog_window.coordinates(backup) is None:
        raise UsageError(f"backup {backup.id} has no usable binlog coordinates "
                         f"({backup.engine_meta.get('pitr_reason', 'not recorded')}); choose another backup")
    files = _needed_files(backup, recovery)
    engine = target_engine(backup.target, str(job_tmp_dir(backup)))
    _refuse_existing(engine, database)
    name, position = binlog_window.coordinates(backup)
    plan = {"source_database": source, "database": database, "start": f"{name}:{position}",
            "binlogs": [row.name for row in files], "stop": recovery.describe()}
    if recovery.time:
        plan["note"] = RESOLUTION
    return plan


# Scanning the fetched binlogs ------------------------------------------------------------------------


@dataclass
class FileReplay:
    """One fetched binlog and the part of it to replay."""

    name: str
    path: Path
    size: int
    partial: bool
    start: int = FIRST_EVENT
    stop: int | None = None  # replay events before this position; None: to the end
    events: int = 0
    transactions: int = 0


@dataclass
class ReplayPlan:
    files: list[FileReplay] = field(default_factory=list)
    stopped_before: Group | None = None
    stopped_in: str = ""
    note: str = ""

    @property
    def events(self) -> int:
        return sum(item.events for item in self.files)

    @property
    def transactions(self) -> int:
        return sum(item.transactions for item in self.files)


def _names_schema(text: str, schema: str) -> bool:
    """Say whether a statement names ``schema`` explicitly: as a qualifier, or as the database it acts on."""
    name = f"(?:{re.escape(quote_identifier(schema))}|(?<![\\w$`]){re.escape(schema)}(?![\\w$`]))"
    return bool(re.search(rf"{name}\s*\.", text, re.I)
                or re.search(rf"\b(?:DATABASE|SCHEMA)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?{name}", text, re.I))


class _Scan:
    """Walk the transactions from the backup's coordinates, deciding where the replay stops and what it applies."""

    def __init__(self, recovery, source: str):
        self.recovery = recovery
        self.source = source
        self.plan = ReplayPlan()
        self.stop_file = self.stop_position = None
        if recovery.stop_position:
            self.stop_file, self.stop_position = _stop_position(recovery.stop_position)
        self.gtid = _stop_gtid(recovery.stop_gtid) if recovery.stop_gtid else ""
        self.time = recovery.time.timestamp() if recovery.time else None

    def add(self, row: ArchivedLog, path: Path, start: int) -> bool:
        """Scan one file; return True when the stop was found in it (no later file is needed)."""
        item = FileReplay(row.name, path, row.size, row.partial, start=start)
        self.plan.files.append(item)
        with BinlogFile(path) as binlog:
            for group in binlog.groups(start):
                if self._stops_at(row.name, group):
                    item.stop = group.position
                    self.plan.stopped_before, self.plan.stopped_in = group, row.name
                    if self.stop_position is not None and group.position != self.stop_position:
                        self.plan.note = (f"{self.stop_file}:{self.stop_position} is inside the transaction at "
                                          f"{row.name}:{group.position}; stopped before that whole transaction")
                    return True
                self._refuse_unsafe(row.name, group)
                applied = group.events_for(self.source)
                item.events += applied
                item.transactions += 1 if applied else 0
        return row.name == self.stop_file  # a position at the very end of its file

    def _stops_at(self, name: str, group: Group) -> bool:
        if self.time is not None:
            return group.timestamp > self.time if self.recovery.inclusive else group.timestamp >= self.time
        if self.stop_file is not None:
            return name == self.stop_file and group.end > self.stop_position
        if self.gtid:
            return group.gtid == self.gtid
        return False

    def _refuse_unsafe(self, name: str, group: Group) -> None:
        for statement in group.statements:
            if _names_schema(statement.text, self.source):
                excerpt = " ".join(statement.text.split())[:120]
                raise UsageError(
                    f"the binlog event at {name}:{statement.position} ({excerpt!r}, run with default database "
                    f"{statement.database or 'none'!r}) names the source database {self.source!r} explicitly: "
                    f"replayed, it would act on {self.source!r} itself, not on the new database. Recover to just "
                    f"before it with --stop-position {name}:{group.position}; nothing was changed")

    def finish(self) -> ReplayPlan:
        """Return the plan; refuse a stop GTID that never came (it is in the dump, or not archived yet)."""
        if self.gtid and self.plan.stopped_before is None:
            raise UsageError(f"GTID {self.gtid} was not found after the backup's coordinates in the archived "
                             "binlogs; it is part of the backup already, or not archived yet")
        return self.plan


# Running it --------------------------------------------------------------------------------------------


def _open_archive(target: DatabaseTarget, passphrase_file: str | None, key_file: str | None) -> Archive:
    try:
        return Archive(target, passphrase_file, key_file)
    except WrongKeyError:
        if not (passphrase_file or key_file):
            raise
        # The key given was the backup's; the archive key may be wrapped by the site's key.
        return Archive(target)


def _fetch_and_scan(backup: Backup, recovery, source: str, archive: Archive, spool: Path,
                    tracker: JobTracker) -> ReplayPlan:
    name, position = binlog_window.coordinates(backup)
    files = _needed_files(backup, recovery)
    by_number = binlog_window.archived(backup.target)
    base, number = binlog_window.split_name(files[0].name)
    scan = _Scan(recovery, source)
    # Usually the stop lies in the files _needed_files chose from the
    # catalog; a time target whose file ends in a rotate event later than
    # the target may need the next one too.
    while number <= max(by_number):
        row = by_number.get(number)
        if row is None:
            raise NotFoundError(f"binlog {binlog_window.file_name(base, number)} of target {backup.target.name} is "
                                f"missing from the archive before {recovery.describe()}; recovery cannot cross it")
        path = spool / row.name
        archive.fetch(row, path)
        tracker.add(row.size)
        if scan.add(row, path, position if row.name == name else FIRST_EVENT):
            break
        if row.partial and number < max(by_number):
            raise NotFoundError(f"binlog {row.name} of target {backup.target.name} is archived only up to position "
                                f"{row.end_position} although the server has moved on; let the archiver ship it "
                                "complete, or recover to a point before that position")
        number += 1
    return scan.finish()


def _replay(engine, plan: ReplayPlan, source: str, database: str, directory: Path, tracker: JobTracker) -> None:
    """Pipe each file's part through mariadb-binlog into one client session that writes no binlog."""
    binlog_tool = mysql_tools.find_tool(BINLOG_TOOLS, "binlog tool")
    client_tool = mysql_tools.find_tool(mysql_tools.CLIENT_TOOLS, "client")
    # Oracle's mysqlbinlog filters --database on the rewritten name, MariaDB's on the original.
    filtered = source if Path(binlog_tool).name == "mariadb-binlog" else database
    # sql_log_bin=0 twice on purpose: from the client's init command and from
    # --disable-log-bin in the stream, so no replayed change is ever binlogged.
    client_args = [client_tool, f"--defaults-extra-file={engine._defaults_file(directory)}", "--binary-mode",
                   "--batch", "--no-auto-rehash", "--init-command=SET SESSION sql_log_bin=0"]
    client_stderr = directory / "client.stderr"
    env = tool_env(HOME=str(directory), TZ="UTC")  # the decoded stream's comments then show UTC times
    with open(client_stderr, "wb") as stderr:
        client = subprocess.Popen(client_args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                  env=engine._tool_env(directory))
    try:
        for item in plan.files:
            if item.events:
                _pipe_file(binlog_tool, item, filtered, source, database, client, directory, env)
            tracker.add(item.size)
        client.stdin.close()
        returncode = client.wait()
    except BaseException:
        client.kill()
        client.wait()
        raise
    finally:
        with contextlib.suppress(OSError):
            client.stdin.close()
    if returncode != 0:
        raise ToolError(f"{Path(client_tool).name} failed replaying binlogs into {database!r}: "
                        f"{stderr_tail(client_stderr) or f'exit status {returncode}'}")


def _pipe_file(tool: str, item: FileReplay, filtered: str, source: str, database: str, client, directory: Path,
               env: dict) -> None:
    args = [tool, "--no-defaults", "--disable-log-bin", f"--database={filtered}",
            f"--rewrite-db={source}->{database}", f"--start-position={item.start}"]
    if item.stop is not None:
        args.append(f"--stop-position={item.stop}")
    args.append(str(item.path))
    stderr_path = directory / "binlog.stderr"
    with open(stderr_path, "wb") as stderr:
        reader = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        while chunk := reader.stdout.read(COPY_BUFFER):
            try:
                client.stdin.write(chunk)
            except BrokenPipeError:
                raise ToolError(f"the client stopped while replaying {item.name}: "
                                f"{stderr_tail(directory / 'client.stderr')}") from None
        returncode = reader.wait()
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        reader.stdout.close()
    if returncode != 0:
        raise ToolError(f"{Path(tool).name} failed reading {item.name}: "
                        f"{stderr_tail(stderr_path) or f'exit status {returncode}'}")


def run(request: RestoreRequest, recovery, passphrase_file: str | None, key_file: str | None, on_progress) -> dict:
    """Carry out a recorded MySQL/MariaDB recovery; return the request's result.

    Nothing is created before the binlogs needed are fetched, authenticated
    and scanned; a failure after the new database was created drops it.
    """
    backup = request.backup
    target = backup.target
    source = _source_database(backup)
    database = _new_database(request.pitr.get("destination"), source)
    tmp = job_tmp_dir(request)
    engine = target_engine(target, str(tmp))
    archive = _open_archive(target, passphrase_file, key_file)
    expected_binlogs = sum(row.size for row in _needed_files(backup, recovery))
    with JobTracker(request, (backup.stored_bytes or 0) + 2 * expected_binlogs, on_progress) as tracker, \
            private_dir(str(tmp), "covet-pitr-") as spool:
        plan = _fetch_and_scan(backup, recovery, source, archive, spool, tracker)
        _refuse_existing(engine, database)
        with open_plaintext(backup, passphrase_file, key_file, tracker) as (plain, checked):
            restored = engine.restore(EndHook(plain, checked.finish), database,
                                      RestoreOptions(without_binlog=True))
        try:
            _replay(engine, plan, source, database, spool, tracker)
        except BaseException:
            engine._undo_schema(database, None)
            raise
    return _result(backup, recovery, plan, source, database, restored.location)


def _result(backup: Backup, recovery, plan: ReplayPlan, source: str, database: str, location: str) -> dict:
    name, position = binlog_window.coordinates(backup)
    stop = plan.stopped_before
    stopped_at = f"{plan.stopped_in}:{stop.position}" if stop else None
    last = plan.files[-1]
    end = stopped_at or f"the end of {last.name}" + (" (the live file, as archived so far)" if last.partial else "")
    summary = [f"restored {backup.id} ({source} at {name}:{position}) into {database}",
               f"replayed {plan.events} binlog event(s) in {plan.transactions} transaction(s) of {source}, "
               f"up to {end}; the replay wrote no binlog"]
    if stop is not None:
        committed = datetime.fromtimestamp(stop.timestamp, timezone.utc).isoformat(sep=" ")
        summary.append(f"stopped before the transaction at {stopped_at}"
                       + (f" (GTID {stop.gtid})" if stop.gtid else "") + f", committed {committed}")
    if plan.note:
        summary.append(plan.note)
    if recovery.time:
        summary.append(RESOLUTION)
    return {"location": location, "database": database, "source_database": source, "events_applied": plan.events,
            "transactions_applied": plan.transactions, "binlogs": [item.name for item in plan.files],
            "start": f"{name}:{position}", "stopped_before": stopped_at, "summary": summary}


def clean_up_dead(request) -> str:
    """Say what a replay whose worker died left: the new schema, which may hold part of the replay."""
    database = request.pitr.get("destination", {}).get("database")
    return f" (the new schema {database} may hold part of the replay: drop it before trying again)" if database else ""
