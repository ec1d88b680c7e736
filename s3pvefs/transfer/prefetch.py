"""The read path of open files: ``Reads`` answers a read of a file from its cache file and the
GETs of its object (reader.BlockReader), and follows this mount's own uploads when they replace
that object under a read; each open handle has a ``Prefetcher`` that detects a sequential
reader and fetches ahead of it, and stops its fetches when the handle is released.

Built after the uploader (assembly.py): a read that meets a changed object asks it, through
``OwnUploads``, whether the change was its own.
"""

from __future__ import annotations

import itertools
import logging
from typing import Protocol

import trio

from s3pvefs.errors import FsError, FsKind, StoreError, is_not_found, is_stale
from s3pvefs.names import is_backup_archive
from s3pvefs.state.cachefile import CachedFile
from s3pvefs.state.nodes import Node
from s3pvefs.transfer.reader import BlockReader

log = logging.getLogger(__name__)

# A fetch a read shares with another reader can end without its blocks (a readahead cancelled
# at its handle's release, a failure reported to that reader): asked for this often in all.
SHARED_FETCH_ROUNDS = 3
# Reads of a backup archive that start within this many bytes of its start, before any
# readahead, fetch just what they ask for (Prefetcher.read): its head is all "show
# configuration" reads, though zstd reads 0.5-1.4 MiB of it and the kernel's readahead (1 MiB)
# asks for more, not always in order.
HEAD_BYTES = 4 * 1024 * 1024
# A GET that found the object replaced by this mount's own upload is tried again this often.
OWN_UPLOADS_WAITED_FOR = 3


class OwnUploads(Protocol):
    """What reads ask of the uploader (uploader.Uploader)."""

    async def settled(self, node: Node) -> None:
        """Return once no upload of the node runs and whether its last one landed is known:
        if one of ours replaced the object, the file's base is that object now."""


class Reads:
    """Reads of every open file; one ``Prefetcher`` per open handle."""

    def __init__(self, reader: BlockReader, uploads: OwnUploads, readahead_max: int,
                 head_bytes: int = 0):
        self.reader = reader
        self.uploads = uploads
        self.readahead_max = readahead_max  # bytes a sequential reader is fetched ahead at most
        self.head_bytes = head_bytes  # first reads starting below this fetch just their range
        self.bytes_answered = 0  # by reads of open files (FUSE reads), for `s3pvefs status`

    def prefetcher(self, node: Node) -> Prefetcher:
        """The reads of a newly opened handle of ``node``."""
        return Prefetcher(self, node)

    async def read(self, node: Node, data: CachedFile, offset: int, length: int) -> bytes:
        """The file's bytes [offset, offset + length); the caller keeps them ``in_use``.

        Cached blocks come from the cache file, the others from the payload of their GET as
        soon as it arrives (it is written to the cache file in the background)."""
        for attempt in itertools.count():
            sources = self.reader.sources(data, offset, length)
            if sources is None and node.file.base is None:  # no object any more: all is local
                sources = [(offset, length)]
            if sources is not None:
                return await self.reader.assemble(data, sources)
            if attempt == SHARED_FETCH_ROUNDS:
                raise FsError(FsKind.IO, f"could not read {node.path()} from S3 (see log)")
            await self._from_current_base(node, data, data.blocks(offset, length),
                                          installed=False)

    async def read_head(self, node: Node, data: CachedFile, offset: int,
                        length: int) -> bytes | None:
        """The bytes of a first read at the head of a file only S3 holds there, with one GET
        of just that range, not cached: "show configuration" reads a backup's first 100-odd
        KiB and no more, and whole blocks would fetch several times that. None when any of it
        is local or being fetched, or the GET failed: the block path then reads it (and says
        why it cannot)."""
        base = node.file.base
        if (base is None or self.reader.sources(data, offset, length) is not None
                or not all(data.needs_fetch(b) for b in data.blocks(offset, length))):
            return None
        end = min(offset + length, data.base_valid_len)
        try:
            head = await self.reader.read_range(base, offset, end - offset)
        except (FsError, StoreError):
            return None
        data.used()
        return head + bytes(length - len(head))

    async def make_cached(self, node: Node, data: CachedFile, blocks) -> None:
        """Make ``blocks`` cached: a write that covers them in part needs the rest in the
        cache file first."""
        for attempt in itertools.count():
            if not any(data.needs_fetch(b) for b in blocks):
                return
            if attempt == SHARED_FETCH_ROUNDS:
                raise FsError(FsKind.IO, f"could not read {node.path()} from S3 (see log)")
            await self._from_current_base(node, data, blocks, installed=True)

    async def _from_current_base(self, node: Node, data: CachedFile, blocks, *,
                                 installed: bool) -> None:
        """One round of fetching ``blocks`` from the file's object (``BlockReader.obtain``).

        The GETs ask for the object's ETag. When this mount's own upload replaces the object
        meanwhile, they fail although nothing changed that the cache does not hold (blocks
        not cached are not dirty, so both versions agree there): wait for that upload and
        read from the new object. A change by anyone else is ESTALE. Likewise a GET that an
        unlink of the open file overtook (it moved the object aside) reads from there.
        """
        for _ in range(OWN_UPLOADS_WAITED_FOR):
            base = node.file.base
            if base is None:
                return  # no object behind the file any more: every byte is local
            try:
                await self.reader.obtain(data, base, blocks, installed=installed)
                return
            except (FsError, StoreError) as exc:
                if not (is_stale(exc) or is_not_found(exc)):
                    raise
                await self.uploads.settled(node)
                if node.file.base is base:
                    if is_not_found(exc):
                        raise
                    log.error("%s changed on S3 while its blocks were cached here; refusing "
                              "to mix versions: the new one is read once the directory "
                              "listing is refreshed (after dir_ttl)", base.key)
                    raise
        raise FsError(FsKind.STALE, f"{node.path()}: its object kept changing during a read")


