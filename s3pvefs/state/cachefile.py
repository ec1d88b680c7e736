"""One cache file of the block cache: a sparse local file per file node, with per-block state.

A block is ``cached`` when its bytes in the cache file are the file's current content, and
``dirty`` (block -> write generation) when they are newer than the object on S3. Bytes at or past
``base_valid_len`` are not backed by the remote object (the file was truncated or extended), so
they read as whatever the cache file holds there: written data or zeros. Bytes below
``streamed_len`` were uploaded as parts of a multipart upload that is not complete yet: they
may be evicted, but cannot be read back from S3 until the upload completes.

A block is charged for the bytes it can hold on disk (a file's last, partial block only up to
the file's end, in 4 KiB pages: ``block_charge``). The cache a file belongs to (``BlockCache``,
seen here as an ``OwningCache``) counts the charges, runs the disk I/O in worker threads, and
closes or deletes the file in the background once no disk access on it runs.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import trio

from s3pvefs.store.body import FileSlice

log = logging.getLogger(__name__)

PAGE = 4096

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the disk space of a range of a file; it then reads as zeros."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def block_charge(block_size: int, filled: int) -> int:
    """What a block holding data in its first ``filled`` bytes costs on disk: whole pages."""
    return min(block_size, max(PAGE, -(-filled // PAGE) * PAGE))


def block_runs(blocks: list[int], block_size: int) -> list[tuple[int, int]]:
    """Sorted block numbers -> (offset, length) runs."""
    runs: list[list[int]] = []
    for block in blocks:
        if runs and runs[-1][1] == block:
            runs[-1][1] = block + 1
        else:
            runs.append([block, block + 1])
    return [(start * block_size, (end - start) * block_size) for start, end in runs]


class OwningCache(Protocol):
    """What a cache file needs from the cache it belongs to (``BlockCache``)."""

    block_size: int
    data_dir: Path

    def bytes_added(self, count: int) -> None:
        """Blocks were charged."""

    def bytes_removed(self, count: int) -> None:
        """Blocks were dropped: writers waiting for room may go on."""

    def space_freed(self) -> None:
        """Blocks became clean: writers waiting for room may go on."""

    async def trim(self, incoming: int = 0) -> None:
        """Make room for ``incoming`` bytes fetched for reading."""

    async def run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking disk I/O in a worker thread."""

    def let_go_later(self, cached_file: CachedFile) -> None:
        """Close the file's descriptor or delete it in the background."""

    def thrown_away(self, cached_file: CachedFile, charged: int) -> None:
        """The file was discarded: delete it in the background; ``charged`` is freed then."""

    def deleted(self, charged: int) -> None:
        """A thrown-away cache file is gone from the disk."""


