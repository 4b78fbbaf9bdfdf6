"""Storages: the default one, adding, checking and removing them, and the backend behind each row."""

import functools
import json
import os
import socket

from django.conf import settings
from django.utils import timezone

from backups.models import Storage
from core.audit import audit
from covet.errors import NotFoundError, StorageError, UsageError
from covet.storage import object_key, open_storage

def default_storage() -> Storage:
    """Return the default storage, creating the local one under COVET_BACKUP_DIR on first use."""
    storage = Storage.objects.filter(is_default=True).first()
    if storage:
        return storage
    storage, _ = Storage.objects.get_or_create(
        name="default",
        defaults={"kind": "local", "config": {"root": str(settings.COVET_BACKUP_DIR)}, "is_default": True},
    )
    return storage


def get_storage(name: str | None) -> Storage:
    """Return the storage called ``name`` (the default one when ``name`` is empty)."""
    if not name:
        return default_storage()
    try:
        return Storage.objects.get(name=name)
    except Storage.DoesNotExist:
        raise NotFoundError(f"no storage named {name!r}; see the Storage list in the admin") from None


SECRET_WORDS = ("password", "secret", "account_key", "sas_token", "connection_string", "access_key")


def add_storage(name: str, kind: str, config: dict, make_default: bool = False, actor: str = "",
                source: str = "") -> Storage:
    """Register a storage; its config must name secrets by reference (``*_env`` / ``*_file``), never hold them."""
    if Storage.objects.filter(name=name).exists():
        raise UsageError(f"a storage named {name!r} already exists")
    for key in config:
        if any(word in key for word in SECRET_WORDS) and not key.endswith(("_env", "_file")):
            raise UsageError(f"storage setting {key!r} would put a secret in the catalog; "
                             f"name it by reference instead ({key}_env=VARIABLE or {key}_file=/path)")
    storage = Storage(name=name, kind=kind, config=config)
    storage_backend(storage)  # a bad setting fails here, not in the middle of a backup
    storage.save()
    if make_default:
        Storage.objects.exclude(pk=storage.pk).update(is_default=False)
        Storage.objects.filter(pk=storage.pk).update(is_default=True)
        storage.is_default = True
    audit(actor, "storage.add", "storage", storage.name, source, kind=storage.kind)
    return storage


def remove_storage(name: str, actor: str = "", source: str = "") -> None:
    """Remove a storage that no backup lives on."""
    storage = get_storage(name)
    count = storage.backups.count()
    if count:
        raise UsageError(f"storage {name!r} still holds {count} backup(s) in the catalog; delete them first")
    storage.delete()
    audit(actor, "storage.remove", "storage", name, source)


def check_storage(storage: Storage) -> str:
    """Write, stat, read back and delete a small object; return what happened, in words."""
    backend = storage_backend(storage)
    key = object_key("covet-check", f"{socket.gethostname()}-{os.getpid()}.txt")
    probe = f"covet storage check {timezone.now().isoformat()}".encode()
    backend.put_bytes(key, probe)
    try:
        if backend.get_bytes(key) != probe:
            raise StorageError(f"storage {storage.name} returned different bytes than were written")
    finally:
        backend.delete(key)
    free = backend.free_bytes()
    return f"storage {storage.name} ok: wrote, read back and deleted {backend.describe(key)}" + (
        f"; {free / 2**30:.1f} GiB free" if free is not None else "")


def storage_backend(storage: Storage):
    """Open the backend behind a Storage row (one per distinct configuration, reused: SDK clients are costly)."""
    return _backend(storage.kind, json.dumps(storage.config, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _backend(kind: str, config_json: str):
    return open_storage(kind, json.loads(config_json))
