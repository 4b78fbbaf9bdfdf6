"""Key files, passphrases, key records and rotation."""

import base64
import io
import json
import os
import stat

import pytest

from covet.errors import DamagedError, MissingKeyError, NotFoundError, UsageError, WrongKeyError
from covet.pipeline import crypto
from covet.pipeline.container import DecodingStream, encode_bytes
from covet.pipeline.container_format import Header

FAST_N = 2**10  # a cheap scrypt for tests; the default is exercised once below


def passphrase(text):
    return crypto.PassphraseKey(text.encode(), scrypt_n=FAST_N)


def write_key(path, mode, text=None):
    path.write_text(text if text is not None else os.urandom(32).hex() + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004])
def test_a_key_file_readable_by_group_or_others_is_refused(tmp_path, mode):
    path = write_key(tmp_path / "key", mode)
    with pytest.raises(UsageError, match=f"run chmod 600 {path}"):
        crypto.load_key_file(path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_file_is_accepted(tmp_path, mode):
    key = os.urandom(32)
    path = write_key(tmp_path / "key", mode, key.hex() + "\n")
    source = crypto.load_key_file(path)
    assert source.kind == "keyfile"
    assert source.kek_id == crypto.KeyFile(key).kek_id


def test_a_missing_key_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        crypto.load_key_file(tmp_path / "nope.key")


@pytest.mark.parametrize("text", ["", "not hex\n", "ab" * 31 + "\n", "ab" * 33 + "\n"])
def test_a_key_file_without_a_key_is_refused(tmp_path, text):
    path = write_key(tmp_path / "key", 0o600, text)
    with pytest.raises(UsageError, match="does not hold a key"):
        crypto.load_key_file(path)


def test_generate_key_file_writes_a_0600_file_even_under_a_loose_umask(tmp_path):
    old = os.umask(0)
    try:
        source = crypto.generate_key_file(tmp_path / "new.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.key").st_mode) == 0o600
    assert crypto.load_key_file(tmp_path / "new.key").kek_id == source.kek_id


def test_generate_key_file_never_overwrites(tmp_path):
    path = tmp_path / "existing.key"
    path.write_text("precious\n")
    with pytest.raises(UsageError, match="already exists"):
        crypto.generate_key_file(path)
    assert path.read_text() == "precious\n"


def test_generated_keys_differ_and_their_ids_reveal_nothing(tmp_path):
    first = crypto.generate_key_file(tmp_path / "a.key")
    second = crypto.generate_key_file(tmp_path / "b.key")
    assert first.kek_id != second.kek_id
    assert len(first.kek_id) == 16
    assert first.kek_id not in (tmp_path / "a.key").read_text()


def test_a_passphrase_file_loses_one_trailing_newline(tmp_path):
    (tmp_path / "pw").write_bytes(b"secret\n\n")
    (tmp_path / "pw2").write_bytes(b"secret\n")
    data_key_id, data_key = crypto.new_data_key()
    wrap = crypto.PassphraseKey(b"secret\n", scrypt_n=FAST_N).wrap(data_key)
    assert crypto.load_passphrase_file(tmp_path / "pw").unwrap(wrap) == data_key
    with pytest.raises(WrongKeyError):
        crypto.load_passphrase_file(tmp_path / "pw2").unwrap(wrap)


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_an_empty_passphrase_is_refused(tmp_path, content):
    (tmp_path / "pw").write_bytes(content)
    with pytest.raises(UsageError, match="empty"):
        crypto.load_passphrase_file(tmp_path / "pw")


def test_a_missing_passphrase_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        crypto.load_passphrase_file(tmp_path / "missing")


def test_the_default_passphrase_wrap_records_its_scrypt_parameters():
    data_key_id, data_key = crypto.new_data_key()
    wrap = crypto.PassphraseKey(b"correct horse").wrap(data_key)
    assert wrap["kind"] == "passphrase"
    kdf = {k: wrap["kdf"][k] for k in ("name", "n", "r", "p")}
    assert kdf == {"name": "scrypt", "n": 2**17, "r": 8, "p": 1}
    assert len(wrap["kdf"]["salt"]) == 24  # 16 bytes, base64
    assert crypto.PassphraseKey(b"correct horse").unwrap(wrap) == data_key


def test_each_passphrase_wrap_has_its_own_salt():
    _, data_key = crypto.new_data_key()
    source = passphrase("pw")
    assert source.wrap(data_key)["kdf"]["salt"] != source.wrap(data_key)["kdf"]["salt"]


def test_a_wrap_demanding_too_much_scrypt_memory_is_damaged():
    _, data_key = crypto.new_data_key()
    wrap = passphrase("pw").wrap(data_key)
    wrap["kdf"]["n"] = 2**24
    with pytest.raises(DamagedError, match="KDF parameters"):
        passphrase("pw").unwrap(wrap)


def test_the_data_key_id_is_its_fingerprint():
    data_key_id, data_key = crypto.new_data_key()
    assert data_key_id == crypto.data_key_fingerprint(data_key)
    assert len(data_key_id) == 32 and data_key_id != crypto.new_data_key()[0]


