"""Azure Blob credentials by reference: read from an environment variable or an owner-only file, never
from the storage's configuration, and blanked from every message and log line.
"""

import logging
import os
import re
import stat

from covet.errors import NotFoundError, UsageError

# Settings whose value would be a secret: refused, with the reference to use instead.
_SECRET_SETTINGS = {"connection_string": "connection_string_env or connection_string_file",
                    "account_key": "account_key_env or account_key_file",
                    "sas_token": "sas_token_env or sas_token_file",
                    "sas": "sas_token_env or sas_token_file",
                    "credential": "one of the *_env / *_file references",
                    "password": "one of the *_env / *_file references",
                    "key": "account_key_env or account_key_file"}
_SAS_SIGNATURE = re.compile(r"(sig=)[^&\s'\"]+", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Return ``text`` with each of ``secrets`` and any SAS signature blanked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SAS_SIGNATURE.sub(r"\1[redacted]", text)


class _RedactSignatures(logging.Filter):
    """Blank SAS signatures in urllib3's DEBUG lines, which print request URLs whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sig=" in message.lower():
            record.msg, record.args = redact(message), ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactSignatures())


def refuse_unknown(unknown: dict) -> None:
    """Refuse settings the backend does not know, a secret given in place with a pointer to its reference."""
    for name in unknown:
        if name in _SECRET_SETTINGS:
            raise UsageError(f"the storage configuration must not hold a secret ({name!r}): put it in an "
                             f"environment variable or a 0600 file and name it with {_SECRET_SETTINGS[name]}")
    if unknown:
        raise UsageError(f"unknown azure storage setting(s): {', '.join(sorted(unknown))}")


def describe_ref(what: str, env: str, path: str) -> str:
    """Return where the secret ``what`` comes from, for messages (never the secret itself)."""
    return f"{what} in ${env}" if env else f"{what} in {path}"


def read_secret(env: str, path: str, what: str) -> str:
    """Read a secret from the environment variable ``env`` or the owner-only file ``path``."""
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise UsageError(f"the environment variable {env} (the azure storage {what}) is not set")
        return value
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise UsageError(f"{what} file {path} is accessible by group or others "
                             f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except FileNotFoundError:
        raise NotFoundError(f"the azure storage {what} file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read the azure storage {what} file {path}: {exc.strerror or exc}") from None
    if not value:
        raise UsageError(f"the azure storage {what} file {path} is empty")
    return value


def connection_string_secrets(connection_string: str) -> list[str]:
    """Return the secret parts of a connection string (key, SAS), for redaction."""
    secrets = []
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
            secrets.append(value.strip())
    return secrets
