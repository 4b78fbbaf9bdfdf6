"""A moto S3 server (moto[server]) on a free loopback port.

``MotoServer`` runs ``python -m moto.server`` (the ``moto_server`` entry
point) on 127.0.0.1 and waits until it answers; clients talk to it over real
HTTP, never through moto's in-process mocks.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from bench.servers import free_port

START_TIMEOUT = 30
REGION = "us-east-1"
# Any key works with moto; these never appear in a storage config.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "covet-test-key", "AWS_SECRET_ACCESS_KEY": "covet-test-secret"}


class MotoServer:
    """One moto server process on 127.0.0.1: ``start()``, then ``stop()``."""

    def __init__(self):
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile(prefix="moto-")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        for _attempt in range(3):  # the free port can be taken between the probe and moto's bind
            self.port = free_port()
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
            if self._wait_until_it_answers():
                return self
        self.stop()
        self._log.seek(0)
        raise RuntimeError(f"moto server did not start: {self._log.read().decode(errors='replace')[-2000:]}")

    def _wait_until_it_answers(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self, endpoint: str | None = None):
        """A plain boto3 client for setting up and inspecting buckets behind the backend's back."""
        import boto3

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
                            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def new_bucket(self) -> str:
        name = f"covet-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name
