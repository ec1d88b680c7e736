"""Local block cache: one sparse cache file per file node, with per-block state.

A block is ``cached`` when its bytes in the cache file are the file's current content, and
``dirty`` (block -> write generation) when they are newer than the object on S3. Bytes at or past
``base_valid_len`` are not backed by the remote object (the file was truncated or extended), so
they read as whatever the cache file holds there: written data or zeros. Bytes below
``streamed_len`` were uploaded as parts of a multipart upload that is not complete yet: they
may be evicted, but cannot be read back from S3 until the upload completes.

Space: the cache holds at most ``size_limit`` bytes of blocks, plus up to one part per file
being written. A block is charged for the bytes it can hold on disk (a file's last, partial
block only up to the file's end, in 4 KiB pages), so a thousand small notes files do not
count as a thousand full blocks. Clean blocks are evicted (holes punched in their cache file) least recently used
first; dirty blocks never are, so a writer waits in ``reserve`` until uploads make them clean.

Disk I/O never runs on the trio loop: reads, writes, hole punches and fsyncs run in worker
threads (``run_io``), and closing a cache file's descriptor or deleting a thrown-away cache
file is left to a background task (``BlockCache.run``), so that no caller, eviction inside
``reserve`` least of all, waits for the filesystem (deleting a multi-GiB sparse file can take
seconds). A deleted file's blocks count as used until its deletion is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import itertools
import logging
import os
import uuid
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import trio

from .errors import ConfigError

log = logging.getLogger(__name__)

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the disk space of a range of a file; it then reads as zeros."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class BlockCache:
    """Owns the cache directory: the cache files, the disk-I/O threads and space accounting."""

    def __init__(self, cache_dir: Path, block_size: int, size_limit: int):
        self.cache_dir = cache_dir
        self.data_dir = cache_dir / "data"
        self.block_size = block_size
        self.size_limit = size_limit
        # Disk I/O runs in worker threads; this bounds how many at once.
        self.disk_limiter = trio.CapacityLimiter(8)
        self._files: set[CachedFile] = set()
        self._kept: set[str] = set()
        # Clean cache files an earlier mount left for reuse: object key -> record.
        self._stored: dict[str, dict] = {}
        self._lock_fd: int | None = None
        self.used_bytes = 0  # charged bytes of the cached blocks of every file
        self.peak_used_bytes = 0
        self._space_freed = trio.Event()
        # A signal per wait of a writer for uploads to free space; one pending is enough.
        self._pressure_sent, self.pressure = trio.open_memory_channel[None](1)
        # Cache files whose descriptor is to be closed or which are to be deleted (see run):
        # at most one entry per cache file, so this stays as small as the set of files.
        self._to_let_go: dict[CachedFile, None] = {}
        self._let_go_wanted = trio.Event()
        self.freeing_bytes = 0  # charged bytes of thrown-away files not deleted yet (in used_bytes)

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
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._load_stored()

    def close(self) -> None:
        """Close the cache files (and delete the thrown-away ones not deleted yet); the data
        of files still in the journal stays for the next mount, the rest is deleted when that
        mount starts. Blocking: from the trio loop, use ``aclose``."""
        for cached_file in [*self._files, *self._to_let_go]:
            cached_file.close()
            if cached_file.discarded:
                cached_file.path.unlink(missing_ok=True)
        self._to_let_go.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def aclose(self) -> None:
        """``close`` in a worker thread (at unmount, once nothing else uses the cache)."""
        with trio.CancelScope(shield=True):
            await self.run_io(self.close)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Close and delete cache files in the background (see ``let_go_later``); runs until
        cancelled."""
        task_status.started()
        while True:
            await self._let_go_wanted.wait()
            self._let_go_wanted = trio.Event()
            while self._to_let_go:
                cached_file = next(iter(self._to_let_go))
                del self._to_let_go[cached_file]
                await cached_file.let_go()

    def let_go_later(self, cached_file: CachedFile) -> None:
        """Have ``run`` close the file's descriptor or delete it, off the loop."""
        self._to_let_go[cached_file] = None
        self._let_go_wanted.set()

    def deleted(self, charged: int) -> None:
        """A thrown-away cache file is gone from the disk: its blocks are free now."""
        self.freeing_bytes -= charged
        self.bytes_removed(charged)

    # -- files -----------------------------------------------------------------------------

    def new_file(self) -> CachedFile:
        cached_file = CachedFile(self, uuid.uuid4().hex)
        self._files.add(cached_file)
        return cached_file

    async def adopt_file(self, file_id: str, cached: set[int], dirty: set[int],
                         size: int) -> CachedFile:
        """Take over the cache file of an earlier run (crash recovery) of a ``size`` file."""
        cached_file = CachedFile(self, file_id)
        if (cached or dirty) and not await self.run_io(cached_file.path.exists):
            raise FileNotFoundError(f"cache file {cached_file.path} is missing")  # empty: none
        for block in set(cached) | set(dirty):
            cached_file.charge(block, size - block * self.block_size)
        cached_file.dirty = {block: 0 for block in dirty}
        self._files.add(cached_file)
        return cached_file

    def keep_file_id(self, file_id: str) -> None:
        """Keep an earlier run's cache file that recovery could not take over (for the admin)."""
        self._kept.add(file_id)

    # -- clean data kept across remounts ---------------------------------------------------------
    # At unmount, cache files of files that are entirely on S3 are listed in <cache>/clean/
    # with the object's key, ETag and size; the next mount reuses one only for that very
    # object version (so data changed by another host meanwhile is never served).

    @property
    def _clean_dir(self) -> Path:
        return self.cache_dir / "clean"

    def _load_stored(self) -> None:
        self._clean_dir.mkdir(mode=0o700, exist_ok=True)
        for path in self._clean_dir.glob("*.json"):
            try:
                record = json.loads(path.read_text())
                blocks = {b for start, end in record["cached"] for b in range(start, end)}
                if not (self.data_dir / record["id"]).exists():
                    raise FileNotFoundError(record["id"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            path.unlink()  # used now or deleted with its data: never twice
            record["charges"] = {b: block_charge(self.block_size, record["size"] - b * self.block_size)
                                 for b in blocks}
            self._stored[record["key"]] = record
            self.bytes_added(sum(record["charges"].values()))

    async def store_clean(self, cached_file: CachedFile, key: str, etag: str,
                          size: int) -> None:
        """Keep a clean file's cached blocks for the next mount (called at unmount)."""
        runs = _ranges(sorted(cached_file.charges), 1)
        record = {"id": cached_file.file_id, "key": key, "etag": etag, "size": size,
                  "cached": [[start, start + length] for start, length in runs]}
        path = self._clean_dir / f"{cached_file.file_id}.json"
        await self.run_io(path.write_text, json.dumps(record))

    def reuse_stored(self, key: str, etag: str, size: int) -> CachedFile | None:
        """The cache file an earlier mount kept for exactly this object version, if any."""
        record = self._stored.pop(key, None)
        if record is None:
            return None
        if (record["etag"], record["size"]) != (etag, size):
            self._drop_stored(record)
            return None
        cached_file = CachedFile(self, record["id"])
        cached_file.charges = record["charges"]  # already counted in used_bytes
        self._files.add(cached_file)
        return cached_file

    def _drop_stored(self, record: dict) -> int:
        """Delete a cache file an earlier mount kept (in the background); returns its charge."""
        leftover = CachedFile(self, record["id"])
        leftover.charges = record["charges"]  # counted in used_bytes until it is deleted
        leftover.discard()
        return sum(record["charges"].values())

    async def remove_unreferenced(self) -> None:
        """Delete cache files of an earlier run that no file took over."""
        names = await self.run_io(os.listdir, self.data_dir)
        # Which files are live is asked only now: a file created meanwhile is (its name is new).
        live = {f.path.name for f in self._files} | self._kept
        live |= {record["id"] for record in self._stored.values()}
        await self.run_io(_unlink_all, [self.data_dir / name for name in names
                                        if name not in live])

    def forget_file(self, cached_file: CachedFile) -> None:
        self._files.discard(cached_file)

    async def run_io(self, fn, *args):
        """Run blocking disk I/O in a worker thread, never on the trio loop."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.disk_limiter)

    # -- space -----------------------------------------------------------------------------

    @property
    def dirty_bytes(self) -> int:
        return sum(f.dirty_bytes for f in self._files)

    def bytes_added(self, count: int) -> None:
        self.used_bytes += count
        self.peak_used_bytes = max(self.peak_used_bytes, self.used_bytes)

    def bytes_removed(self, count: int) -> None:
        if count:
            self.used_bytes -= count
            self.space_freed()

    def space_freed(self) -> None:
        """Wake writers waiting for room (called when blocks are dropped or become clean)."""
        self._space_freed.set()
        self._space_freed = trio.Event()

    async def reserve(self, data: CachedFile, new_blocks: int, allowance: Callable[[], int],
                      can_wait: bool = True) -> None:
        """Wait until ``new_blocks`` more blocks fit.

        ``allowance()`` is how many bytes of dirty blocks the file may hold past the limit
        (one part for a file being written, so that its next part can always fill up and
        upload); asked again at every check, as uploads change it. It is used only once no
        clean block can be evicted: used first, it let clean parts stay while the writer
        went past the limit by its allowance again and again. ``can_wait`` is False for a
        file no upload will ever empty (deleted while open): ENOSPC instead.
        """
        need = new_blocks * self.block_size
        while self.used_bytes + need > self.size_limit:
            # Files being deleted free their part of the excess soon: evict only the rest.
            shortfall = self.used_bytes - self.freeing_bytes + need - self.size_limit
            if shortfall <= 0:
                await self._wait_for_space()
                continue
            if await self.evict(shortfall):
                continue
            if data.dirty_bytes + need <= allowance():
                return
            if not can_wait:
                raise OSError(errno.ENOSPC, "cache full of data that is not on S3")
            with contextlib.suppress(trio.WouldBlock):
                self._pressure_sent.send_nowait(None)
            await self._wait_for_space()

    async def _wait_for_space(self) -> None:
        waiting_for = self._space_freed
        with trio.move_on_after(1.0):  # re-check: uploads may have settled blocks meanwhile
            await waiting_for.wait()

    async def evict(self, wanted: int) -> int:
        """Drop clean blocks, least recently used files first; returns the bytes freed (or,
        for whole files, being freed: see ``freeing_bytes``)."""
        freed = 0
        while freed < wanted and self._stored:  # kept from an earlier mount, unused so far
            freed += self._drop_stored(self._stored.pop(next(iter(self._stored))))
        for cached_file in sorted(self._files, key=lambda f: f.last_used):
            if freed >= wanted:
                break
            freed += await cached_file.evict_clean(wanted - freed)
        return freed

    async def trim(self, incoming: int = 0) -> None:
        """Make room for ``incoming`` bytes fetched for reading (best effort: reads never
        wait for uploads), dropping clean blocks."""
        excess = self.used_bytes - self.freeing_bytes + incoming - self.size_limit
        if excess > 0:
            await self.evict(excess)


class CachedFile:
    """The cache file of one file node and the state of its blocks."""

    def __init__(self, cache: BlockCache, file_id: str):
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
        self._generation = itertools.count(1)
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
        generation = next(self._generation)
        end = offset + length
        for block in self.blocks(offset, length):
            self.charge(block, end - block * self.block_size)
            self.dirty[block] = generation
        self.last_used = time.monotonic()

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
            for run_start, run_length in _ranges(wanted, self.block_size):
                run_end = min(run_start + run_length, self.base_valid_len)
                piece_start = run_start - first_block * self.block_size
                writes.append((run_start, view[piece_start:piece_start + run_end - run_start]))
            await self._io(self._pwrite_many, writes)
            for block in wanted:
                self.charge(block, self.base_valid_len - block * self.block_size)

    def _pwrite_many(self, writes: list[tuple[int, memoryview]]) -> None:
        for offset, data in writes:
            self._pwrite(offset, data)

    async def read(self, offset: int, length: int) -> bytes:
        self.last_used = time.monotonic()
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
                await self._io(self._punch, _ranges(victims, self.block_size))
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
        self.cache.freeing_bytes += self._charged_at_discard
        self.cache.forget_file(self)
        self.cache.let_go_later(self)


PAGE = 4096


def _close_and_delete(fd: int | None, path: Path | None) -> None:
    """Blocking: the space of a deleted file is freed once its last descriptor is closed."""
    try:
        if path is not None:
            path.unlink(missing_ok=True)
    finally:
        if fd is not None:
            os.close(fd)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def block_charge(block_size: int, filled: int) -> int:
    """What a block holding data in its first ``filled`` bytes costs on disk: whole pages."""
    return min(block_size, max(PAGE, -(-filled // PAGE) * PAGE))


def _ranges(blocks: list[int], block_size: int) -> list[tuple[int, int]]:
    """Sorted block numbers -> (offset, length) runs."""
    runs: list[list[int]] = []
    for block in blocks:
        if runs and runs[-1][1] == block:
            runs[-1][1] = block + 1
        else:
            runs.append([block, block + 1])
    return [(start * block_size, (end - start) * block_size) for start, end in runs]

