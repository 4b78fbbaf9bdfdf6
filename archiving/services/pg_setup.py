"""What setup_pitr does for a PostgreSQL target: the settings, applying them, and the end-to-end check.

The check is pgBackRest's: write a little WAL, force a segment switch, and
wait until that segment is in the catalog (and so in storage). It proves
every link at once: the server's settings, the archive command, the socket,
the shipper, the key and the storage.
"""

import socket
import time
from pathlib import Path

import psycopg
from psycopg import sql

from covet.engines import pg_wal
from covet.engines.tools import read_password
from covet.errors import ToolError, UsageError
from backups.models import ArchivedLog, DatabaseTarget
from core.audit import audit

from archiving import covet_wal
from archiving.services import paths
from backups.services.targets import connection_params

CONNECT_TIMEOUT = 10
RESTART_SETTINGS = ("wal_level", "archive_mode")
# Values at least as good as what we ask for: never lowered.
ALREADY_ENOUGH = {"wal_level": ("replica", "logical"), "archive_mode": ("on", "always")}


def wanted_settings(target: DatabaseTarget, directory: Path, archive_timeout: int) -> dict[str, str]:
    """Return the server settings archiving needs, in the order they are printed."""
    if archive_timeout < 0:
        raise UsageError("--archive-timeout is seconds, 0 (off) or more")
    return {"wal_level": "replica", "archive_mode": "on", "archive_timeout": f"{archive_timeout}s",
            "archive_command": paths.archive_command(target, directory)}


def conf_lines(settings: dict[str, str]) -> list[str]:
    """Return the settings as postgresql.conf lines."""
    return [f"{name} = '{value.replace(chr(39), chr(39) * 2)}'" for name, value in settings.items()]


def connect(target: DatabaseTarget) -> psycopg.Connection:
    """Open an autocommit connection to the target's maintenance database; raise ToolError if it fails."""
    params = connection_params(target)
    kwargs = {"password": read_password(params.password_file)} if params.password_file else {}
    try:
        return psycopg.connect(dbname="postgres", host=params.host or None, port=params.port, user=params.user or None,
                               connect_timeout=CONNECT_TIMEOUT, autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise ToolError(f"cannot connect to PostgreSQL target {target.name}: {_first_line(exc)}") from exc


def apply(conn: psycopg.Connection, settings: dict[str, str]) -> tuple[list[str], list[str]]:
    """ALTER SYSTEM the settings that differ and reload; return (changed names, names waiting for a restart)."""
    current = _settings(conn)
    changed = []
    try:
        for name, value in settings.items():
            if current[name][0] in ALREADY_ENOUGH.get(name, ()) or current[name][0] == value \
                    or _same_seconds(name, current[name], value):
                continue
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            changed.append(name)
        conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise ToolError(f"cannot change the server's settings: {_first_line(exc)} (ALTER SYSTEM needs a "
                        "superuser; or put the printed lines in postgresql.conf yourself)") from exc
    return changed, pending_restart(conn)


def setup(target: DatabaseTarget, settings: dict[str, str], apply_them: bool, source: str) -> tuple[list[str], list[str]]:
    """Apply ``settings`` to the target's server when asked; record the set-up; return (changed, pending restart)."""
    changed, pending = [], []
    if apply_them:
        with connect(target) as conn:
            changed, pending = apply(conn, settings)
    audit(source, "pitr.setup", "target", target.name, source, applied=changed, pending_restart=pending)
    return changed, pending


def verify(target: DatabaseTarget, socket_file: Path, timeout: float, source: str) -> tuple[str, float]:
    """Check the whole archiving path with a forced segment switch (see ``check``) and record it."""
    with connect(target) as conn:
        name, seconds = check(conn, target, socket_file, timeout)
    audit(source, "pitr.check", "target", target.name, source, segment=name)
    return name, seconds


def pending_restart(conn: psycopg.Connection, wait: float = 2.0) -> list[str]:
    """Return the archiving settings that are changed but wait for a server restart."""
    deadline = time.monotonic() + wait
    while True:
        # The reload reaches this backend asynchronously; a new statement picks it up.
        pending = [name for name, (_, _, waiting) in _settings(conn).items() if waiting and name in RESTART_SETTINGS]
        if pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.2)


