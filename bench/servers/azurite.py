"""Azurite (the Azure Storage emulator, blob service only) on a free loopback port.

``AzuriteServer`` runs ``node_modules/.bin/azurite-blob`` (npm package
azurite 3.35.0, installed by scripts/ensure_azurite.sh) and waits until it
answers; in memory by default, or persisted in a directory so it can be
stopped and started again on the same port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AZURITE_BLOB = REPO / "node_modules" / ".bin" / "azurite-blob"

# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 30
_LISTENING = re.compile(r"successfully listens on http://127\.0\.0\.1:(\d+)")


class AzuriteServer:
    """One azurite-blob process on 127.0.0.1; ``start()``, ``stop()``, ``start()`` again keeps the port."""

    def __init__(self, location: Path | None = None, memory_limit_mb: int | None = None):
        self.location = location  # None: in memory
        self.memory_limit_mb = memory_limit_mb
        self.port = 0  # 0: let Azurite pick a free one, read back from its output
        self.proc: subprocess.Popen | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        self._output: list[str] = []

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.account_url};")

    def start(self) -> "AzuriteServer":
        if not AZURITE_BLOB.exists():
            raise RuntimeError(f"{AZURITE_BLOB} is missing: run scripts/ensure_azurite.sh (npm ci)")
        args = [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--disableTelemetry"]
        if self.location is None:
            args.append("--inMemoryPersistence")
            if self.memory_limit_mb:
                args += ["--extentMemoryLimit", str(self.memory_limit_mb)]
        else:
            args += ["--location", str(self.location)]
        # Its own session so stop() can signal node and anything it forked, and nothing else.
        self.proc = subprocess.Popen(args, cwd=self._workdir.name, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        port = self._wait_for_port()
        self.port = port
        self._wait_until_it_answers()
        return self

    def _wait_for_port(self) -> int:
        found: list[int] = []
        self._output = []

        def reader(stream) -> None:
            # Keeps draining after start-up so a chatty server never blocks on a full pipe.
            for line in stream:
                self._output.append(line)
                match = _LISTENING.search(line)
                if match and not found:
                    found.append(int(match.group(1)))

        threading.Thread(target=reader, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("Azurite did not start:\n" + "".join(self._output[-20:]))

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"GET /devstoreaccount1?comp=list HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    if conn.recv(12).startswith(b"HTTP/1."):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Azurite on port {self.port} did not answer within {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._workdir.cleanup()

    def service_client(self):
        """An SDK client with the dev account key, for setting up and inspecting what a test did."""
        from azure.storage.blob import BlobServiceClient

        from covet.storage.azure import API_VERSION

        return BlobServiceClient(self.account_url, api_version=API_VERSION,
                                 credential={"account_name": ACCOUNT_NAME, "account_key": ACCOUNT_KEY})

    def new_container(self) -> str:
        """Create an empty container with a fresh name and return the name."""
        name = f"t{uuid.uuid4().hex[:20]}"
        self.service_client().create_container(name)
        return name
