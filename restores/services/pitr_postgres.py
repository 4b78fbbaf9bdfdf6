"""PostgreSQL point-in-time recovery: base backup + archived WAL into a new data directory, then recovery.

Order matters, so that a restore that cannot succeed touches nothing:
1. check: the recovery target lies inside the recoverable window and the
   catalog holds every segment on the path from the base backup to it;
2. fetch every needed segment and history file into a spool beside the
   new data directory, each authenticated and checksummed (a missing or
   damaged one stops here, and the spool is removed);
3. unpack the base backup into the new data directory, owned by the
   server's OS user, and write the recovery settings: a restore_command
   that only copies from the spool (no key, no Django), the target, and
   archiving off so the restored server never writes into its source's
   archive;
4. with ``start``, start the server as that OS user (never root), wait
   until recovery reaches the target, and promote (or pause).
"""

import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.utils.dateparse import parse_datetime

from archiving.services import archive
from covet.engines import pg_base, pg_server, pg_wal
from covet.errors import CovetError, DamagedError, NotFoundError, OutsideWindowError, ToolError, UsageError, WalGapError
from backups.models import ArchivedLog, Backup, DatabaseTarget, JobStatus
from core.progress import JobTracker
from archiving.services import paths as shipper_paths
from restores.services.pitr import RecoveryTarget
from restores.services.wal_spool import WalSpool
from backups.services.reading import open_plaintext
from archiving.services.windows import missing_base_wal, refresh_usable, wal_window

START_TIMEOUT = 120  # seconds for pg_ctl to see the server accept connections
RECOVERY_POLL = 0.1
READY_FOR_WRITES = re.compile(r"database system is ready to accept connections")  # not "read-only connections"
SETTINGS_MARK = "# Covet Backup point-in-time recovery"



# Choosing and checking ---------------------------------------------------------------------------


def _base_backups(target: DatabaseTarget):
    refresh_usable(target)
    return Backup.objects.filter(target=target, backup_type="base", status=JobStatus.COMPLETED,
                                 usable=True).order_by("-finished_at")


def _stop_time(backup: Backup) -> datetime:
    return parse_datetime(backup.engine_meta.get("stop_time") or "") or backup.finished_at


def choose_backup(target: DatabaseTarget, recovery: RecoveryTarget) -> Backup:
    """Return the newest usable base backup that ends before the recovery target."""
    candidates = list(_base_backups(target))
    if not candidates:
        raise NotFoundError(f"target {target.name} has no usable base backup; take one with "
                            f"'manage.py backup_database --target {target.name} --type base' (a base backup "
                            "becomes usable once the WAL it spans is archived)")
    for backup in candidates:
        if recovery.time and _stop_time(backup) > recovery.time:
            continue
        if recovery.lsn and pg_wal.parse_lsn(backup.engine_meta["end_lsn"]) > pg_wal.parse_lsn(recovery.lsn):
            continue
        return backup
    oldest = candidates[-1]
    raise OutsideWindowError(f"no base backup of {target.name} ends before {recovery.describe()}: the oldest, "
                             f"{oldest.id}, ends at {_stop_time(oldest).isoformat()} "
                             f"(LSN {oldest.engine_meta.get('end_lsn')}); {_window_text(target)}")


def _window_text(target: DatabaseTarget) -> str:
    windows = wal_window(target)
    if not windows:
        return "the archive has no recoverable window yet"
    spans = ", ".join(f"{w['from'].isoformat()} to {w['to'].isoformat()} (from {w['backup']})"
                      for w in windows)
    return f"recoverable window: {spans}"


