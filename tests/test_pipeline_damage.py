"""Every kind of damage is detected, named with its frame, and leaks no plaintext of it."""

import dataclasses
import io
import json
import random
import struct

import pytest

from covet.errors import DamagedError, MissingKeyError, WrongKeyError
from covet.pipeline import codecs, crypto
from covet.pipeline.container import DecodingStream, encode_bytes
from covet.pipeline.container_format import MAGIC, TAG_SIZE, Header

CHUNK = 256
NONCE = {"none": 0, "aes-256-gcm": 12, "chacha20-poly1305": 12, "aes-256-cbc": 16}
CASES = [(codec, cipher) for codec in ("none", "zstd") for cipher in crypto.CIPHERS]
DATA = random.Random(7).randbytes(3000)  # incompressible: about 12 frames with either codec


@dataclasses.dataclass
class Container:
    codec: str
    cipher: str
    header: Header
    key: bytes | None
    stored: bytes

    @property
    def header_end(self):
        return 13 + struct.unpack_from(">I", self.stored, 9)[0] + TAG_SIZE

    @property
    def frames(self):
        """Return the (start, end) offsets of every frame."""
        spans, pos = [], self.header_end
        while pos < len(self.stored):
            end = pos + 5 + NONCE[self.cipher] + struct.unpack_from(">I", self.stored, pos + 1)[0]
            spans.append((pos, end))
            pos = end
        return spans

    def plaintext_before(self, frame):
        """Return how much plaintext frames 0..frame-1 can yield at most."""
        compressor = codecs.compressor(self.codec, None)
        compressed = compressor.compress(DATA) + compressor.flush()
        decompressor = codecs.decompressor(self.codec)
        out = decompressor.decompress(compressed[: frame * CHUNK])
        while not decompressor.needs_input:
            out += decompressor.decompress()
        return len(out)


def make(codec, cipher, data=DATA, key=None, chunk_size=CHUNK):
    if cipher == "none":
        data_key_id, data_key = None, None
    else:
        data_key_id, data_key = key or crypto.new_data_key()
    header = Header(codec=codec, level=codecs.DEFAULT_LEVEL[codec], cipher=cipher,
                    data_key_id=data_key_id, chunk_size=chunk_size, backup_id="b-1")
    return Container(codec, cipher, header, data_key, encode_bytes(data, header, data_key))


def decode(stored, key_lookup, error, match, read_size=100):
    """Decode until ``error`` (matching ``match``) is raised; return what was read before it."""
    got = []
    with pytest.raises(error, match=match):
        decoder = DecodingStream(io.BytesIO(stored), key_lookup)
        while data := decoder.read(read_size):
            got.append(data)
    return b"".join(got)


def check_damaged(container, stored, match, frame=None):
    returned = decode(stored, lambda header: container.key, DamagedError, match)
    assert DATA.startswith(returned)
    if frame is not None:
        assert len(returned) <= container.plaintext_before(frame)


def flip(stored, offset, bit=0):
    damaged = bytearray(stored)
    damaged[offset] ^= 1 << bit
    return bytes(damaged)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_the_intact_container_decodes(codec, cipher):
    container = make(codec, cipher)
    assert len(container.frames) >= 10
    assert DecodingStream(io.BytesIO(container.stored), lambda h: container.key).read() == DATA


PLACES = ["flags final bit", "flags unknown bit", "length low byte", "length high byte", "nonce",
          "first body byte", "last byte"]


