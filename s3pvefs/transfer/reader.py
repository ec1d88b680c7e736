"""Ranged GETs of a file's remote object that fill its cache blocks, and the bytes of a read
taken from them (``BlockReader``). The read path above it, with each handle's readahead, is
prefetch.py.

Contiguous missing blocks are fetched with one GET (up to ``max_range``: the part size, at
most ``MAX_GET_RANGE``); a
block being fetched is shared by every reader that needs it (``Fetch``). A read is answered
from the GET's payload as soon as it arrives (``sources``), while the payload is written to the
cache file in the background; its blocks count as cached only once written. A GET keeps its
connection slot until a background write slot is free, so payloads in memory stay below
(``max_parallel`` + ``CACHE_WRITES``) x ``max_range`` and GETs wait while the cache disk lags
behind. Readahead (``prefetch``) runs in the reader's nursery, each GET under a cancel scope
that the handle that asked for it cancels on release.
"""

from __future__ import annotations

import logging

import trio

from s3pvefs.config.settings import MiB
from s3pvefs.errors import StoreError, StoreKind, first_fs_error
from s3pvefs.state.cachefile import CachedFile
from s3pvefs.store.objectstore import RemoteObject
from s3pvefs.store.s3store import ObjectStore

log = logging.getLogger(__name__)

CACHE_WRITES = 4  # fetched payloads being written to cache files at once
# A GET's payload is held in memory until written: its size does not grow with the part size.
MAX_GET_RANGE = 16 * MiB

# Where the pieces of a read come from: bytes of an arrived payload, or an (offset, length)
# of the cache file.
Source = bytes | tuple[int, int]


class Fetch:
    """One ranged GET of a run of blocks of one cache file, from the request until its payload
    is in the cache file; shared by every reader that needs one of its blocks."""

    def __init__(self, blocks: range):
        self.blocks = blocks
        self.payload: bytes | None = None  # from arrival until written to the cache file
        self.arrived = trio.Event()  # the payload is here, or the GET failed or was cancelled
        self.installed = trio.Event()  # the payload is in the cache file, or never will be

    def bytes_at(self, block_size: int, start: int, end: int) -> bytes:
        """File bytes [start, end) from the payload; zeros past its end (the file holds zeros
        there: bytes past the base's end that are not cached were never written)."""
        first = start - self.blocks.start * block_size
        piece = bytes(memoryview(self.payload)[first:first + end - start])
        return piece + bytes(end - start - len(piece))


