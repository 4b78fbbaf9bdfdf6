"""The on-storage container's streams: plaintext in, sealed frames out, and back.

``EncodingStream`` turns a plaintext stream into stored bytes (compress, cut
into frames, seal each frame, hash everything) as its reader pulls;
``DecodingStream`` turns stored bytes back into plaintext, authenticating
each frame before any of its bytes are used. Both are readable file-likes
that hold only a few chunks at a time. The byte layout (header, frames) is
in covet.pipeline.container_format and docs/container.md.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import os
import queue
import threading
from typing import BinaryIO, Callable

from cryptography.exceptions import InvalidTag

from covet.errors import DamagedError, MissingKeyError, UsageError, WrongKeyError
from covet.pipeline import codecs, crypto
from covet.pipeline.container_format import FLAG_FINAL, FRAME_HEAD, Header, associated_data, read_header_parts
from covet.streams import read_exact

# Source bytes read per step, and how many steps may be in flight at once:
# enough to keep the compressor thread busy while the reader hashes and writes.
_READ_SIZE = 1 << 20
_IN_FLIGHT = 4


class _Compressing:
    """A thread that compresses submitted chunks in order, one result per chunk."""

    _STOP = object()

    def __init__(self, compressor: codecs.Compressor) -> None:
        self._compressor = compressor
        self._in: queue.SimpleQueue = queue.SimpleQueue()
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="covet-compress", daemon=True)
        self._thread.start()

    def submit(self, chunk: bytes | None) -> None:
        """Queue ``chunk`` for compression; None ends the stream."""
        self._in.put(chunk)

    def result(self) -> tuple[bytes, bool]:
        """Return the next (compressed bytes, is last); re-raise the thread's exception."""
        item = self._out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        """Stop the thread after at most the chunk it is working on."""
        self._stopping.set()
        self._in.put(self._STOP)
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                chunk = self._in.get()
                if self._stopping.is_set():
                    return
                if chunk is None:
                    self._out.put((self._compressor.flush(), True))
                    return
                self._out.put((self._compressor.compress(chunk), False))
        except BaseException as exc:  # handed to the reader, which re-raises it
            self._out.put(exc)


class _Output:
    """Bytes ready for the reader, kept as a queue of views so nothing is copied twice."""

    def __init__(self) -> None:
        self._pieces: collections.deque[memoryview] = collections.deque()
        self.size = 0

    def append(self, piece: bytes) -> None:
        if piece:
            self._pieces.append(memoryview(piece))
            self.size += len(piece)

    def take(self, size: int) -> bytes:
        parts = []
        while size > 0 and self._pieces:
            piece = self._pieces[0]
            if len(piece) <= size:
                parts.append(self._pieces.popleft())
            else:
                parts.append(piece[:size])
                self._pieces[0] = piece[size:]
            size -= len(parts[-1])
            self.size -= len(parts[-1])
        return b"".join(parts)

    def clear(self) -> None:
        self._pieces.clear()
        self.size = 0


class _Reader(io.RawIOBase):
    """A readable stream whose ``read(n)`` returns exactly n bytes until the end."""

    def __init__(self) -> None:
        super().__init__()
        self._output = _Output()
        self._finished = False
        self._failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed stream")
        if self._failure is not None:
            raise self._failure
        if size is None or size < 0:
            return self.readall()
        while self._output.size < size and not self._finished:
            try:
                self._step()
            except BaseException as exc:
                self._failure = exc
                self._failed()
                raise
        return self._output.take(size)

    def readall(self) -> bytes:
        parts = []
        while data := self.read(_READ_SIZE):
            parts.append(data)
        return b"".join(parts)

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._failed()
            self._output.clear()
        super().close()

    def _step(self) -> None:
        raise NotImplementedError

    def _failed(self) -> None:
        """Release what a stream that cannot go on holds."""