def check(backup: Backup, recovery: RecoveryTarget, destination: dict) -> dict:
    """Refuse what cannot succeed, before anything is touched; return the plan (what will be fetched).

    Raises UsageError for a bad destination or backup, OutsideWindowError
    (exit 3) when the target lies outside the recoverable window, WalGapError
    (exit 4) naming the first segment missing on the way.
    """
    if backup.backup_type != "base":
        raise UsageError(f"backup {backup.id} is a logical dump; point-in-time recovery of PostgreSQL starts "
                         "from a base backup (backup_database --type base)")
    target = backup.target
    missing = [] if backup.usable else missing_base_wal(backup)
    if missing:
        raise WalGapError(f"base backup {backup.id} is not usable yet: the archive lacks {', '.join(missing)}")
    _check_destination(destination, target)
    if recovery.time and recovery.time < _stop_time(backup):
        raise OutsideWindowError(f"{recovery.describe()} is before base backup {backup.id} ends "
                                 f"({_stop_time(backup).isoformat()}); choose an older base backup or leave out "
                                 f"--backup-id; {_window_text(target)}")
    if recovery.stop_position or recovery.stop_gtid:
        raise UsageError("--stop-position and --stop-gtid are for MySQL; PostgreSQL takes --target-lsn, "
                         "--target-xid, --target-name or --pitr-target")
    return _plan(backup, recovery)


def _check_destination(destination: dict, target: DatabaseTarget) -> None:
    directory = destination.get("data_directory")
    if not directory:
        raise UsageError("say where the recovered server's files go: --data-directory DIR (a new directory)")
    path = Path(directory)
    if not path.is_absolute():
        raise UsageError(f"--data-directory must be an absolute path, not {directory!r}")
    if destination.get("start") and not destination.get("port"):
        raise UsageError("--start needs --port P: a free port for the recovered server (never its source's)")
    destination.setdefault("host", settings.COVET_HOST)
    if destination["host"] != settings.COVET_HOST:
        return  # the worker on that host checks its own file system when it runs
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path} already exists and is not an empty directory; recover into a new one")
    if not path.parent.is_dir():
        raise NotFoundError(f"the parent directory {path.parent} of --data-directory does not exist")
    if _spool_dir(path).exists():
        raise UsageError(f"{_spool_dir(path)} exists (a recovery into {path} ran before?); remove it first")
    user = shipper_paths.os_user(target)
    try:
        if pwd.getpwnam(user).pw_uid == 0:
            raise UsageError(f"target {target.name}'s OS user is root; PostgreSQL never runs as root")
    except KeyError:
        raise UsageError(f"the OS user {user!r} of target {target.name} does not exist on this host") from None
    blocked = shipper_paths.unreachable(path.parent, user, stat.S_IXOTH)
    if blocked:
        raise UsageError(f"the recovered server runs as {user}, who cannot reach {path.parent}: {blocked}; "
                         "choose a data directory it can reach")


def _spool_dir(data_directory: Path) -> Path:
    return data_directory.parent / f".{data_directory.name}.covet-wal"


def _history(target: DatabaseTarget) -> dict[int, ArchivedLog]:
    rows = ArchivedLog.objects.filter(target=target, kind="wal", name__endswith=".history")
    return {pg_wal.timeline_of(row.name): row for row in rows}


def _read_history(store: archive.Archive, row: ArchivedLog) -> list[pg_wal.Switch]:
    with store.open(row) as plain:
        text = plain.read().decode("utf-8", "replace")
        plain.finish()
    return pg_wal.parse_history(text)


def _target_timeline(backup: Backup, recovery: RecoveryTarget, histories: dict, store) -> tuple[int, list]:
    """Return the timeline recovery ends on and its history (the switches leading to it)."""
    start = backup.engine_meta["timeline"]
    if recovery.timeline == "current":
        return start, []
    if recovery.timeline != "latest":
        wanted = int(recovery.timeline)
        if wanted == start:
            return start, []
        if wanted not in histories:
            raise OutsideWindowError(f"timeline {wanted} has no history file in the archive of "
                                     f"{backup.target.name}; archived timelines: {sorted(histories) or [start]}")
        return wanted, _read_history(store, histories[wanted])
    # latest: the highest timeline whose history descends from the backup's.
    for timeline in sorted(histories, reverse=True):
        if timeline <= start:
            break
        switches = _read_history(store, histories[timeline])
        if start in [switch.timeline for switch in switches]:
            return timeline, switches
    return start, []


