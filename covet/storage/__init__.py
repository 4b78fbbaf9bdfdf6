"""Storage backends behind one interface, loaded by kind on first use.

A kind maps to its label and dotted class path so that an SDK nobody uses (boto3, the
Azure SDK) is never imported.
"""

from covet.errors import UsageError
from covet.registry import Registered
from covet.storage.base import ObjectInfo, Storage, object_key, safe_component

KINDS = {
    "local": Registered("Local disk", "covet.storage.local.LocalStorage"),
    "s3": Registered("Amazon S3", "covet.storage.s3.S3Storage"),
    "azure": Registered("Azure Blob", "covet.storage.azure.AzureStorage"),
}


def open_storage(kind: str, config: dict) -> Storage:
    """Return the backend of ``kind`` built from its plain ``config`` mapping."""
    try:
        entry = KINDS[kind]
    except KeyError:
        raise UsageError(f"unknown storage kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None
    cls = entry.load()
    try:
        return cls(**config)
    except TypeError as exc:
        raise UsageError(f"bad configuration for {kind} storage: {exc}") from exc


__all__ = ["KINDS", "ObjectInfo", "Storage", "object_key", "open_storage", "safe_component"]
