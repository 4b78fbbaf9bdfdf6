"""Users and grants of one MySQL/MariaDB database: saved as grants.sql beside a dump, applied on request.

The file is plain SQL a person can read (and apply with the client), with
comment lines the restore reads: ``-- database `name``` names the database
the grants were taken for, ``-- account ...`` starts each account's group.
Statements are one per line, as SHOW CREATE USER and SHOW GRANTS print them.
"""

import re
from datetime import datetime, timezone

import pymysql

# SHOW GRANTS lines: GRANT <privileges> ON [PROCEDURE|FUNCTION|...] <db>.<object> TO <account>...
# The privilege list may hold backquoted column names, so it is matched as
# identifiers or other characters, never across a quoted " ON ".
_QUOTED = r"`(?:[^`]|``)*`"
_GRANT_ON = re.compile(
    rf"^GRANT ((?:[^`]|{_QUOTED})*?) ON ((?:PROCEDURE |FUNCTION |PACKAGE BODY |PACKAGE )?)"
    rf"(\*|{_QUOTED})\.(\*|{_QUOTED}) TO (.*)$", re.S)
ER_CANNOT_USER = 1396  # CREATE USER/ROLE failed: the account exists


def quote_identifier(name: str) -> str:
    """Return ``name`` as a backquoted identifier (backquotes doubled)."""
    return "`" + name.replace("`", "``") + "`"


def unquote_identifier(text: str) -> str:
    """Return the name inside a backquoted identifier."""
    return text[1:-1].replace("``", "`")


def quote_account(user: str, host: str, is_role: bool = False) -> str:
    """Return an account as SQL: `user`@`host`, or just `role` for a role."""
    return quote_identifier(user) if is_role else f"{quote_identifier(user)}@{quote_identifier(host)}"


def _like_matches(pattern: str, name: str) -> bool:
    # mysql.db keeps database names as LIKE patterns (\_ is a literal _).
    regex, escaped = "", False
    for char in pattern:
        if escaped:
            regex += re.escape(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            regex += ".*"
        elif char == "_":
            regex += "."
        else:
            regex += re.escape(char)
    return re.fullmatch(regex, name, re.S) is not None


def _concerns(line: str, database: str) -> bool:
    """Say whether a SHOW GRANTS line belongs in the saved set for ``database``."""
    match = _GRANT_ON.match(line)
    if not match:
        return True  # role grants, SET DEFAULT ROLE: about the account itself
    db_part = match.group(3)
    if db_part == "*":
        return True  # global privileges and the account's authentication
    return _like_matches(unquote_identifier(db_part), database)


def accounts_with_privileges(conn, database: str) -> list[tuple[str, str, bool]]:
    """Return (user, host, is_role) of every account with database, table, column or routine privileges on it."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT User, Host FROM mysql.db WHERE %s LIKE Db "
            "UNION SELECT User, Host FROM mysql.tables_priv WHERE Db = %s "
            "UNION SELECT User, Host FROM mysql.columns_priv WHERE Db = %s "
            "UNION SELECT User, Host FROM mysql.procs_priv WHERE Db = %s",
            (database, database, database, database))
        found = sorted({(user, host) for user, host in cur.fetchall()})
        accounts = []
        for user, host in found:
            try:
                cur.execute("SELECT is_role FROM mysql.user WHERE User = %s AND Host = %s", (user, host))
                row = cur.fetchone()
            except pymysql.MySQLError:
                row = None  # MySQL keeps roles elsewhere (and shows them like users)
            accounts.append((user, host, bool(row and row[0] == "Y")))
    return accounts


def collect(conn, database: str, server_version: str) -> tuple[bytes, list[str]]:
    """Return grants.sql for ``database`` and the accounts in it.

    Raise pymysql errors as they come (a user without SELECT on the mysql
    schema cannot read other accounts' grants); the caller decides.
    """
    lines = [
        f"-- Users and grants for database {quote_identifier(database)}, saved by Covet Backup from "
        f"{server_version} at {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}.",
        "-- A restore with --with-globals creates missing accounts and retargets grants on this",
        "-- database to the restored one; existing accounts keep their password and global privileges.",
        f"-- database {quote_identifier(database)}",
    ]
    names = []
    with conn.cursor() as cur:
        for user, host, is_role in accounts_with_privileges(conn, database):
            account = quote_account(user, host, is_role)
            if "\n" in account or "\r" in account:
                continue  # cannot be kept one statement a line; never created by sane tools
            if is_role:
                create = f"CREATE ROLE {account}"
            else:
                cur.execute(f"SHOW CREATE USER {account}")
                create = cur.fetchone()[0]
            cur.execute(f"SHOW GRANTS FOR {account}")
            grants = [row[0] for row in cur.fetchall() if _concerns(row[0], database)]
            lines.append(f"-- account {account}{' (role)' if is_role else ''}")
            lines.append(create.replace("\n", " ") + ";")
            lines.extend(grant.replace("\n", " ") + ";" for grant in grants)
            names.append(account)
    return ("\n".join(lines) + "\n").encode(), names


def apply(conn, grants_sql: bytes, target: str) -> dict:
    """Create the saved accounts that are missing and apply their grants, retargeted to ``target``.

    Return {"created": [...], "existing": [...], "failed": [{"account", "error"}]}.
    An existing account is not an error: its grants on the restored database
    are added, its password and global privileges are left alone.
    """
    source = None
    groups: list[tuple[str, list[str]]] = []
    for line in grants_sql.decode().splitlines():
        if line.startswith("-- database "):
            source = line[len("-- database "):].strip()
        elif line.startswith("-- account "):
            groups.append((line[len("-- account "):].removesuffix(" (role)").strip(), []))
        elif line.strip() and not line.startswith("--") and groups:
            groups[-1][1].append(line.rstrip().removesuffix(";"))
    report = {"created": [], "existing": [], "failed": []}
    with conn.cursor() as cur:
        for account, statements in groups:
            if not statements:
                continue
            create, grants = statements[0], statements[1:]
            existing = False
            try:
                cur.execute(create)
                report["created"].append(account)
            except pymysql.MySQLError as exc:
                if exc.args and exc.args[0] == ER_CANNOT_USER:
                    existing = True
                    report["existing"].append(account)
                else:
                    report["failed"].append({"account": account, "error": _message(exc)})
                    continue
            for grant in grants:
                match = _GRANT_ON.match(grant)
                if match and match.group(3) == "*" and existing:
                    continue  # would reset an existing account's password or global privileges
                if match and source and match.group(3) == source:
                    start, end = match.span(3)
                    grant = grant[:start] + quote_identifier(target) + grant[end:]
                try:
                    cur.execute(grant)
                except pymysql.MySQLError as exc:
                    report["failed"].append({"account": account, "error": _message(exc)})
    return report


def _message(exc: pymysql.MySQLError) -> str:
    # The server's words only: a statement may hold a password hash, so it is never echoed.
    if len(exc.args) >= 2:
        return f"{exc.args[1]} (error {exc.args[0]})"
    return str(exc)
