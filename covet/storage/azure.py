"""Azure Blob storage: staged block uploads with bounded memory, access tiers, the SDK's retry policy.

Configuration (the JSON of a Storage row; it names where secrets live, never a secret):

- ``container`` (required): an existing container.
- ``prefix``: objects go under ``<prefix>/`` in the container.
- ``account_url``: ``https://ACCOUNT.blob.core.windows.net`` (Azurite:
  ``http://127.0.0.1:PORT/devstoreaccount1``). Not with a connection string,
  which carries its own endpoint.
- One credential reference, or none:
  ``connection_string_env`` / ``connection_string_file``;
  ``account_key_env`` / ``account_key_file`` (with ``account_name``);
  ``sas_token_env`` / ``sas_token_file``;
  none: ``DefaultAzureCredential`` (environment, workload or managed
  identity, Azure CLI login), which needs an https ``account_url``.
  ``*_env`` names an environment variable, ``*_file`` a file that only its
  owner may read (mode 0600 or stricter).
- ``access_tier``: Hot, Cool, Cold or Archive (default: the account's).
- ``block_size``: bytes per block, a floor (default 8 MiB); raised when the
  expected size would need more than BlockUploads.TARGET_BLOCKS blocks.
- ``max_concurrency``: blocks uploaded in parallel (default 4).
- ``retries``, ``retry_initial_backoff``, ``retry_increment_base``: the
  SDK's ExponentialRetry (wait initial + base**n seconds before retry n,
  with jitter; defaults 5, 4 and 2: waits of about 6, 8, 12, 20 and 36 s);
  each retry is logged as "retry N of M for <operation>".
- ``api_version``: the Storage REST version spoken (default API_VERSION).

Peak memory of put() is at most (max_concurrency + 1) x block size plus the
SDK's small per-request overhead: one block being read, the others in flight.

put() stages blocks and commits the block list only at the end of the
stream (covet.storage.azure_blocks), so a failed or killed upload never
leaves a visible blob; abort() has nothing to remove. Credentials are read
by reference and kept out of messages by covet.storage.azure_secrets.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from typing import BinaryIO, Iterator
from urllib.parse import parse_qs, quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ExponentialRetry, StandardBlobTier

from covet.errors import CovetError, NotFoundError, StorageError, UsageError
from covet.storage.azure_blocks import BlockUploads
from covet.storage.azure_secrets import connection_string_secrets, describe_ref, read_secret, redact, refuse_unknown
from covet.storage.base import ObjectInfo, Storage, check_key, storage_failure

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# The newest Storage REST version that both the pinned azure-storage-blob
# (12.31.1, whose default is 2026-10-06) and Azurite 3.35.0 (the emulator
# the tests run against, which accepts up to 2025-07-05) speak; Azure itself
# accepts it. Pinning it keeps production and tests on the same protocol.
API_VERSION = "2025-07-05"

TIERS = {tier.lower(): tier for tier in ("Hot", "Cool", "Cold", "Archive")}
THAW_TIERS = ("Hot", "Cool", "Cold")
REHYDRATE_PRIORITIES = ("Standard", "High")

_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_AUTH_CODES = {"AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
               "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch", "InsufficientAccountPermissions",
               "InvalidAuthenticationInfo", "NoAuthenticationInformation", "AuthorizationResourceTypeMismatch",
               "AuthorizationServiceMismatch", "KeyBasedAuthenticationNotPermitted"}


class _LoggedRetry(ExponentialRetry):
    """The SDK's exponential retry, logging each retry as "retry N of M for <operation>"."""

    secrets: tuple[str, ...] = ()  # blanked from what is logged

    def increment(self, settings, request, response=None, error=None) -> bool:
        again = super().increment(settings, request, response=response, error=error)
        if again:
            settings["covet_operation"] = _operation(request)
            if error is not None:
                settings["covet_reason"] = f"{type(error).__name__}: {_first_line(error)}"
            else:
                settings["covet_reason"] = f"HTTP {response.status_code}"
        return again

    def sleep(self, settings, transport) -> None:
        backoff = max(self.get_backoff_time(settings), 0)
        log.warning("Azure Blob: retry %d of %d for %s in %.1f s (%s)", settings["count"], self.total_retries,
                    settings.get("covet_operation", "a request"), backoff,
                    redact(settings.get("covet_reason", ""), self.secrets))
        if backoff:
            transport.sleep(backoff)


def _operation(request) -> str:
    # Method, path and the `comp` parameter only: the query may hold a SAS signature.
    parts = urlsplit(request.url)
    comp = parse_qs(parts.query).get("comp")
    return f"{request.method} {parts.path}" + (f"?comp={comp[0]}" if comp else "")


