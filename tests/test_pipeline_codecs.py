"""The codecs: level checks, streaming round trips, bounded output, early ends."""

import random

import pytest

from covet.errors import DamagedError, UsageError
from covet.pipeline import codecs

COMPRESSING = [codec for codec in codecs.CODECS if codec != "none"]


def compress(codec, data, piece=100_000):
    compressor = codecs.compressor(codec, None)
    out = [compressor.compress(data[i:i + piece]) for i in range(0, len(data), piece)]
    return b"".join(out) + compressor.flush()


def drain(decompressor, data):
    """Feed ``data`` in one call and drain; return the outputs of each call."""
    outputs = [decompressor.decompress(data)]
    while not decompressor.needs_input:
        outputs.append(decompressor.decompress())
    return outputs


@pytest.mark.parametrize("codec,level", [("zstd", None), ("zstd", 1), ("zstd", 22), ("gzip", 9),
                                         ("bzip2", 1), ("lz4", 16), ("none", None), ("none", 0)])
def test_valid_levels_are_accepted(codec, level):
    expected = codecs.DEFAULT_LEVEL[codec] if level is None else level
    assert codecs.validate_level(codec, level) == expected


@pytest.mark.parametrize("codec,level,message", [
    ("zstd", 23, r"use 1\.\.22"), ("zstd", 0, r"use 1\.\.22"), ("gzip", 10, r"use 1\.\.9"),
    ("bzip2", 0, r"use 1\.\.9"), ("lz4", 17, r"use 0\.\.16"), ("none", 3, "takes no compression level"),
    ("zstd", "3", "out of range"), ("zstd", True, "out of range"),
])
def test_out_of_range_levels_are_refused_with_the_valid_range(codec, level, message):
    with pytest.raises(UsageError, match=message):
        codecs.validate_level(codec, level)


def test_unknown_codec_is_refused_naming_the_choices():
    with pytest.raises(UsageError, match="use one of none, gzip, bzip2, zstd, lz4"):
        codecs.compressor("xz", None)


@pytest.mark.parametrize("codec", codecs.CODECS)
@pytest.mark.parametrize("split", [1, 13, 4096, 1 << 22])
def test_streams_round_trip_whatever_the_input_split(codec, split):
    rnd = random.Random(split)
    data = b"".join(rnd.choice([b"alpha ", b"beta\n", rnd.randbytes(20)]) for _ in range(3000))
    if split == 1:
        data = data[:2000]
    stored = compress(codec, data)
    decompressor = codecs.decompressor(codec)
    out = []
    for i in range(0, len(stored), split):
        out += drain(decompressor, stored[i:i + split])
    decompressor.finish()
    assert b"".join(out) == data


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_a_decompression_bomb_never_expands_past_max_output_in_one_call(codec):
    size = 64 << 20 if codec != "bzip2" else 8 << 20
    stored = compress(codec, bytes(size), piece=1 << 20)
    outputs = drain(codecs.decompressor(codec), stored)
    assert max(len(out) for out in outputs) <= codecs.MAX_OUTPUT
    assert sum(len(out) for out in outputs) == size


@pytest.mark.parametrize("codec", COMPRESSING)
def test_a_stream_that_ends_early_is_damaged(codec):
    stored = compress(codec, random.Random(2).randbytes(5000))
    decompressor = codecs.decompressor(codec)
    drain(decompressor, stored[:-5])
    with pytest.raises(DamagedError, match="ended early"):
        decompressor.finish()


@pytest.mark.parametrize("codec", COMPRESSING)
def test_data_after_the_end_of_the_stream_is_damaged(codec):
    stored = compress(codec, random.Random(3).randbytes(5000))
    decompressor = codecs.decompressor(codec)
    with pytest.raises(DamagedError, match="data follows the end"):
        drain(decompressor, stored)
        drain(decompressor, b"more")


@pytest.mark.parametrize("codec", COMPRESSING)
def test_garbage_is_damaged(codec):
    with pytest.raises(DamagedError, match=codec):
        drain(codecs.decompressor(codec), b"\x28\xb5\x2f\xfd" + bytes(range(200)) * 5)


@pytest.mark.parametrize("threads", [1, 2])
def test_zstd_on_worker_threads_writes_one_standard_frame(threads):
    import zstandard

    rnd = random.Random(threads)
    words = [rnd.randbytes(rnd.randint(2, 9)).hex().encode() for _ in range(500)]
    data = b" ".join(rnd.choices(words, k=1_500_000))  # several of libzstd's jobs
    compressor = codecs.compressor("zstd", 3, threads=threads)
    stored = b"".join(compressor.compress(data[i:i + (1 << 20)]) for i in range(0, len(data), 1 << 20))
    stored += compressor.flush()
    reader = zstandard.ZstdDecompressor().decompressobj()
    assert reader.decompress(stored) == data
    assert reader.eof and not reader.unused_data
    assert b"".join(drain(codecs.decompressor("zstd"), stored)) == data
