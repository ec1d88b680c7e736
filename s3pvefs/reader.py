"""Fills blocks that are not cached with ranged GETs of the file's remote object."""

from __future__ import annotations

import errno
import logging

import trio

from .blockcache import CachedFile
from .errors import FsError, StoreError, first_fs_error
from .nodes import RemoteObject
from .store import ObjectStore

log = logging.getLogger(__name__)


class BlockReader:
    def __init__(self, store: ObjectStore, max_parallel: int):
        self.store = store
        self.limiter = trio.CapacityLimiter(max_parallel)
        # (cache file, block) -> event set when that fetch ended; concurrent readers share it.
        self._in_flight: dict[tuple[int, int], trio.Event] = {}

    async def ensure_cached(self, data: CachedFile, base: RemoteObject, blocks: list[int]) -> None:
        """Make every block in ``blocks`` cached, fetching the missing ones in parallel."""
        missing = [b for b in blocks if data.needs_fetch(b)]
        if not missing:
            return
        with first_fs_error():
            async with trio.open_nursery() as nursery:
                for block in missing:
                    nursery.start_soon(self._fetch_shared, data, base, block)
        # A shared fetch that failed elsewhere leaves the block missing: report it here too.
        if any(data.needs_fetch(b) for b in missing):
            raise FsError(errno.EIO, f"could not read {base.key} from S3 (see log)")

    async def _fetch_shared(self, data: CachedFile, base: RemoteObject, block: int) -> None:
        slot = (id(data), block)
        event = self._in_flight.get(slot)
        if event is not None:
            await event.wait()
            return
        event = self._in_flight[slot] = trio.Event()
        try:
            await self._fetch(data, base, block)
        finally:
            del self._in_flight[slot]
            event.set()

    async def _fetch(self, data: CachedFile, base: RemoteObject, block: int) -> None:
        start = block * data.block_size
        length = min(data.block_size, data.base_valid_len - start)
        if length <= 0:
            return
        async with self.limiter:
            try:
                payload = await self.store.get(base.key, start, length, if_match=base.etag)
            except StoreError as exc:
                _explain(exc, base.key)
                raise
        await data.install(block, payload)

    async def read_range(self, base: RemoteObject, offset: int, length: int) -> bytes:
        """Bytes of the remote object without caching them (used by uploads)."""
        async with self.limiter:
            try:
                return await self.store.get(base.key, offset, length, if_match=base.etag)
            except StoreError as exc:
                _explain(exc, base.key)
                raise


def _explain(exc: StoreError, key: str) -> None:
    """Say what the admin can do about read failures that have a known cause."""
    if exc.code == "InvalidObjectState":
        log.error("%s is in an archive storage class (GLACIER / DEEP_ARCHIVE) and not restored: "
                  "restore it first (aws s3api restore-object --bucket ... --key %s ...), then "
                  "read it again", key, key)
    elif exc.errno == errno.ESTALE:
        log.error("%s changed on S3 while its blocks were cached here; refusing to mix "
                  "versions: the new one is read once the directory listing is refreshed "
                  "(after dir_ttl)", key)
