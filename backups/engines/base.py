"""The engine contract: estimate a database's size, dump it as a stream, restore a stream.

Engines take plain values (a ``ConnectionParams``) and streams, never models,
so workers, commands and the shipper can all call them.
"""

from dataclasses import dataclass, field
from typing import BinaryIO, ContextManager


@dataclass(frozen=True)
class ConnectionParams:
    """How to reach a database server; ``password_file`` is a path, never the password."""

    host: str = ""
    port: int | None = None
    user: str = ""
    password_file: str | None = None


@dataclass
class Dump:
    """A dump in progress: the byte stream to read and facts about it (versions, positions)."""

    stream: BinaryIO
    extension: str
    meta: dict = field(default_factory=dict)


@dataclass
class RestoreResult:
    """What a restore produced, for the catalog and the operator."""

    location: str
    detail: dict = field(default_factory=dict)


class Engine:
    """Base of every database engine. Subclasses implement the three methods below."""

    name = "abstract"

    def __init__(self, connection: ConnectionParams, tmp_dir: str):
        self.connection = connection
        self.tmp_dir = tmp_dir

    def estimate_size(self, database: str) -> int | None:
        """Return the expected size of a dump of ``database`` in bytes, or None if unknown."""
        raise NotImplementedError

    def dump(self, database: str) -> ContextManager[Dump]:
        """Return a context manager yielding a consistent dump of ``database``; it cleans up on exit."""
        raise NotImplementedError

    def restore(self, stream: BinaryIO, target: str, replace: bool = False) -> RestoreResult:
        """Restore the plaintext dump read from ``stream`` into a new ``target``.

        Nothing may replace an existing target unless ``replace`` is true, and
        the target must not appear until the whole stream was read (and so
        authenticated) and checked.
        """
        raise NotImplementedError
