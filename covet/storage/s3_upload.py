"""Writing to S3: part sizes, checksums and the streamed multipart upload, aborted on any failure.

Memory: an upload holds at most ``concurrency`` parts being sent plus the
one being read from the source, so its peak is
(concurrency + 1) x part size + MEMORY_OVERHEAD. The part size only grows
(doubling, up to S3's 5 GiB) for a stream larger than its size hint, so that
it still fits in MAX_PARTS parts.
"""

import base64
import hashlib
import logging
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable

from botocore.exceptions import BotoCoreError, ClientError

from covet.errors import CovetError
from covet.storage.base import storage_failure

# The backend's one logger, whichever of its modules writes: operators filter on it.
log = logging.getLogger("covet.storage.s3")

MiB = 1024 * 1024
GiB = 1024 * MiB


def checksum_args(algorithm: str, data) -> dict:
    """Return the PutObject/UploadPart arguments that let S3 check ``data`` with ``algorithm``."""
    if algorithm == "SHA256":
        return {"ChecksumSHA256": _b64(hashlib.sha256(data).digest())}
    if algorithm == "CRC32":
        return {"ChecksumCRC32": _b64(zlib.crc32(data).to_bytes(4, "big"))}
    return {"ContentMD5": _b64(hashlib.md5(data, usedforsecurity=False).digest())}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class MultipartUploads:
    """The multipart uploads of one bucket: start, send parts in parallel, complete, abort."""

    # S3's own limits, from https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
    MAX_PARTS = 10_000  # parts per multipart upload
    S3_MIN_PART_SIZE = 5 * MiB  # every part but the last; smaller ones fail CompleteMultipartUpload (EntityTooSmall)
    MAX_PART_SIZE = 5 * GiB  # one part

    # Our choices.
    MIN_PART_SIZE = 8 * MiB  # boto3's own default part (s3transfer's multipart_chunksize), above S3's 5 MiB floor
    HEADROOM = 2  # parts of the chosen size hold twice the expected size: estimates are only estimates
    READ_SIZE = 1 * MiB  # bytes asked of the source per read, copied into the part buffer
    MEMORY_OVERHEAD = 64 * MiB  # the slack in the documented bound: interpreter, SDK, sockets, source buffers

    def __init__(self, client, bucket: str, checksum: str, concurrency: int,
                 translate: Callable[[Exception, str, str], CovetError], url: Callable[[str], str]):
        self.client = client
        self.bucket = bucket
        self.checksum = checksum
        self.concurrency = concurrency
        self._translate = translate  # the storage's botocore-to-CovetError mapping
        self._url = url

    @classmethod
    def part_size_for(cls, size_hint: int | None) -> int:
        """Return the part size for a stream of about ``size_hint`` bytes: HEADROOM times it fits in MAX_PARTS."""
        if not size_hint or size_hint <= 0:
            return cls.MIN_PART_SIZE
        needed = -(-cls.HEADROOM * size_hint // cls.MAX_PARTS)
        return min(cls.MAX_PART_SIZE, max(cls.MIN_PART_SIZE, -(-needed // MiB) * MiB))

    @classmethod
    def grown(cls, part_size: int, next_number: int, sent: int) -> int:
        """Return the size of part ``next_number``: doubled while the parts left at this size hold less than was sent.

        With the part size from part_size_for this starts only once the stream
        has outgrown its size hint.
        """
        while (cls.MAX_PARTS - next_number + 1) * part_size < sent and part_size < cls.MAX_PART_SIZE:
            part_size = min(cls.MAX_PART_SIZE, part_size * 2)
        return part_size

    @classmethod
    def read_part(cls, stream: BinaryIO, size: int) -> bytearray:
        """Read up to ``size`` bytes from ``stream`` into one buffer, in READ_SIZE reads (no second copy)."""
        part = bytearray(size)
        filled = 0
        with memoryview(part) as view:
            while filled < size:
                chunk = stream.read(min(cls.READ_SIZE, size - filled))
                if not chunk:
                    break
                view[filled:filled + len(chunk)] = chunk
                filled += len(chunk)
        if filled < size:
            del part[filled:]
        return part

    def upload(self, full: str, stream: BinaryIO, holder: list, part_size: int, object_args: dict) -> int:
        """Upload the part in ``holder`` and the rest of ``stream`` as ``full``; return the bytes stored.

        The first part comes in a list the caller no longer refers to, so it
        can be let go of as soon as it is sent. Any failure aborts the upload;
        source exceptions come out unchanged, S3 failures as StorageError.
        """
        args = dict(object_args)
        if self.checksum != "MD5":
            args["ChecksumAlgorithm"] = self.checksum
        try:
            upload_id = self.client.create_multipart_upload(**args)["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, "start an upload of", full) from exc
        log.debug("multipart upload %s of %s started, %d-byte parts", upload_id, self._url(full), part_size)

        def upload(number: int, data: bytearray) -> dict:
            checksum = checksum_args(self.checksum, data)
            response = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number,
                                               Body=data, **checksum)
            part = {"PartNumber": number, "ETag": response["ETag"]}
            part.update({name: value for name, value in checksum.items() if name != "ContentMD5"})
            return part

        uploader = _PartUploader(upload, self.concurrency)
        total, number, data = 0, 1, holder.pop()
        try:
            while data:
                if number > self.MAX_PARTS:
                    raise storage_failure(f"cannot store {self._url(full)}: larger than S3's {self.MAX_PARTS} parts "
                                          f"of at most {self.MAX_PART_SIZE} bytes allow", retryable=False)
                total += len(data)
                uploader.submit(number, data)
                data = None  # the uploader owns it now: drop ours before reading the next part
                number += 1
                part_size = self.grown(part_size, number, total)
                data = self.read_part(stream, part_size)
            parts = uploader.finish()
            self._complete(full, upload_id, parts, total)
        except BaseException as exc:
            data = None
            uploader.cancel()
            aborted = self.abort_upload(full, upload_id)
            if isinstance(exc, (BotoCoreError, ClientError)):
                error = self._translate(exc, "store", full)
                if not aborted:
                    error.args = (f"{error}; its unfinished upload {upload_id} could not be aborted now and is "
                                  "left for the housekeeper (abort)",)
                raise error from exc
            raise
        log.debug("multipart upload %s of %s complete: %d parts, %d bytes", upload_id, self._url(full), number - 1,
                  total)
        return total

    def _complete(self, full: str, upload_id: str, parts: list[dict], total: int) -> None:
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except ClientError as exc:
            # A retried CompleteMultipartUpload whose first attempt succeeded (its
            # answer lost on the way) finds no upload: the object tells.
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=full)
            except ClientError:
                raise exc from None
            if head["ContentLength"] != total or not head["ETag"].endswith(f'-{len(parts)}"'):
                raise

    def abort_upload(self, full: str, upload_id: str) -> bool:
        """Abort one upload; return False (logged) when S3 could not be told now."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return True
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, self._url(full), exc)
            return False
        except BotoCoreError as exc:
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, self._url(full), exc)
            return False
        log.info("aborted multipart upload %s of %s", upload_id, self._url(full))
        return True

    def abort_all(self, full: str) -> None:
        """Abort every unfinished multipart upload of ``full``, as a killed writer leaves them."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for upload in page.get("Uploads", []):
                    if upload["Key"] == full:  # the prefix also matches longer keys
                        if not self.abort_upload(full, upload["UploadId"]):
                            raise storage_failure(f"cannot abort upload {upload['UploadId']} of "
                                                  f"{self._url(full)}", True)
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, "clean up", full) from exc


class _PartUploader:
    """Upload parts on a few threads, with at most ``concurrency`` of them in memory at once."""

    def __init__(self, upload: Callable[[int, bytearray], dict], concurrency: int):
        self._upload = upload
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="covet-s3-part")
        self._slots = threading.Semaphore(concurrency)
        self._futures = []
        self._failure: BaseException | None = None

    def submit(self, number: int, data: bytearray) -> None:
        """Queue part ``number``; block while ``concurrency`` parts are in flight; raise the first part failure."""
        self._raise_failure()
        self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            self._raise_failure()
        self._futures.append(self._pool.submit(self._run, number, [data]))

    def _run(self, number: int, holder: list) -> dict:
        data = holder.pop()  # the only reference left once the caller dropped its own
        try:
            return self._upload(number, data)
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc
            raise
        finally:
            data = None
            self._slots.release()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def finish(self) -> list[dict]:
        """Wait for every part; return them in order for CompleteMultipartUpload, or raise the first failure."""
        parts = []
        for future in self._futures:
            try:
                parts.append(future.result())
            except BaseException:
                self._raise_failure()
                raise
        self._pool.shutdown()
        return sorted(parts, key=lambda part: part["PartNumber"])

    def cancel(self) -> None:
        """Drop parts not started yet and wait for those in flight, so an abort that follows frees everything."""
        self._pool.shutdown(wait=True, cancel_futures=True)
