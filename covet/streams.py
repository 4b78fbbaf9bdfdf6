"""Stream helpers the whole code base shares: the copy buffer, checked and hashing readers, draining, atomic files.

Every pipeline stage reads and writes file-like objects with ``read(size)``;
these small wrappers are the shapes that recur between them.
"""

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from covet.errors import DamagedError

# Large enough that copies are not syscall-bound, small enough to stay far
# below the pipeline's memory bound. Not 2 MiB or more: Linux then backs the
# page cache with huge folios, whose first touch in a VM whose free memory
# goes back to the host (virtio-balloon free page reporting) made writing
# 250 MiB take 0.5 s instead of 0.04 s (kernel 6.18, Firecracker).
COPY_BUFFER = 1024 * 1024


class HashingReader:
    """A readable stream that passes ``stream`` through and hashes what was read (SHA-256 unless ``digest``)."""

    def __init__(self, stream: BinaryIO, digest=None):
        self.stream = stream
        self.digest = digest or hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def close(self) -> None:
        self.stream.close()


class CheckedReader(HashingReader):
    """A stream that, once read to its end, checks its SHA-256 against ``expected``.

    ``damaged(actual)`` returns the DamagedError to raise on a mismatch, so
    the message names the object in the caller's words. An empty
    ``expected`` means nothing was recorded: the digest is still computed.
    """

    def __init__(self, stream: BinaryIO, expected: str, damaged: Callable[[str], DamagedError]):
        super().__init__(stream)
        self.expected = expected
        self.damaged = damaged
        self.checked = False

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        if not data and not self.checked:
            self.checked = True
            actual = self.digest.hexdigest()
            if self.expected and actual != self.expected:
                raise self.damaged(actual)
        return data

    def finish(self) -> None:
        """Read what is left so the checksum is compared."""
        drain(self)


class IterStream:
    """A readable stream over an iterator of byte chunks; ``on_close`` runs once when it is closed."""

    def __init__(self, chunks: Iterable[bytes], on_close: Callable[[], None] | None = None):
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._ended = False
        self._on_close = on_close

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size is None or size < 0 or len(self._buffer) < size):
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                self._ended = True
        if size is None or size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._on_close:
            on_close, self._on_close = self._on_close, None
            on_close()


class PrefixedStream:
    """A stream whose first bytes were already read (to sniff the format) and are given back first."""

    def __init__(self, head: bytes, stream):
        self.head = head
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size is None or size < 0:
                data, self.head = self.head + self.stream.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.stream.read(size)


def read_exact(stream, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of stream."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        data = stream.read(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def drain(stream) -> int:
    """Read ``stream`` to its end, throwing the bytes away (so a checksum at its end is checked); return the count."""
    total = 0
    while chunk := stream.read(COPY_BUFFER):
        total += len(chunk)
    return total


def copy_stream(stream, out) -> int:
    """Copy ``stream`` to its end into the writable ``out``; return the number of bytes copied."""
    total = 0
    while chunk := stream.read(COPY_BUFFER):
        out.write(chunk)
        total += len(chunk)
    return total


def sha256_of(stream) -> str:
    """Return the SHA-256 of what is left in ``stream``."""
    reader = HashingReader(stream)
    drain(reader)
    return reader.digest.hexdigest()


def write_atomically(stream, path: Path, partial_suffix: str = ".partial") -> int:
    """Copy ``stream`` into ``path`` through a temporary file beside it (fsynced, then renamed); return the size.

    A failure leaves no partial file behind and ``path`` untouched.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=partial_suffix, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            size = copy_stream(stream, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size