_OS_ERROR = re.compile(r"\[Errno -?\d+\][^\"')]*")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    os_error = _OS_ERROR.findall(text)
    if os_error:  # urllib3's wrapping repeats the URL; the OS error says it all
        return os_error[-1].strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AzureStorage(Storage):
    """Objects as block blobs in one container, optionally under a prefix."""

    kind = "azure"

    # Ours: the smallest block_size a configuration may set (tests use small
    # blocks to exercise multi-block uploads on small data).
    MIN_CONFIGURED_BLOCK_SIZE = 64 * 1024
    MAX_CONCURRENCY = 64
    # Ours: downloads fetch ranges of this size, one at a time.
    DOWNLOAD_CHUNK = 8 * MiB

    def __init__(self, container: str = "", prefix: str = "", account_url: str = "", account_name: str = "",
                 connection_string_env: str = "", connection_string_file: str = "",
                 account_key_env: str = "", account_key_file: str = "",
                 sas_token_env: str = "", sas_token_file: str = "",
                 access_tier: str = "", block_size: int | None = None, max_concurrency: int = 4,
                 retries: int = 5, retry_initial_backoff: float = 4.0, retry_increment_base: float = 2.0,
                 api_version: str = API_VERSION, **unknown):
        refuse_unknown(unknown)
        if not container or not _CONTAINER_NAME.match(container):
            raise UsageError(f"azure storage needs a valid 'container' (3-63 lowercase letters, digits and "
                             f"single hyphens), not {container!r}")
        self.container = container
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.prefix = prefix
        self.access_tier = _tier(access_tier) if access_tier else None
        self.block_size = _int_setting("block_size", block_size, self.MIN_CONFIGURED_BLOCK_SIZE,
                                       BlockUploads.MAX_BLOCK_SIZE) if block_size is not None else None
        self.max_concurrency = _int_setting("max_concurrency", max_concurrency, 1, self.MAX_CONCURRENCY)
        self.retries = _int_setting("retries", retries, 0, 20)
        initial = _number_setting("retry_initial_backoff", retry_initial_backoff)
        base = _number_setting("retry_increment_base", retry_increment_base)
        refs = {"connection_string_env": connection_string_env, "connection_string_file": connection_string_file,
                "account_key_env": account_key_env, "account_key_file": account_key_file,
                "sas_token_env": sas_token_env, "sas_token_file": sas_token_file}
        given = [name for name, value in refs.items() if value]
        if len(given) > 1:
            raise UsageError(f"azure storage takes one credential reference, not {', '.join(given)}")
        if account_url and urlsplit(account_url).query:
            raise UsageError("account_url must not carry a query (a SAS token is a secret: "
                             "name it with sas_token_env or sas_token_file)")
        self._secrets: tuple[str, ...] = ()
        retry = _LoggedRetry(initial_backoff=initial, increment_base=base, retry_total=self.retries,
                             retry_connect=self.retries, retry_read=self.retries, retry_status=self.retries,
                             random_jitter_range=min(3.0, initial / 2))
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.max_concurrency + 2)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        options = dict(api_version=api_version, retry_policy=retry,
                       transport=RequestsTransport(session=session, session_owner=True),
                       max_single_get_size=self.DOWNLOAD_CHUNK, max_chunk_get_size=self.DOWNLOAD_CHUNK,
                       # Every request's headers at INFO would drown a job's log: DEBUG shows them.
                       http_logging_level=logging.DEBUG)
        try:
            self._service = self._client(account_url, account_name, options, connection_string_env,
                                         connection_string_file, account_key_env, account_key_file,
                                         sas_token_env, sas_token_file)
        except ValueError as exc:  # the SDK's word for a malformed URL, connection string or version
            raise UsageError(f"bad azure storage configuration: {redact(str(exc), self._secrets)}") from None
        retry.secrets = self._secrets
        parts = urlsplit(self._service.url)
        self.account_url = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
        self._container = self._service.get_container_client(container)
        self.uploads = BlockUploads(self.max_concurrency, self._error)

    # Configuration -----------------------------------------------------------

    def _client(self, account_url, account_name, options, cs_env, cs_file, key_env, key_file, sas_env, sas_file):
        if cs_env or cs_file:
            if account_url:
                raise UsageError("a connection string carries its own endpoint: leave account_url out")
            self.credential_source = describe_ref("connection string", cs_env, cs_file)
            connection_string = read_secret(cs_env, cs_file, "connection string")
            self._secrets = (connection_string, *connection_string_secrets(connection_string))
            return BlobServiceClient.from_connection_string(connection_string, **options)
        if not account_url:
            raise UsageError("azure storage needs 'account_url' (https://ACCOUNT.blob.core.windows.net) "
                             "or a connection string reference")
        if urlsplit(account_url).scheme not in ("http", "https"):
            raise UsageError(f"account_url must be an http(s) URL, not {account_url!r}")
        if key_env or key_file:
            if not account_name:
                raise UsageError("an account key needs 'account_name' beside it")
            self.credential_source = describe_ref("account key", key_env, key_file)
            key = read_secret(key_env, key_file, "account key")
            self._secrets = (key,)
            credential = {"account_name": account_name, "account_key": key}
        elif sas_env or sas_file:
            from azure.core.credentials import AzureSasCredential

            self.credential_source = describe_ref("SAS token", sas_env, sas_file)
            token = read_secret(sas_env, sas_file, "SAS token").lstrip("?")
            self._secrets = (token,)
            credential = AzureSasCredential(token)
        else:
            if urlsplit(account_url).scheme != "https":
                raise UsageError("DefaultAzureCredential (no credential reference given) needs an https "
                                 "account_url; name a key, SAS token or connection string for http endpoints")
            from azure.identity import DefaultAzureCredential

            self.credential_source = "DefaultAzureCredential"
            credential = DefaultAzureCredential()
        return BlobServiceClient(account_url, credential=credential, **options)

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _blob(self, key: str):
        return self._container.get_blob_client(self._name(key))

    def block_size_for(self, size_hint: int | None) -> int:
        """Return the block size for a stream of about ``size_hint`` bytes, the configured one as its floor."""
        return BlockUploads.block_size_for(size_hint, self.block_size or BlockUploads.MIN_BLOCK_SIZE)

    # The contract ------------------------------------------------------------

    def check_tier(self, tier: str) -> str:
        return _tier(tier)

    def put(self, key: str, stream: BinaryIO, size_hint: int | None = None, tier: str | None = None) -> ObjectInfo:
        """Stage ``stream`` block by block (bounded, in parallel) and commit the block list at its end.

        Nothing is visible under ``key`` until the commit. An error of the
        source is raised unchanged; an Azure error as StorageError. Either
        way the staged blocks stay uncommitted (see covet.storage.azure_blocks).
        """
        blob = self._blob(key)
        access_tier = self.check_tier(tier) if tier else self.access_tier
        size = self.uploads.upload(blob, key, stream, self.block_size_for(size_hint), access_tier, size_hint)
        return ObjectInfo(key=key, size=size)

    def get(self, key: str) -> BinaryIO:
        blob = self._blob(key)
        try:
            downloader = blob.download_blob(max_concurrency=1)
        except HttpResponseError as exc:
            if _code(exc) == "BlobArchived":
                raise self._archived(blob, key) from exc
            raise self._error(exc, f"download of {key}", key) from exc
        except AzureError as exc:
            raise self._error(exc, f"download of {key}", key) from exc
        return _BlobReader(downloader.chunks(), lambda exc: self._error(exc, f"download of {key}", key))

    def stat(self, key: str) -> ObjectInfo:
        try:
            properties = self._blob(key).get_blob_properties()
        except AzureError as exc:
            raise self._error(exc, f"stat of {key}", key) from exc
        return ObjectInfo(key=key, size=properties.size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            found = [ObjectInfo(key=item.name[len(base):], size=item.size)
                     for item in self._container.list_blobs(name_starts_with=base + prefix)]
        except AzureError as exc:
            raise self._error(exc, f"listing of {prefix or '/'}") from exc
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        try:
            self._blob(key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            pass  # no such blob (or no container): nothing to remove
        except AzureError as exc:
            raise self._error(exc, f"delete of {key}") from exc

    def abort(self, key: str) -> None:
        """Do nothing: an interrupted put() committed nothing, and Azure discards uncommitted blocks itself.

        Azure offers no call that removes uncommitted blocks short of
        committing a blob; they are invisible and expire about a week after
        the last upload activity on the name.
        """
        check_key(key)

    def describe(self, key: str) -> str:
        return f"{self.account_url}/{self.container}/{quote(self._name(key))}"

    # Archive tier ------------------------------------------------------------

    def request_thaw(self, key: str, tier: str = "Hot", priority: str = "Standard") -> None:
        """Ask Azure to rehydrate an archived blob into ``tier``; reading it works once that finishes.

        Rehydration takes up to 15 hours at Standard priority, under an hour
        for most blobs at High priority (which costs more).
        """
        tier = _tier(tier)
        if tier not in THAW_TIERS:
            raise UsageError(f"a blob is rehydrated into one of {', '.join(THAW_TIERS)}, not {tier}")
        if priority not in REHYDRATE_PRIORITIES:
            raise UsageError(f"rehydrate priority is one of {', '.join(REHYDRATE_PRIORITIES)}, not {priority!r}")
        try:
            self._blob(key).set_standard_blob_tier(StandardBlobTier(tier), rehydrate_priority=priority)
        except AzureError as exc:
            raise self._error(exc, f"rehydration request for {key}", key) from exc
        log.info("Azure Blob: rehydration of %s into %s requested (%s priority)", key, tier, priority)

    def _archived(self, blob, key: str) -> StorageError:
        try:
            status = blob.get_blob_properties().archive_status or ""
        except AzureError:
            status = ""
        if status.startswith("rehydrate-pending"):
            what = (f"its rehydration is under way ({status}); read it again once that finishes "
                    "(up to 15 hours at Standard priority)")
        else:
            what = ("it must be rehydrated first: call request_thaw(key, tier='Hot', priority='Standard'), "
                    "i.e. set_standard_blob_tier with a rehydrate priority (az storage blob set-tier "
                    "--tier Hot --rehydrate-priority Standard), then wait up to 15 hours")
        return storage_failure(f"object {key} in {self.describe(key)} is in the Archive tier and cannot be read; "
                               f"{what}", False)

    # Errors ------------------------------------------------------------------

    def _error(self, exc: BaseException, doing: str, key: str | None = None) -> CovetError:
        """Translate an SDK error into a CovetError whose message says what to do (and holds no secret)."""
        code = _code(exc)
        detail = redact(_first_line(exc), self._secrets)
        where = f"{self.account_url}/{self.container}"
        retryable = True
        if code == "ContainerNotFound":
            message = (f"Azure Blob {doing} failed: container {self.container!r} does not exist at "
                       f"{self.account_url}; create it or fix 'container' in the storage configuration")
            retryable = False
        elif key is not None and (code == "BlobNotFound" or isinstance(exc, ResourceNotFoundError)):
            return NotFoundError(f"object {key} is missing from Azure container {where}")
        elif isinstance(exc, ClientAuthenticationError) or code in _AUTH_CODES or _status(exc) in (401, 403):
            message = (f"Azure Blob {doing} failed: {where} refused the credentials "
                       f"({code or _status(exc) or type(exc).__name__}: {detail}); "
                       f"check the {self.credential_source} and its permissions on the container")
            retryable = False
        elif isinstance(exc, ServiceRequestError):
            message = (f"Azure Blob {doing} failed: cannot reach {self.account_url} after {self.retries} "
                       f"retries ({detail}); check account_url and the network")
        elif isinstance(exc, ServiceResponseError):
            message = (f"Azure Blob {doing} failed: the connection to {self.account_url} broke after "
                       f"{self.retries} retries ({detail})")
        elif isinstance(exc, HttpResponseError):
            status = _status(exc)
            message = f"Azure Blob {doing} failed: HTTP {status} {code or ''} from {where}: {detail}"
            if status and status >= 500 and status not in (501, 505):  # what the SDK retries
                message += f" (after {self.retries} retries)"
            else:
                retryable = status in (408, 429)
        else:
            message = f"Azure Blob {doing} failed: {type(exc).__name__}: {detail}"
        return storage_failure(redact(message, self._secrets), retryable)


class _BlobReader(io.RawIOBase):
    """A blob being downloaded range by range; ``read(n)`` returns n bytes until the end."""

    def __init__(self, chunks: Iterator[bytes], translate):
        super().__init__()
        self._chunks = chunks
        self._translate = translate
        self._chunk = b""
        self._offset = 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        try:
            self._chunk = next(self._chunks, b"")
        except AzureError as exc:
            raise self._translate(exc) from exc
        self._offset = 0
        return bool(self._chunk)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed blob reader")
        if size is None or size < 0:
            return self.readall()
        pieces = []
        with self._lock:
            while size > 0:
                if self._offset >= len(self._chunk) and not self._next_chunk():
                    break
                if self._offset == 0 and len(self._chunk) <= size:
                    piece = self._chunk  # a whole chunk: no copy
                else:
                    piece = self._chunk[self._offset:self._offset + size]
                self._offset += len(piece)
                size -= len(piece)
                pieces.append(piece)
        return b"".join(pieces)

    def readall(self) -> bytes:
        pieces = []
        while piece := self.read(AzureStorage.DOWNLOAD_CHUNK):
            pieces.append(piece)
        return b"".join(pieces)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._chunks = iter(())
        self._chunk = b""
        super().close()


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def _tier(value: str) -> str:
    try:
        return TIERS[str(value).lower()]
    except KeyError:
        raise UsageError(f"access tier must be one of Hot, Cool, Cold, Archive, not {value!r}") from None


def _int_setting(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"azure storage '{name}' must be a whole number from {low} to {high}, not {value!r}")
    return value


def _number_setting(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UsageError(f"azure storage '{name}' must be a number of seconds >= 0, not {value!r}")
    return float(value)