def _plan(backup: Backup, recovery: RecoveryTarget) -> dict:
    target = backup.target
    store = archive.Archive(target)
    histories = _history(target)
    timeline, switches = _target_timeline(backup, recovery, histories, store)
    start_lsn = pg_wal.parse_lsn(backup.engine_meta["start_lsn"])
    path = pg_wal.recovery_path(backup.engine_meta["timeline"], start_lsn, timeline, switches)
    archived = {(row[0], row[1]): row[2] for row in ArchivedLog.objects.filter(
        target=target, kind="wal").values_list("timeline", "name", "archived_at")}
    segments = []
    for stretch in path:
        last = stretch.last
        if last is None:  # the open end: as far as the archive goes without a gap
            last = stretch.first - 1
            while (stretch.timeline, pg_wal.segment_name(stretch.timeline, last + 1)) in archived:
                last += 1
            last = max(last, stretch.first)  # a missing first segment is named below
        for number in range(stretch.first, last + 1):
            name = pg_wal.segment_name(stretch.timeline, number)
            if (stretch.timeline, name) not in archived:
                raise WalGapError(f"WAL segment {name} is missing from the archive of {target.name}, between base "
                                  f"backup {backup.id} and {recovery.describe()}; recovery cannot pass it. "
                                  f"{_window_text(target)}")
            segments.append((stretch.timeline, name))
    if not segments:
        raise WalGapError(f"the archive of {target.name} holds no WAL from base backup {backup.id} on")
    newest_timeline, newest = segments[-1]
    _check_reach(backup, recovery, segments, archived, target, timeline)
    return {"base_backup": backup.id, "timeline": timeline, "segments": [name for _, name in segments],
            "history": sorted(histories[t].name for t in histories if t <= timeline),
            "newest_wal": newest, "newest_archived_at": archived[(newest_timeline, newest)].isoformat()}


def _check_reach(backup, recovery: RecoveryTarget, segments, archived, target, timeline) -> None:
    newest_timeline, newest = segments[-1]
    following = pg_wal.segment_name(newest_timeline, pg_wal.segment_number(newest) + 1)
    later = ArchivedLog.objects.filter(target=target, kind="wal", timeline=newest_timeline, name__gt=following)
    gap_after = later.filter(name__regex=r"^[0-9A-F]{24}$").order_by("name").first()
    if recovery.lsn:
        reach = (pg_wal.segment_number(newest) + 1) * pg_wal.DEFAULT_SEGMENT_SIZE
        if pg_wal.parse_lsn(recovery.lsn) >= reach:
            raise _beyond(f"{recovery.describe()} lies beyond the newest archived WAL ({newest})", gap_after,
                          following, target)
    if recovery.time and recovery.time > archived[(newest_timeline, newest)]:
        raise _beyond(f"{recovery.describe()} is after the newest archived WAL ({newest}, archived at "
                      f"{archived[(newest_timeline, newest)].isoformat()})", gap_after, following, target)
    if recovery.latest and gap_after is not None:
        raise WalGapError(f"WAL segment {following} is missing from the archive of {target.name}, so the latest "
                          f"archived transaction cannot be reached; recover to a time before it instead. "
                          f"{_window_text(target)}")


def _beyond(text: str, gap_after, following: str, target) -> CovetError:
    if gap_after is not None:
        return WalGapError(f"{text}: WAL segment {following} is missing from the archive of {target.name}. "
                           f"{_window_text(target)}")
    return OutsideWindowError(f"{text}; wait for the archive to catch up or choose an earlier target. "
                              f"{_window_text(target)}")


# Running ------------------------------------------------------------------------------------------


