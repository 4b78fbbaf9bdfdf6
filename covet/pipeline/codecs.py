"""Streaming compressors and bounded decompressors for the container.

Every codec is used the same way: ``compressor(codec, level)`` returns an
object whose ``compress(data)`` returns whatever output is ready and whose
``flush()`` ends the stream; ``decompressor(codec)`` returns an object whose
``decompress(data)`` returns at most ``MAX_OUTPUT`` bytes per call. When
``needs_input`` is false, more output is pending: call ``decompress(b"")``
again before feeding more data. ``finish()`` raises DamagedError if the
compressed stream ended early. So a small, hostile input (a decompression
bomb) never expands by more than ``MAX_OUTPUT`` bytes in one call.

zstd at its fast levels compresses on libzstd's own worker threads (one per
core) and still writes one standard zstd frame.
"""

from __future__ import annotations

import bz2
import os
import struct
import zlib
from typing import Protocol

import lz4.frame
import zstandard

from covet.errors import DamagedError, UsageError
from covet.pipeline import CODECS

DEFAULT_LEVEL = {"none": 0, "gzip": 6, "bzip2": 9, "zstd": 3, "lz4": 0}
# Inclusive ranges each library accepts; lz4 levels 3+ select its HC mode.
LEVEL_RANGE = {
    "none": (0, 0),
    "gzip": (1, 9),
    "bzip2": (1, 9),
    "zstd": (1, 22),
    "lz4": (0, 16),
}
MAX_OUTPUT = 1 << 20


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# zstd compresses on this many libzstd worker threads (1: on the calling
# thread), capped because every worker holds its own match tables.
ZSTD_THREADS = min(_usable_cores(), 8)
# Workers only at the fast levels: above 9 each worker's match tables take
# tens to hundreds of MiB, so those levels stay on one thread.
ZSTD_THREADED_MAX_LEVEL = 9
# Input libzstd cuts into one worker's job. Its default at level 3 is 8 MiB,
# which buffers ~75 MiB with two workers; 2 MiB buffers under 20 MiB with the
# same speed and ratio (measured on a 630 MiB pg_dump).
ZSTD_JOB_SIZE = 2 << 20


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    needs_input: bool

    def decompress(self, data: bytes = b"") -> bytes: ...

    def finish(self) -> None: ...


def check_codec(codec: str) -> str:
    """Return ``codec`` if it is known; raise UsageError naming the choices."""
    if codec not in CODECS:
        raise UsageError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    return codec


def validate_level(codec: str, level: int | None) -> int:
    """Return the level to use (the codec's default for None); raise UsageError if out of range."""
    check_codec(codec)
    if level is None:
        return DEFAULT_LEVEL[codec]
    low, high = LEVEL_RANGE[codec]
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        if low == high:
            raise UsageError(f"codec {codec} takes no compression level (got {level!r})")
        raise UsageError(
            f"compression level {level!r} is out of range for {codec}; use {low}..{high}"
        )
    return level


def compressor(codec: str, level: int | None, threads: int | None = None) -> Compressor:
    """Return a streaming compressor for ``codec`` at ``level`` (None: the default).

    ``threads`` (zstd only) is how many libzstd workers compress; None means
    ZSTD_THREADS up to level ZSTD_THREADED_MAX_LEVEL and one above it.
    """
    level = validate_level(codec, level)
    if codec == "none":
        return _Identity()
    if codec == "gzip":
        return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if codec == "bzip2":
        return bz2.BZ2Compressor(level)
    if codec == "zstd":
        if threads is None:
            threads = ZSTD_THREADS if level <= ZSTD_THREADED_MAX_LEVEL else 1
        return _Zstd(level, threads)
    return _Lz4(level)


def decompressor(codec: str) -> Decompressor:
    """Return a bounded streaming decompressor for ``codec``."""
    check_codec(codec)
    if codec == "none":
        return _PassThrough()
    if codec == "gzip":
        return _ZlibDecompressor()
    if codec == "zstd":
        return _ZstdDecompressor()
    return _LibraryDecompressor(codec)


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self, level: int, threads: int) -> None:
        if threads > 1:
            params = zstandard.ZstdCompressionParameters.from_level(level, threads=threads, job_size=ZSTD_JOB_SIZE)
            self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
        else:
            self._obj = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class _Lz4:
    def __init__(self, level: int) -> None:
        self._obj = lz4.frame.LZ4FrameCompressor(compression_level=level)
        self._started = False

    def compress(self, data: bytes) -> bytes:
        if self._started:
            return self._obj.compress(data)
        self._started = True
        return self._obj.begin() + self._obj.compress(data)

    def flush(self) -> bytes:
        return self.compress(b"") + self._obj.flush()


def _damaged(codec: str, exc: Exception) -> DamagedError:
    return DamagedError(f"the {codec} stream inside the container is invalid: {exc}")


def _trailing(codec: str) -> DamagedError:
    return DamagedError(f"data follows the end of the {codec} stream inside the container")


class _PassThrough:
    def __init__(self) -> None:
        self._pending = memoryview(b"")

    @property
    def needs_input(self) -> bool:
        return not self._pending

    def decompress(self, data: bytes = b"") -> bytes:
        if data:
            self._pending = memoryview(bytes(self._pending) + data if self._pending else data)
        out, self._pending = self._pending[:MAX_OUTPUT], self._pending[MAX_OUTPUT:]
        return bytes(out)

    def finish(self) -> None:
        return None


