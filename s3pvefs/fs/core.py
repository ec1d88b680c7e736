"""The filesystem core: every operation the mount supports, on inodes, without the kernel.

Callers (the pyfuse3 adapter, or unit tests) pass inode numbers, names as str and handles as
ints; failures are typed (errors.FsError, or the StoreError of a request that failed), and the
adapter chooses their errno (errno_map.py).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass

import trio

from s3pvefs.config.settings import Config
from s3pvefs.errors import FsError, FsKind, StoreError, is_not_found
from s3pvefs.fs.keptaside import KeptAside
from s3pvefs.fs.listing import Directories
from s3pvefs.fs.renames import Renames
from s3pvefs.names import PROXMOX_DIRS, Attributes, check_key_length
from s3pvefs.state.attrindex import DIRECTORY_ETAG, AttributeIndex
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.cachefile import CachedFile
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.journal import Journal
from s3pvefs.state.nodes import ROOT_INODE, InodeTable, Node, now_ns, still_at
from s3pvefs.store.objectstore import RemoteObject
from s3pvefs.store.s3store import ObjectStore
from s3pvefs.transfer.leftkeys import LeftKeys
from s3pvefs.transfer.objectwriter import MAX_OBJECT_SIZE, ObjectWriter
from s3pvefs.transfer.prefetch import Prefetcher, Reads
from s3pvefs.transfer.reader import BlockReader
from s3pvefs.transfer.streaming import Streamer
from s3pvefs.transfer.uploader import Uploader

log = logging.getLogger(__name__)

STATFS_BLOCK = 4096
READ_WAITS_FOR_UPLOAD = 300.0  # seconds a read may wait for an upload to complete (see read)
# Small files fetched when their directory is listed: backup notes, logs, guest configs.
PREFETCH_SUFFIXES = (".notes", ".log", ".conf", ".fw", ".cfg")


@dataclass
class Handle:
    node: Node
    writable: bool
    prefetcher: Prefetcher  # its reads and their readahead (prefetch.py)


@dataclass
class StatFs:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    files_free: int
    name_max: int = 255


class FsCore:
    """Built by assembly.build_filesystem, which hands it its collaborators."""

    def __init__(self, config: Config, store: ObjectStore, cache: BlockCache, *,
                 inodes: InodeTable, reader: BlockReader, reads: Reads, journal: Journal,
                 file_journal: FileJournal, writer: ObjectWriter, streamer: Streamer,
                 left_keys: LeftKeys, kept_aside: KeptAside, uploader: Uploader,
                 dirs: Directories, renames: Renames,
                 attr_index: AttributeIndex, listed: trio.MemoryReceiveChannel[Node]):
        self.config = config
        self.prefix = config.prefix
        self.store = store
        self.cache = cache
        self.inodes = inodes
        self.reader = reader
        self.reads = reads
        self.journal = journal
        self.file_journal = file_journal
        self.writer = writer
        self.streamer = streamer
        self.left_keys = left_keys
        self.kept_aside = kept_aside  # data of files deleted while open
        self.uploader = uploader
        self.dirs = dirs
        self.renames = renames
        self.attr_index = attr_index
        self._listed = listed  # directories just listed: their small files are prefetched
        self.handles: dict[int, Handle] = {}
        self._next_handle = 1
        self.root = inodes.root

    # -- start and stop ---------------------------------------------------------------------

    async def create_proxmox_dirs(self) -> None:
        """Make the content directories exist (as markers) before the first request."""
        for path in PROXMOX_DIRS:
            await self.directory_at(path.split("/"))

    async def directory_at(self, names: list[str]) -> Node:
        """The directory at that path, made (as markers) where it does not exist."""
        directory = self.root
        for name in names:
            await self.dirs.ensure_listed(directory)
            child = directory.children.get(name)
            if child is None or not child.is_dir:
                child = await self.make_directory(directory, name)
            directory = child
        return directory

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The core's background work: uploads, readahead, closing and deleting cache files."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.cache.run)
            await nursery.start(self.streamer.run)
            await nursery.start(self.uploader.run)
            await nursery.start(self.reader.run)
            nursery.start_soon(self._prefetch_listed)
            task_status.started()

    def dirty_nodes(self) -> list[Node]:
        return self.inodes.needing_upload()

    async def shutdown(self) -> None:
        """Upload everything that is not on S3 yet."""
        await self.uploader.drain(self.dirty_nodes())

    # -- lookups and attributes -------------------------------------------------------------

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise FsError(FsKind.NOT_FOUND, f"unknown inode {ino}")
        return node

    def remember(self, node: Node) -> Node:
        """The kernel got a reference to ``node`` (lookup count + 1)."""
        node.lookups += 1
        return node

    def forget(self, ino: int, count: int) -> None:
        node = self.inodes.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups -= count
        if node.lookups > 0:
            return
        if node.unlinked and node.open_count == 0:
            self.inodes.drop(node)
        else:
            self.dirs.forget_listed(node)

    async def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self.node(parent_ino)
        if name == ".":
            return self.remember(parent)
        if name == "..":
            return self.remember(parent.parent or parent)
        child = await self._child(parent, name)
        await self._load_attributes(parent, name, child)
        return self.remember(child)

    async def _child(self, parent: Node, name: str) -> Node:
        await self.dirs.ensure_listed(parent)
        child = parent.children.get(name)
        if child is None:
            raise FsError(FsKind.NOT_FOUND)
        return child

    async def _load_attributes(self, parent: Node, name: str, child: Node) -> None:
        try:
            await self.dirs.load_attributes(child)
        except (FsError, StoreError) as exc:
            if not is_not_found(exc):
                raise
            self.dirs.detach(parent, name, child)  # deleted on S3 since the listing
            raise

    async def getattr(self, ino: int) -> Node:
        node = self.node(ino)
        if not node.meta_loaded and node.parent is not None and not node.unlinked:
            await self._load_attributes(node.parent, node.name, node)
        return node

    async def setattr(self, ino: int, *, mode=None, uid=None, gid=None, size=None,
                      mtime_ns=None, atime_ns=None) -> Node:
        """chmod, chown, truncate, utimensat. The atime is kept in memory only: publishing it
        would rewrite the object's metadata (a copy of the whole object) for a value that
        nothing on a Proxmox storage reads."""
        node = await self.getattr(ino)
        if size is not None and node.is_file and size == node.size:
            size = None  # nothing to change; a no-op truncate must not force a re-upload
        if size is not None:
            await self._truncate(node, size)
        if mode is not None:
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
            node.mtime_explicit = True
        if atime_ns is not None:
            node.atime_ns = atime_ns
        node.ctime_ns = now_ns()
        if any(v is not None for v in (mode, uid, gid, mtime_ns)):
            await self._publish_attributes(node)
        elif size is not None:
            self.uploader.after_change(node)
        return node

    async def _publish_attributes(self, node: Node) -> None:
        if node.is_dir:
            if node.parent is not None:  # the root has no marker
                await self.store.put(node.key(self.prefix), b"", node.object_metadata())
                await self.attr_index.publish(node, DIRECTORY_ETAG)
            return
        node.attributes_changed()
        await self.file_journal.checkpoint(node)
        self.uploader.after_change(node)

    def schedule_upload(self, node: Node) -> None:
        self.uploader.after_change(node)

    async def make_directory(self, parent: Node, name: str) -> Node:
        """A directory with the configured defaults (used by recovery)."""
        return await self._make_directory(parent, name, self.config.dir_mode, self.config.uid,
                                          self.config.gid)

    async def _truncate(self, node: Node, size: int) -> None:
        if node.is_dir:
            raise FsError(FsKind.IS_A_DIRECTORY)
        if not node.is_file:
            raise FsError(FsKind.INVALID_ARGUMENT)
        if size > MAX_OBJECT_SIZE:
            raise FsError(FsKind.FILE_TOO_LARGE)
        data = self._data(node)
        await self._truncate_stream(node, size)
        async with data.write_lock:
            await data.truncate(node.size, size)
            node.size = size
        node.mtime_ns = node.ctime_ns = now_ns()
        node.data_changed()
        await self.file_journal.checkpoint(node)

    async def _truncate_stream(self, node: Node, size: int) -> None:
        """Cutting into the streamed part of a file ends its streaming upload: dropped when
        the cache holds what is left, otherwise completed with the parts uploaded so far (as
        a write into an evicted part does), so that the rest can be read back from S3."""
        stream = node.file.stream
        if stream is None or size >= stream.next_offset:
            return
        if any(node.file.data.unreadable(b) for b in node.file.data.blocks(0, size)):
            await self.uploader.complete_stream_early(node)
        else:
            await self.streamer.abort(node)

    async def readlink(self, ino: int) -> str:
        node = self.node(ino)
        if not node.is_symlink:
            raise FsError(FsKind.INVALID_ARGUMENT)
        if node.symlink_target is None:
            body = await self.store.get(node.file.base.key)
            node.symlink_target = body.decode("utf-8", "surrogateescape")
        return node.symlink_target

    # -- directories ------------------------------------------------------------------------

    async def readdir(self, ino: int) -> list[tuple[str, Node]]:
        """A snapshot of the entries, with their attributes loaded."""
        directory = self.node(ino)
        await self.dirs.ensure_listed(directory)
        entries = sorted(directory.children.items())
        await self.dirs.load_many([node for _, node in entries])
        return [(name, node) for name, node in entries if not node.unlinked]

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Node:
        parent = self.node(parent_ino)
        await self.dirs.check_free(parent, name, is_dir=True)
        return self.remember(await self._make_directory(parent, name, mode, uid, gid))

    async def _make_directory(self, parent: Node, name: str, mode: int, uid: int, gid: int) -> Node:
        attrs = Attributes(stat.S_IFDIR | (mode & 0o7777), uid, gid, now_ns())
        node = self.inodes.new(parent, name, attrs)
        key = node.key(self.prefix)
        try:
            check_key_length(key)
            await self.store.put(key, b"", node.object_metadata())
        except BaseException:
            self.inodes.drop(node)
            raise
        node.meta_loaded = True
        node.listed_at = trio.current_time()  # new and empty: nothing to list
        self.attr_index.read_none(key)
        await self.attr_index.publish(node, DIRECTORY_ETAG)
        self.dirs.insert(parent, name, node)
        return node

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)
        node = await self._child(parent, name)
        if not node.is_dir:
            raise FsError(FsKind.NOT_A_DIRECTORY)
        leftovers = await self.dirs.check_empty(node)
        await self.store.delete_many(leftovers)  # the marker and any attribute indexes
        await self.attr_index.forget(parent.key(self.prefix), name + "/")
        self.dirs.remove(parent, name, node)

    def new_file(self, parent: Node, name: str, attrs: Attributes) -> Node:
        """A file node for ``name`` in ``parent`` in place of what a listing put there (for
        recovery: the journal is newer than S3); the caller inserts it once it is complete."""
        existing = parent.children.get(name)
        if existing is not None:
            self.dirs.detach(parent, name, existing)
        return self.inodes.new(parent, name, attrs)

    # -- files ------------------------------------------------------------------------------

    def _data(self, node: Node) -> CachedFile:
        if node.file.data is None:
            base = node.file.base
            reused = base and self.cache.reuse_stored(base.key, base.etag, base.size)
            node.file.cache_file_attached(reused or self.cache.new_file())
        return node.file.data

    async def _prefetch_listed(self) -> None:
        async for directory in self._listed:
            self._prefetch_small_files(directory)

    def _prefetch_small_files(self, directory: Node) -> None:
        """Fetch the small files Proxmox reads right after listing a directory (every
        backup's notes, logs, guest configs) in parallel, instead of one GET per file later
        on the reader's critical path. Only while the cache has room to spare."""
        limit = self.config.prefetch_small
        budget = self.cache.size_limit // 2 - self.cache.used_bytes
        for node in list(directory.children.values()):
            base = node.file.base
            if (not limit or budget <= 0 or not node.is_file or base is None or base.archived
                    or not 0 < base.size <= limit or not node.name.endswith(PREFETCH_SUFFIXES)
                    or node.busy or (node.file.data is not None and node.file.data.cached)):
                continue
            # A file deleted meanwhile: its cache file is discarded and the fetch drops its
            # bytes (CachedFile.discarded); nothing to cancel.
            self.reader.prefetch(self._data(node), base, 0, base.size, set())
            budget -= base.size

    async def keep_clean_data(self) -> None:
        """At unmount: list the cached data of files entirely on S3 for the next mount."""
        for node in list(self.inodes):
            data, base = node.file.data, node.file.base
            if (node.is_file and data is not None and base is not None and data.cached
                    and not node.needs_upload and node.file.stream is None and not node.unlinked
                    and base.key == node.key(self.prefix)):
                try:
                    await self.cache.store_clean(data, base.key, base.etag, base.size)
                except OSError as exc:
                    log.warning("cannot keep the cached data of %s: %s", node.path(), exc)

    def _open_handle(self, node: Node, flags: int) -> int:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        node.open_count += 1
        if writable:
            node.write_handles += 1
        data = self._data(node)
        data.keep_fd()
        handle = self._next_handle
        self._next_handle += 1
        self.handles[handle] = Handle(node, writable, self.reads.prefetcher(node))
        return handle

    def handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None:
            raise FsError(FsKind.BAD_HANDLE)
        return handle

    async def create(self, parent_ino: int, name: str, mode: int, flags: int,
                     uid: int, gid: int) -> tuple[int, Node]:
        parent = self.node(parent_ino)
        await self.dirs.check_free(parent, name)
        attrs = Attributes(stat.S_IFREG | (mode & 0o7777), uid, gid, now_ns())
        node = self.inodes.new(parent, name, attrs)
        node.meta_loaded = True
        node.data_changed()  # even an empty new file becomes an object
        self.dirs.insert(parent, name, node)
        handle = self._open_handle(node, flags)
        return handle, self.remember(node)

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Returns the handle and whether the kernel may keep its page cache of the file."""
        node = self.node(ino)
        if node.is_dir:
            raise FsError(FsKind.IS_A_DIRECTORY)
        if not node.is_file:
            raise FsError(FsKind.INVALID_ARGUMENT)
        if flags & os.O_TRUNC:
            # As on ext4 and tmpfs: the kernel checked the write permission, and the times
            # change even when the file was empty already (or opened O_RDONLY).
            if node.size:
                await self._truncate(node, 0)
            node.mtime_ns = node.ctime_ns = now_ns()
            node.touch()
        keep_cache = node.kernel_version == node.file.data_version
        node.kernel_version = node.file.data_version
        return self._open_handle(node, flags), keep_cache

    async def read(self, fh: int, offset: int, length: int) -> bytes:
        handle = self.handle(fh)
        node = handle.node
        length = min(length, node.size - offset)
        if length <= 0:
            return b""
        data = self._data(node)
        if any(data.unreadable(b) for b in data.blocks(offset, length)):
            await self._complete_for_read(node, data, offset, length)
        return await handle.prefetcher.read(data, offset, length)

    async def _complete_for_read(self, node: Node, data: CachedFile, offset: int,
                                 length: int) -> None:
        """Part of the range went to S3 as parts of an unfinished multipart upload and left
        the cache: S3 serves it only once the upload completes. A closed file's upload is
        completed now, and the read waits for it (a restore started right after its backup).
        A file still open for writing completes the parts uploaded so far, as a write there
        does; except an archive streamed to its final name, which must never appear there
        half-written: EIO."""
        unreadable = FsError(FsKind.IO, f"{node.path()}: this range was uploaded while the "
                                         "file was written and left the cache; it can be read "
                                         "once the file is closed and its upload completed")
        if node.unlinked:  # its stream was dropped at the unlink (see keptaside.KeptAside)
            raise FsError(FsKind.IO, f"{node.path()}: deleted while open after parts of it "
                                      "were uploaded and left the cache; they are gone")
        if node.write_handles:
            await self.uploader.complete_stream_early(node)
            return
        log.info("%s: reading a range that is on S3 only as an unfinished upload: completing "
                 "the upload first", node.path())
        # Bounded: with S3 away the upload retries for as long as the outage lasts.
        with trio.move_on_after(READ_WAITS_FOR_UPLOAD) as waited:
            try:
                await self.uploader.sync_now(node)
            except (FsError, StoreError) as exc:  # e.g. a .dat not renamed to its final name yet
                log.warning("%s: cannot complete the upload for a read: %s", node.path(), exc)
                raise unreadable from None
        if waited.cancelled_caught:
            log.warning("%s: its upload did not complete within %.0f s; the read fails",
                        node.path(), READ_WAITS_FOR_UPLOAD)
            raise unreadable
        # Reopened for writing, deleted or replaced meanwhile: not the data this read wanted.
        if node.write_handles or node.unlinked or node.file.data is not data or any(
                data.unreadable(b) for b in data.blocks(offset, length)):
            raise unreadable

    async def write(self, fh: int, offset: int, buf: bytes) -> int:
        handle = self.handle(fh)
        if not handle.writable:
            raise FsError(FsKind.BAD_HANDLE)
        node = handle.node
        if offset + len(buf) > MAX_OBJECT_SIZE:
            raise FsError(FsKind.FILE_TOO_LARGE, "S3 objects end at 5 TiB")
        # A write that fills a part and goes past it lands in two steps: the part fills (and
        # its upload starts) before the write waits for room for what follows. In one step a
        # full cache would keep it waiting for an upload that only its own bytes could start.
        split = self.streamer.part_end(node, offset)
        if split is not None and split < offset + len(buf):
            view = memoryview(buf)
            head = await self._write(node, offset, bytes(view[:split - offset]))
            return head + await self._write(node, split, bytes(view[split - offset:]))
        return await self._write(node, offset, buf)

    async def _write(self, node: Node, offset: int, buf: bytes) -> int:
        data = self._data(node)
        new_blocks = sum(1 for b in data.blocks(offset, len(buf)) if b not in data.cached)
        if new_blocks:  # backpressure: wait for room rather than fail
            await self.cache.reserve(data, new_blocks, lambda: self.streamer.allowance(node),
                                     can_wait=not node.unlinked)
        # Only now does the write mark the stream's parts it rewrites: marked while it
        # waited, they could be uploaded again, cleaned and evicted under it.
        await self._readable_parts_under(node, offset, len(buf))
        with data.in_use(*self.streamer.rewrite_span(node, offset, len(buf))):
            self.streamer.before_write(node, offset, len(buf))
            edges = self._partly_written_blocks(data, offset, len(buf))
            if edges:
                await self.reads.make_cached(node, data, edges)
            async with data.write_lock:
                await data.write(offset, buf)
                node.size = max(node.size, offset + len(buf))
            # Again: an upload of such a part may have read it meanwhile, and cleaned
            # the blocks this write left alone.
            if not await self._readable_parts_under(node, offset, len(buf)):
                self.streamer.mark_rewritten(node, offset, len(buf))
        node.mtime_ns = node.ctime_ns = now_ns()
        node.touch()
        self.streamer.after_write(node)
        return len(buf)

    async def _readable_parts_under(self, node: Node, offset: int, length: int) -> bool:
        """Make the stream's parts a write there rewrites readable: when one left the cache,
        complete the stream with the parts so far (True then: no stream any more)."""
        if not self.streamer.rewrites_evicted_part(node, offset, length):
            return False
        await self.uploader.complete_stream_early(node)
        return True

    @staticmethod
    def _partly_written_blocks(data: CachedFile, offset: int, length: int) -> list[int]:
        """Blocks the write covers only in part and whose rest must come from S3 first."""
        end = offset + length
        partial = []
        for block in {offset // data.block_size, (end - 1) // data.block_size}:
            start = block * data.block_size
            stop = min(start + data.block_size, data.base_valid_len)
            if data.needs_fetch(block) and not (offset <= start and end >= stop):
                partial.append(block)
        return partial

    async def flush(self, fh: int) -> None:
        """close(): the data written is in the cache file; make it and the journal durable."""
        node = self.handle(fh).node
        if node.needs_upload or node.file.stream is not None:  # also O_RDONLY|O_CREAT files
            await self.file_journal.checkpoint(node, durable=True)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is None:
            return
        handle.prefetcher.close()  # a killed reader's readahead stops with it
        node = handle.node
        node.open_count -= 1
        if handle.writable:
            node.write_handles -= 1
        if node.unlinked:
            if node.open_count == 0:
                node.file.discard_data()
                await self.kept_aside.delete(node.ino)
                if node.lookups <= 0:
                    self.inodes.drop(node)
            return
        if handle.writable and node.write_handles == 0 and node.file.journal_id is None:
            # flush journaled it already, unless it failed
            await self.file_journal.checkpoint(node)
        if node.open_count == 0 and node.file.data is not None:
            node.file.data.release_fd()
        self.uploader.after_change(node)

    async def fsync(self, fh: int) -> None:
        """Durable in the local cache and journal; with durability = "s3", on S3."""
        node = self.handle(fh).node
        await self.file_journal.checkpoint(node, durable=True)
        if self.config.durability != "s3":
            return
        try:
            await self.uploader.sync_now(node)
        except (FsError, StoreError) as exc:
            log.error("fsync of %s failed: %s", node.path(), exc)
            raise FsError(FsKind.IO, f"fsync of {node.path()} failed: {exc}") from exc

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)
        node = await self._child(parent, name)
        if node.is_dir:
            raise FsError(FsKind.IS_A_DIRECTORY)
        await self._delete_object(node, parent, name)
        await self.attr_index.forget(parent.key(self.prefix), name)
        self.dirs.remove(parent, name, node)

    async def _delete_object(self, node: Node, parent: Node, name: str) -> None:
        """Stop the node's uploads and remove its object (an upload in flight is aborted)."""
        async with self.uploader.held(node):
            still_at(node, parent, name)
            await self.kept_aside.let_go_of_key(node)
            if node.file.remote_maybe or node.file.base is not None:
                await self.store.delete(node.key(self.prefix))
            await self.uploader.delete_stale_keys(node)
            node.unlinked = True  # no new upload may start
            await self.file_journal.checkpoint(node)  # drops its journal record
        await self.kept_aside.delete_if_closed(node)

    async def symlink(self, parent_ino: int, name: str, target: str, uid: int, gid: int) -> Node:
        parent = self.node(parent_ino)
        await self.dirs.check_free(parent, name)
        node = self.inodes.new(parent, name, Attributes(stat.S_IFLNK | 0o777, uid, gid, now_ns()))
        key = node.key(self.prefix)
        body = target.encode("utf-8", "surrogateescape")
        try:
            check_key_length(key)
            etag = await self.store.put(key, body, node.object_metadata())
        except BaseException:
            self.inodes.drop(node)
            raise
        node.symlink_target = target
        node.size = len(body)
        node.file.backed_by(RemoteObject(key, etag, len(body)))
        node.meta_loaded = True
        await self.attr_index.publish_uploaded(node, key, etag)
        self.dirs.insert(parent, name, node)
        return self.remember(node)

    # -- rename -----------------------------------------------------------------------------

    async def rename(self, old_parent_ino: int, old_name: str, new_parent_ino: int,
                     new_name: str, noreplace: bool = False) -> None:
        node = await self._child(self.node(old_parent_ino), old_name)
        await self.renames.rename(node, self.node(new_parent_ino), new_name, noreplace)

    # -- statfs -----------------------------------------------------------------------------

    def statfs(self) -> StatFs:
        """Answered from memory: Proxmox polls it every 10 s and needs it even if S3 is down."""
        used = sum(node.size for node in self.inodes if node.is_file and not node.unlinked)
        total = max(self.config.capacity // STATFS_BLOCK, 1)
        used_blocks = min(total - 1, -(-used // STATFS_BLOCK))
        files = len(self.inodes)
        return StatFs(STATFS_BLOCK, total, total - used_blocks, files + 1_000_000, 1_000_000)
