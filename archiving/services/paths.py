"""Where the shipper's socket lives, which Python runs the entry point, and the command strings built from them.

PostgreSQL runs the entry point as its own OS user, so everything the
command names (interpreter, script, socket directory) must be reachable by
that user, which is checked here rather than discovered at the first
failed segment.
"""

import grp
import os
import pwd
import shlex
import stat
import sys
from pathlib import Path

from django.conf import settings

from covet.errors import UsageError
from backups.models import DatabaseTarget

ENTRY_POINT = Path(__file__).resolve().parent.parent / "covet_wal.py"
DEFAULT_OS_USER = "postgres"
# Tried after this process's own interpreter; the entry point needs only Python 3.10+ and its standard library.
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
# Flags of the stable form: -I ignores the environment and user site, -S skips site (faster start).
PYTHON_FLAGS = ("-I", "-S")


def os_user(target: DatabaseTarget) -> str:
    """Return the OS user the target's server (and so its archive_command) runs as."""
    return target.os_user or DEFAULT_OS_USER


def socket_dir(explicit: str | None = None) -> Path:
    """Return the shipper socket directory: the flag, else COVET_RUN_DIR, else /run/covet (root) or <var>/run.

    var/ is private (0700), so as root the sockets go to /run/covet, which
    the database's OS user can reach.
    """
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get("COVET_RUN_DIR"):
        return Path(os.environ["COVET_RUN_DIR"]).resolve()
    if os.geteuid() == 0:
        return Path("/run/covet")
    return Path(settings.VAR_DIR).resolve() / "run"


# sun_path holds 108 bytes, the last one a NUL.
MAX_SOCKET_PATH = 107


def socket_path(target: DatabaseTarget, directory: Path) -> Path:
    """Return the socket of a target's shipper inside ``directory``; raise UsageError when it is too long."""
    path = directory / f"wal-{target.name}.sock"
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise UsageError(f"the socket path {path} is longer than a Unix socket allows ({MAX_SOCKET_PATH} bytes); "
                         "choose a shorter --socket-dir or COVET_RUN_DIR")
    return path


def unreachable(path: Path, user: str, need: int) -> str | None:
    """Return why ``user`` cannot use ``path`` (``need``: stat.S_IROTH / S_IXOTH style bits), or None if it can.

    Every directory above must let the user search it; ``path`` itself must
    grant ``need`` to the user's owner, group or other class.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"there is no OS user {user!r}"
    if entry.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for parent in reversed(path.parents):
        if not _grants(parent, entry.pw_uid, groups, stat.S_IXOTH):
            return f"{parent} does not let {user} through (mode {_mode(parent)})"
    if not _grants(path, entry.pw_uid, groups, need):
        return f"{user} may not use {path} (mode {_mode(path)})"
    return None


def _grants(path: Path, uid: int, groups: set[int], need: int) -> bool:
    info = path.stat()
    if info.st_uid == uid:
        return bool(info.st_mode & (need << 6))
    if info.st_gid in groups:
        return bool(info.st_mode & (need << 3))
    return bool(info.st_mode & need)


def _mode(path: Path) -> str:
    info = path.stat()
    owner = pwd.getpwuid(info.st_uid).pw_name if _known_uid(info.st_uid) else info.st_uid
    group = grp.getgrgid(info.st_gid).gr_name if _known_gid(info.st_gid) else info.st_gid
    return f"{stat.S_IMODE(info.st_mode):04o} {owner}:{group}"


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _known_gid(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


def entry_python(user: str) -> str:
    """Return an interpreter ``user`` can run for the entry point: COVET_WAL_PYTHON, this one, or the system's.

    A virtualenv under a private home (/root) is not runnable by postgres;
    the entry point needs no package, so any Python 3.10+ does.
    """
    if os.environ.get("COVET_WAL_PYTHON"):
        return os.environ["COVET_WAL_PYTHON"]
    reasons = []
    for candidate in (sys.executable, *SYSTEM_PYTHONS):
        path = Path(candidate)
        if not path.exists():
            continue
        path = path.resolve()
        reason = unreachable(path, user, stat.S_IXOTH)
        if reason is None:
            return str(path)
        reasons.append(reason)
    raise UsageError(f"no Python that the OS user {user} may run was found ({'; '.join(reasons) or 'none installed'}); "
                     "install python3, or set COVET_WAL_PYTHON to one it can run")


def check_reachable(target: DatabaseTarget, directory: Path) -> None:
    """Raise UsageError when the target's OS user cannot run the entry point or reach the socket directory."""
    user = os_user(target)
    for path, need, what in ((ENTRY_POINT, stat.S_IROTH, "read the entry point"),
                             (directory, stat.S_IXOTH, "reach the shipper's socket directory")):
        reason = unreachable(path, user, need) if path.exists() else None
        if reason:
            raise UsageError(f"PostgreSQL's OS user {user} cannot {what}: {reason}. Give it access, or choose "
                             "another socket directory with --socket-dir or COVET_RUN_DIR (the same for "
                             "run_shipper and setup_pitr)")


def archive_command(target: DatabaseTarget, directory: Path, timeout: float | None = None) -> str:
    """Return the archive_command for ``target`` in its stable form (absolute paths, explicit target)."""
    argv = [entry_python(os_user(target)), *PYTHON_FLAGS, str(ENTRY_POINT), "push", "--target", target.name,
            "--socket", str(socket_path(target, directory))]
    if timeout is not None:
        argv += ["--timeout", f"{timeout:g}"]
    return shlex.join(argv) + " %p"


def restore_command(spool: Path, user: str = DEFAULT_OS_USER) -> str:
    """Return the restore_command that copies WAL from ``spool`` (filled before the server starts)."""
    argv = [entry_python(user), *PYTHON_FLAGS, str(ENTRY_POINT), "fetch", "--spool", str(Path(spool).resolve())]
    return shlex.join(argv) + " %f %p"
