"""Local block cache: one sparse cache file per file node, with per-block state.

A block is ``cached`` when its bytes in the cache file are the file's current content, and
``dirty`` (block -> write generation) when they are newer than the object on S3. Bytes at or past
``base_valid_len`` are not backed by the remote object (the file was truncated or extended), so
they read as whatever the cache file holds there: written data or zeros.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import shutil
import time
from pathlib import Path

import trio

from .errors import ConfigError

log = logging.getLogger(__name__)


class BlockCache:
    """Owns the cache directory: the cache files, the disk-I/O threads and space accounting."""

    def __init__(self, cache_dir: Path, block_size: int, size_limit: int):
        self.cache_dir = cache_dir
        self.data_dir = cache_dir / "data"
        self.block_size = block_size
        self.size_limit = size_limit
        # Disk I/O runs in worker threads; this bounds how many at once.
        self.disk_limiter = trio.CapacityLimiter(8)
        self._ids = itertools.count(1)
        self._files: set[CachedFile] = set()
        self._lock_fd: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the cache directory for this mount and start from an empty data area."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.cache_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use cache directory {self.cache_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"cache directory {self.cache_dir} is in use by another s3pvefs mount; "
                "give each mount its own --cache-dir"
            ) from None
        self._lock_fd = fd
        # Without a crash journal, leftovers of an earlier run cannot be trusted.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(mode=0o700)

    def close(self) -> None:
        for cached_file in list(self._files):
            cached_file.discard()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- files -----------------------------------------------------------------------------

    def new_file(self) -> CachedFile:
        cached_file = CachedFile(self, next(self._ids))
        self._files.add(cached_file)
        return cached_file

    def forget_file(self, cached_file: CachedFile) -> None:
        self._files.discard(cached_file)

    async def run_io(self, fn, *args):
        """Run blocking disk I/O in a worker thread, never on the trio loop."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.disk_limiter)

    # -- space -----------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return sum(f.cached_bytes for f in self._files)

    @property
    def dirty_bytes(self) -> int:
        return sum(len(f.dirty) for f in self._files) * self.block_size

    def evict_if_needed(self) -> None:
        """Drop whole cache files of clean, idle files, least recently used first."""
        used = self.used_bytes
        if used <= self.size_limit:
            return
        candidates = sorted(
            (f for f in self._files if f.evictable()), key=lambda f: f.last_used
        )
        for cached_file in candidates:
            if used <= self.size_limit:
                break
            used -= cached_file.cached_bytes
            cached_file.drop_clean_data()


class CachedFile:
    """The cache file of one file node and the state of its blocks."""

    def __init__(self, cache: BlockCache, file_id: int):
        self.cache = cache
        self.block_size = cache.block_size
        self.path = cache.data_dir / str(file_id)
        self._fd: int | None = None
        self.cached: set[int] = set()
        self.dirty: dict[int, int] = {}
        self.base_valid_len = 0
        self.low_water = 0  # smallest size since an upload took its snapshot
        self._generation = itertools.count(1)
        # Serialises changes of the cache file (writes, installs of fetched blocks, truncates).
        self.write_lock = trio.Lock()
        self.pins = 0  # open handles and uploads that need the data kept
        self.last_used = time.monotonic()

    # -- state -----------------------------------------------------------------------------

    @property
    def cached_bytes(self) -> int:
        return len(self.cached) * self.block_size

    def blocks(self, offset: int, length: int) -> range:
        if length <= 0:
            return range(0)
        return range(offset // self.block_size, (offset + length - 1) // self.block_size + 1)

    def needs_fetch(self, block: int) -> bool:
        return block not in self.cached and block * self.block_size < self.base_valid_len

    def missing_blocks(self, offset: int, length: int) -> list[int]:
        return [b for b in self.blocks(offset, length) if self.needs_fetch(b)]

    def fully_local(self, size: int) -> bool:
        """True when every byte of the file can be produced without the remote object."""
        return not any(self.needs_fetch(b) for b in self.blocks(0, min(size, self.base_valid_len)))

    def mark_written(self, offset: int, length: int) -> None:
        generation = next(self._generation)
        for block in self.blocks(offset, length):
            self.cached.add(block)
            self.dirty[block] = generation
        self.last_used = time.monotonic()

    def dirty_snapshot(self) -> dict[int, int]:
        return dict(self.dirty)

    def mark_clean(self, snapshot: dict[int, int]) -> None:
        """Blocks not written since ``snapshot`` was taken are now safe on S3."""
        for block, generation in snapshot.items():
            if self.dirty.get(block) == generation:
                del self.dirty[block]

    def evictable(self) -> bool:
        return self.pins == 0 and not self.dirty and bool(self.cached)

    # -- I/O (worker threads) --------------------------------------------------------------

    def _ensure_fd(self) -> int:
        if self._fd is None:
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

    async def write(self, offset: int, data: bytes) -> None:
        """Write bytes as new, dirty content (caller holds ``write_lock``)."""
        await self.cache.run_io(self._pwrite, offset, data)
        self.mark_written(offset, len(data))

    async def install(self, block: int, data: bytes) -> None:
        """Store a block fetched from S3, unless it was written meanwhile."""
        async with self.write_lock:
            if block in self.cached:
                return
            start = block * self.block_size
            limit = max(0, self.base_valid_len - start)
            await self.cache.run_io(self._pwrite, start, data[:limit])
            self.cached.add(block)
        self.cache.evict_if_needed()

    async def read(self, offset: int, length: int) -> bytes:
        self.last_used = time.monotonic()
        return await self.cache.run_io(self._pread, offset, length)

    async def truncate(self, old_size: int, new_size: int) -> None:
        """Resize to ``new_size`` (caller holds ``write_lock``).

        The cache file is cut too, so a later extension reads zeros; a partial boundary block
        that is not cached stays fetchable because the remote object is only trusted up to
        ``base_valid_len``.
        """
        await self.cache.run_io(self._truncate, new_size)
        if new_size < old_size:
            self.base_valid_len = min(self.base_valid_len, new_size)
            self.low_water = min(self.low_water, new_size)
            first_gone = -(-new_size // self.block_size)
            for block in [b for b in self.cached if b >= first_gone]:
                self.cached.discard(block)
                self.dirty.pop(block, None)

    def reset_base(self, valid_len: int) -> None:
        """The remote object now holds the first ``valid_len`` bytes of this content."""
        self.base_valid_len = valid_len

    def drop_clean_data(self) -> None:
        """Forget cached clean blocks (the remote object has them)."""
        assert not self.dirty
        self._remove_cache_file()
        self.cached.clear()

    def discard(self) -> None:
        """Throw the cache file away (the file was deleted or the mount ends)."""
        self._remove_cache_file()
        self.cached.clear()
        self.dirty.clear()
        self.cache.forget_file(self)

    def _remove_cache_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
