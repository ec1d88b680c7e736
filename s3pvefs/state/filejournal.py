"""The file records of the crash journal, kept in step with each file's lifecycle.

``FileJournal.record`` is the one place a ``journal.JournalRecord`` is built (the streamer
adds its sub-record, ``Stream.record``); ``checkpoint`` writes or removes it. The uploader and
the streamer get it at construction, and call it at the points the lifecycle's order rules
name (docs/design.md, "File lifecycle"); recovery reads the records back.
"""

from __future__ import annotations

import time

from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.journal import Journal, JournalRecord, block_runs
from s3pvefs.state.lifecycle import FileState
from s3pvefs.state.nodes import Node
from s3pvefs.store.objectstore import RemoteObject


class FileJournal:
    """Keeps each file's journal record in step with its lifecycle (``checkpoint``)."""

    def __init__(self, journal: Journal, cache: BlockCache, prefix: str):
        self.journal = journal
        self.cache = cache
        self.prefix = prefix

    async def checkpoint(self, node: Node, durable: bool = False) -> None:
        """Record (or drop) what a restarted mount needs to finish this file's upload.

        ``durable``: the cache file and the record reach the disk before this returns.
        """
        if not node.is_file:
            return
        file = node.file
        async with file.journal_lock:
            data = file.data
            if data is None or node.unlinked or not (node.needs_upload or file.stream is not None):
                await self._remove(file)
                return
            record = self.record(node)
            if durable:
                await data.sync()  # the data the record vouches for first
            await self.cache.run_io(self.journal.write, record, durable)
            file.journaled(data.file_id)

    # -- the steps whose order a crash depends on ---------------------------------------------

    async def announce_landing(self, node: Node, landing: RemoteObject) -> None:
        """Before the request that makes ``landing`` at the file's key: journal it, durably.
        A crash before the answer is journaled leaves a record whose base S3 no longer has;
        the restart needs this to know that the object that replaced it is ours."""
        node.file.landing_announced(landing)
        await self.checkpoint(node, durable=True)

    async def record_parts(self, node: Node, end: int) -> None:
        """Streamed parts up to ``end`` are on S3: the record listing them (and their blocks
        as not cached) reaches the disk, and only then may those blocks leave the cache. A
        restart must neither lose a part nor take evicted holes for data."""
        await self.checkpoint(node, durable=True)
        node.file.parts_on_record(end)

    async def forget(self, node: Node) -> None:
        """The file is being deleted (unlink, or a rename over it), before its streaming
        upload is aborted: a restart must not resume an upload that is gone. A crash in
        the middle leaves the file as S3 holds it (the delete was not acknowledged) and the
        upload to the restart's clean-up (journal/uploads)."""
        async with node.file.journal_lock:
            await self._remove(node.file)

    async def _remove(self, file: FileState) -> None:
        if file.journal_id is not None:
            await self.cache.run_io(self.journal.remove, file.journal_id)
            file.unjournaled()

    def record(self, node: Node) -> JournalRecord:
        """The file's record as of now (the one place records are built)."""
        file = node.file
        data, stream = file.data, file.stream
        s3_has = max(data.base_valid_len, 0 if stream is None else stream.contiguous_end)
        return JournalRecord(
            file_id=data.file_id, key=node.key(self.prefix), writing=node.write_handles > 0,
            size=node.size, mode=node.mode, uid=node.uid, gid=node.gid,
            mtime_ns=node.mtime_ns, base=file.base, landing=file.landing,
            base_valid_len=data.base_valid_len,
            # Clean blocks may be evicted at any time after this record: only blocks S3 does
            # not have count as cached; the rest is fetched again from the base, or (parts of
            # the unfinished upload) is unreadable until that upload completes.
            cached_runs=_runs(b for b in data.cached
                              if b in data.dirty or b * data.block_size >= s3_has),
            dirty_runs=_runs(data.dirty), seq=time.time_ns(),
            stale_keys=tuple(sorted(file.stale_keys)),
            data_dirty=file.data_gen != file.uploaded_data_gen, meta_dirty=file.meta_dirty,
            stream=None if stream is None else stream.record(),
        )


def _runs(blocks) -> tuple[tuple[int, int], ...]:
    return tuple((start, end) for start, end in block_runs(blocks))
