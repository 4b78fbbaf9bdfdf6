"""Settings for the test suite: everything under a private temporary var/ and a Redis database of its own.

Worker processes that tests start inherit the same environment, so they see
the same catalog file, storage directory and queues.
"""

import os
import tempfile

os.environ.setdefault("COVET_VAR_DIR", tempfile.mkdtemp(prefix="covet-test-"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("COVET_HEARTBEAT_INTERVAL", "1")
os.environ.setdefault("COVET_HEARTBEAT_TIMEOUT", "5")

from covet_site.settings import *  # noqa: E402,F403
from covet_site.settings import DATABASES, STATIC_ROOT, VAR_DIR  # noqa: E402

# A file, not memory, so RQ workers in other processes share the test catalog.
DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-catalog.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; tests hold no real secret
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing root
