"""Round trips through the container for every codec x cipher, and the streams' contracts."""

import dataclasses
import hashlib
import io
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from covet.errors import DamagedError, UsageError
from covet.pipeline import codecs, crypto
from covet.pipeline.container import DecodingStream, EncodingStream, decode_bytes, encode_bytes
from covet.pipeline.container_format import Header, read_header

COMBOS = [(codec, cipher) for codec in codecs.CODECS for cipher in crypto.CIPHERS]


def make_header(codec="zstd", cipher="aes-256-gcm", chunk_size=256, **fields):
    data_key_id, data_key = crypto.new_data_key() if cipher != "none" else (None, None)
    header = Header(codec=codec, level=codecs.DEFAULT_LEVEL[codec], cipher=cipher,
                    data_key_id=data_key_id, chunk_size=chunk_size, backup_id="b-1", **fields)
    return header, data_key


def read_all(stream, sizes):
    """Read ``stream`` to its end with read sizes cycling through ``sizes``."""
    parts = []
    for size in _cycle(sizes):
        data = stream.read(size)
        if not data:
            return b"".join(parts)
        parts.append(data)


def _cycle(sizes):
    while True:
        yield from sizes


plaintexts = st.one_of(
    st.binary(max_size=6000),
    # Compressible text: the compressed stream is much shorter than the plaintext.
    st.builds(lambda seed, lines: "".join(
        f"{i}\tcustomer {random.Random(seed + i).randrange(500)}\t2024-01-{i % 28 + 1:02d}\n"
        for i in range(lines)).encode(), st.integers(0, 1000), st.integers(0, 400)),
)
read_sizes = st.lists(st.sampled_from([1, 2, 7, 64, 255, 256, 257, 4096, 1 << 20]), min_size=1, max_size=4)


@pytest.mark.parametrize("codec,cipher", COMBOS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=plaintexts, chunk_size=st.integers(64, 4096), encode_reads=read_sizes, decode_reads=read_sizes)
def test_every_codec_and_cipher_round_trips(codec, cipher, data, chunk_size, encode_reads, decode_reads):
    header, data_key = make_header(codec, cipher, chunk_size)
    encoder = EncodingStream(io.BytesIO(data), header, data_key)
    stored = read_all(encoder, encode_reads)
    decoder = DecodingStream(io.BytesIO(stored), lambda h: data_key)
    assert read_all(decoder, decode_reads) == data
    assert decoder.header == header
    assert encoder.source_bytes == decoder.source_bytes == len(data)
    assert encoder.stored_bytes == decoder.stored_bytes == len(stored)
    assert encoder.sha256 == decoder.sha256 == hashlib.sha256(stored).hexdigest()
    assert encoder.frames == decoder.frames


@pytest.mark.parametrize("cipher", crypto.CIPHERS)
@pytest.mark.parametrize("frames", [1, 2, 5])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_sizes_around_frame_boundaries_round_trip(cipher, frames, offset):
    # With codec none a frame holds exactly chunk_size bytes of plaintext.
    data = random.Random(frames).randbytes(max(0, frames * 64 + offset))
    header, data_key = make_header("none", cipher, chunk_size=64)
    stored = encode_bytes(data, header, data_key)
    assert decode_bytes(stored, data_key) == data


@pytest.mark.parametrize("codec,cipher", COMBOS)
def test_empty_and_one_byte_streams_round_trip(codec, cipher):
    for data in (b"", b"\x00"):
        header, data_key = make_header(codec, cipher, chunk_size=64)
        stored = encode_bytes(data, header, data_key)
        assert decode_bytes(stored, data_key) == data


def test_frames_are_cut_at_chunk_size_of_compressed_bytes():
    data = random.Random(1).randbytes(10_000)
    header, data_key = make_header("none", "aes-256-gcm", chunk_size=1000)
    stream = EncodingStream(io.BytesIO(data), header, data_key)
    stream.read()
    assert stream.frames == 10


def test_stream_larger_than_a_read_chunk_round_trips_with_default_chunk_size():
    data = b"".join(f"row {i} {i * 7919 % 100003}\n".encode() for i in range(300_000))
    header, data_key = make_header("zstd", "aes-256-gcm", chunk_size=1 << 20)
    stored = encode_bytes(data, header, data_key)
    assert len(data) > 4 << 20
    assert decode_bytes(stored, data_key) == data