def run(request, recovery: RecoveryTarget, passphrase_file: str | None, key_file: str | None, on_progress) -> dict:
    """Carry out a checked PITR request; return the result recorded on it."""
    backup = request.backup
    destination = request.pitr["destination"]
    plan = check(backup, recovery, destination)  # the archive may have changed since the request was made
    data_dir = Path(destination["data_directory"])
    spool_dir = _spool_dir(data_dir)
    user = shipper_paths.os_user(backup.target)
    store = archive.Archive(backup.target, passphrase_file, key_file)
    rows = _rows(backup.target, plan)
    spool = WalSpool(spool_dir, store, rows)
    expected = backup.stored_bytes + sum(row.stored_bytes for row in rows)
    created_dir = not data_dir.exists()
    started = False
    with JobTracker(request, expected, on_progress) as tracker:
        try:
            # The WAL is staged (copied, stored SHA-256 checked) while the base
            # backup unpacks; both end before the server may start, and a
            # missing or damaged file removes both the spool and the data directory.
            spool_dir.mkdir(mode=0o700)
            began = time.monotonic()
            with ThreadPoolExecutor(1, thread_name_prefix="covet-wal-stage") as background:
                staging = background.submit(_stage, spool, tracker)
                try:
                    data_dir.mkdir(mode=0o700, exist_ok=True)
                    pg_server.hand_over(user, data_dir)
                    with open_plaintext(backup, passphrase_file, key_file, tracker) as (plain, checked):
                        members = pg_base.unpack(plain, data_dir, pg_server.as_user(user, []))
                        checked.finish()
                    unpacked = time.monotonic() - began
                except BaseException:
                    spool.stop()  # no point staging the rest
                    raise
                staged = staging.result() - began
            _write_settings(data_dir, spool_dir, recovery, destination, user, plan)
            result = {"location": str(data_dir), "spool": str(spool_dir), "base_backup": backup.id,
                      "timeline": plan["timeline"], "segments_fetched": len(plan["segments"]),
                      "files_unpacked": members, "newest_wal": plan["newest_wal"],
                      "seconds": {"stage": round(staged, 2), "unpack": round(unpacked, 2)},
                      "summary": [f"staged {len(rows)} WAL file(s) in {spool_dir} (stored SHA-256 checked) in "
                                  f"{staged:.1f} s",
                                  f"unpacked base backup {backup.id} into {data_dir} in {unpacked:.1f} s"]}
            pg_server.hand_over(user, data_dir, spool_dir)  # the settings just written, and the spool
            if not destination.get("start"):
                spool.decode_all()
                result["summary"].append(f"recovery settings written; start the server as {user} "
                                         f"(pg_ctl -D {data_dir} start) and it recovers to {recovery.describe()}")
                return result
            spool.start_decoding()  # the server replays while the rest is decoded
            started = True
            try:
                outcome = _start_and_recover(backup, data_dir, spool, destination, recovery, user)
            except DamagedError:
                # A staged file failed to decode: the server stopped recovery
                # (FATAL) or waits for it; what it recovered is of no use.
                spool.stop()
                _stop_server(backup, data_dir, user)
                started = False
                raise
            except BaseException:
                spool.stop()
                raise
            if recovery.action == "promote":
                spool.stop()  # recovery is over: the rest is not needed
                _remove_in_background(spool_dir)
            else:  # paused at the target: resumed, it may read on
                spool.finish()
            result["summary"] += outcome.pop("summary")
            result.update(outcome)
            return result
        except BaseException:
            if not started:
                shutil.rmtree(spool_dir, ignore_errors=True)
                if created_dir:
                    shutil.rmtree(data_dir, ignore_errors=True)
                else:  # it was given empty: leave it empty
                    _empty(data_dir)
            raise


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _rows(target: DatabaseTarget, plan: dict) -> list[ArchivedLog]:
    """Return the rows of the plan's files in the order recovery reads them: history files, then segments."""
    order = [*plan["history"], *plan["segments"]]
    rows = {row.name: row for row in ArchivedLog.objects.filter(target=target, kind="wal", name__in=order)}
    missing = set(order) - set(rows)
    if missing:
        raise WalGapError(f"WAL {', '.join(sorted(missing))} left the catalog of {target.name} while the restore "
                          "was being prepared")
    return [rows[name] for name in dict.fromkeys(order)]


