"""Which key-encryption key to use: from flags, the environment, the site default or the catalog.

A key source is recorded as a reference ({"kind": "keyfile"|"passphrase",
"path": ...}), never as the secret; the file is read when the key is needed.
"""

import os
from pathlib import Path

from django.conf import settings

from covet.errors import DamagedError, MissingKeyError, UsageError
from covet.pipeline import crypto

ENV_PASSPHRASE_FILE = "COVET_PASSPHRASE_FILE"
ENV_KEY_FILE = "COVET_KEY_FILE"


def key_ref(passphrase_file: str | None = None, key_file: str | None = None) -> dict | None:
    """Return the reference for an explicit passphrase file or key file, or None when neither is given."""
    if passphrase_file and key_file:
        raise UsageError("give either --encryption-password-file or --key-file, not both")
    if key_file:
        return {"kind": "keyfile", "path": str(Path(key_file).resolve())}
    if passphrase_file:
        return {"kind": "passphrase", "path": str(Path(passphrase_file).resolve())}
    return None


def env_key_ref() -> dict | None:
    """Return the reference named by COVET_PASSPHRASE_FILE / COVET_KEY_FILE, if set."""
    return key_ref(os.environ.get(ENV_PASSPHRASE_FILE) or None, os.environ.get(ENV_KEY_FILE) or None)


def load_source(ref: dict):
    """Load the key-encryption key a reference points to."""
    if ref.get("kind") == "keyfile":
        return crypto.load_key_file(ref["path"])
    if ref.get("kind") == "passphrase":
        return crypto.load_passphrase_file(ref["path"])
    raise UsageError(f"unknown key source kind {ref.get('kind')!r}")


def encryption_ref(passphrase_file: str | None = None, key_file: str | None = None) -> dict:
    """Return the key reference a new backup is encrypted with: flags, then environment, then site default."""
    ref = key_ref(passphrase_file, key_file) or env_key_ref()
    if ref:
        return ref
    default = Path(settings.COVET_DEFAULT_KEY_FILE)
    if not default.exists():
        raise MissingKeyError(
            f"no encryption key is configured and the default key file {default} does not exist; "
            "pass --key-file or --encryption-password-file, set COVET_KEY_FILE, "
            "run 'manage.py covet_setup' to create the default key, or store unencrypted with --encrypt none"
        )
    return {"kind": "keyfile", "path": str(default)}


def decryption_sources(backup_id: str, catalog_ref: dict | None, passphrase_file=None, key_file=None) -> list:
    """Return the key sources to try for a backup: flags, then environment, then what the catalog recorded."""
    ref = key_ref(passphrase_file, key_file) or env_key_ref() or (catalog_ref or None)
    if not ref:
        raise MissingKeyError(
            f"backup {backup_id} is encrypted and no key was given; "
            "pass --encryption-password-file or --key-file (or set COVET_PASSPHRASE_FILE / COVET_KEY_FILE)"
        )
    if not Path(ref["path"]).exists():
        raise MissingKeyError(
            f"backup {backup_id} needs the {ref['kind']} at {ref['path']}, which does not exist; "
            "pass --encryption-password-file or --key-file with a copy of it"
        )
    return [load_source(ref)]


def check_data_key_id(found: str | None, expected: str, owner: str) -> None:
    """Refuse an object whose header names another data key than the catalog records for ``owner``.

    Decided by the catalog, not the header: an object swapped for one of
    another backup or archive is refused instead of read.
    """
    if found != expected:
        raise DamagedError(f"{owner}: the object names data key {found}, the catalog {expected}; "
                           "object and catalog do not belong together")


def ensure_default_key_file() -> tuple[Path, bool]:
    """Create the site's default key file (0600) unless a key is configured; return (path, created)."""
    path = Path(settings.COVET_DEFAULT_KEY_FILE)
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    crypto.generate_key_file(path)
    return path, True
