"""Frame ciphers, key-encryption keys and key records.

Every backup has its own random 32-byte data key. The frames are never
keyed with it directly: each container derives its keys from the data key
and the container's random stream id with HKDF-SHA256. The data key is kept
wrapped (AES-256-GCM) by one or more key-encryption keys, a passphrase
through scrypt or a key file, in a key record that lives beside the backup
and in the catalog, outside what the frames authenticate. See
docs/container.md for the formats.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from covet.errors import DamagedError, MissingKeyError, NotFoundError, UsageError, WrongKeyError
from covet.pipeline import CIPHERS

KEY_SIZE = 32
# OWASP's minimum for scrypt (N=2^17, r=8, p=1): ~0.4 s and 128 MiB here.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# Refuse KDF parameters from a key record that would need more than 1 GiB.
_SCRYPT_MAX_MEMORY = 1 << 30
RECORD_VERSION = 1
_WRAP_ALG = "aes-256-gcm"


def check_cipher(cipher: str) -> str:
    """Return ``cipher`` if it is known; raise UsageError naming the choices."""
    if cipher not in CIPHERS:
        raise UsageError(f"unknown cipher {cipher!r}; use one of {', '.join(CIPHERS)}")
    return cipher


def _hkdf(key: bytes, info: bytes, length: int = KEY_SIZE, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def data_key_fingerprint(data_key: bytes) -> str:
    """Return the data key's id: 32 hex digits that name the key without revealing it."""
    return _hkdf(data_key, b"covet-backup v1 data key id", 16).hex()


def new_data_key() -> tuple[str, bytes]:
    """Return ``(data_key_id, data_key)`` for a fresh random data key."""
    data_key = os.urandom(KEY_SIZE)
    return data_key_fingerprint(data_key), data_key


# Frame ciphers ---------------------------------------------------------------


class FrameCipher(Protocol):
    """Seal and open the frames, and tag the header, of one container."""

    nonce_size: int
    max_overhead: int  # how many bytes a sealed body may exceed its payload by

    def seal(self, nonce: bytes, payload: bytes, associated: bytes) -> bytes: ...

    def open(self, nonce: bytes, body: bytes, associated: bytes) -> bytes:
        """Return the payload; raise cryptography's InvalidTag if the body is not authentic."""

    def header_tag(self, header: bytes) -> bytes: ...


def frame_cipher(cipher: str, data_key: bytes | None, stream_id: bytes) -> FrameCipher:
    """Return the frame cipher of one container; ``data_key`` is None only for cipher none."""
    check_cipher(cipher)
    if cipher == "none":
        return _Checksum()
    if data_key is None or len(data_key) != KEY_SIZE:
        raise UsageError(f"cipher {cipher} needs a {KEY_SIZE}-byte data key")
    header_key = _hkdf(data_key, b"covet-backup v1 header tag", salt=stream_id)
    info = b"covet-backup v1 frame key " + cipher.encode()
    if cipher == "aes-256-cbc":
        keys = _hkdf(data_key, info, 2 * KEY_SIZE, salt=stream_id)
        return _CbcHmac(keys[:KEY_SIZE], keys[KEY_SIZE:], header_key)
    key = _hkdf(data_key, info, salt=stream_id)
    aead = AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
    return _Aead(aead, header_key)


class _Checksum:
    """Cipher none: SHA-256 over the associated data and payload instead of a tag."""

    nonce_size = 0
    max_overhead = 32

    def seal(self, nonce: bytes, payload: bytes, associated: bytes) -> bytes:
        return payload + self._digest(payload, associated)

    def open(self, nonce: bytes, body: bytes, associated: bytes) -> bytes:
        if len(body) < 32:
            raise InvalidTag()
        payload, checksum = body[:-32], body[-32:]
        if not hmac.compare_digest(checksum, self._digest(payload, associated)):
            raise InvalidTag()
        return payload

    def header_tag(self, header: bytes) -> bytes:
        return hashlib.sha256(header).digest()

    @staticmethod
    def _digest(payload: bytes, associated: bytes) -> bytes:
        digest = hashlib.sha256(associated)
        digest.update(payload)
        return digest.digest()


