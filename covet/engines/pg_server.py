"""Running a PostgreSQL server for a recovery: as its OS user, from the binaries of its major version.

Recovery (restores/services/pitr_postgres.py) unpacks a base backup into a
data directory, hands it to the server's OS user, starts the server with
pg_ctl, and stops it at once when the recovery is thrown away.
"""

import os
import pwd
import subprocess
from pathlib import Path

from covet.engines.pg_tools import PG_LIB_DIR
from covet.errors import ToolError, UsageError

STOP_TIMEOUT = 120  # seconds pg_ctl may take to stop a server immediately


def hand_over(user: str, *tops: Path) -> None:
    """Give directories (and what they hold) to the server's OS user (when we may), 0700 as PostgreSQL demands."""
    entry = pwd.getpwnam(user)
    for top in tops:
        top.chmod(0o700)
        if os.geteuid() != 0 or entry.pw_uid == os.geteuid():
            continue
        for root, dirs, files in os.walk(top):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def as_user(user: str, args: list[str]) -> list[str]:
    """Return ``args`` run as ``user``: through runuser when we are root, as they are when we are that user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *args]
    if pwd.getpwuid(os.geteuid()).pw_name != user:
        raise UsageError(f"the recovered server must run as {user}; run this as {user} or as root")
    return args


def server_bin(major: int) -> Path:
    """Return the server binaries' directory of PostgreSQL ``major``; raise ToolError when it is not installed."""
    bin_dir = PG_LIB_DIR / str(major) / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise ToolError(f"the base backup is of PostgreSQL {major}; its server binaries ({bin_dir}/pg_ctl) are not "
                        f"installed on this host: install postgresql-{major}")
    return bin_dir


def stop_immediately(bin_dir: Path, data_dir: Path, user: str) -> None:
    """Stop the server running on ``data_dir`` at once (pg_ctl -m immediate), if one runs."""
    if (data_dir / "postmaster.pid").exists():
        subprocess.run(as_user(user, [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=STOP_TIMEOUT)


def log_reason(log_path: Path) -> str:
    """Return the last FATAL or PANIC message of a server log, or ""."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if "FATAL" in line or "PANIC" in line]
    return lines[-1].split("FATAL:", 1)[-1].strip() if lines else ""