class BlockReader:
    def __init__(self, store: ObjectStore, max_parallel: int, max_range: int = 16 * MiB):
        self.store = store
        self.max_range = max_range  # bytes one GET asks for at most
        self.limiter = trio.CapacityLimiter(max_parallel)
        self.cache_writes = trio.CapacityLimiter(CACHE_WRITES)
        # (cache file, block) -> the fetch holding that block, until it is written.
        self._in_flight: dict[tuple[CachedFile, int], Fetch] = {}
        self.nursery: trio.Nursery | None = None  # readahead and cache writes, set by run()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- what a read is made of -------------------------------------------------------------

    def sources(self, data: CachedFile, offset: int, length: int) -> list[Source] | None:
        """Where each piece of the range comes from: the bytes of an arrived payload, or an
        (offset, length) of the cache file; None while a block is neither cached nor arrived.

        Decided at one moment, with no checkpoint: a block written locally by then is cached,
        so its cache-file bytes win over any payload, even of a GET that ran meanwhile."""
        sources: list[Source] = []
        end = offset + length
        for block in data.blocks(offset, length):
            start = max(offset, block * data.block_size)
            stop = min(end, (block + 1) * data.block_size)
            if not data.needs_fetch(block):
                _add_file_range(sources, start, stop)
                continue
            fetch = self._in_flight.get((data, block))
            if fetch is None or fetch.payload is None:
                return None
            # Past base_valid_len (a truncation, then an extension) the file holds zeros; a
            # read may start there inside a block that still needs its first bytes fetched.
            remote_stop = min(stop, max(start, data.base_valid_len))
            if remote_stop > start:
                sources.append(fetch.bytes_at(data.block_size, start, remote_stop))
            if stop > remote_stop:
                sources.append(bytes(stop - remote_stop))
        return sources

    @staticmethod
    async def assemble(data: CachedFile, sources: list[Source]) -> bytes:
        """The bytes ``sources`` name (the caller keeps the range ``in_use`` meanwhile)."""
        data.used()  # a file read from payloads is in use all the same
        pieces = [await data.read(*source) if isinstance(source, tuple) else source
                  for source in sources]
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def obtain(self, data: CachedFile, base: RemoteObject, blocks, *,
                     installed: bool) -> None:
        """Fetch those of ``blocks`` no one is fetching, and wait for the other fetches: until
        every payload arrived, or (``installed``) is in the cache file.

        A fetch shared with another reader can end without its blocks (a readahead cancelled
        when its handle closed, a failure reported to that reader): the caller asks again.
        A failure of this call's own GETs is raised (the first, as itself)."""
        wanted = [b for b in blocks if data.needs_fetch(b)]
        if not installed:  # an arrived payload answers a read already
            wanted = [b for b in wanted if not self._arrived(data, b)]
        own, shared = self._claim(data, wanted)
        with first_fs_error():
            async with trio.open_nursery() as nursery:
                for fetch in own:
                    nursery.start_soon(self._fetch, data, base, fetch)
                for fetch in [*own, *shared]:
                    nursery.start_soon((fetch.installed if installed else fetch.arrived).wait)

    def _arrived(self, data: CachedFile, block: int) -> bool:
        fetch = self._in_flight.get((data, block))
        return fetch is not None and fetch.payload is not None

    # -- readahead --------------------------------------------------------------------------

    def prefetch(self, data: CachedFile, base: RemoteObject, offset: int, length: int,
                 scopes: set[trio.CancelScope] | None = None) -> None:
        """Fetch [offset, offset+length) in the background, each GET under a cancel scope kept
        in ``scopes`` while it runs; failures only cost the speed-up."""
        if self.nursery is None:
            return
        wanted = [b for b in data.blocks(offset, length) if data.needs_fetch(b)]
        own, _ = self._claim(data, wanted)
        for fetch in own:
            self.nursery.start_soon(self._prefetch, data, base, fetch,
                                    set() if scopes is None else scopes)

    async def _prefetch(self, data: CachedFile, base: RemoteObject, fetch: Fetch,
                        scopes: set[trio.CancelScope]) -> None:
        scope = trio.CancelScope()
        scopes.add(scope)
        try:
            with scope:
                await self._fetch(data, base, fetch)
        except Exception as exc:  # a GET: only the speed-up is lost
            log.debug("readahead of %s failed: %s", base.key, exc)
        finally:
            scopes.discard(scope)

    # -- fetches ----------------------------------------------------------------------------

    def _claim(self, data: CachedFile, blocks: list[int]) -> tuple[list[Fetch], set[Fetch]]:
        """Split blocks into fetches to run (now claimed by the caller) and fetches to wait
        for."""
        per_run = max(1, self.max_range // data.block_size)
        runs: list[list[int]] = []
        shared: set[Fetch] = set()
        for block in sorted(blocks):
            fetch = self._in_flight.get((data, block))
            if fetch is not None:
                shared.add(fetch)
            elif runs and runs[-1][-1] == block - 1 and len(runs[-1]) < per_run:
                runs[-1].append(block)
            else:
                runs.append([block])
        own = [Fetch(range(run[0], run[-1] + 1)) for run in runs]
        for fetch in own:
            for block in fetch.blocks:
                self._in_flight[(data, block)] = fetch
        return own, shared

    async def _fetch(self, data: CachedFile, base: RemoteObject, fetch: Fetch) -> None:
        """GET the fetch's blocks; hand the payload to the readers waiting for it, and to a
        cache write in the background."""
        start = fetch.blocks.start * data.block_size
        end = min(fetch.blocks.stop * data.block_size, data.base_valid_len)
        if end <= start:  # truncated away meanwhile: nothing left to fetch
            self._finish(data, fetch)
            return
        try:
            async with self.limiter:
                payload = await self._get(base, start, end - start)
                # With the connection slot still held: no more GETs while the disk lags.
                await self.cache_writes.acquire_on_behalf_of(fetch)
        except BaseException:
            self._finish(data, fetch)
            raise
        fetch.payload = payload
        fetch.arrived.set()
        if self.nursery is None:  # the reader is not running: the caller waits for the write
            await self._install(data, fetch)
        else:
            self.nursery.start_soon(self._install, data, fetch)

    async def _install(self, data: CachedFile, fetch: Fetch) -> None:
        try:
            await data.install_run(fetch.blocks.start, len(fetch.blocks), fetch.payload)
        except OSError as exc:  # the cache disk: the blocks are fetched again when needed
            log.warning("cannot write fetched blocks to %s: %s", data.path, exc)
        finally:
            self.cache_writes.release_on_behalf_of(fetch)
            self._finish(data, fetch)

    def _finish(self, data: CachedFile, fetch: Fetch) -> None:
        """The fetch is over: its blocks are cached now, or must be fetched again."""
        for block in fetch.blocks:
            if self._in_flight.get((data, block)) is fetch:
                del self._in_flight[(data, block)]
        fetch.payload = None
        fetch.arrived.set()
        fetch.installed.set()

    # -- uncached reads ---------------------------------------------------------------------

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


def _add_file_range(sources: list[Source], start: int, stop: int) -> None:
    """Append a cache-file range, merged with the one before it: one pread per stretch."""
    last = sources[-1] if sources else None
    if isinstance(last, tuple) and last[0] + last[1] == start:
        sources[-1] = (last[0], stop - last[0])
    else:
        sources.append((start, stop - start))


def _explain(exc: StoreError, key: str) -> None:
    """Say what the admin can do about read failures that have a known cause."""
    if exc.kind is StoreKind.ARCHIVED:
        log.error("%s is in an archive storage class (GLACIER / DEEP_ARCHIVE) and not restored: "
                  "restore it first (aws s3api restore-object --bucket ... --key %s ...), then "
                  "read it again", key, key)
