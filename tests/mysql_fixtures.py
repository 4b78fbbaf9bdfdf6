"""MariaDB helpers for the engine tests: throw-away schemas and users, and table lists.

Connections, quoting, checksums and private servers come from bench.servers.mariadb, shared with the
benchmarks.
"""

import uuid

from bench.servers.mariadb import execute, q


def unique(prefix: str = "covet_t_") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Schemas:
    """Schemas and users made by a test; all dropped at teardown, even after a failure."""

    def __init__(self, conn):
        self.conn = conn
        self.names: list[str] = []
        self.users: list[str] = []

    def new(self, name: str | None = None) -> str:
        name = name or unique()
        self.names.append(name)
        execute(self.conn, f"DROP DATABASE IF EXISTS {q(name)}", f"CREATE DATABASE {q(name)} CHARACTER SET utf8mb4")
        return name

    def name(self, name: str | None = None) -> str:
        """Reserve a name (e.g. a restore target) for teardown without creating it."""
        name = name or unique()
        self.names.append(name)
        return name

    def user(self, password: str, *grants: str, host: str = "localhost") -> str:
        """Create a user with ``password``; each grant is 'PRIVILEGES ON what'."""
        name = unique("covet_u_")
        account = f"{q(name)}@{q(host)}"
        self.users.append(account)
        execute(self.conn, f"CREATE USER {account} IDENTIFIED BY %s", args=(password,))
        for grant in grants:
            execute(self.conn, f"GRANT {grant} TO {account}")
        return name

    def drop(self) -> None:
        for name in self.names:
            execute(self.conn, f"DROP DATABASE IF EXISTS {q(name)}")
        for account in self.users:
            execute(self.conn, f"DROP USER IF EXISTS {account}")


def base_tables(conn, schema: str) -> list[str]:
    return [row[0] for row in execute(conn, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                                            "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", args=(schema,))]
