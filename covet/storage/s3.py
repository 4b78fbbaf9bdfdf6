"""Amazon S3 and S3-compatible storage: streaming multipart uploads in bounded memory.

Configuration (the Storage row's ``config``; none of it secret):

``bucket``           required; the bucket must exist.
``prefix``           every key lives under it (checked like any key: plain names only).
``region``           e.g. "eu-west-1"; otherwise the AWS chain's (AWS_DEFAULT_REGION, ~/.aws/config).
``endpoint_url``     an S3-compatible store (MinIO, Ceph, a test server) instead of AWS.
``profile``          a named profile of ~/.aws/config; otherwise the standard credential chain
                     (environment, shared files, SSO, container or instance role). Keys never go here.
``storage_class``    STANDARD (default), STANDARD_IA, GLACIER_IR, GLACIER or DEEP_ARCHIVE.
``sse``              "AES256" (SSE-S3) or "aws:kms" (SSE-KMS); ``kms_key_id`` with aws:kms only
                     (the key's id, ARN or alias; without it the account's aws/s3 key).
``part_size``        bytes per part, overriding the choice from the expected size (>= 8 MiB).
``max_concurrency``  parts uploaded at once (default 4).
``checksum``         what S3 checks each part against: SHA256 (default), CRC32, or MD5
                     (Content-MD5, for stores that know no flexible checksums).
``addressing_style`` "auto" (default), "virtual" or "path" (many S3-compatible stores want path).
``retry_mode``, ``max_attempts``  botocore's retry policy: "standard" (default) or "adaptive",
                     attempts per request including the first (default 5).

Memory: put() holds at most ``max_concurrency`` parts being uploaded plus the
one being read from the source (see covet.storage.s3_upload), so its peak is
(max_concurrency + 1) x part size + 64 MiB (interpreter, SDK, sockets).
The part size only grows (doubling, up to S3's 5 GiB) for a stream larger
than its size hint, so that it still fits in 10,000 parts. get() streams one
GET's body (nothing buffered beyond what the caller asks for) and resumes a
cut connection with a ranged GET from the byte where it stopped.

Objects in GLACIER or DEEP_ARCHIVE raise ArchivedObjectError on get() until
restored; ``request_thaw(key, days, tier)`` asks S3 for that restore.
"""

import io
import logging
from typing import BinaryIO, Callable, Iterator

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as EndpointUnreachableError
from botocore.exceptions import (CredentialRetrievalError, HTTPClientError, NoCredentialsError,
                                 ParamValidationError, PartialCredentialsError, ProfileNotFound)

from covet.errors import ArchivedObjectError, CovetError, NotFoundError, UsageError
from covet.storage.base import ObjectInfo, Storage, check_key, storage_failure
from covet.storage.s3_upload import MultipartUploads, checksum_args

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
CONNECT_TIMEOUT = 10  # seconds; botocore's default is 60, too long to notice a dead endpoint
READ_TIMEOUT = 60

STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
# Classes whose objects must be restored (thawed) before a GET; GLACIER_IR reads instantly.
THAW_CLASSES = {
    "GLACIER": "Expedited 1-5 minutes, Standard 3-5 hours, Bulk 5-12 hours",
    "DEEP_ARCHIVE": "Standard within 12 hours, Bulk within 48 hours",
}
THAW_TIERS = ("Expedited", "Standard", "Bulk")
SSE_MODES = ("AES256", "aws:kms")
CHECKSUMS = ("SHA256", "CRC32", "MD5")
ADDRESSING_STYLES = ("auto", "virtual", "path")
RETRY_MODES = ("standard", "adaptive")

ACCESS_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "KMS.AccessDeniedException",
                "KMS.DisabledException", "KMS.NotFoundException", "KMS.KMSInvalidStateException"}
DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidPart"}
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "OperationAborted"}
# Names that look like credentials: refused with a pointer to the credential chain.
SECRET_WORDS = ("secret", "access_key", "password", "token", "credential")


