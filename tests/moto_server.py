"""Fixtures around the moto S3 server of bench.servers.moto, and a fault-injecting proxy.

The ``moto_s3`` fixture shares one server per test session; ``aws_env``
gives a test (and the processes it starts) credentials through the
environment, the way the AWS chain finds them, and hides the developer's own
~/.aws. ``FaultProxy`` sits between a client and the server to reject chosen
requests as S3 would, or to drop every connection as a dead endpoint does.
conftest.py registers this module as a plugin, so every test module can ask
for the fixtures.
"""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from bench.servers.moto import REGION, TEST_CREDENTIALS, MotoServer


@pytest.fixture(scope="session")
def moto_s3():
    """One moto S3 server for the whole test session."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Credentials in the environment (the first link of the AWS chain); no profile, no shared files, no IMDS."""
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return dict(TEST_CREDENTIALS)


Rule = Callable[[str, str, dict], bool]


class FaultProxy:
    """A loopback HTTP/1.1 proxy in front of an S3 endpoint that can fail requests on demand.

    ``fail(rule, status, code)`` answers every request for which
    ``rule(method, path, query)`` holds with an S3 error document instead of
    forwarding it (after reading its body, as S3 does before it compares a
    checksum); ``reject_part(n)`` does so for UploadPart number n with
    BadDigest. ``cut()`` drops every open connection and every new one, as a
    server that went away; ``restore()`` lets traffic through again.
    ``failed`` lists what was answered with an error.
    """

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._rules: list[tuple[Rule, int, str]] = []
        self._down = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.failed: list[str] = []
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def fail(self, rule: Rule, status: int, code: str) -> None:
        self._rules.append((rule, status, code))

    def reject_part(self, number: int, code: str = "BadDigest") -> None:
        self.fail(lambda method, path, query: method == "PUT" and "uploadId" in query
                  and query.get("partNumber") == [str(number)], 400, code)

    def cut(self) -> None:
        self._down.set()
        with self._lock:
            for conn in list(self._connections):
                _shut(conn)

    def restore(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                _shut(conn)
                continue
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream = http.client.HTTPConnection(*self._upstream, timeout=120)
        reader = conn.makefile("rb")
        try:
            while not self._down.is_set():
                request_line = reader.readline(65537)
                if not request_line:
                    return
                method, target, _version = request_line.decode("latin-1").split()
                headers = []
                while (line := reader.readline(65537)) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers.append((name.strip(), value.strip()))
                lower = {name.lower(): value for name, value in headers}
                if "100-continue" in lower.get("expect", "").lower():
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = reader.read(int(lower.get("content-length") or 0))
                if self._down.is_set():
                    return
                split = urlsplit(target)
                query = parse_qs(split.query, keep_blank_values=True)
                rule = next((r for r in self._rules if r[0](method, split.path, query)), None)
                if rule:
                    self.failed.append(f"{method} {target}")
                    conn.sendall(_error_response(rule[1], rule[2]))
                    continue
                forwarded = {name: value for name, value in headers if name.lower() != "expect"}
                upstream.request(method, target, body=body, headers=forwarded)
                response = upstream.getresponse()
                data = response.read()
                head = [f"HTTP/1.1 {response.status} {response.reason}"]
                for name, value in response.getheaders():
                    if name.lower() in ("transfer-encoding", "connection") or \
                            (name.lower() == "content-length" and method != "HEAD"):
                        continue
                    head.append(f"{name}: {value}")
                if method != "HEAD":
                    head.append(f"Content-Length: {len(data)}")
                conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        except (OSError, ValueError, http.client.HTTPException):
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            _shut(conn)
            upstream.close()


def _shut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def _error_response(status: int, code: str) -> bytes:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message><RequestId>fault-proxy</RequestId></Error>").encode()
    reason = http.client.responses.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            f"x-amz-request-id: fault-proxy\r\n\r\n").encode() + body


@pytest.fixture
def fault_proxy(moto_s3):
    """A FaultProxy in front of the session's moto server, closed after the test."""
    proxy = FaultProxy(moto_s3.endpoint)
    yield proxy
    proxy.close()