def _stage(spool: WalSpool, tracker: JobTracker) -> float:
    """Stage every planned file into the spool; return the monotonic time it ended."""
    spool.stage(tracker.add)
    return time.monotonic()


def _conf_value(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _write_settings(data_dir: Path, spool: Path, recovery: RecoveryTarget, destination: dict, user: str,
                    plan: dict) -> None:
    values = {"restore_command": shipper_paths.restore_command(spool, user),
                "recovery_target_timeline": str(plan["timeline"]) if recovery.timeline != "latest" else "latest",
                "recovery_target_action": recovery.action,
                # A restored server never archives into its source's archive.
                "archive_mode": "off", "archive_command": ""}
    if recovery.time:
        values["recovery_target_time"] = recovery.time.isoformat(sep=" ")
    elif recovery.lsn:
        values["recovery_target_lsn"] = recovery.lsn
    elif recovery.xid:
        values["recovery_target_xid"] = recovery.xid
    elif recovery.name:
        values["recovery_target_name"] = recovery.name
    if not recovery.latest:
        values["recovery_target_inclusive"] = "on" if recovery.inclusive else "off"
    if destination.get("port"):
        values["port"] = destination["port"]
    if destination.get("start"):
        values["unix_socket_directories"] = str(data_dir)
        values["listen_addresses"] = "127.0.0.1"
    if not (data_dir / "postgresql.conf").exists():
        # Debian keeps the configuration outside the data directory: start from the server's defaults.
        (data_dir / "postgresql.conf").write_text("# written by Covet Backup: the backup held no postgresql.conf\n")
    if not (data_dir / "pg_hba.conf").exists():
        (data_dir / "pg_hba.conf").write_text("# written by Covet Backup: local connections only\n"
                                              "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n")
    lines = [f"\n{SETTINGS_MARK} (base backup {plan.get('base_backup', '')}; later lines win)"]
    lines += [f"{key} = {_conf_value(value)}" for key, value in values.items()]
    with open(data_dir / "postgresql.auto.conf", "a") as conf:
        conf.write("\n".join(lines) + "\n")
    (data_dir / "recovery.signal").write_text("")
    for leftover in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        (data_dir / leftover).unlink(missing_ok=True)





def _start_and_recover(backup: Backup, data_dir: Path, spool: WalSpool, destination: dict,
                       recovery: RecoveryTarget, user: str) -> dict:
    log_path = _log_path(data_dir)
    log_path.touch()
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(log_path, entry.pw_uid, entry.pw_gid)
    pg_ctl = str(_pg_bin(backup) / "pg_ctl")
    started = subprocess.run(pg_server.as_user(user, [pg_ctl, "-D", str(data_dir), "-l", str(log_path), "-w", "-t",
                                             str(START_TIMEOUT), "start"]),
                             capture_output=True, text=True, timeout=START_TIMEOUT + 30)
    spool.check()  # a file that failed to decode explains a failed start better than the log does
    if started.returncode != 0:
        raise ToolError(f"the recovered server did not start: {pg_server.log_reason(log_path) or started.stderr.strip()} "
                        f"(log: {log_path}; data directory {data_dir} kept for inspection)")
    outcome = _await_target(str(_pg_bin(backup) / "pg_controldata"), user, log_path, recovery, data_dir, spool.check)
    return {"port": destination["port"], "server_log": str(log_path), **outcome,
            "summary": [f"server started on port {destination['port']} (log {log_path})", outcome["state_text"]]}


def _log_path(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.log"



def _remove_in_background(spool: Path) -> None:
    """Remove the spool (a gigabyte of WAL takes a while) without making the operator wait for it."""
    doomed = spool.with_name(spool.name + ".removing")
    spool.rename(doomed)
    subprocess.Popen(["rm", "-rf", "--", str(doomed)], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)



def _await_target(pg_controldata: str, user: str, log_path: Path, recovery: RecoveryTarget, data_dir: Path,
                  check_spool: Callable[[], None]) -> dict:
    """Wait until the server has promoted (or paused at the target); raise if recovery ended short of it.

    Read from pg_controldata and the server log, not a connection: the
    recovered server's pg_hba.conf (its source's) may not let us in.
    """
    while True:
        check_spool()
        log_text = log_path.read_text(errors="replace")
        stop = _last_line(log_text, "recovery stopping")
        if recovery.action == "pause" and "pausing at the end of recovery" in log_text:
            return {"state": "paused", "stopped": stop,
                    "state_text": f"paused at {recovery.describe()} ({stop or 'end of WAL'}); inspect, then "
                                  "SELECT pg_wal_replay_resume() to promote"}
        # The log says when the server opened for writes (after promotion);
        # pg_controldata then confirms it and names the new timeline.
        facts = {}
        if READY_FOR_WRITES.search(log_text):
            control = subprocess.run(pg_server.as_user(user, [pg_controldata, "-D", str(data_dir)]), capture_output=True,
                                     text=True, timeout=60, env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")})
            facts = dict(line.split(":", 1) for line in control.stdout.splitlines() if ":" in line)
        if facts.get("Database cluster state", "").strip() == "in production":
            timeline = int(facts.get("Latest checkpoint's TimeLineID", "0").strip() or 0)
            return {"state": "promoted", "timeline_after": timeline, "stopped": stop,
                    "state_text": f"recovered to {recovery.describe()} ({stop or 'end of archived WAL'}) and "
                                  f"promoted to timeline {timeline}"}
        if not (data_dir / "postmaster.pid").exists():
            check_spool()  # a file that failed to decode is why it stopped
            reason = pg_server.log_reason(log_path) or "the server stopped"
            raise OutsideWindowError(f"recovery did not reach {recovery.describe()}: {reason} "
                                     f"(log: {log_path}; data directory {data_dir} kept)")
        time.sleep(RECOVERY_POLL)


def _last_line(text: str, marker: str) -> str:
    lines = [line.split("LOG:", 1)[-1].strip() for line in text.splitlines() if marker in line]
    return lines[-1] if lines else ""


def _pg_bin(backup: Backup) -> Path:
    return pg_server.server_bin(int(backup.engine_meta.get("server_version_num", 0)) // 10000)


def _stop_server(backup: Backup, data_dir: Path, user: str) -> None:
    """Stop a recovered server at once (it is thrown away), if it still runs."""
    pg_server.stop_immediately(_pg_bin(backup), data_dir, user)


def clean_up_dead(request) -> str:
    """Remove what a recovery whose worker died left: its server stopped, its spool removed, its data directory emptied.

    Only the host that keeps the data directory can do it; elsewhere the note says what was left where.
    """
    destination = request.pitr.get("destination", {})
    if not destination.get("data_directory"):
        return ""
    data_dir = Path(destination["data_directory"])
    host = destination.get("host") or settings.COVET_HOST
    if host != settings.COVET_HOST:
        return f" (its data directory {data_dir} and WAL spool on {host} were left: remove them there)"
    if request.backup is not None and data_dir.is_dir():
        _stop_server(request.backup, data_dir, shipper_paths.os_user(request.backup.target))
    spool_dir = _spool_dir(data_dir)
    for leftover in (spool_dir, spool_dir.with_name(spool_dir.name + ".removing")):
        shutil.rmtree(leftover, ignore_errors=True)
    if data_dir.is_dir():
        _empty(data_dir)
    return ""