@pytest.mark.parametrize("codec,cipher,where", [
    (codec, cipher, where) for codec, cipher in CASES for where in PLACES
    if where != "nonce" or NONCE[cipher]
])
def test_a_flipped_bit_in_a_middle_frame_names_that_frame(codec, cipher, where):
    container = make(codec, cipher)
    start, end = container.frames[5]
    offset, bit = {
        "flags final bit": (start, 0),
        "flags unknown bit": (start, 7),
        "length low byte": (start + 4, 1),
        "length high byte": (start + 1, 6),
        "nonce": (start + 5, 3),
        "first body byte": (start + 5 + NONCE[cipher], 0),
        "last byte": (end - 1, 7),
    }[where]
    check_damaged(container, flip(container.stored, offset, bit), r"frame 5\b", frame=5)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_a_flipped_bit_in_the_last_frame_names_it(codec, cipher):
    container = make(codec, cipher)
    last = len(container.frames) - 1
    start, end = container.frames[last]
    check = "its checksum" if cipher == "none" else "authentication"
    check_damaged(container, flip(container.stored, (start + end) // 2, 4),
                  rf"frame {last} failed {check}", frame=last)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_a_flipped_bit_in_the_first_frame_returns_nothing(codec, cipher):
    container = make(codec, cipher)
    _, end = container.frames[0]
    damaged = flip(container.stored, end - 3)
    assert decode(damaged, lambda h: container.key, DamagedError, r"frame 0 failed") == b""


@pytest.mark.parametrize("codec,cipher", CASES)
@pytest.mark.parametrize("where,match", [
    ("json", "header was altered"),
    ("tag", "header was altered"),
    ("magic", "bad magic"),
    ("version", "version 3 is not supported"),
])
def test_a_flipped_bit_in_the_header_is_reported(codec, cipher, where, match):
    container = make(codec, cipher)
    json_at = container.stored.index(b'"backup_id":"b-1"') + len('"backup_id":"b-')
    offset, bit = {"json": (json_at, 1), "tag": (container.header_end - 1, 0),
                   "magic": (1, 5), "version": (8, 1)}[where]
    check_damaged(container, flip(container.stored, offset, bit), match, frame=0)


@pytest.mark.parametrize("codec,cipher", CASES)
@pytest.mark.parametrize("field,value", [("codec", "lz4"), ("backup_id", "b-2"), ("chunk_size", 512)])
def test_an_edited_header_field_is_reported(codec, cipher, field, value):
    container = make(codec, cipher)
    edited = dataclasses.replace(container.header, **{field: value}).to_bytes()
    tag = container.stored[container.header_end - TAG_SIZE:container.header_end]
    stored = edited + tag + container.stored[container.header_end:]
    check_damaged(container, stored, "header was altered", frame=0)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_truncation_inside_a_frame_names_the_frame(codec, cipher):
    container = make(codec, cipher)
    start, end = container.frames[7]
    for cut in (start + 1, start + 5, end - 1):
        check_damaged(container, container.stored[:cut], r"stream truncated inside frame 7\b", frame=7)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_truncation_exactly_at_a_frame_boundary_is_detected(codec, cipher):
    container = make(codec, cipher)
    last = len(container.frames) - 1
    for frame in (0, 6, last - 1):
        end = container.frames[frame][1]
        check_damaged(container, container.stored[:end],
                      rf"stream truncated after frame {frame} \(no final frame\)", frame=frame + 1)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_a_truncated_stream_whose_last_frame_is_marked_final_is_detected(codec, cipher):
    container = make(codec, cipher)
    start, end = container.frames[6]
    check_damaged(container, flip(container.stored[:end], start, 0), r"frame 6 failed", frame=6)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_truncation_right_after_the_header_is_detected(codec, cipher):
    container = make(codec, cipher)
    check_damaged(container, container.stored[:container.header_end], "truncated after the header")


@pytest.mark.parametrize("codec,cipher", CASES)
def test_two_swapped_frames_are_detected_at_the_first(codec, cipher):
    container = make(codec, cipher)
    (a_start, a_end), (b_start, b_end) = container.frames[3:5]
    stored = container.stored
    swapped = stored[:a_start] + stored[b_start:b_end] + stored[a_start:a_end] + stored[b_end:]
    check_damaged(container, swapped, r"frame 3 failed", frame=3)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_a_dropped_frame_is_detected(codec, cipher):
    container = make(codec, cipher)
    start, end = container.frames[4]
    check_damaged(container, container.stored[:start] + container.stored[end:], r"frame 4 failed", frame=4)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_a_frame_spliced_from_another_backup_with_the_same_key_is_detected(codec, cipher):
    container = make(codec, cipher)
    key = (container.header.data_key_id, container.key) if container.key else None
    other = make(codec, cipher, key=key)
    start, end = container.frames[2]
    o_start, o_end = other.frames[2]
    stored = container.stored[:start] + other.stored[o_start:o_end] + container.stored[end:]
    check_damaged(container, stored, r"frame 2 failed", frame=2)


@pytest.mark.parametrize("codec,cipher", CASES)
@pytest.mark.parametrize("extra", [b"\x00", b"junk" * 100])
def test_data_after_the_final_frame_is_detected(codec, cipher, extra):
    container = make(codec, cipher)
    last = len(container.frames) - 1
    check_damaged(container, container.stored + extra, rf"data after the final frame \(frame {last}\)",
                  frame=last)


@pytest.mark.parametrize("codec,cipher", CASES)
def test_a_repeated_final_frame_is_detected(codec, cipher):
    container = make(codec, cipher)
    start, end = container.frames[-1]
    check_damaged(container, container.stored + container.stored[start:end], "data after the final frame")


@pytest.mark.parametrize("cipher", crypto.CIPHERS)
def test_every_single_bit_flip_is_detected_without_leaking_plaintext(cipher):
    data = random.Random(9).randbytes(500)
    container = make("none", cipher, data=data, chunk_size=64)
    assert len(container.frames) == 8
    frame_of = [0] * container.header_end
    for index, (start, end) in enumerate(container.frames):
        frame_of += [index] * (end - start)
    for offset in range(len(container.stored)):
        for bit in range(8):
            damaged = flip(container.stored, offset, bit)
            got = []
            with pytest.raises((DamagedError, WrongKeyError)):
                decoder = DecodingStream(io.BytesIO(damaged), lambda h: container.key)
                while piece := decoder.read(64):
                    got.append(piece)
            returned = b"".join(got)
            assert data.startswith(returned)
            assert len(returned) <= 64 * frame_of[offset]


def test_wrong_passphrase_is_a_wrong_key():
    data_key_id, data_key = crypto.new_data_key()
    container = make("zstd", "aes-256-gcm", key=(data_key_id, data_key))
    record = crypto.make_key_record(data_key_id, data_key, [crypto.PassphraseKey(b"right", scrypt_n=2**10)])
    wrong = [crypto.PassphraseKey(b"wrong")]
    decode(container.stored, lambda h: crypto.unwrap_key_record(record, wrong), WrongKeyError,
           f"does not unwrap data key {data_key_id}")


def test_wrong_key_file_is_a_wrong_key(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    container = make("zstd", "chacha20-poly1305", key=(data_key_id, data_key))
    right = crypto.generate_key_file(tmp_path / "right.key")
    wrong = crypto.generate_key_file(tmp_path / "wrong.key")
    record = crypto.make_key_record(data_key_id, data_key, [right])
    decode(container.stored, lambda h: crypto.unwrap_key_record(record, [wrong]), WrongKeyError,
           f"does not unwrap data key {data_key_id}")


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305", "aes-256-cbc"])
def test_another_data_key_is_a_wrong_key(cipher):
    container = make("lz4", cipher)
    other = crypto.new_data_key()[1]
    decode(container.stored, lambda h: other, WrongKeyError,
           f"not data key {container.header.data_key_id}")


def test_an_encrypted_container_without_a_key_is_a_missing_key():
    container = make("zstd", "aes-256-gcm")
    decode(container.stored, lambda h: None, MissingKeyError, "is encrypted with data key")


def test_a_key_for_a_container_whose_header_says_unencrypted_is_refused():
    container = make("zstd", "none")
    decode(container.stored, lambda h: crypto.new_data_key()[1], DamagedError, "refusing a downgrade")


def test_the_key_lookup_gets_the_header():
    container = make("gzip", "aes-256-cbc")
    seen = []
    DecodingStream(io.BytesIO(container.stored), lambda h: seen.append(h) or container.key).read()
    assert seen == [container.header]


def test_header_json_is_canonical_and_readable():
    container = make("zstd", "aes-256-gcm")
    assert container.stored.startswith(MAGIC + b"\x01")
    fields = json.loads(container.stored[13:container.header_end - TAG_SIZE])
    assert fields == dataclasses.asdict(container.header)
