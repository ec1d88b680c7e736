"""Files deleted while open (unlink, or a rename over them).

Their handles read and write on until the last close (POSIX; vzdump, qemu-img and tar rely on
it), but their name is free at once: a new file may take the key, and a listing or another
host must not see the old data there. So what only S3 holds of such a file is copied to a
hidden key of its own (``names.KEPT_PREFIX``), read from there, and deleted at the last close
(or at unmount); the journal lists that key first, so a crash cannot leave it forever. Writes
through such a handle stay in the cache: nothing uploads them (ENOSPC once it is full of them).
A file whose every byte is cached needs no copy: its blocks stay.
"""

from __future__ import annotations

import logging
import uuid

import trio

from s3pvefs.errors import FsError, StoreError, is_not_found, is_stale
from s3pvefs.names import KEPT_PREFIX
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.journal import Journal
from s3pvefs.state.nodes import Node
from s3pvefs.store.objectstore import ObjectStore, RemoteObject
from s3pvefs.transfer.objectwriter import ObjectWriter
from s3pvefs.transfer.streaming import Streamer

log = logging.getLogger(__name__)


class KeptAside:
    def __init__(self, store: ObjectStore, cache: BlockCache, prefix: str, *, journal: Journal,
                 file_journal: FileJournal, streamer: Streamer, writer: ObjectWriter):
        self.store = store
        self.cache = cache
        self.prefix = prefix
        self.journal = journal  # lists the hidden keys to delete (journal/deletes)
        self.file_journal = file_journal
        self.streamer = streamer
        self.writer = writer
        self._keys: dict[int, str] = {}  # inode -> the hidden key keeping its data

    async def let_go_of_key(self, node: Node) -> None:
        """Before a file's name goes (unlink, or a rename over it; the caller holds its
        uploads off): no stream of it may land anywhere, and open handles keep its data."""
        if not node.open_count:
            await self.file_journal.forget(node)  # first: see forget
            await self.streamer.abort(node)
            return
        await self._end_stream(node)
        data, base = node.file.data, node.file.base
        if base is None or data is None:
            return
        node.file.remote_possible()  # its key may hold an object still, whatever base becomes
        if data.fully_local(node.size):
            node.file.local_only()  # its blocks stay in the cache (no longer evictable)
        elif not base.archived:  # an archived object cannot be read anyway
            await self._keep_aside(node, base)

    async def _end_stream(self, node: Node) -> None:
        """A stream whose parts left the cache is completed at the file's own key (the name
        is still the file's) to be kept aside from there; otherwise it is dropped. A stream
        to a predicted name must never appear there: dropped, and its evicted parts read EIO
        (see core._complete_for_read) instead of zeros."""
        stream, data = node.file.stream, node.file.data
        if stream is None or data.fully_local(node.size):
            await self.file_journal.forget(node)  # first: see forget
            await self.streamer.abort(node)
            return
        if stream.key == node.key(self.prefix):
            try:
                await self.streamer.complete_prefix(node)
                await self.file_journal.checkpoint(node, durable=True)
                return
            except (FsError, StoreError) as exc:
                log.error("%s: deleted while open; its streamed parts could not be completed "
                          "(%s): reading them fails", node.path(), exc)
        lost = data.streamed_len
        await self.file_journal.forget(node)
        await self.streamer.abort(node)
        node.file.parts_lost(lost)

    async def _keep_aside(self, node: Node, base: RemoteObject) -> None:
        hidden = f"{self.prefix}{KEPT_PREFIX}{uuid.uuid4().hex}"
        await self.cache.run_io(self.journal.delete_pending, hidden)
        try:
            etag = await self.writer.copy_object(base, hidden, node.object_metadata())
        except (FsError, StoreError) as exc:
            with trio.CancelScope(shield=True):
                await self._delete_quietly(hidden)
            if not (is_not_found(exc) or is_stale(exc)):
                raise
            log.warning("%s: deleted while open, but its object changed or vanished on S3 "
                        "meanwhile (%s): what the cache does not hold cannot be read", node.path(),
                        exc)
            return
        node.file.moved_aside(RemoteObject(hidden, etag, base.size))
        self._keys[node.ino] = hidden
        log.info("%s: deleted while open; its data stays at %s until the last close",
                 node.path(), hidden)

    async def delete_if_closed(self, node: Node) -> None:
        """Its last handle may have closed while the unlink or rename copied it aside or
        deleted its key: that release saw a file not unlinked yet, and left the copy."""
        if node.unlinked and node.open_count == 0:
            await self.delete(node.ino)

    async def delete(self, ino: int) -> None:
        key = self._keys.pop(ino, None)
        if key is not None:
            await self._delete_quietly(key)

    async def _delete_quietly(self, key: str) -> None:
        """Delete a kept-aside object; should S3 fail now, the next mount does it."""
        try:
            await self.store.delete(key)
        except StoreError as exc:
            log.warning("cannot delete %s (data of a file deleted while open): %s; the next "
                        "mount does", key, exc)
            return
        await self.cache.run_io(self.journal.delete_done, key)

    async def delete_all(self) -> None:
        """At unmount: files deleted while open lose their data now (the mount is gone)."""
        for ino in list(self._keys):
            await self.delete(ino)

    async def delete_left_by_crash(self) -> None:
        """At mount: a crash left data of files deleted while open (their handles died
        with it). Hidden keys of their own: no other file can be there."""
        for key in await self.cache.run_io(self.journal.pending_deletes):
            log.info("deleting %s, left by a file deleted while open before a crash", key)
            await self._delete_quietly(key)
