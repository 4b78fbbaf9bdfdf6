"""Fixtures around Azurite (bench.servers.azurite): ``azurite`` shares one in-memory instance per test
session; ``azurite_factory`` starts dedicated ones (persisted under the test's tmp_path so they can be
stopped and started again on the same port) for tests that stop the server under a client. conftest.py
registers this module as a plugin."""

import pytest

from bench.servers.azurite import AzuriteServer


@pytest.fixture(scope="session")
def azurite():
    """One in-memory Azurite for the whole session."""
    server = AzuriteServer()
    try:
        server.start()
    except RuntimeError as exc:
        server.close()
        pytest.fail(str(exc))
    yield server
    server.close()


@pytest.fixture
def azurite_factory(tmp_path):
    """Start dedicated Azurite instances (persisted under tmp_path) that a test may stop; stop them after it."""
    servers: list[AzuriteServer] = []

    def start() -> AzuriteServer:
        location = tmp_path / f"azurite-{len(servers)}"
        location.mkdir()
        server = AzuriteServer(location=location)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()