class _ZlibDecompressor:
    def __init__(self) -> None:
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.needs_input = True

    def decompress(self, data: bytes = b"") -> bytes:
        if self._obj.eof:
            if data:
                raise _trailing("gzip")
            return b""
        try:
            out = self._obj.decompress(self._obj.unconsumed_tail + data, MAX_OUTPUT)
        except zlib.error as exc:
            raise _damaged("gzip", exc) from exc
        if self._obj.unused_data:
            raise _trailing("gzip")
        # A full output buffer may leave output inside zlib even with no input left.
        self.needs_input = self._obj.eof or (
            not self._obj.unconsumed_tail and len(out) < MAX_OUTPUT
        )
        return out

    def finish(self) -> None:
        if not self._obj.eof:
            raise DamagedError("the gzip stream inside the container ended early")


class _LibraryDecompressor:
    """bzip2 and lz4: both libraries take ``max_length`` and report ``needs_input``."""

    def __init__(self, codec: str) -> None:
        self._codec = codec
        if codec == "bzip2":
            self._obj = bz2.BZ2Decompressor()
        else:
            self._obj = lz4.frame.LZ4FrameDecompressor()

    @property
    def needs_input(self) -> bool:
        return self._obj.eof or self._obj.needs_input

    def decompress(self, data: bytes = b"") -> bytes:
        if self._obj.eof:
            if data:
                raise _trailing(self._codec)
            return b""
        try:
            out = self._obj.decompress(data, max_length=MAX_OUTPUT)
        except (OSError, RuntimeError, ValueError) as exc:
            raise _damaged(self._codec, exc) from exc
        if self._obj.eof and self._obj.unused_data:
            raise _trailing(self._codec)
        return out

    def finish(self) -> None:
        if not self._obj.eof:
            raise DamagedError(f"the {self._codec} stream inside the container ended early")


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_MAX_BLOCK = 128 * 1024  # RFC 8878, Block_Maximum_Size
_DICT_ID_SIZE = (0, 1, 2, 4)
_CONTENT_SIZE_SIZE = (0, 2, 4, 8)


class _ZstdDecompressor:
    """Feed python-zstandard whole blocks, at most MAX_OUTPUT bytes' worth per call.

    python-zstandard's streaming objects take no output limit, so this walks
    the frame's block headers (RFC 8878) to know how much output each block
    can produce, and only hands over as many blocks as fit in MAX_OUTPUT.
    """

    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._pending = bytearray()
        self._state = "frame header"
        self._checksum = False
        self._done = False

    @property
    def needs_input(self) -> bool:
        return self._done or self._next_unit() is None

    def decompress(self, data: bytes = b"") -> bytes:
        if data:
            if self._done:
                raise _trailing("zstd")
            self._pending += data
        scan = budget = 0
        while budget < MAX_OUTPUT and not self._done:
            unit = self._next_unit(scan)
            if unit is None:
                break
            size, output = unit
            self._advance(self._pending[scan : scan + 5])
            scan += size
            budget += output
        if not scan:
            return b""
        feed = bytes(self._pending[:scan])
        del self._pending[:scan]
        if self._done and self._pending:
            raise _trailing("zstd")
        try:
            return self._obj.decompress(feed)
        except zstandard.ZstdError as exc:
            raise _damaged("zstd", exc) from exc

    def finish(self) -> None:
        if not self._done or self._pending or not self._obj.eof:
            raise DamagedError("the zstd stream inside the container ended early")

    def _next_unit(self, scan: int = 0) -> tuple[int, int] | None:
        """Return (input bytes, most output bytes) of the unit at ``scan``; None if incomplete."""
        pending, available = self._pending, len(self._pending) - scan
        if self._state == "frame header":
            if available < 5:
                return None
            magic, descriptor = struct.unpack_from("<IB", pending, scan)
            if magic != _ZSTD_MAGIC or descriptor & 0x08:
                raise DamagedError("the zstd stream inside the container has a bad frame header")
            single_segment = descriptor >> 5 & 1
            size = (
                5
                + (0 if single_segment else 1)
                + _DICT_ID_SIZE[descriptor & 3]
                + (_CONTENT_SIZE_SIZE[descriptor >> 6] or single_segment)
            )
            return (size, 0) if available >= size else None
        if self._state == "checksum":
            return (4, 0) if available >= 4 else None
        if available < 3:
            return None
        value = pending[scan] | pending[scan + 1] << 8 | pending[scan + 2] << 16
        kind, size = value >> 1 & 3, value >> 3
        if kind == 3 or size > _ZSTD_MAX_BLOCK:
            raise DamagedError("the zstd stream inside the container has a bad block header")
        body = 3 + (1 if kind == 1 else size)
        output = size if kind in (0, 1) else _ZSTD_MAX_BLOCK
        return (body, output) if available >= body else None

    def _advance(self, unit: bytes) -> None:
        if self._state == "frame header":
            self._checksum = bool(unit[4] & 0x04)
            self._state = "block"
        elif self._state == "checksum":
            self._done = True
        elif unit[0] & 1:  # Last_Block
            if self._checksum:
                self._state = "checksum"
            else:
                self._done = True
