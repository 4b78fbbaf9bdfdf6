"""The storage contract: put a stream, get a stream, stat, list a prefix, delete.

Every backend implements the methods of ``Storage`` that raise
NotImplementedError. Object keys are relative, '/'-separated paths built with
``object_key``; a backend refuses any key that could escape its prefix.
"""

import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from covet.errors import StorageError, UsageError

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9._@+=-]+$")


def safe_component(value: str) -> str:
    """Return ``value`` made safe as one path component of an object key.

    Characters outside a conservative set become '_', so names with spaces,
    slashes or control characters still map to one component; '.', '..' and
    empty names are refused because they would point outside their prefix.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._@+=-]", "_", value)
    if cleaned in ("", ".", "..") or not _SAFE_COMPONENT.match(cleaned):
        raise UsageError(f"{value!r} cannot be used as a storage path component")
    return cleaned


def storage_failure(message: str, retryable: bool) -> StorageError:
    """Return a StorageError whose ``retryable`` says whether the same call may succeed later."""
    error = StorageError(message)
    error.retryable = retryable
    return error


def check_key(key: str) -> str:
    """Return ``key`` unchanged if every component is safe; raise UsageError otherwise."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") or not _SAFE_COMPONENT.match(p) for p in parts):
        raise UsageError(f"unsafe storage key {key!r}: keys are relative paths of plain names")
    return key


def object_key(*components: str) -> str:
    """Join components (each made safe) into an object key."""
    return "/".join(safe_component(str(c)) for c in components)


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend can tell about one stored object."""

    key: str
    size: int


class Storage:
    """Base of every storage backend. Subclasses implement the five methods below and abort()."""

    kind = "abstract"

    def put(self, key: str, stream: BinaryIO, size_hint: int | None = None, tier: str | None = None) -> ObjectInfo:
        """Store everything read from ``stream`` under ``key``; visible only once complete.

        ``tier`` is this object's storage class (S3) or access tier (Azure),
        None for the backend's configured default; local storage has none.
        """
        raise NotImplementedError

    def get(self, key: str) -> BinaryIO:
        """Open ``key`` for streaming reads; raise NotFoundError when it does not exist."""
        raise NotImplementedError

    def stat(self, key: str) -> ObjectInfo:
        """Return the object's size; raise NotFoundError when it does not exist."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the complete objects whose keys start with ``prefix``, in key order."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing object is not an error."""
        raise NotImplementedError

    def abort(self, key: str) -> None:
        """Remove whatever an interrupted put() of ``key`` left behind (temp files, upload parts)."""
        raise NotImplementedError

    def describe(self, key: str) -> str:
        """Return a human-readable location of ``key`` (a URL), for the catalog and the UI."""
        raise NotImplementedError

    def check_tier(self, tier: str) -> str:
        """Return ``tier`` as this backend spells it (see put); raise UsageError if it has no such tier."""
        raise UsageError(f"{self.kind} storage has no storage classes or access tiers; {tier!r} cannot be used")

    def free_bytes(self) -> int | None:
        """Return the free space where objects are written, or None when the backend cannot tell."""
        return None

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Store a small object from memory."""
        import io

        return self.put(key, io.BytesIO(data), size_hint=len(data))

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole."""
        with self.get(key) as stream:
            return stream.read()