class _Aead:
    nonce_size = 12
    max_overhead = 16

    def __init__(self, aead: AESGCM | ChaCha20Poly1305, header_key: bytes) -> None:
        self._aead = aead
        self._header_key = header_key

    def seal(self, nonce: bytes, payload: bytes, associated: bytes) -> bytes:
        return self._aead.encrypt(nonce, payload, associated)

    def open(self, nonce: bytes, body: bytes, associated: bytes) -> bytes:
        return self._aead.decrypt(nonce, body, associated)

    def header_tag(self, header: bytes) -> bytes:
        return hmac.digest(self._header_key, header, "sha256")


class _CbcHmac:
    """AES-256-CBC with PKCS#7 padding, then HMAC-SHA256 over AD, IV and ciphertext."""

    nonce_size = 16
    max_overhead = 16 + 32

    def __init__(self, enc_key: bytes, mac_key: bytes, header_key: bytes) -> None:
        self._enc_key = enc_key
        self._mac_key = mac_key
        self._header_key = header_key

    def seal(self, nonce: bytes, payload: bytes, associated: bytes) -> bytes:
        padder = padding.PKCS7(128).padder()
        padded = padder.update(payload) + padder.finalize()
        encryptor = Cipher(algorithms.AES(self._enc_key), modes.CBC(nonce)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        return ciphertext + self._mac(nonce, ciphertext, associated)

    def open(self, nonce: bytes, body: bytes, associated: bytes) -> bytes:
        if len(body) < 48 or len(body) % 16:
            raise InvalidTag()
        ciphertext, tag = body[:-32], body[-32:]
        if not hmac.compare_digest(tag, self._mac(nonce, ciphertext, associated)):
            raise InvalidTag()
        decryptor = Cipher(algorithms.AES(self._enc_key), modes.CBC(nonce)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + (
                unpadder.finalize()
            )
        except ValueError as exc:
            # Authentic but badly padded: only a faulty writer can produce this.
            raise InvalidTag() from exc

    def header_tag(self, header: bytes) -> bytes:
        return hmac.digest(self._header_key, header, "sha256")

    def _mac(self, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
        mac = hmac.new(self._mac_key, associated, "sha256")
        mac.update(nonce)
        mac.update(ciphertext)
        return mac.digest()


# Key-encryption keys ------------------------------------------------------------


class KeySource(Protocol):
    """A key-encryption key: wraps data keys into JSON-ready dicts and unwraps them."""

    kind: str
    kek_id: str

    def wrap(self, data_key: bytes) -> dict: ...

    def unwrap(self, wrap: dict) -> bytes:
        """Return the data key; raise WrongKeyError if this key did not wrap it."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(wrap: dict, field: str) -> bytes:
    try:
        return base64.b64decode(wrap[field], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise DamagedError(f"key record is damaged: wrap field {field!r} is missing or not base64") from exc


def _wrap_associated(kind: str, kek_id: str) -> bytes:
    return f"covet-backup v1 key wrap|{kind}|{kek_id}".encode()


def _seal_wrap(kek: bytes, kind: str, kek_id: str, data_key: bytes) -> dict:
    if len(data_key) != KEY_SIZE:
        raise UsageError(f"a data key is {KEY_SIZE} bytes, not {len(data_key)}")
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, data_key, _wrap_associated(kind, kek_id))
    return {
        "kind": kind,
        "kek_id": kek_id,
        "alg": _WRAP_ALG,
        "nonce": _b64(nonce),
        "wrapped": _b64(wrapped),
    }


def _open_wrap(kek: bytes, wrap: dict, failure: str) -> bytes:
    if wrap.get("alg") != _WRAP_ALG:
        raise DamagedError(f"key record is damaged: unknown wrap algorithm {wrap.get('alg')!r}")
    nonce, wrapped = _unb64(wrap, "nonce"), _unb64(wrap, "wrapped")
    try:
        data_key = AESGCM(kek).decrypt(
            nonce, wrapped, _wrap_associated(str(wrap.get("kind")), str(wrap.get("kek_id")))
        )
    except (InvalidTag, ValueError) as exc:
        raise WrongKeyError(failure) from exc
    if len(data_key) != KEY_SIZE:
        raise DamagedError("key record is damaged: the wrapped data key has the wrong size")
    return data_key


class PassphraseKey:
    """A passphrase stretched by scrypt; every wrap has its own salt."""

    kind = "passphrase"
    kek_id = "passphrase"

    def __init__(self, passphrase: bytes, *, scrypt_n: int = SCRYPT_N) -> None:
        if not passphrase:
            raise UsageError("the passphrase is empty; give a non-empty passphrase")
        self._passphrase = bytes(passphrase)
        self._scrypt_n = scrypt_n

    def wrap(self, data_key: bytes) -> dict:
        """Return a wrap entry of ``data_key`` under this passphrase."""
        kdf = {"name": "scrypt", "n": self._scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P}
        salt = os.urandom(16)
        wrap = _seal_wrap(self._derive(kdf, salt), self.kind, self.kek_id, data_key)
        wrap["kdf"] = {**kdf, "salt": _b64(salt)}
        return wrap

    def unwrap(self, wrap: dict) -> bytes:
        """Return the data key; raise WrongKeyError if the passphrase is not the one used."""
        kdf = wrap.get("kdf")
        if not isinstance(kdf, dict):
            raise DamagedError("key record is damaged: passphrase wrap has no KDF parameters")
        kek = self._derive(kdf, _unb64(kdf, "salt"))
        return _open_wrap(kek, wrap, "the passphrase is not the one this data key was wrapped with")

    def _derive(self, kdf: dict, salt: bytes) -> bytes:
        n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
        valid = (
            kdf.get("name") == "scrypt"
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, r, p))
            and n > 1
            and n & (n - 1) == 0
            and 128 * n * r * p <= _SCRYPT_MAX_MEMORY
        )
        if not valid:
            raise DamagedError(f"key record is damaged: unusable KDF parameters {kdf!r}")
        return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(self._passphrase)


class KeyFile:
    """A 32-byte key kept in a file readable only by its owner."""

    kind = "keyfile"

    def __init__(self, key: bytes, *, path: str | None = None) -> None:
        if len(key) != KEY_SIZE:
            raise UsageError(f"a key file holds a {KEY_SIZE}-byte key, not {len(key)} bytes")
        self._kek = _hkdf(key, b"covet-backup v1 key file wrap")
        self.kek_id = _hkdf(key, b"covet-backup v1 key file id", 8).hex()
        self.path = path

    def wrap(self, data_key: bytes) -> dict:
        """Return a wrap entry of ``data_key`` under this key file."""
        return _seal_wrap(self._kek, self.kind, self.kek_id, data_key)

    def unwrap(self, wrap: dict) -> bytes:
        """Return the data key; raise WrongKeyError if another key file wrapped it."""
        if wrap.get("kek_id") != self.kek_id:
            raise WrongKeyError(
                f"key file {self.kek_id} is not the one this data key was wrapped with "
                f"(that was key file {wrap.get('kek_id')})"
            )
        return _open_wrap(self._kek, wrap, f"key file {self.kek_id} does not unwrap this data key")


def load_key_file(path: str | os.PathLike) -> KeyFile:
    """Read a key file (64 hex digits); refuse one that group or others may access."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NotFoundError(f"key file {path} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot open key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"key file {path} is not a regular file")
        if mode & 0o077:
            raise UsageError(
                f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                f"run chmod 600 {path}"
            )
        text = handle.read(4096)
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise UsageError(
            f"key file {path} does not hold a key: expected {2 * KEY_SIZE} hex digits "
            "(make one with generate_key_file or `openssl rand -hex 32`)"
        )
    return KeyFile(key, path=str(path))


def generate_key_file(path: str | os.PathLike) -> KeyFile:
    """Write a new random key to ``path`` with mode 0600; refuse to overwrite anything."""
    key = os.urandom(KEY_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as exc:
        raise UsageError(f"key file {path} already exists; refusing to overwrite it") from exc
    try:
        os.fchmod(fd, 0o600)  # the umask can only take bits away, but be explicit
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return KeyFile(key, path=str(path))


def load_passphrase_file(path: str | os.PathLike) -> PassphraseKey:
    """Read a passphrase file, dropping one trailing newline; refuse an empty passphrase."""
    try:
        with open(path, "rb") as handle:
            passphrase = handle.read()
    except FileNotFoundError as exc:
        raise NotFoundError(f"passphrase file {path} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    if passphrase.endswith(b"\n"):
        passphrase = passphrase[:-1]
        if passphrase.endswith(b"\r"):
            passphrase = passphrase[:-1]
    if not passphrase:
        raise UsageError(f"passphrase file {path} is empty")
    return PassphraseKey(passphrase)


# Key records ----------------------------------------------------------------------


def make_key_record(data_key_id: str, data_key: bytes, key_sources: list) -> dict:
    """Return a key record holding ``data_key`` wrapped by each of ``key_sources``."""
    if data_key_fingerprint(data_key) != data_key_id:
        raise UsageError(f"the data key given is not data key {data_key_id}")
    if not key_sources:
        raise MissingKeyError("an encrypted backup needs at least one passphrase or key file")
    return {
        "version": RECORD_VERSION,
        "data_key_id": data_key_id,
        "wraps": [source.wrap(data_key) for source in key_sources],
    }


def add_wrap(record: dict, data_key: bytes, source: KeySource) -> dict:
    """Return a copy of ``record`` with one more wrap of ``data_key`` (key rotation)."""
    data_key_id, wraps = _record_parts(record)
    if data_key_fingerprint(data_key) != data_key_id:
        raise WrongKeyError(f"the data key given is not data key {data_key_id} of this key record")
    return {**record, "wraps": [*wraps, source.wrap(data_key)]}


def unwrap_key_record(record: dict, key_sources: list) -> bytes:
    """Return the record's data key using any source that unwraps any of its wraps.

    Raise MissingKeyError if no source is of a kind the record was wrapped
    with, WrongKeyError if the sources of that kind all fail.
    """
    data_key_id, wraps = _record_parts(record)
    tried = 0
    for wrap in wraps:
        for source in key_sources:
            if source.kind != wrap.get("kind"):
                continue
            tried += 1
            try:
                data_key = source.unwrap(wrap)
            except WrongKeyError:
                continue
            if data_key_fingerprint(data_key) != data_key_id:
                raise DamagedError(
                    f"key record is damaged: a wrap of data key {data_key_id} holds another key"
                )
            return data_key
    wrapped_by = ", ".join(_describe(wrap) for wrap in wraps)
    if not tried:
        raise MissingKeyError(
            f"data key {data_key_id} is wrapped by {wrapped_by}; give one of those"
        )
    raise WrongKeyError(
        f"the passphrase or key file does not unwrap data key {data_key_id} "
        f"(it is wrapped by {wrapped_by}); check that you gave the right one"
    )


def _describe(wrap: dict) -> str:
    if wrap.get("kind") == "keyfile":
        return f"key file {wrap.get('kek_id')}"
    return str(wrap.get("kind"))


def _record_parts(record: dict) -> tuple[str, list]:
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise DamagedError("key record is damaged or of an unknown version")
    data_key_id, wraps = record.get("data_key_id"), record.get("wraps")
    if not isinstance(data_key_id, str) or not isinstance(wraps, list) or not all(
        isinstance(wrap, dict) for wrap in wraps
    ):
        raise DamagedError("key record is damaged: it needs a data_key_id and a list of wraps")
    return data_key_id, wraps
