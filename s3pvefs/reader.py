"""Fills blocks that are not cached with ranged GETs of the file's remote object.

Contiguous missing blocks are fetched with one GET (up to ``max_range``, the part size); a block being fetched
is shared by every reader that needs it. Readahead (``prefetch``) runs in the background in the
reader's nursery, under cancel scopes that the file's handle cancels on release.
"""

from __future__ import annotations

import logging

import trio

from .cachefile import CachedFile
from .config import MiB
from .errors import FsError, FsKind, StoreError, StoreKind, first_fs_error
from .objectstore import RemoteObject
from .store import ObjectStore

log = logging.getLogger(__name__)

SHARED_FETCH_ROUNDS = 3  # see ensure_cached

class BlockReader:
    def __init__(self, store: ObjectStore, max_parallel: int, max_range: int = 16 * MiB):
        self.store = store
        self.max_range = max_range  # bytes one GET asks for at most
        self.limiter = trio.CapacityLimiter(max_parallel)
        # (cache file, block) -> event set when the fetch holding that block ended.
        self._in_flight: dict[tuple[int, int], trio.Event] = {}
        self.nursery: trio.Nursery | None = None  # for readahead, set by run()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def ensure_cached(self, data: CachedFile, base: RemoteObject, blocks: list[int]) -> None:
        """Make every block in ``blocks`` cached, fetching the missing ones in parallel.

        A fetch this call shares with another reader can end without the block: a readahead
        cancelled when its handle closed, or a failure reported to that reader. Such blocks
        are asked for again, a few times, before the read fails."""
        for _ in range(SHARED_FETCH_ROUNDS):
            missing = [b for b in blocks if data.needs_fetch(b)]
            if not missing:
                return
            runs, waits = self._claim(data, missing)
            with first_fs_error():
                async with trio.open_nursery() as nursery:
                    for run, event in runs:
                        nursery.start_soon(self._fetch, data, base, run, event)
                    for event in waits:
                        nursery.start_soon(event.wait)
        if any(data.needs_fetch(b) for b in blocks):
            raise FsError(FsKind.IO, f"could not read {base.key} from S3 (see log)")

    def prefetch(self, data: CachedFile, base: RemoteObject, offset: int, length: int,
                 scopes: set[trio.CancelScope]) -> None:
        """Fetch [offset, offset+length) in the background; failures only cost the speed-up."""
        if self.nursery is None:
            return
        wanted = [b for b in data.blocks(offset, length) if data.needs_fetch(b)]
        runs, _ = self._claim(data, wanted)
        for run, event in runs:
            self.nursery.start_soon(self._prefetch, data, base, run, event, scopes)

    async def _prefetch(self, data, base, run, event, scopes) -> None:
        scope = trio.CancelScope()
        scopes.add(scope)
        try:
            with scope:
                await self._fetch(data, base, run, event)
        except Exception as exc:  # a GET or the cache disk: only the speed-up is lost
            log.debug("readahead of %s failed: %s", base.key, exc)
        finally:
            scopes.discard(scope)

    def _claim(self, data: CachedFile, blocks: list[int]):
        """Split blocks into runs to fetch (now claimed by the caller) and fetches to wait for."""
        per_run = max(1, self.max_range // data.block_size)
        runs: list[tuple[list[int], trio.Event]] = []
        waits: set[trio.Event] = set()
        for block in sorted(blocks):
            slot = (id(data), block)
            if slot in self._in_flight:
                waits.add(self._in_flight[slot])
                continue
            if runs and runs[-1][0][-1] == block - 1 and len(runs[-1][0]) < per_run:
                runs[-1][0].append(block)
            else:
                runs.append(([block], trio.Event()))
            self._in_flight[slot] = runs[-1][1]
        return runs, waits

    async def _fetch(self, data: CachedFile, base: RemoteObject, run: list[int],
                     event: trio.Event) -> None:
        try:
            start = run[0] * data.block_size
            end = min((run[-1] + 1) * data.block_size, data.base_valid_len)
            if end > start:
                async with self.limiter:
                    payload = await self._get(base, start, end - start)
                await data.install_run(run[0], len(run), payload)
        finally:
            for block in run:
                self._in_flight.pop((id(data), block), None)
            event.set()

    async def read_range(self, base: RemoteObject, offset: int, length: int) -> bytes:
        """Bytes of the remote object without caching them (used by uploads)."""
        async with self.limiter:
            return await self._get(base, offset, length)

    async def _get(self, base: RemoteObject, offset: int, length: int) -> bytes:
        try:
            return await self.store.get(base.key, offset, length, if_match=base.etag)
        except StoreError as exc:
            _explain(exc, base.key)
            raise


def _explain(exc: StoreError, key: str) -> None:
    """Say what the admin can do about read failures that have a known cause."""
    if exc.kind is StoreKind.ARCHIVED:
        log.error("%s is in an archive storage class (GLACIER / DEEP_ARCHIVE) and not restored: "
                  "restore it first (aws s3api restore-object --bucket ... --key %s ...), then "
                  "read it again", key, key)