class EncodingStream(_Reader):
    """Read the stored bytes (header, then frames) of ``source`` compressed and sealed.

    ``source.read`` is only ever called on the thread that calls ``read()``,
    so an exception it raises (a cancellation, a failed dump) comes out of
    ``read()`` unchanged, and a source wrapper needs no locking. Compression
    runs on one background thread, a few chunks ahead, that ``close()``
    stops. ``read(n)`` returns exactly n bytes until the end. After the end,
    ``sha256`` is the hex SHA-256 of all stored bytes; ``source_bytes``,
    ``stored_bytes`` and ``frames`` count as the stream is read. Raise
    UsageError for an inconsistent header or key. ``source`` is not closed.
    """

    def __init__(self, source: BinaryIO, header: Header, data_key: bytes | None) -> None:
        super().__init__()
        self._compressing: _Compressing | None = None
        problem = header.problem()
        if problem:
            raise UsageError(f"cannot write this container: {problem}")
        if (data_key is None) != (header.cipher == "none"):
            raise UsageError(f"cipher {header.cipher} and the data key given do not go together")
        if data_key is not None and crypto.data_key_fingerprint(data_key) != header.data_key_id:
            raise UsageError(f"the data key given is not data key {header.data_key_id} named in the header")
        self.header = header
        self.source_bytes = 0
        self.stored_bytes = 0
        self.frames = 0
        self.sha256: str | None = None
        self._source = source
        self._source_done = False
        self._source_eof = False
        self._cipher = crypto.frame_cipher(header.cipher, data_key, bytes.fromhex(header.stream_id))
        raw = header.to_bytes()
        self._header_digest = hashlib.sha256(raw).digest()
        self._hash = hashlib.sha256()
        self._pending = bytearray()  # compressed bytes not yet sealed into a frame
        self._in_flight = 0
        self._emit(raw + self._cipher.header_tag(raw))

    def _step(self) -> None:
        if self._compressing is None:
            self._compressing = _Compressing(codecs.compressor(self.header.codec, self.header.level))
        while self._in_flight < _IN_FLIGHT and not self._source_done:
            chunk = self._read_source()
            self._source_done = not chunk
            self._compressing.submit(chunk or None)
            self._in_flight += 1
        data, last = self._compressing.result()
        self._in_flight -= 1
        self._frame(data, last)

    def _read_source(self) -> bytes:
        """Read up to _READ_SIZE bytes, joining short reads (pipes) into one chunk."""
        parts: list[bytes] = []
        got = 0
        while got < _READ_SIZE and not self._source_eof:
            data = self._source.read(_READ_SIZE - got)
            if not data:
                self._source_eof = True
                break
            parts.append(data)
            got += len(data)
        self.source_bytes += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _frame(self, data: bytes, last: bool) -> None:
        pending = self._pending
        pending += data
        size = self.header.chunk_size
        # Keep at least one byte back so the final frame is never empty,
        # unless the whole compressed stream is.
        full = max(0, len(pending) - 1) // size
        for index in range(full):
            self._seal(bytes(pending[index * size : (index + 1) * size]), 0)
        del pending[: full * size]
        if last:
            self._seal(bytes(pending), FLAG_FINAL)
            pending.clear()
            self.sha256 = self._hash.hexdigest()
            self._finished = True
            self._compressing.stop()
            self._compressing = None

    def _seal(self, payload: bytes, flags: int) -> None:
        nonce = os.urandom(self._cipher.nonce_size)
        body = self._cipher.seal(nonce, payload, associated_data(self._header_digest, self.frames, flags))
        self._emit(FRAME_HEAD.pack(flags, len(body)) + nonce)
        self._emit(body)
        self.frames += 1

    def _emit(self, piece: bytes) -> None:
        self._hash.update(piece)
        self.stored_bytes += len(piece)
        self._output.append(piece)

    def _failed(self) -> None:
        if self._compressing is not None:
            self._compressing.stop()
            self._compressing = None
        self._pending = bytearray()