class S3Storage(Storage):
    """Objects in one S3 bucket, under an optional prefix."""

    kind = "s3"

    def __init__(self, bucket: str = "", prefix: str = "", region: str | None = None,
                 endpoint_url: str | None = None, profile: str | None = None, storage_class: str = "STANDARD",
                 sse: str | None = None, kms_key_id: str | None = None, part_size: int | None = None,
                 max_concurrency: int = DEFAULT_CONCURRENCY, checksum: str = "SHA256",
                 addressing_style: str = "auto", retry_mode: str = "standard", max_attempts: int = 5,
                 **unknown):
        if unknown:
            secret = [name for name in unknown if any(word in name.lower() for word in SECRET_WORDS)]
            if secret:
                raise UsageError(f"s3 storage takes no credentials in its config ({', '.join(sorted(secret))}): "
                                 "boto3 finds them through the AWS credential chain (environment, "
                                 "~/.aws files, SSO, instance or container role) or a named 'profile'")
            raise UsageError(f"unknown s3 storage setting(s): {', '.join(sorted(unknown))}")
        if not bucket:
            raise UsageError('s3 storage needs a bucket (config {"bucket": "name"})')
        self.bucket = str(bucket)
        prefix = str(prefix or "").strip("/")
        self.prefix = check_key(prefix) if prefix else ""
        self.storage_class = _choice("storage_class", storage_class, STORAGE_CLASSES)
        self.sse = _choice("sse", sse, SSE_MODES) if sse else None
        if kms_key_id and self.sse != "aws:kms":
            raise UsageError('kms_key_id needs "sse": "aws:kms"')
        self.kms_key_id = kms_key_id
        self.checksum = _choice("checksum", str(checksum).upper(), CHECKSUMS)
        low, high = MultipartUploads.MIN_PART_SIZE, MultipartUploads.MAX_PART_SIZE
        if part_size is not None and not (isinstance(part_size, int) and low <= part_size <= high):
            raise UsageError(f"part_size must be a byte count from {low} (8 MiB) to {high} (5 GiB)")
        self.part_size = part_size
        if not (isinstance(max_concurrency, int) and 1 <= max_concurrency <= MAX_CONCURRENCY):
            raise UsageError(f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}")
        self.max_concurrency = max_concurrency
        if not (isinstance(max_attempts, int) and 1 <= max_attempts <= 20):
            raise UsageError("max_attempts must be an integer from 1 to 20")
        self.profile = profile
        config = Config(
            region_name=region,
            retries={"mode": _choice("retry_mode", retry_mode, RETRY_MODES), "total_max_attempts": max_attempts},
            max_pool_connections=max_concurrency + 4,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            s3={"addressing_style": _choice("addressing_style", addressing_style, ADDRESSING_STYLES)},
            # We send our own checksum with every upload; without this botocore adds a CRC32 of its own,
            # which some S3-compatible stores refuse.
            request_checksum_calculation="when_required",
            user_agent_extra="covet-backup",
        )
        try:
            session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {profile!r} is not in ~/.aws/config or ~/.aws/credentials") from exc
        self.client = session.client("s3", endpoint_url=endpoint_url or None, config=config)
        self.endpoint = self.client.meta.endpoint_url
        self.max_attempts = max_attempts
        self.uploads = MultipartUploads(self.client, self.bucket, self.checksum, max_concurrency, self._translate,
                                        self._url)

    # Keys ------------------------------------------------------------------

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _url(self, full: str) -> str:
        return f"s3://{self.bucket}/{full}"

    def describe(self, key: str) -> str:
        return self._url(self._full(key))

    def part_size_for(self, size_hint: int | None) -> int:
        """Return the configured part size, else the one MultipartUploads chooses for about ``size_hint`` bytes."""
        return self.part_size or MultipartUploads.part_size_for(size_hint)

    # Writing ---------------------------------------------------------------

    def put(self, key: str, stream: BinaryIO, size_hint: int | None = None, tier: str | None = None) -> ObjectInfo:
        """Upload ``stream`` as ``key``: one PutObject below a part, else a multipart upload aborted on any failure.

        Source exceptions come out unchanged; S3 failures as StorageError.
        The object is listed only once complete.
        """
        full = self._full(key)
        storage_class = self.check_tier(tier) if tier else self.storage_class
        part_size = self.part_size_for(size_hint)
        first = MultipartUploads.read_part(stream, part_size)
        if len(first) < part_size:
            self._call("store", full, self.client.put_object, Body=first, **self._object_args(full, storage_class),
                       **checksum_args(self.checksum, first))
            return ObjectInfo(key=key, size=len(first))
        holder = [first]
        del first  # so the upload can let go of this part as soon as it is sent
        size = self.uploads.upload(full, stream, holder, part_size, self._object_args(full, storage_class))
        return ObjectInfo(key=key, size=size)

    def check_tier(self, tier: str) -> str:
        return _choice("storage class", str(tier).upper(), STORAGE_CLASSES)

    def _object_args(self, full: str, storage_class: str) -> dict:
        args = {"Bucket": self.bucket, "Key": full, "StorageClass": storage_class,
                "ContentType": "application/octet-stream"}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def abort(self, key: str) -> None:
        """Abort every unfinished multipart upload of ``key``, as a killed writer leaves them."""
        self.uploads.abort_all(self._full(key))

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._call("delete", full, self.client.delete_object, Bucket=self.bucket, Key=full)

    # Reading ---------------------------------------------------------------

    def _head(self, full: str) -> dict:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            error = self._translate(exc, "read", full)
            if isinstance(error, NotFoundError):
                self._check_bucket(full)
            raise error from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read", full) from exc

    def _check_bucket(self, full: str) -> None:
        # HEAD answers a bare 404 both for a missing key and a missing bucket: tell them apart.
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in NOT_FOUND_CODES | {"NoSuchBucket"}:
                raise storage_failure(f"cannot read {self._url(full)}: bucket {self.bucket!r} does not exist at "
                                      f"{self.endpoint}; create it or correct 'bucket' in the storage's config",
                                      False) from exc
        except BotoCoreError:
            pass

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key=key, size=self._head(self._full(key))["ContentLength"])

    def get(self, key: str) -> BinaryIO:
        """Open ``key`` for streaming reads: one GET pinned to the object's ETag, resumed by Range if cut.

        Raise NotFoundError when it is missing and ArchivedObjectError when it
        must be thawed first (see request_thaw).
        """
        full = self._full(key)
        head = self._head(full)
        self._check_readable(full, head)
        return _ObjectReader(self, full, head["ContentLength"], head["ETag"])

    def _check_readable(self, full: str, head: dict) -> None:
        storage_class = head.get("StorageClass", "STANDARD")
        restore = head.get("Restore", "")
        if storage_class in THAW_CLASSES and 'ongoing-request="false"' not in restore:
            raise self._archived(full, storage_class, in_progress='ongoing-request="true"' in restore)
        if head.get("ArchiveStatus"):  # INTELLIGENT_TIERING's archive tiers
            raise self._archived(full, f"INTELLIGENT_TIERING {head['ArchiveStatus']}",
                                 in_progress='ongoing-request="true"' in restore)

    def _archived(self, full: str, storage_class: str, in_progress: bool = False) -> ArchivedObjectError:
        url = self._url(full)
        if in_progress:
            return ArchivedObjectError(f"{url} is in storage class {storage_class} and its restore (thaw) is still "
                                       "in progress; try again once it has finished")
        times = THAW_CLASSES.get(storage_class, "up to 12 hours")
        return ArchivedObjectError(
            f"{url} is in storage class {storage_class} and must be restored (thawed) before it can be read. "
            f"Request a restore with S3Storage.request_thaw(key, days=7, tier='Standard') or "
            f"`aws s3api restore-object --bucket {self.bucket} --key {full} "
            f"--restore-request 'Days=7,GlacierJobParameters={{Tier=Standard}}'`; "
            f"it takes {times}, then read it again")

    def request_thaw(self, key: str, days: int = 7, tier: str = "Standard") -> str:
        """Ask S3 to restore an archived object for ``days`` days; return "requested" or "in progress"."""
        full = self._full(key)
        tier = _choice("tier", tier, THAW_TIERS)
        if not (isinstance(days, int) and days >= 1):
            raise UsageError("days must be a positive integer")
        try:
            self.client.restore_object(Bucket=self.bucket, Key=full,
                                       RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
                return "in progress"
            raise self._translate(exc, "request a restore of", full) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "request a restore of", full) from exc
        log.info("requested a %s restore of %s for %d days", tier, self._url(full), days)
        return "requested"

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield complete objects under ``prefix`` (relative to the configured prefix) in key order.

        ListObjectsV2 returns keys in UTF-8 binary order, which is Python's str order.
        """
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"][len(base):], size=item["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, "list", base + prefix) from exc

    def free_bytes(self) -> int | None:
        return None

    # Errors ----------------------------------------------------------------

    def _call(self, doing: str, full: str, method: Callable, **kwargs) -> dict:
        try:
            return method(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, doing, full) from exc

    def _translate(self, exc: Exception, doing: str, full: str) -> CovetError:
        """Return the CovetError that says what ``exc`` (from botocore) means for the operator."""
        url = self._url(full)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            detail = f"{code}: {error.get('Message') or 'no message'} (HTTP {status})"
            if code == "NoSuchBucket":
                return storage_failure(f"cannot {doing} {url}: bucket {self.bucket!r} does not exist at "
                                       f"{self.endpoint}; create it or correct 'bucket' in the storage's config",
                                       False)
            if code in NOT_FOUND_CODES:
                return NotFoundError(f"object {url} does not exist")
            if code == "InvalidObjectState":  # an HTTP 403, but no permission problem
                return self._archived(full, str(error.get("StorageClass") or "GLACIER"))
            if code in ACCESS_CODES or status == 403:
                source = f"profile {self.profile!r}" if self.profile else "the AWS credential chain"
                return storage_failure(f"cannot {doing} {url}: access denied ({detail}); the credentials from "
                                       f"{source} are invalid or lack permission (IAM policy, bucket policy, "
                                       "KMS key policy)", False)
            if code == "NoSuchUpload":
                return storage_failure(f"cannot {doing} {url}: its multipart upload was aborted meanwhile "
                                       "(by the housekeeper or a lifecycle rule)", True)
            if code in DIGEST_CODES:
                return storage_failure(f"cannot {doing} {url}: S3 rejected the data ({detail}); the bytes it received "
                                       "do not match their checksum", True)
            retryable = status >= 500 or status in (408, 429) or code in TRANSIENT_CODES
            return storage_failure(f"cannot {doing} {url}: {detail}", retryable)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            return storage_failure(f"cannot {doing} {url}: no usable AWS credentials ({exc}); provide them through the "
                                   "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), ~/.aws/credentials, an "
                                   "instance or container role, or the storage's 'profile'", False)
        if isinstance(exc, (EndpointUnreachableError, HTTPClientError)):
            return storage_failure(f"cannot {doing} {url}: the S3 endpoint {self.endpoint} is unreachable or dropped "
                                   f"the connection after {self.max_attempts} attempt(s) ({exc}); check endpoint_url, "
                                   "region and the network", True)
        if isinstance(exc, ParamValidationError):
            return storage_failure(f"cannot {doing} {url}: {exc}", False)
        return storage_failure(f"cannot {doing} {url}: {exc}", True)


def _choice(name: str, value, allowed: tuple) -> str:
    if value not in allowed:
        raise UsageError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


# Errors a response body can raise mid-read; the read resumes with a ranged GET.
_STREAM_ERRORS = (BotoCoreError, urllib3.exceptions.HTTPError, OSError)


class _ObjectReader(io.RawIOBase):
    """Stream one object's body, pinned with If-Match to the ETag seen when it was opened.

    A connection lost mid-body resumes at the byte where it stopped with a
    ranged GET (``bytes=N-``), up to the storage's max_attempts in a row, so a
    long restore does not start over; an object replaced meanwhile fails the
    If-Match and raises StorageError. Memory: only what the caller asks for.
    """

    def __init__(self, storage: S3Storage, full: str, size: int, etag: str):
        super().__init__()
        self._storage = storage
        self._full = full
        self._size = size
        self._etag = etag
        self._position = 0
        self._body = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with memoryview(buffer) as raw, raw.cast("B") as view:
            data = self.read(len(view))
            view[:len(data)] = data
            return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed stream")
        if size is None or size < 0:
            size = self._size - self._position
        out: list[bytes] = []
        wanted = size
        failures = 0
        while wanted > 0 and self._position < self._size:
            if self._body is None:
                self._open()
            try:
                chunk = self._body.read(min(wanted, self._size - self._position))
            except _STREAM_ERRORS as exc:
                failures += 1
                self._drop_body()
                if failures >= self._storage.max_attempts:
                    raise storage_failure(f"cannot read {self._storage._url(self._full)}: the connection failed "
                                          f"{failures} times in a row ({exc})", True) from exc
                log.warning("reading %s failed at byte %d (%s); resuming", self._storage._url(self._full),
                            self._position, exc)
                continue
            if not chunk:
                failures += 1
                self._drop_body()
                if failures >= self._storage.max_attempts:
                    raise storage_failure(f"cannot read {self._storage._url(self._full)}: the response ended early at "
                                          f"byte {self._position} of {self._size}", True)
                continue
            failures = 0
            out.append(chunk)
            wanted -= len(chunk)
            self._position += len(chunk)
            if self._position >= self._size:
                self._drop_body()
        return out[0] if len(out) == 1 else b"".join(out)

    def _open(self) -> None:
        storage = self._storage
        extra = {"Range": f"bytes={self._position}-"} if self._position else {}
        try:
            response = storage.client.get_object(Bucket=storage.bucket, Key=self._full, IfMatch=self._etag, **extra)
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise storage_failure(f"{storage._url(self._full)} was replaced while it was being read; read it again",
                                      True) from exc
            raise storage._translate(exc, "read", self._full) from exc
        self._body = response["Body"]

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        if not self.closed:
            self._drop_body()
        super().close()
