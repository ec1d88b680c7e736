"""Builds one filesystem: FsCore and its collaborators, in dependency order, each handed what
it uses when it is made.

    inodes      the tree, from its root
    reader      block GETs (the writer reads ranges of objects through it too)
    attr_index  the attribute index objects
    journal     the cache directory's journal, and the file journal that keeps each file's
                record in step with its lifecycle (checkpoints)
    writer      every request that makes an object (parts under one bound for the mount)
    parts       where the bytes an upload sends come from (the cache file, else the reader)
    streamer    multipart uploads of files being written, through the writer
    left_keys   keys files left, to delete; asks the inodes which file is at a key
    kept_aside  hidden copies of files deleted while open
    uploader    asks the inodes which files are dirty; listens to the cache's pressure signals;
                sends what it uploads through parts
    reads       the read path over the reader, with each handle's readahead; asks the
                uploader whether a changed object is its own upload (prefetch.OwnUploads)
    dirs        listings and changes of the tree; sends every directory it listed on a
                channel
    renames     of files and directories
    core        every operation; reads that channel (prefetch of small files)

What the admin socket serves is built from a core's parts by the service layer
(service.liveadmin.build_admin), with the kernel's caches that `refresh` tells what it dropped.

Nothing is set on an object after it is made. Where a lower layer tells a higher one
something, it does so through a channel (cache pressure, listed directories) or through a
typed protocol that the higher one fulfils (recovery.Tree,
liveadmin.KernelCache, control.Admin, prefetch.OwnUploads).
"""

from __future__ import annotations

import stat
from collections.abc import Callable

import trio

from s3pvefs.config.settings import Config
from s3pvefs.fs.core import FsCore
from s3pvefs.fs.keptaside import KeptAside
from s3pvefs.fs.listing import Directories
from s3pvefs.fs.recovery import recover
from s3pvefs.fs.renames import Renames
from s3pvefs.names import Attributes
from s3pvefs.state.attrindex import AttributeIndex, host_id
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.journal import Journal
from s3pvefs.state.nodes import InodeTable, Node, now_ns
from s3pvefs.store.objectstore import ObjectStore
from s3pvefs.transfer.leftkeys import LeftKeys
from s3pvefs.transfer.objectwriter import ObjectWriter
from s3pvefs.transfer.partsource import PartSource
from s3pvefs.transfer.prefetch import HEAD_BYTES, Reads
from s3pvefs.transfer.reader import MAX_GET_RANGE, BlockReader
from s3pvefs.transfer.streaming import Streamer
from s3pvefs.transfer.uploader import Uploader

# Directories listed that the core has not looked at yet for small files to prefetch; a
# listing past these only misses its prefetch.
LISTED_BACKLOG = 64


def build_filesystem(config: Config, store: ObjectStore, cache: BlockCache) -> FsCore:
    """A core over ``store`` and the opened ``cache``."""
    defaults = attribute_defaults(config)
    inodes = InodeTable(defaults(stat.S_IFDIR, now_ns()))
    reader = BlockReader(store, config.max_connections, min(config.part_size, MAX_GET_RANGE))
    attr_index = AttributeIndex(store, config.prefix, host_id(cache.cache_dir), defaults)
    journal = Journal(cache.cache_dir)
    journal.open()
    file_journal = FileJournal(journal, cache, config.prefix)
    writer = ObjectWriter(store, reader, config, journal=journal, file_journal=file_journal)
    parts = PartSource(reader)
    streamer = Streamer(writer, store, parts, config.prefix, config.part_size, file_journal)
    left_keys = LeftKeys(store, inodes, config.prefix)
    kept_aside = KeptAside(store, cache, config.prefix, journal=journal,
                           file_journal=file_journal, streamer=streamer, writer=writer)
    uploader = Uploader(writer, streamer, parts, config, file_journal=file_journal,
                        inodes=inodes, left_keys=left_keys, attr_index=attr_index,
                        pressure=cache.pressure)
    reads = Reads(reader, uploader, config.readahead_max, HEAD_BYTES)
    listed_sent, listed = trio.open_memory_channel[Node](LISTED_BACKLOG)
    dirs = Directories(store, inodes, config.prefix, config.dir_ttl, defaults,
                       config.max_connections, attr_index=attr_index,
                       left_behind=left_keys.left_behind, listed=listed_sent)
    renames = Renames(config, store, dirs=dirs, uploader=uploader, writer=writer,
                      file_journal=file_journal, left_keys=left_keys, kept_aside=kept_aside,
                      attr_index=attr_index)
    return FsCore(config, store, cache, inodes=inodes, reader=reader, reads=reads,
                  journal=journal, file_journal=file_journal, writer=writer, streamer=streamer,
                  left_keys=left_keys, kept_aside=kept_aside, uploader=uploader, dirs=dirs,
                  renames=renames, attr_index=attr_index, listed=listed)


def attribute_defaults(config: Config) -> Callable[[int, int], Attributes]:
    """(file type bits, mtime_ns) -> the attributes of an entry that S3 holds none for."""

    def defaults(kind: int, mtime_ns: int) -> Attributes:
        permissions = config.dir_mode if kind == stat.S_IFDIR else config.file_mode
        return Attributes(kind | permissions, config.uid, config.gid, mtime_ns)

    return defaults


async def recover_journal(core: FsCore) -> int:
    """Put back and finish what the journal of the core's cache directory holds."""
    return await recover(core, cache=core.cache, journal=core.journal, uploader=core.uploader,
                         streamer=core.streamer, writer=core.writer, left_keys=core.left_keys,
                         kept_aside=core.kept_aside, store=core.store)