class DecodingStream(_Reader):
    """Read the plaintext of the container in ``stored``, authenticating every frame first.

    The header is read and checked on construction: ``key_lookup(header)``
    returns the data key (None for an unencrypted container) or raises; the
    header it gets is authenticated only afterwards, with that key.
    Raise WrongKeyError if the key is not the one the header names,
    MissingKeyError if an encrypted container gets no key, and DamagedError,
    naming the frame, for any alteration: bit flips, reordered, dropped or
    appended frames, truncation, an edited header. No byte of a frame is
    returned before that frame is authenticated. After the end, ``sha256`` is
    the hex SHA-256 of all stored bytes read.
    """

    def __init__(self, stored: BinaryIO, key_lookup: Callable[[Header], bytes | None]) -> None:
        super().__init__()
        header, raw, tag = read_header_parts(stored)
        self.header = header
        self._cipher = self._header_cipher(header, raw, tag, key_lookup(header))
        self.source_bytes = 0
        self.stored_bytes = len(raw) + len(tag)
        self.frames = 0
        self.sha256: str | None = None
        self._stored = stored
        self._header_digest = hashlib.sha256(raw).digest()
        self._hash = hashlib.sha256(raw + tag)
        self._decompressor = codecs.decompressor(header.codec)
        self._final_seen = False

    @staticmethod
    def _header_cipher(
        header: Header, raw: bytes, tag: bytes, data_key: bytes | None
    ) -> crypto.FrameCipher:
        stream_id = bytes.fromhex(header.stream_id)
        backup = f"backup {header.backup_id}" if header.backup_id else "this backup"
        if header.cipher == "none":
            if data_key is not None:
                raise DamagedError(
                    f"the header of {backup} says it is not encrypted, but a data key was "
                    "expected: the header was altered (refusing a downgrade)"
                )
            cipher = crypto.frame_cipher("none", None, stream_id)
        else:
            if data_key is None:
                raise MissingKeyError(
                    f"{backup} is encrypted with data key {header.data_key_id}; "
                    "give the passphrase or key file that unwraps it"
                )
            if len(data_key) != crypto.KEY_SIZE:
                raise WrongKeyError(f"a data key is {crypto.KEY_SIZE} bytes, not {len(data_key)}")
            cipher = crypto.frame_cipher(header.cipher, data_key, stream_id)
        if hmac.compare_digest(tag, cipher.header_tag(raw)):
            return cipher
        if data_key is not None and crypto.data_key_fingerprint(data_key) != header.data_key_id:
            raise WrongKeyError(
                f"the data key given is not data key {header.data_key_id} that {backup} "
                "was written with (wrong key record, or the header's key id was altered)"
            )
        raise DamagedError(f"header was altered: {backup}'s header does not match its tag")

    def _step(self) -> None:
        decompressor = self._decompressor
        if not decompressor.needs_input:
            self._plaintext(self._check(decompressor.decompress))
        elif self._final_seen:
            self._check(decompressor.finish)
            self.sha256 = self._hash.hexdigest()
            self._finished = True
        else:
            payload = self._next_frame()
            self._plaintext(self._check(decompressor.decompress, payload))

    def _plaintext(self, data: bytes) -> None:
        self.source_bytes += len(data)
        self._output.append(data)

    def _check(self, step: Callable, *args):
        try:
            return step(*args)
        except DamagedError as exc:
            raise DamagedError(f"{exc} (after frame {self.frames - 1})") from exc

    def _next_frame(self) -> bytes:
        index = self.frames
        head = read_exact(self._stored, FRAME_HEAD.size)
        if not head:
            if index == 0:
                raise DamagedError("stream truncated after the header (no frames)")
            raise DamagedError(f"stream truncated after frame {index - 1} (no final frame)")
        if len(head) < FRAME_HEAD.size:
            raise DamagedError(f"stream truncated inside frame {index}")
        flags, length = FRAME_HEAD.unpack(head)
        if flags & ~FLAG_FINAL:
            raise DamagedError(f"frame {index} has unknown flags 0x{flags:02x} (damaged frame header)")
        if length > self.header.chunk_size + self._cipher.max_overhead:
            raise DamagedError(
                f"frame {index} claims {length} bytes, more than a frame holds (damaged frame header)"
            )
        nonce_size = self._cipher.nonce_size
        rest = read_exact(self._stored, nonce_size + length)
        if len(rest) < nonce_size + length:
            raise DamagedError(f"stream truncated inside frame {index}")
        nonce, body = rest[:nonce_size], rest[nonce_size:]
        try:
            payload = self._cipher.open(nonce, body, associated_data(self._header_digest, index, flags))
        except InvalidTag:
            check = "its checksum" if self.header.cipher == "none" else "authentication"
            raise DamagedError(
                f"frame {index} failed {check} (bit flip, or frames reordered, dropped or spliced)"
            ) from None
        self._hash.update(head)
        self._hash.update(rest)
        self.stored_bytes += len(head) + len(rest)
        self.frames += 1
        if flags & FLAG_FINAL:
            self._final_seen = True
            if read_exact(self._stored, 1):
                raise DamagedError(f"data after the final frame (frame {index})")
        return payload


def encode_bytes(data: bytes, header: Header, data_key: bytes | None) -> bytes:
    """Return the stored bytes of ``data``: a convenience for tests and small objects."""
    with EncodingStream(io.BytesIO(data), header, data_key) as stream:
        return stream.read()


def decode_bytes(stored: bytes, data_key: bytes | None) -> bytes:
    """Return the plaintext of the container ``stored`` using ``data_key``."""
    with DecodingStream(io.BytesIO(stored), lambda header: data_key) as stream:
        return stream.read()
