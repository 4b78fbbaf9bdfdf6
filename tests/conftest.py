"""Shared fixtures: sample SQLite databases, key files, users, clean queues and real RQ worker processes."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, worker_env

# Fixture modules: the PITR tests' servers, the moto S3 server and the Azurite emulator.
pytest_plugins = ["tests.pitr_fixtures", "tests.moto_server", "tests.azurite_server"]


@pytest.fixture
def sample_sqlite(tmp_path) -> Path:
    """A SQLite database with a few thousand rows of varied data."""
    path = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, balance REAL)")
    conn.executemany(
        "INSERT INTO customers (name, email, balance) VALUES (?, ?, ?)",
        [(f"customer {i}", f"c{i}@example.test", i * 1.25) for i in range(5000)],
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def key_file(tmp_path) -> Path:
    """A fresh key file, mode 0600."""
    from covet.pipeline import crypto

    path = tmp_path / "keys" / "test.key"
    path.parent.mkdir()
    crypto.generate_key_file(path)
    return path


@pytest.fixture
def passphrase_file(tmp_path) -> Path:
    path = tmp_path / "passphrase"
    path.write_text("correct horse battery staple\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def default_key(settings, tmp_path):
    """Point the site's default key at a fresh key file, as covet_setup would."""
    from covet.pipeline import crypto

    path = tmp_path / "default.key"
    crypto.generate_key_file(path)
    settings.COVET_DEFAULT_KEY_FILE = path
    return path


@pytest.fixture
def backup_dir(settings, tmp_path):
    """Point the default local storage at a private directory."""
    path = tmp_path / "backups"
    settings.COVET_BACKUP_DIR = path
    return path


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("admin", "", "admin-test-password")


@pytest.fixture
def clean_queues():
    """Empty the test Redis database so no job from another test is picked up."""
    import django_rq

    connection = django_rq.get_connection("backups")
    connection.flushdb()
    yield
    connection.flushdb()


@pytest.fixture
def rq_worker(settings, clean_queues):
    """Start a real `manage.py rqworker` process on the test catalog; yield it; stop it."""
    procs = []

    def start(*extra: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "backups", "restores", "verification", *extra],
            cwd=REPO, env=worker_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def cli(settings, transactional_db):
    """Run `manage.py ARGS` as its own process on the test catalog; return the CompletedProcess."""

    def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        full_env = worker_env(settings)
        full_env.update(env or {})
        return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def target(sample_sqlite):
    """A registered SQLite target named app."""
    from backups.services.targets import add_target

    return add_target("app", "sqlite", str(sample_sqlite))