def test_read_header_returns_the_written_header():
    header, data_key = make_header("lz4", "chacha20-poly1305")
    stored = encode_bytes(b"payload", header, data_key)
    assert read_header(io.BytesIO(stored)) == header


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04" + bytes(40), b"\x89CVB\r\n\x1a\n\x02" + bytes(40)])
def test_read_header_refuses_what_is_not_a_container(garbage):
    with pytest.raises(DamagedError, match="container"):
        read_header(io.BytesIO(garbage))


def test_readinto_fills_the_buffer():
    header, data_key = make_header("gzip", "aes-256-cbc")
    stored = encode_bytes(b"abc" * 1000, header, data_key)
    decoder = DecodingStream(io.BytesIO(stored), lambda h: data_key)
    buffer = bytearray(1000)
    assert decoder.readinto(buffer) == 1000
    assert bytes(buffer) == b"abc" * 333 + b"a"


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"level": 99}, "out of range"),
        ({"codec": "xz"}, "unknown codec"),
        ({"cipher": "rot13"}, "unknown cipher"),
        ({"chunk_size": 0}, "chunk size"),
    ],
)
def test_encoding_refuses_an_inconsistent_header(fields, message):
    header, data_key = make_header("zstd", "aes-256-gcm")
    bad = dataclasses.replace(header, **fields)
    with pytest.raises(UsageError, match=message):
        EncodingStream(io.BytesIO(b""), bad, data_key)


def test_encoding_refuses_a_data_key_the_header_does_not_name():
    header, _ = make_header("zstd", "aes-256-gcm")
    _, other_key = crypto.new_data_key()
    with pytest.raises(UsageError, match="not data key"):
        EncodingStream(io.BytesIO(b""), header, other_key)


def test_encoding_refuses_a_key_for_an_unencrypted_header():
    header, _ = make_header("zstd", "none")
    with pytest.raises(UsageError, match="do not go together"):
        EncodingStream(io.BytesIO(b""), header, crypto.new_data_key()[1])


def compress_threads(before=()):
    """Return the compressor threads alive now that were not in ``before``."""
    return [t for t in threading.enumerate() if t.name == "covet-compress" and t not in before]


class FailingSource:
    """Return some data, then raise ``error`` (a cancellation, a failed dump)."""

    def __init__(self, error, good_reads=3):
        self.error = error
        self.good_reads = good_reads

    def read(self, size=-1):
        if self.good_reads == 0:
            raise self.error
        self.good_reads -= 1
        return random.randbytes(min(size, 100_000))


def test_a_source_exception_comes_out_of_read_unchanged_and_stops_the_thread():
    class Cancelled(Exception):
        pass

    error = Cancelled("job cancelled")
    header, data_key = make_header("zstd", "aes-256-gcm", chunk_size=1 << 20)
    before = compress_threads()
    stream = EncodingStream(FailingSource(error), header, data_key)
    with pytest.raises(Cancelled) as raised:
        while stream.read(1 << 20):
            pass
    assert raised.value is error
    assert not compress_threads(before)
    with pytest.raises(Cancelled):
        stream.read(10)
    stream.close()


class EndlessSource:
    def read(self, size=-1):
        return random.randbytes(size)


def test_close_stops_the_compressor_thread_promptly():
    header, data_key = make_header("bzip2", "aes-256-gcm", chunk_size=1 << 20)
    before = compress_threads()
    stream = EncodingStream(EndlessSource(), header, data_key)
    stream.read(2 << 20)
    assert compress_threads(before)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 2
    assert not compress_threads(before)
    with pytest.raises(ValueError):
        stream.read(1)


def test_source_is_read_on_the_callers_thread():
    threads = set()

    class Recording(io.BytesIO):
        def read(self, size=-1):
            threads.add(threading.get_ident())
            return super().read(size)

    header, data_key = make_header("zstd", "aes-256-gcm")
    EncodingStream(Recording(b"x" * 3_000_000), header, data_key).read()
    assert threads == {threading.get_ident()}