class Prefetcher:
    """The reads of one open handle, and its readahead.

    None for random reads, and none until a sequential reader has read two whole blocks;
    then a window that doubles with every sequential read up to ``readahead_max``, fetched in
    whole stretches of ``max_range`` (aligned: one GET each). Two blocks, not one: "show
    configuration" needs a backup's first 128 KiB, but zstd reads ahead in its own buffers
    (up to ~1.4 MiB under load), and readahead started by that would fetch a whole stretch of
    a backup nobody restores. Closed at release: its readahead stops."""

    def __init__(self, reads: Reads, node: Node):
        self.reads = reads
        self.node = node
        self.next_offset = 0  # where a sequential reader reads next
        self.sequential_bytes = 0
        self.window = 0
        self.requested_end = 0  # readahead asked for everything before this offset
        # A backup archive: its head is read as asked (read_head), perhaps nothing more.
        self.archive = is_backup_archive(node.name)
        self.head_read_to = 0  # the head read without caching it (read_head), up to here
        self._scopes: set[trio.CancelScope] = set()  # of its GETs in flight
        self.closed = False

    async def read(self, data: CachedFile, offset: int, length: int) -> bytes:
        """The file's bytes [offset, offset + length) (the caller clamped it to the file)."""
        self.reads.bytes_answered += length
        with data.in_use(offset, length):
            stretch = self.next_stretch(data.block_size, offset, length)
            if self.archive and self.window == 0 and offset < self.reads.head_bytes:
                head = await self.reads.read_head(self.node, data, offset, length)
                if head is not None:
                    self.head_read_to = max(self.head_read_to, offset + length)
                    return head
            base = self.node.file.base
            if stretch is not None and base is not None and not self.closed:
                # Before this read's own GET: both run at once.
                self.reads.reader.prefetch(data, base, *stretch, self._scopes)
                if self.head_read_to:  # read whole after all: its head goes to the cache too
                    self.reads.reader.prefetch(data, base, 0, self.head_read_to, self._scopes)
                    self.head_read_to = 0
            return await self.reads.read(self.node, data, offset, length)

    def next_stretch(self, block_size: int, offset: int, length: int) -> tuple[int, int] | None:
        """Take note of a read; the (offset, length) to fetch ahead of it now, if any."""
        if offset == self.next_offset:
            self.sequential_bytes += length
        else:
            self.sequential_bytes = self.window = self.requested_end = 0
        self.next_offset = offset + length
        # An archive's head is read as asked (read_head) before readahead starts.
        start_after = max(2 * block_size, self.reads.head_bytes if self.archive else 0)
        if self.sequential_bytes < start_after:
            return None
        self.window = min(self.reads.readahead_max, max(2 * block_size, self.window * 2))
        # Ask for more only when what was asked for runs low, and then for a large stretch:
        # a window that slid one block per read would make one small GET per block.
        position = offset + length
        stretch = self.reads.reader.max_range
        target = -(-(position + self.window) // stretch) * stretch
        start = max(self.requested_end, position)
        if target - start < min(stretch, self.window // 2):
            return None
        self.requested_end = target
        return start, target - start

    def close(self) -> None:
        """The handle was released: a killed reader's readahead stops with it."""
        self.closed = True
        for scope in list(self._scopes):
            scope.cancel()
