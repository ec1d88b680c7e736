"""Local block cache: the cache directory, its cache files (``cachefile.CachedFile``, one per
file node) and the space they take.

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
import errno
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import trio

from s3pvefs.errors import ConfigError
from s3pvefs.state.cachefile import CachedFile, block_charge, block_runs

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

    def thrown_away(self, cached_file: CachedFile, charged: int) -> None:
        """A cache file was discarded: ``run`` deletes it; its ``charged`` bytes count as used
        (and as being freed) until then."""
        self.freeing_bytes += charged
        self.forget_file(cached_file)
        self.let_go_later(cached_file)

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
                         size: int, dirty_since_ns: int = 0) -> CachedFile:
        """Take over the cache file of an earlier run (crash recovery) of a ``size`` file,
        whose dirty blocks were last journaled at ``dirty_since_ns`` (wall clock)."""
        cached_file = CachedFile(self, file_id)
        if (cached or dirty) and not await self.run_io(cached_file.path.exists):
            raise FileNotFoundError(f"cache file {cached_file.path} is missing")  # empty: none
        for block in set(cached) | set(dirty):
            cached_file.charge(block, size - block * self.block_size)
        since = dirty_since_ns or time.time_ns()  # records older than their seq: now
        cached_file.dirty = {block: since for block in dirty}
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
        runs = block_runs(sorted(cached_file.charges), 1)
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


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
