"""Private servers started for a benchmark or a test run and stopped by PID: PostgreSQL clusters, MariaDB
servers, a moto S3 server and Azurite. Plain classes and functions, no pytest: tests wrap them in fixtures."""

import socket


def free_port() -> int:
    """A loopback TCP port free at the time of asking (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
