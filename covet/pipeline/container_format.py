"""The container's byte layout: the self-describing header, its parsing, and the framing of each frame.

A container is the header (magic, version, canonical JSON, a tag), then
frames of (flags, body length, nonce, sealed body); each frame's associated
data binds it to the header and to its position. docs/container.md has the
layout byte by byte; covet.pipeline.container reads and writes the streams.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from typing import BinaryIO

from covet.errors import DamagedError
from covet.pipeline import codecs, crypto
from covet.streams import read_exact

MAGIC = b"\x89CVB\r\n\x1a\n"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
MAX_HEADER_JSON = 64 << 10
TAG_SIZE = 32
FLAG_FINAL = 0x01

PREFIX = struct.Struct(">8sBI")  # magic, version, length of the header JSON
FRAME_HEAD = struct.Struct(">BI")  # flags, length of the sealed body
_POSITION = struct.Struct(">QB")  # frame index, flags: the per-frame associated data


def _new_stream_id() -> str:
    return os.urandom(16).hex()


@dataclasses.dataclass(frozen=True)
class Header:
    """What a container says about itself; ``stream_id`` is random per container."""

    codec: str
    level: int
    cipher: str
    data_key_id: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    backup_id: str = ""
    stream_id: str = dataclasses.field(default_factory=_new_stream_id)

    def problem(self) -> str | None:
        """Return what is wrong with the fields, or None if they are consistent."""
        if self.codec not in codecs.CODECS:
            return f"unknown codec {self.codec!r}"
        low, high = codecs.LEVEL_RANGE[self.codec]
        if not _is_int(self.level) or not low <= self.level <= high:
            return f"compression level {self.level!r} is out of range for {self.codec} ({low}..{high})"
        if self.cipher not in crypto.CIPHERS:
            return f"unknown cipher {self.cipher!r}"
        if (self.cipher == "none") != (self.data_key_id is None):
            return "a data key id belongs in the header exactly when the cipher is not none"
        if self.data_key_id is not None and not _is_hex(self.data_key_id, 32):
            return f"data key id {self.data_key_id!r} is not 32 hex digits"
        if not _is_int(self.chunk_size) or not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            return f"chunk size {self.chunk_size!r} is out of range (1..{MAX_CHUNK_SIZE})"
        if not isinstance(self.backup_id, str):
            return "backup id is not a string"
        if not _is_hex(self.stream_id, 32):
            return f"stream id {self.stream_id!r} is not 32 hex digits"
        return None

    def to_bytes(self) -> bytes:
        """Return the serialised header: magic, version, JSON length and canonical JSON."""
        body = json.dumps(
            dataclasses.asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")
        return PREFIX.pack(MAGIC, VERSION, len(body)) + body


_FIELDS = sorted(field.name for field in dataclasses.fields(Header))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hex(value: object, length: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) == length
        and all(c in "0123456789abcdef" for c in value)
    )


def read_header_parts(stream: BinaryIO) -> tuple[Header, bytes, bytes]:
    """Read and check the header; return it with its raw bytes (what the tag covers) and its tag."""
    prefix = read_exact(stream, PREFIX.size)
    if len(prefix) < PREFIX.size:
        raise DamagedError("not a Covet Backup container: too short to hold a header")
    magic, version, length = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise DamagedError("not a Covet Backup container: bad magic bytes")
    if version != VERSION:
        raise DamagedError(f"container version {version} is not supported (this build reads {VERSION})")
    if length > MAX_HEADER_JSON:
        raise DamagedError(f"header claims {length} bytes of JSON; the header is damaged")
    body = read_exact(stream, length)
    tag = read_exact(stream, TAG_SIZE)
    if len(body) < length or len(tag) < TAG_SIZE:
        raise DamagedError("stream truncated inside the header")
    try:
        fields = json.loads(body.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DamagedError("header is not valid JSON; the header is damaged") from exc
    if not isinstance(fields, dict) or sorted(fields) != _FIELDS:
        raise DamagedError("header does not have the expected fields; the header is damaged")
    header = Header(**fields)
    problem = header.problem()
    if problem:
        raise DamagedError(f"header is damaged: {problem}")
    return header, prefix + body, tag


def read_header(stream: BinaryIO) -> Header:
    """Read the header (and its tag) from the start of ``stream``; raise DamagedError if it is not one."""
    return read_header_parts(stream)[0]


def associated_data(header_digest: bytes, index: int, flags: int) -> bytes:
    """Return what frame ``index`` is sealed with: it ties the frame to its header, position and flags."""
    return header_digest + _POSITION.pack(index, flags)
