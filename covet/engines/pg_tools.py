"""PostgreSQL client tools and what both halves of the engine share: finding the tools, their errors, names.

Tools come from ``/usr/lib/postgresql/N/bin`` with the smallest N at least
the server's major version (else from PATH, if new enough).
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from covet.engines.tools import tool_env
from covet.errors import ToolError, UsageError

# Where Debian/Ubuntu (and the PGDG packages) install one set of client tools per major version.
# Module-level so tests (and unusual installations) can point the search elsewhere.
PG_LIB_DIR = Path("/usr/lib/postgresql")
# None: search the PATH of this process for fallback tools.
TOOL_SEARCH_PATH: str | None = None
TOOLS = ("pg_dump", "pg_restore", "pg_dumpall", "psql")

MAINTENANCE_DATABASES = ("postgres", "template1")
CONNECT_TIMEOUT = 10  # seconds, for psycopg and every tool
TAR_BLOCK = 512
GLOBALS = "globals.sql"
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: the server would silently truncate a longer name
SYSTEM_SCHEMAS_SQL = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                      "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'")
# A data file name inside a directory-format dump: never a path.
SAFE_MEMBER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
ROLE_MISSING = re.compile(r'role "((?:[^"]|"")+)" does not exist')
ROLE_EXISTS = re.compile(r'role "((?:[^"]|"")+)" already exists')


@dataclass(frozen=True)
class PgTools:
    """One matching set of client tools: their paths and major version."""

    major: int
    version: str
    paths: dict

    def __getitem__(self, tool: str) -> str:
        return self.paths[tool]


def _tool_version(path: str) -> tuple[int, str] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             env=tool_env(LC_MESSAGES="C"), check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    major = int(match.group(1))
    return major, out.strip().split(") ", 1)[-1]


def find_tools(server_major: int, lib_dir: Path | None = None, search_path: str | None = None) -> PgTools:
    """Return client tools of at least ``server_major``: the smallest such /usr/lib/postgresql/N, else PATH.

    Raise ToolError naming what is installed and what is needed when none fits.
    """
    lib_dir = Path(lib_dir or PG_LIB_DIR)
    search_path = search_path if search_path is not None else TOOL_SEARCH_PATH
    installed = []
    versions = sorted(int(p.name) for p in lib_dir.iterdir() if p.name.isdigit()) if lib_dir.is_dir() else []
    for major in versions:
        bin_dir = lib_dir / str(major) / "bin"
        paths = {tool: str(bin_dir / tool) for tool in TOOLS}
        if not all(os.access(path, os.X_OK) for path in paths.values()):
            if (bin_dir / "pg_dump").exists():
                installed.append(f"an incomplete set in {bin_dir}")
            continue
        installed.append(f"version {major} in {bin_dir}")
        if major >= server_major:
            found = _tool_version(paths["pg_dump"])
            return PgTools(major, found[1] if found else str(major), paths)
    paths = {tool: shutil.which(tool, path=search_path) for tool in TOOLS}
    if all(paths.values()):
        found = _tool_version(paths["pg_dump"])
        restore = _tool_version(paths["pg_restore"])
        if found and restore and min(found[0], restore[0]) >= server_major:
            return PgTools(found[0], found[1], paths)
        installed.append(f"version {found[0] if found else 'unknown'} on PATH ({paths['pg_dump']})")
    elif paths["pg_dump"]:
        installed.append(f"an incomplete set on PATH ({paths['pg_dump']})")
    have = "; ".join(installed) if installed else "none"
    raise ToolError(f"no PostgreSQL client tools ({', '.join(TOOLS)}) of version {server_major} or newer found "
                    f"for this version {server_major} server; installed: {have}. Install the client package of "
                    f"version {server_major} or newer (e.g. postgresql-client-{server_major})")


def pg_errors(text: str, tool: str) -> str:
    """Return the error lines of a verbose tool's stderr: its own messages, without the progress chatter."""
    kept = []
    for line in text.splitlines():
        if not line.startswith(f"{tool}: ") or re.match(rf"^{tool}: (error|detail|hint|warning|fatal):", line):
            kept.append(line)
    return "\n".join(kept)[-4000:].strip()


def pgpass_line(password: str) -> str:
    if "\n" in password or "\r" in password:
        raise UsageError("the database password contains a line break, which a PGPASSFILE cannot hold")
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def write_private_bytes(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def safe_pg_dumpall_database(name: str) -> bool:
    # pg_dumpall expands a --database value that looks like a connection string.
    return "=" not in name and not name.startswith(("postgres://", "postgresql://"))
