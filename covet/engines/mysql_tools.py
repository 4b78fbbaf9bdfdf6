"""MySQL/MariaDB client tools and server errors as the dump and the restore both read them."""

import shutil
from pathlib import Path

import pymysql

from covet.engines.tools import STDERR_TAIL
from covet.errors import ToolError

CLIENT_TOOLS = ("mariadb", "mysql")


def find_tool(names: tuple[str, ...], what: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ToolError(f"no MySQL/MariaDB {what} found: install {' or '.join(names)} (package mariadb-client)")


def server_message(exc: BaseException) -> str:
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        return f"{exc.args[1]} (error {exc.args[0]})"
    return str(exc) or type(exc).__name__


def tool_message(stderr_path: Path) -> str:
    """Return a tool's own error lines, without the progress lines --verbose adds."""
    try:
        text = stderr_path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("-- ")]
    return "\n".join(lines)[-STDERR_TAIL:].strip()