def test_a_key_record_is_json_and_unwraps_with_its_source(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    key_file = crypto.generate_key_file(tmp_path / "k")
    record = json.loads(json.dumps(crypto.make_key_record(data_key_id, data_key, [key_file])))
    assert record["version"] == 1 and record["data_key_id"] == data_key_id
    assert data_key.hex() not in json.dumps(record)
    assert crypto.unwrap_key_record(record, [key_file]) == data_key


def test_a_record_with_two_wraps_unwraps_with_either_source(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    key_file = crypto.generate_key_file(tmp_path / "k")
    record = crypto.make_key_record(data_key_id, data_key, [passphrase("old"), key_file])
    assert crypto.unwrap_key_record(record, [passphrase("old")]) == data_key
    assert crypto.unwrap_key_record(record, [crypto.load_key_file(tmp_path / "k")]) == data_key
    assert crypto.unwrap_key_record(record, [passphrase("wrong"), key_file]) == data_key


def test_rotation_rewrites_only_the_record_and_the_stored_bytes_still_decode(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    old, new = passphrase("old passphrase"), crypto.generate_key_file(tmp_path / "new.key")
    record = crypto.make_key_record(data_key_id, data_key, [old])
    header = Header(codec="zstd", level=3, cipher="aes-256-gcm", data_key_id=data_key_id, chunk_size=512)
    stored = encode_bytes(b"the backup " * 500, header, data_key)
    frozen = bytes(stored)

    rotated = crypto.add_wrap(record, crypto.unwrap_key_record(record, [old]), new)
    rotated = {**rotated, "wraps": [w for w in rotated["wraps"] if w["kind"] != "passphrase"]}

    def lookup(sources):
        return lambda h: crypto.unwrap_key_record(rotated, sources)

    assert stored == frozen
    assert DecodingStream(io.BytesIO(stored), lookup([new])).read() == b"the backup " * 500
    with pytest.raises(MissingKeyError, match=f"data key {data_key_id} is wrapped by key file {new.kek_id}"):
        DecodingStream(io.BytesIO(stored), lookup([old]))


def test_add_wrap_refuses_a_data_key_of_another_record(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    record = crypto.make_key_record(data_key_id, data_key, [passphrase("pw")])
    with pytest.raises(WrongKeyError, match=f"not data key {data_key_id}"):
        crypto.add_wrap(record, crypto.new_data_key()[1], passphrase("pw"))


def test_a_wrong_passphrase_does_not_unwrap_and_names_the_data_key():
    data_key_id, data_key = crypto.new_data_key()
    record = crypto.make_key_record(data_key_id, data_key, [passphrase("right")])
    with pytest.raises(WrongKeyError, match=f"does not unwrap data key {data_key_id}"):
        crypto.unwrap_key_record(record, [passphrase("wrong")])


def test_a_wrong_key_file_does_not_unwrap(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    record = crypto.make_key_record(data_key_id, data_key, [crypto.generate_key_file(tmp_path / "a")])
    with pytest.raises(WrongKeyError, match=f"does not unwrap data key {data_key_id}"):
        crypto.unwrap_key_record(record, [crypto.generate_key_file(tmp_path / "b")])


def test_no_source_of_the_wrapping_kind_is_a_missing_key(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    record = crypto.make_key_record(data_key_id, data_key, [passphrase("pw")])
    with pytest.raises(MissingKeyError, match="wrapped by passphrase"):
        crypto.unwrap_key_record(record, [crypto.generate_key_file(tmp_path / "k")])
    with pytest.raises(MissingKeyError):
        crypto.unwrap_key_record(record, [])


def test_a_tampered_wrap_does_not_unwrap(tmp_path):
    data_key_id, data_key = crypto.new_data_key()
    key_file = crypto.generate_key_file(tmp_path / "k")
    record = crypto.make_key_record(data_key_id, data_key, [key_file])
    wrapped = bytearray(base64.b64decode(record["wraps"][0]["wrapped"]))
    wrapped[3] ^= 1
    record["wraps"][0]["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    with pytest.raises(WrongKeyError):
        crypto.unwrap_key_record(record, [key_file])


def test_a_wrap_moved_from_another_record_is_damaged(tmp_path):
    key_file = crypto.generate_key_file(tmp_path / "k")
    first_id, first_key = crypto.new_data_key()
    second_id, second_key = crypto.new_data_key()
    first = crypto.make_key_record(first_id, first_key, [key_file])
    second = crypto.make_key_record(second_id, second_key, [key_file])
    forged = {**second, "wraps": first["wraps"]}
    with pytest.raises(DamagedError, match=f"a wrap of data key {second_id} holds another key"):
        crypto.unwrap_key_record(forged, [key_file])


@pytest.mark.parametrize("record", [None, {}, {"version": 2}, {"version": 1, "data_key_id": "x"},
                                    {"version": 1, "data_key_id": "x", "wraps": ["nope"]}])
def test_a_malformed_record_is_damaged(record):
    with pytest.raises(DamagedError, match="key record"):
        crypto.unwrap_key_record(record, [passphrase("pw")])


def test_make_key_record_refuses_a_key_that_is_not_the_named_one():
    with pytest.raises(UsageError, match="not data key"):
        crypto.make_key_record(crypto.new_data_key()[0], crypto.new_data_key()[1], [passphrase("pw")])
