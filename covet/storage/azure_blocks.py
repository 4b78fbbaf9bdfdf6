"""Writing to Azure Blob: block sizes and the staged block upload, committed only at the end of the stream.

Peak memory of an upload is at most (concurrency + 1) x block size plus the
SDK's small per-request overhead: one block being read, the others in flight.

Azure has no "abort" for a block upload: blocks staged but never committed
are invisible (not listed, not readable) and the service discards them
about a week after the last upload activity on that name. The block list is
committed only after the whole stream was read and every block staged, so a
failed or killed upload never leaves a visible blob.
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import BinaryIO, Callable

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobBlock, ContentSettings, StandardBlobTier

from covet.errors import CovetError, StorageError
from covet.streams import read_exact

# The backend's one logger, whichever of its modules writes: operators filter on it.
log = logging.getLogger("covet.storage.azure")

MiB = 1024 * 1024


class BlockUploads:
    """Staged block uploads of one container's blobs: blocks read in turn, staged in parallel, committed last."""

    # Azure limits (learn.microsoft.com, "Scalability and performance targets
    # for Blob storage" and the Put Block / Put Block List references): a
    # block blob holds at most 50,000 committed blocks; a block is at most
    # 4,000 MiB (service version 2019-12-12 and later); all block ids of one
    # blob have the same length, at most 64 bytes before base64 encoding.
    MAX_BLOCKS = 50_000
    MAX_BLOCK_SIZE = 4000 * MiB
    # Ours: blocks of at least 8 MiB keep the request count (and per-request
    # latency) low and count as "high-throughput" block uploads (> 4 MiB).
    MIN_BLOCK_SIZE = 8 * MiB
    # Ours: size blocks for 10,000 blocks, so a stream five times larger than
    # its size hint (a database that grew during the dump) still fits 50,000.
    TARGET_BLOCKS = 10_000

    def __init__(self, concurrency: int, error: Callable[[BaseException, str], CovetError]):
        self.concurrency = concurrency
        self._error = error  # the storage's SDK-to-CovetError mapping

    @classmethod
    def block_size_for(cls, size_hint: int | None, floor: int) -> int:
        """Return the block size for a stream of about ``size_hint`` bytes, at least ``floor``."""
        if not size_hint:
            return floor
        needed = math.ceil(size_hint / cls.TARGET_BLOCKS)
        if needed <= floor:
            return floor
        return min(math.ceil(needed / MiB) * MiB, cls.MAX_BLOCK_SIZE)

    def upload(self, blob, key: str, stream: BinaryIO, block_size: int, access_tier: str | None,
               size_hint: int | None) -> int:
        """Stage ``stream`` as blocks of ``blob`` (bounded, in parallel), commit the list; return the bytes stored.

        An error of the source is raised unchanged; an Azure error as
        StorageError. Either way the staged blocks stay uncommitted.
        """
        upload = uuid.uuid4().hex  # a fresh id per upload: never mixes with blocks of an earlier attempt
        block_ids: list[str] = []
        whole = hashlib.md5(usedforsecurity=False)
        size = 0
        in_flight: set[Future] = set()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="azure-put") as pool:
            try:
                while True:
                    block = read_exact(stream, block_size)
                    if not block:
                        break
                    if len(block_ids) == self.MAX_BLOCKS:
                        raise StorageError(
                            f"{key} needs more than {self.MAX_BLOCKS} blocks of {block_size} bytes: the stream "
                            f"is much larger than the expected {size_hint} bytes; set a larger block_size")
                    while len(in_flight) >= self.concurrency:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    block_id = f"{upload}-{len(block_ids):06d}"  # same length for every block of the blob
                    in_flight.add(pool.submit(self._stage, blob, key, block_id, block))
                    block_ids.append(block_id)
                    whole.update(block)
                    size += len(block)
                    del block
                done, in_flight = wait(in_flight)
                for future in done:
                    future.result()
                settings = ContentSettings(content_md5=bytearray(whole.digest()))
                try:
                    blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids], content_settings=settings,
                                           standard_blob_tier=StandardBlobTier(access_tier) if access_tier else None)
                except AzureError as exc:
                    raise self._error(exc, f"commit of {key}") from exc
            except BaseException:
                for future in in_flight:
                    future.cancel()
                log.debug("Azure Blob: upload of %s failed after %d staged block(s); none committed",
                          key, len(block_ids))
                raise
        return size

    def _stage(self, blob, key: str, block_id: str, data: bytes) -> None:
        try:
            blob.stage_block(block_id, data, length=len(data), validate_content=True)
        except AzureError as exc:
            raise self._error(exc, f"upload of {key}") from exc