def check(conn: psycopg.Connection, target: DatabaseTarget, socket_file: Path, timeout: float) -> tuple[str, float]:
    """Force a segment switch and wait until that segment is archived; return (its name, seconds it took).

    Raise ToolError saying which link is broken when it does not arrive.
    """
    ping_shipper(target, socket_file)
    current = _settings(conn)
    if current["archive_mode"][0] not in ALREADY_ENOUGH["archive_mode"] or current["archive_mode"][2]:
        raise ToolError(f"archiving is not on in the server yet (archive_mode = {current['archive_mode'][0]}); "
                        "restart PostgreSQL after setup_pitr --apply, then run setup_pitr --check again")
    started = time.monotonic()
    try:
        conn.execute("SELECT pg_current_xact_id()")  # a commit record, so the switch has something to close
        name = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    except psycopg.Error as exc:
        raise ToolError(f"cannot switch WAL segments: {_first_line(exc)} (pg_switch_wal needs a superuser or "
                        "GRANT EXECUTE ON FUNCTION pg_switch_wal() to the target's user)") from exc
    deadline = started + timeout
    while time.monotonic() < deadline:
        if ArchivedLog.objects.filter(target=target, kind="wal", name=name,
                                      timeline=pg_wal.timeline_of(name)).exists():
            return name, time.monotonic() - started
        time.sleep(0.2)
    raise ToolError(f"segment {name} did not reach the archive within {timeout:g}s; {_archiver_news(conn, target)}")


def ping_shipper(target: DatabaseTarget, socket_file: Path) -> str:
    """Ask the target's shipper on ``socket_file`` whether it is there; raise ToolError when it is not."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(10)
        probe.connect(str(socket_file))
        probe.sendall(covet_wal.encode_request("ping", target.name))
        ok, detail, _ = covet_wal.parse_reply(covet_wal.read_line(probe, time.monotonic() + 10, "ping"))
    except (OSError, covet_wal.Failure) as exc:
        raise ToolError(f"no shipper answers on {socket_file} ({exc}); start it with "
                        f"'manage.py run_shipper --target {target.name}' on this host (make run does)") from None
    finally:
        probe.close()
    if not ok:
        raise ToolError(f"the shipper on {socket_file} refused: {detail}")
    return detail


def _archiver_news(conn: psycopg.Connection, target: DatabaseTarget) -> str:
    row = conn.execute("SELECT last_failed_wal, last_failed_time, failed_count FROM pg_stat_archiver").fetchone()
    target.refresh_from_db(fields=["archiver_status"])
    shipper_error = target.archiver_status.get("last_error")
    parts = []
    if row and row[0]:
        parts.append(f"PostgreSQL's archiver failed {row[2]} time(s), last on {row[0]} at {row[1]:%H:%M:%S} "
                     "(its log has the archive command's message)")
    else:
        parts.append("PostgreSQL reports no failed archive attempt: is archive_command the one setup_pitr printed?")
    if shipper_error:
        parts.append(f"the shipper's last error: {shipper_error}")
    return "; ".join(parts)


def _settings(conn: psycopg.Connection) -> dict[str, tuple[str, str, bool]]:
    rows = conn.execute("SELECT name, setting, coalesce(unit, ''), pending_restart FROM pg_settings "
                        "WHERE name IN ('wal_level', 'archive_mode', 'archive_timeout', 'archive_command')")
    return {name: (setting, unit, pending) for name, setting, unit, pending in rows}


def _same_seconds(name: str, current: tuple[str, str, bool], value: str) -> bool:
    return name == "archive_timeout" and current[1] == "s" and f"{current[0]}s" == value


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