class CachedFile:
    """The cache file of one file node and the state of its blocks."""

    def __init__(self, cache: OwningCache, file_id: str):
        self.cache = cache
        self.file_id = file_id
        self.block_size = cache.block_size
        self.path = cache.data_dir / file_id
        self._fd: int | None = None
        self._io_running = 0
        # No handle has the file open: close the descriptor after every disk access (uploads
        # and prefetches of closed files must not pile up open files). keep_fd() clears it.
        self._no_handles = True
        self.discarded = False  # thrown away: late fetches must not bring it back
        self._deleting = False  # its deletion (after the discard) has started
        self._charged_at_discard = 0  # freed once it is deleted
        self.charges: dict[int, int] = {}  # cached block -> bytes charged to the cache for it
        self.dirty: dict[int, int] = {}
        self.base_valid_len = 0
        self.streamed_len = 0  # bytes uploaded as parts of an unfinished multipart upload
        # Blocks at the start kept while streaming: formats such as qcow2 rewrite their header.
        self.pinned_blocks = 0
        self.low_water = 0  # smallest size since an upload took its snapshot
        self._last_generation = 0
        # Serialises changes of the cache file (writes, installs of fetched blocks, truncates).
        self.write_lock = trio.Lock()
        self.busy: Counter[int] = Counter()  # blocks that reads and writes are working on
        self.last_used = time.monotonic()

    # -- state -----------------------------------------------------------------------------

    @property
    def cached(self):
        """The cached blocks (a read-only view)."""
        return self.charges.keys()

    @property
    def cached_bytes(self) -> int:
        return sum(self.charges.values())

    @property
    def dirty_bytes(self) -> int:
        return len(self.dirty) * self.block_size

    def blocks(self, offset: int, length: int) -> range:
        if length <= 0:
            return range(0)
        return range(offset // self.block_size, (offset + length - 1) // self.block_size + 1)

    def needs_fetch(self, block: int) -> bool:
        return block not in self.cached and block * self.block_size < self.base_valid_len

    def unreadable(self, block: int) -> bool:
        """Evicted after it was uploaded as a part: S3 has it only once the upload completes."""
        return block not in self.cached and block * self.block_size < self.streamed_len

    def missing_blocks(self, offset: int, length: int) -> list[int]:
        return [b for b in self.blocks(offset, length) if self.needs_fetch(b)]

    def fully_local(self, size: int) -> bool:
        """True when every byte of the file can be produced without the remote object."""
        return not any(self.needs_fetch(b) or self.unreadable(b) for b in self.blocks(0, size))

    def charge(self, block: int, filled: int) -> None:
        """Cache ``block``, holding data in its first ``filled`` bytes (charged in pages)."""
        if self.discarded:
            return
        new = block_charge(self.block_size, filled)
        old = self.charges.get(block, 0)
        if new > old:
            self.charges[block] = new
            self.cache.bytes_added(new - old)

    def uncharge(self, blocks) -> int:
        """Forget cached blocks; returns the bytes that frees."""
        freed = sum(self.charges.pop(block, 0) for block in blocks)
        self.cache.bytes_removed(freed)
        return freed

    def mark_written(self, offset: int, length: int) -> None:
        generation = self._next_generation()
        end = offset + length
        for block in self.blocks(offset, length):
            self.charge(block, end - block * self.block_size)
            self.dirty[block] = generation
        self.last_used = time.monotonic()

    def _next_generation(self) -> int:
        """Write generations are wall-clock nanoseconds, strictly increasing: the oldest dirty
        block's says how long data has waited only in the cache (``oldest_dirty_ns``)."""
        self._last_generation = max(self._last_generation + 1, time.time_ns())
        return self._last_generation

    @property
    def oldest_dirty_ns(self) -> int | None:
        """When the oldest write not yet on S3 was made (wall clock, ns), if there is one."""
        return min(self.dirty.values(), default=None)

    def dirty_snapshot(self, offset: int = 0, length: int | None = None) -> dict[int, int]:
        """Generations of the dirty blocks (of the whole file, or of one range)."""
        if length is None:
            return dict(self.dirty)
        return {b: self.dirty[b] for b in self.blocks(offset, length) if b in self.dirty}

    def mark_clean(self, snapshot: dict[int, int]) -> None:
        """Blocks not written since ``snapshot`` was taken are now safe on S3."""
        for block, generation in snapshot.items():
            if self.dirty.get(block) == generation:
                del self.dirty[block]
        self.cache.space_freed()

    def in_use(self, offset: int, length: int):
        """Keep eviction away from these bytes while a read or write works on them."""
        return self.blocks_kept(self.blocks(offset, length))

    @contextmanager
    def blocks_kept(self, blocks):
        """Keep eviction away from these blocks meanwhile."""
        blocks = list(blocks)
        self.busy.update(blocks)
        try:
            yield
        finally:
            for block in blocks:
                self.busy[block] -= 1
                if not self.busy[block]:
                    del self.busy[block]

    # -- I/O (worker threads) --------------------------------------------------------------

    async def _io(self, fn, *args):
        """Disk I/O on the cache file in a worker thread. The file descriptor is closed only
        when no such call is running, so no thread ever uses a closed (or reused) one."""
        self._io_running += 1
        try:
            return await self.cache.run_io(fn, *args)
        finally:
            self._io_running -= 1
            if not self._io_running and self._needs_letting_go():
                self.cache.let_go_later(self)

    async def sync(self) -> None:
        """fsync the cache file (before a journal record that vouches for its data)."""
        if not self.discarded:  # a thrown-away file vouches for nothing
            await self._io(self._fsync_if_written)

    def _fsync_if_written(self) -> None:
        if self._fd is not None or self.path.exists():  # never written: nothing to sync
            os.fsync(self._ensure_fd())

    def release_fd(self) -> None:
        """No handle needs the file open any more: close it once idle, and after every
        access from now on (in the background: see BlockCache.run)."""
        self._no_handles = True
        if self._needs_letting_go():
            self.cache.let_go_later(self)

    def _needs_letting_go(self) -> bool:
        """Whether its descriptor is to be closed or the file to be deleted."""
        return (self.discarded and not self._deleting) or (
            self._no_handles and self._fd is not None)

    async def let_go(self) -> None:
        """Close the descriptor of a file no handle has open, or delete a thrown-away file,
        in a worker thread; only once no disk access on it runs (the last one asks again)."""
        if self._io_running or not self._needs_letting_go():
            return
        # No thread uses the descriptor now, and none can from here: one opened later is new.
        fd, self._fd = self._fd, None
        doomed = self.discarded
        self._deleting = doomed
        with trio.CancelScope(shield=True):  # once taken, the descriptor must be closed
            try:
                await self.cache.run_io(_close_and_delete, fd, self.path if doomed else None)
            except OSError as exc:
                log.warning("cannot delete or close the cache file %s: %s", self.path, exc)
        # Counted free even when the unlink failed: kept, the charge would hold writers back
        # forever; the next mount deletes what is left (remove_unreferenced).
        if doomed:
            self.cache.deleted(self._charged_at_discard)

    def keep_fd(self) -> None:
        """A handle opened the file: keep its descriptor open between accesses."""
        self._no_handles = False

    def _ensure_fd(self) -> int:
        if self._fd is None:
            if self.discarded:  # a worker thread still busy with a file thrown away
                raise OSError(errno.ESTALE, "the cache file was discarded")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def _pwrite(self, offset: int, data: bytes) -> None:
        fd = self._ensure_fd()
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._ensure_fd(), length, offset)
        if len(data) < length:  # past the end of the sparse cache file: zeros
            data += bytes(length - len(data))
        return data

    def _truncate(self, size: int) -> None:
        os.ftruncate(self._ensure_fd(), size)

    def _punch(self, ranges: list[tuple[int, int]]) -> None:
        fd = self._ensure_fd()
        for offset, length in ranges:
            punch_hole(fd, offset, length)

    async def write(self, offset: int, data: bytes) -> None:
        """Write bytes as new, dirty content (caller holds ``write_lock``)."""
        await self._io(self._pwrite, offset, data)
        self.mark_written(offset, len(data))

    async def install_run(self, first_block: int, count: int, payload: bytes) -> None:
        """Store blocks fetched from S3 (``payload`` starts at ``first_block``), except those
        written or truncated away meanwhile."""
        await self.cache.trim(count * self.block_size)
        async with self.write_lock:
            if self.discarded:  # deleted (or changed on S3) while the GET ran
                return
            wanted = [b for b in range(first_block, first_block + count)
                      if b not in self.cached and b * self.block_size < self.base_valid_len]
            if not wanted:
                return
            # One pwrite per run of wanted blocks, from views of the payload (no copies).
            view = memoryview(payload)
            writes = []
            for run_start, run_length in block_runs(wanted, self.block_size):
                run_end = min(run_start + run_length, self.base_valid_len)
                piece_start = run_start - first_block * self.block_size
                writes.append((run_start, view[piece_start:piece_start + run_end - run_start]))
            await self._io(self._pwrite_many, writes)
            for block in wanted:
                self.charge(block, self.base_valid_len - block * self.block_size)

    def _pwrite_many(self, writes: list[tuple[int, memoryview]]) -> None:
        for offset, data in writes:
            self._pwrite(offset, data)

    def used(self) -> None:
        """A read was answered from it (or from a fetched payload on its way into it)."""
        self.last_used = time.monotonic()

    def slice(self, offset: int, length: int) -> FileSlice:
        """Bytes of the cache file, to send without reading them here (the caller keeps
        them ``in_use``)."""
        self.used()
        return FileSlice(self.path, offset, length)

    async def read(self, offset: int, length: int) -> bytes:
        self.used()
        return await self._io(self._pread, offset, length)

    async def truncate(self, old_size: int, new_size: int) -> None:
        """Resize to ``new_size`` (caller holds ``write_lock``).

        The cache file is cut too, so a later extension reads zeros; a partial boundary block
        that is not cached stays fetchable because the remote object is only trusted up to
        ``base_valid_len``.
        """
        await self._io(self._truncate, new_size)
        if new_size < old_size:
            self.base_valid_len = min(self.base_valid_len, new_size)
            self.low_water = min(self.low_water, new_size)
            first_gone = -(-new_size // self.block_size)
            gone = [b for b in self.cached if b >= first_gone]
            for block in gone:
                self.dirty.pop(block, None)
            self.uncharge(gone)

    def reset_base(self, valid_len: int) -> None:
        """The remote object now holds the first ``valid_len`` bytes of this content."""
        self.base_valid_len = valid_len

    def evictable(self, block: int) -> bool:
        if block in self.dirty or block < self.pinned_blocks:
            return False
        start = block * self.block_size
        return start < self.base_valid_len or start < self.streamed_len

    async def evict_clean(self, wanted: int) -> int:
        """Punch out clean blocks S3 already has (never those a read or write works on)."""
        if wanted <= 0:
            return 0
        async with self.write_lock:
            victims = sorted(b for b in self.cached if self.evictable(b) and not self.busy[b])
            victims = victims[: -(-wanted // self.block_size)]
            if not victims:
                return 0
            # Not cached any more from now on: a reader fetches them again, and its install
            # waits for this lock, so it lands after the punch.
            charged = {block: self.charges.pop(block) for block in victims}
            try:
                await self._io(self._punch, block_runs(victims, self.block_size))
            except OSError as exc:
                log.warning("cannot free cache space in %s: %s", self.path, exc)
        freed = sum(charged.values())
        self.cache.bytes_removed(freed)
        return freed

    def close(self) -> None:
        """Close the file descriptor (reopened when needed): one per open file, not per file
        ever read."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Throw the cache file away (the file was deleted, or S3 has all of it). It is
        deleted in the background; its blocks count as used until then."""
        if self.discarded:
            return
        self.discarded = True
        self._no_handles = True
        self._charged_at_discard = self.cached_bytes
        self.charges = {}
        self.dirty.clear()
        self.cache.thrown_away(self, self._charged_at_discard)


def _close_and_delete(fd: int | None, path: Path | None) -> None:
    """Blocking: the space of a deleted file is freed once its last descriptor is closed."""
    try:
        if path is not None:
            path.unlink(missing_ok=True)
    finally:
        if fd is not None:
            os.close(fd)

