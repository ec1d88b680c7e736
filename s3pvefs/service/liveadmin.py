"""What a running mount answers on its admin socket (control.py): `s3pvefs sync` uploads now,
`s3pvefs refresh` forgets cached listings and attributes, `s3pvefs status` shows dirty data,
uploads in flight and failures."""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections.abc import Mapping
from typing import Protocol

import trio

from s3pvefs.config.settings import Config
from s3pvefs.errors import ConfigError, FsError, FsKind, StoreError
from s3pvefs.fs.core import FsCore, Handle
from s3pvefs.fs.listing import Directories, walk
from s3pvefs.service import versions
from s3pvefs.service.metrics import MetricsSample, render
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.nodes import InodeTable, Node
from s3pvefs.store.objectstore import ObjectStore
from s3pvefs.store.throttle import TrafficLimits
from s3pvefs.transfer.prefetch import Reads
from s3pvefs.transfer.uploader import Uploader

log = logging.getLogger(__name__)


class KernelCache(Protocol):
    """What the kernel remembers besides its lookups (fuse_adapter.KernelCaches)."""

    async def forget(self, directories: set[int], files: set[int]) -> None:
        """Missing names in these directories, and these files' attributes."""


class LiveAdmin:
    """Fulfils control.Admin for one mount."""

    def __init__(self, config: Config, store: ObjectStore, cache: BlockCache, *,
                 inodes: InodeTable, uploader: Uploader, dirs: Directories,
                 kernel: KernelCache | None, reads: Reads | None = None,
                 limits: TrafficLimits | None = None, handles: Mapping[int, Handle] | None = None):
        self.store = store
        self.handles = handles if handles is not None else {}  # the open file handles
        self.reads = reads
        self.limits = limits  # bandwidth and request rate; None: the store applies none
        self.cache = cache
        self.inodes = inodes
        self.uploader = uploader
        self.dirs = dirs
        self._kernel = kernel  # None without a kernel mount (tests)
        self._sync_slots = trio.Semaphore(max(2, config.upload_concurrency))
        self.prefix = config.prefix

    def change_setting(self, setting: str, value: str) -> dict:
        """`s3pvefs set`: a limit changed while the mount runs (ConfigError if invalid)."""
        if self.limits is None:
            raise ConfigError("this mount's store applies no limits")
        self.limits.change(setting, value)
        return self.limits.describe()

    def dirty_nodes(self) -> list[Node]:
        return self.inodes.needing_upload()

    async def sync_path(self, path: str | None) -> dict[str, str]:
        """Upload every dirty file at or below ``path`` (relative to the mount root; None or ""
        for all) now; returns path -> error for the files that could not be uploaded."""
        top = self._loaded_node(path or "")
        failures: dict[str, str] = {}

        async def sync_one(node: Node) -> None:
            delay = 1.0
            while True:
                try:
                    await self.uploader.sync_now(node)
                    return
                except StoreError as exc:
                    if not exc.transient:  # an outage passes: wait for it (the caller's
                        failures[node.path()] = str(exc)  # timeout bounds the wait)
                        return
                    log.info("sync of %s waits for S3: %s", node.path(), exc)
                except Exception as exc:
                    failures[node.path()] = str(exc)
                    return
                await trio.sleep(delay)
                delay = min(30.0, delay * 2)

        async with trio.open_nursery() as nursery:
            for node in walk(top):
                if node.needs_upload:
                    await self._sync_slots.acquire()
                    nursery.start_soon(self._release_after, self._sync_slots, sync_one, node)
        return failures

    @staticmethod
    async def _release_after(slots: trio.Semaphore, fn, *args) -> None:
        try:
            await fn(*args)
        finally:
            slots.release()

    async def refresh(self, path: str | None) -> int:
        """Forget cached listings and attributes at or below ``path`` (another host changed
        the bucket): the next access asks S3 again. Returns how many entries were dropped."""
        count = 0
        directories: set[int] = set()
        known_files: set[int] = set()  # whose attributes the kernel may be caching
        for node in walk(self._loaded_node(path or "")):
            if node.is_dir:
                self.dirs.invalidate(node)
                directories.add(node.ino)
            elif not node.busy:
                node.meta_loaded = False
                if node.lookups > 0:
                    known_files.add(node.ino)
            count += 1
        if self._kernel is not None:
            await self._kernel.forget(directories, known_files)
        return count

    async def versions(self, path: str) -> list[dict]:
        """`s3pvefs versions PATH` on a mount (versions.list_versions)."""
        return await versions.list_versions(self.store, self.prefix, path)

    async def undelete(self, path: str, version_id: str | None) -> dict:
        """`s3pvefs undelete PATH`: the version is current again on S3, and this mount shows
        it at once. A file of that name that this mount has not uploaded yet is not replaced."""
        local = self.inodes.at_path(path)
        if local is not None and local.needs_upload:
            raise versions.VersionError(f"{path}: a new file of that name is in this mount, "
                                        "not on S3 yet; rename it first")
        restored = await versions.undelete(self.store, self.prefix, path, version_id)
        try:
            await self.refresh(path.rpartition("/")[0])
        except FsError:
            pass  # a directory this mount never listed: its first listing shows the file
        return restored

    def _loaded_node(self, path: str) -> Node:
        """The node at ``path`` if this mount has seen it (unseen paths hold nothing dirty)."""
        node = self.inodes.at_path(path)
        if node is None:
            raise FsError(FsKind.NOT_FOUND, f"{path}: not found in this mount")
        return node

    def status(self) -> dict:
        """What `s3pvefs status` shows: dirty data, uploads in flight, failures.

        One picture: per file, ``bytes_dirty`` (only in the cache: in neither the file's object
        nor a part S3 confirmed) and ``bytes_done`` (in the parts S3 confirmed of the upload in
        flight, still what the file holds there) never add up to more than its size;
        ``dirty_bytes`` and ``uploaded_bytes`` are their sums over the files. A file shows 100%
        only when all of it is in confirmed parts (the upload then only waits for its
        completion).
        """
        dirty = self.inodes.needing_upload()
        uploads = self.uploader.progress()
        uploading = {upload["ino"] for upload in uploads}
        files = []
        for node in dirty + [n for n in map(self.inodes.get, uploading)
                             if n is not None and not n.needs_upload]:
            done, pending = self._upload_figures(node)
            files.append({"path": node.path(), "bytes_total": node.size, "bytes_done": done,
                          "bytes_dirty": pending, "uploading": node.ino in uploading,
                          "state": node.state.value, "waiting": _waiting_for(node)})
        figures = {file["path"]: file for file in files}
        for upload in uploads:
            upload.pop("ino")
            upload.update({key: figures[upload["path"]][key]
                           for key in ("bytes_total", "bytes_done", "bytes_dirty")}
                          if upload["path"] in figures else {})
        return {
            "dirty_files": len(dirty),
            "dirty_bytes": sum(file["bytes_dirty"] for file in files),
            "oldest_dirty_seconds": _oldest_dirty_seconds(dirty),
            "uploaded_bytes": sum(file["bytes_done"] for file in files),
            "cache_used_bytes": self.cache.used_bytes,
            "cache_peak_bytes": self.cache.peak_used_bytes,
            "cache_limit_bytes": self.cache.size_limit,
            "known_nodes": len(self.inodes),  # files and directories held in memory
            "open_files": len({handle.node.ino for handle in self.handles.values()}),
            "uploads": uploads,
            "files": files,
            "errors": [
                {"path": node.path(), "error": node.file.last_error}
                for node in dirty if node.file.last_error
            ],
            "requests": dict(self.store.stats.requests),
            "bytes_sent": self.store.stats.bytes_sent,
            "bytes_received": self.store.stats.bytes_received,
            "bytes_read": self.reads.bytes_answered if self.reads is not None else 0,
            "limits": self.limits.describe() if self.limits is not None else None,
        }

    def metrics_sample(self) -> MetricsSample:
        """The figures the metrics show (metrics.py), all taken now."""
        status, stats = self.status(), self.store.stats
        return MetricsSample(
            dirty_files=status["dirty_files"], dirty_bytes=status["dirty_bytes"],
            oldest_dirty_age=status["oldest_dirty_seconds"],
            uploaded_bytes=status["uploaded_bytes"],
            cache_used_bytes=status["cache_used_bytes"],
            cache_limit_bytes=status["cache_limit_bytes"],
            uploads_in_flight=len(status["uploads"]), files_failing=len(status["errors"]),
            known_nodes=status["known_nodes"], bytes_sent=stats.bytes_sent,
            bytes_received=stats.bytes_received, bytes_read=status["bytes_read"],
            retries=stats.retries, endpoint_up=stats.endpoint_up,
            last_object_written=stats.last_object_written, outcomes=dict(stats.outcomes),
            latency=list(stats.seconds.collect()))

    def metrics_text(self) -> str:
        """`s3pvefs status --prometheus`: the Prometheus text format."""
        return render(self.metrics_sample())

    def _upload_figures(self, node: Node) -> tuple[int, int]:
        """(bytes in the parts S3 confirmed of the file's upload in flight that still hold what
        the file holds there, bytes the cache holds that neither such a part nor the file's
        object has: dirty blocks, and clean ones past the object, e.g. parts of a stream that
        was dropped)."""
        size, data = node.size, node.file.data
        parts: list[tuple[int, int, dict[int, int]]] = []  # offset, length, generations read
        if node.file.stream is not None:
            stream = node.file.stream
            parts = [(offset, length, stream.part_snapshots.get(number, {}))
                     for number, (offset, length, _) in stream.parts.items()]
        elif (progress := self.uploader.in_flight(node)) is not None:
            parts = [(offset, length, progress.snapshot) for offset, length in progress.parts]
        parts.sort()
        dirty = data.dirty if data is not None else {}
        block_size = data.block_size if data is not None else 1
        past_object = set() if data is None else {
            block for block in data.cached
            if block not in dirty and block * block_size >= data.base_valid_len}
        starts = [offset for offset, _, _ in parts]

        def part_of(block: int) -> int | None:
            index = bisect.bisect_right(starts, block * block_size) - 1
            if index >= 0 and block * block_size < parts[index][0] + parts[index][1]:
                return index
            return None

        # A part is stale once a block in it was written after the part was read.
        stale = {index for block, generation in dirty.items()
                 if (index := part_of(block)) is not None
                 and parts[index][2].get(block) != generation}
        done = sum(max(0, min(offset + length, size) - offset)
                   for index, (offset, length, _) in enumerate(parts) if index not in stale)
        pending = sum(max(0, min((block + 1) * block_size, size) - block * block_size)
                      for block in itertools.chain(dirty, past_object)
                      if (index := part_of(block)) is None or index in stale)
        return done, pending


def _oldest_dirty_seconds(dirty: list[Node]) -> float:
    """How long the oldest write only in the cache has waited (0.0: there is none)."""
    oldest = min((since for node in dirty if node.file.data is not None
                  and (since := node.file.data.oldest_dirty_ns) is not None), default=None)
    return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1e9)


def _waiting_for(node: Node) -> str | None:
    """Why a dirty file is not uploading (None when nothing holds it back)."""
    if node.write_handles:
        return "open for writing"
    if node.file.waiting_for_rename:
        return f"to be renamed to {node.file.waiting_for_rename}"
    return None


def build_admin(core: FsCore, config: Config, kernel: KernelCache | None = None,
                limits: TrafficLimits | None = None) -> LiveAdmin:
    """What the admin socket serves for ``core``; ``kernel`` is None without a mount,
    ``limits`` those the store applies (None: it applies none)."""
    return LiveAdmin(config, core.store, core.cache, limits=limits, inodes=core.inodes,
                     uploader=core.uploader, dirs=core.dirs, kernel=kernel, reads=core.reads,
                     handles=core.handles)
