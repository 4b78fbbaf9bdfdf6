"""Django settings, read from the environment through django-environ.

Every setting is documented in docs/settings.md. Nothing secret lives in this file:
SECRET_KEY comes from the environment or from a 0600 file under var/ that
is generated on first run and never committed.
"""

import os
import secrets
import socket
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
VAR_DIR = Path(env.str("COVET_VAR_DIR", default=str(BASE_DIR / "var")))


def _generated_secret_key() -> str:
    """Return the site's SECRET_KEY, creating the 0600 file that keeps it on first run."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _generated_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "django_rq",
    "core",
    "backups",
    "archiving",
    "restores",
    "verification",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "covet_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "covet_site.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'catalog.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, workers and heartbeats write concurrently: WAL lets
    # readers proceed, IMMEDIATE transactions avoid upgrade deadlocks and the
    # timeout waits out a busy writer instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

# Long backups must not hit RQ's 180 s default; COVET_JOB_TIMEOUT is seconds.
COVET_JOB_TIMEOUT = env.int("COVET_JOB_TIMEOUT", default=24 * 3600)
# How long a base backup waits for the archive to receive the WAL it needs
# (its last segment is switched out when it ends); later checks catch up.
# A backup or verification that fails for a reason a retry can mend (storage or
# queue briefly down, target busy) runs again after these delays (seconds).
COVET_JOB_RETRY_DELAYS = [int(delay) for delay in env.list("COVET_JOB_RETRY_DELAYS", default=["60", "300"])]
COVET_BASE_WAL_WAIT = env.float("COVET_BASE_WAL_WAIT", default=60.0)
# A PITR restore writes a data directory, so it runs on the host that keeps it:
# each such host has a queue "restores-<host>" its worker listens on.
COVET_HOST = env.str("COVET_HOST", default=socket.gethostname())
COVET_PITR_HOSTS = env.list("COVET_PITR_HOSTS", default=[COVET_HOST])
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": COVET_JOB_TIMEOUT}
    for name in ("backups", "restores", "verification", "default", *(f"restores-{h}" for h in COVET_PITR_HOSTS))
}

COVET_BACKUP_DIR = Path(env.str("COVET_BACKUP_DIR", default=str(VAR_DIR / "backups")))
COVET_SECRETS_DIR = Path(env.str("COVET_SECRETS_DIR", default=str(VAR_DIR / "secrets")))
COVET_TMP_DIR = Path(env.str("COVET_TMP_DIR", default=str(VAR_DIR / "tmp")))
COVET_DEFAULT_KEY_FILE = Path(
    env.str("COVET_DEFAULT_KEY_FILE", default=str(VAR_DIR / "keys" / "default.key"))
)
# How often a running job writes its heartbeat, and how old a heartbeat may
# get before the housekeeper declares the job's worker dead (seconds).
COVET_HEARTBEAT_INTERVAL = env.float("COVET_HEARTBEAT_INTERVAL", default=5.0)
COVET_HEARTBEAT_TIMEOUT = env.float("COVET_HEARTBEAT_TIMEOUT", default=30.0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Covet Backup API",
    "DESCRIPTION": "Backup catalog, backups, verifications and restores.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}
REST_KNOX = {"TOKEN_TTL": None, "AUTO_REFRESH": False}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
