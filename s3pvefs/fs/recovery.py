"""Crash recovery at mount time: put journaled files back in the tree and finish them.

Runs before the mount serves requests. Every journal record becomes a local file node again,
at the key it had, holding its cache file; its upload resumes (a journaled streaming upload
keeps its parts on S3 and uploads only the rest). A file that was still being written is kept
as far as its cache file goes. A record that announced an upload (``landing``) is checked
against S3 first: the object that upload made, if it is there, is the file's base from then on.
Multipart uploads that this cache directory started and that no record needs are aborted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol

from s3pvefs.errors import FsError, StoreError
from s3pvefs.fs.keptaside import KeptAside
from s3pvefs.names import Attributes
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.journal import Journal, JournalRecord
from s3pvefs.state.nodes import Node
from s3pvefs.store.objectstore import ObjectStore
from s3pvefs.transfer.leftkeys import LeftKeys
from s3pvefs.transfer.objectwriter import ObjectWriter
from s3pvefs.transfer.streaming import Streamer
from s3pvefs.transfer.uploader import Uploader

log = logging.getLogger(__name__)


class Tree(Protocol):
    """The file tree recovered files go back into (core.FsCore)."""

    prefix: str

    async def directory_at(self, names: list[str]) -> Node: ...

    def new_file(self, parent: Node, name: str, attrs: Attributes) -> Node: ...

    def schedule_upload(self, node: Node) -> None: ...



@dataclass(frozen=True)
class _Recovery:
    tree: Tree
    cache: BlockCache
    journal: Journal
    uploader: Uploader
    streamer: Streamer
    writer: ObjectWriter
    left_keys: LeftKeys
    kept_aside: KeptAside
    store: ObjectStore

    @property
    def prefix(self) -> str:
        return self.tree.prefix


async def recover(tree: Tree, *, cache: BlockCache, journal: Journal, uploader: Uploader,
                  streamer: Streamer, writer: ObjectWriter, left_keys: LeftKeys,
                  kept_aside: KeptAside, store: ObjectStore) -> int:
    """Recover every journaled file; returns how many were recovered."""
    recovery = _Recovery(tree, cache, journal, uploader, streamer, writer, left_keys,
                         kept_aside, store)
    records, unreadable = await recovery.cache.run_io(recovery.journal.records)
    for file_id in unreadable:
        recovery.cache.keep_file_id(file_id)
    # Every upload a record refers to stays, even if that record cannot be recovered now.
    needed_uploads = {r.stream.upload_id for r in records if r.stream is not None}
    recovered = 0
    for record in await _newest_per_key(recovery, records):
        try:
            node = await _recover_file(recovery, record)
        except FileNotFoundError as exc:  # nothing left to recover
            log.error("journal record for %s: %s; dropped", record.key, exc)
            await recovery.cache.run_io(recovery.journal.remove, record.file_id)
            continue
        except (FsError, StoreError, OSError, KeyError, ValueError) as exc:
            log.error("cannot recover %s from the journal: %s; its record and data stay in %s",
                      record.key, exc, recovery.cache.cache_dir)
            recovery.cache.keep_file_id(record.file_id)
            continue
        recovered += 1
        log.warning("recovered %s (%d bytes) from the journal; uploading it", node.path(), node.size)
    await _abort_orphaned_uploads(recovery, needed_uploads)
    await recovery.kept_aside.delete_left_by_crash()
    await recovery.cache.remove_unreferenced()
    return recovered


async def _newest_per_key(recovery: _Recovery,
                          records: list[JournalRecord]) -> list[JournalRecord]:
    """Two records for one key (a crash in the middle of a rename over a file being written):
    the newer one wins, the older one is dropped."""
    newest: dict[str, JournalRecord] = {}
    for record in sorted(records, key=lambda r: r.seq):
        older = newest.get(record.key)
        if older is not None:
            log.warning("dropping an older journal record for %s", older.key)
            await recovery.cache.run_io(recovery.journal.remove, older.file_id)
        newest[record.key] = record
    return list(newest.values())


async def _recover_file(recovery: _Recovery, record: JournalRecord) -> Node:
    key = record.key
    if not key.startswith(recovery.prefix):
        raise ValueError(f"its key {key!r} is not under the prefix {recovery.prefix!r}")
    *dir_names, name = key[len(recovery.prefix):].split("/")
    data = await recovery.cache.adopt_file(record.file_id, record.cached, record.dirty,
                                           record.size, dirty_since_ns=record.seq)
    try:
        parent = await recovery.tree.directory_at(dir_names)
    except BaseException:
        data.uncharge(list(data.charges))  # the file stays on disk for the next attempt
        recovery.cache.forget_file(data)
        raise
    attrs = Attributes(record.mode, record.uid, record.gid, record.mtime_ns)
    node = recovery.tree.new_file(parent, name, attrs)  # the journal is newer than S3
    node.meta_loaded = True
    node.size = record.size
    node.file.restored(record, data)
    if record.stream is not None:
        recovery.streamer.restore(node, record.stream)
    if record.writing:
        await _keep_what_was_written(recovery, node)
    for key in record.stale_keys:
        recovery.left_keys.leave(node, key)
    parent.children[name] = node
    node.touch()
    if node.file.landing is not None:
        await _settle_landing(recovery, node)
    recovery.tree.schedule_upload(node)
    return node


async def _settle_landing(recovery: _Recovery, node: Node) -> None:
    """An upload was announced before the crash: before the file serves reads, find out
    whether its object replaced the base (which S3 then no longer has)."""
    try:
        await recovery.uploader.settle_landing(node)
    except StoreError as exc:  # S3 away: the upload settles it before it starts
        log.warning("cannot tell whether the upload of %s announced before the crash "
                    "landed (%s); its upload finds out", node.path(), exc)


async def _keep_what_was_written(recovery: _Recovery, node: Node) -> None:
    """A writer was still at work: writes after its last checkpoint are in the cache file."""
    length = (await recovery.cache.run_io(os.stat, node.file.data.path)).st_size
    if length > node.size:
        node.file.data.mark_written(node.size, length - node.size)
        node.size = length


INTENT_CLOCK_SLACK_NS = 60 * 10**9  # S3's clock may be behind this host's by up to this


async def _abort_orphaned_uploads(recovery: _Recovery, needed: set[str]) -> None:
    listed = await recovery.cache.run_io(recovery.journal.uploads)
    known = needed | {upload["upload_id"] for upload in listed if "upload_id" in upload}
    for upload in listed:
        if "intent" in upload:
            await _abort_created_before_listed(recovery, upload, known)
        elif upload["upload_id"] not in needed:
            log.info("aborting multipart upload of %s left by a crash", upload["key"])
            await recovery.writer.abort_quietly(upload["key"], upload["upload_id"])


async def _abort_created_before_listed(recovery: _Recovery, intent: dict, known: set[str]) -> None:
    """A crash between CreateMultipartUpload and listing its ID: abort the uploads of that
    key S3 holds from then on that this cache directory does not know."""
    key = intent["key"]
    try:
        uploads = await recovery.store.list_multipart_uploads(key)
    except StoreError as exc:  # S3 away: the next mount looks again
        log.warning("cannot list the multipart uploads of %s (%s); the next mount looks "
                    "again for one a crash may have left", key, exc)
        return
    for upload in uploads:
        if (upload.key == key and upload.upload_id not in known
                and upload.initiated_ns >= intent["since_ns"] - INTENT_CLOCK_SLACK_NS):
            log.info("aborting multipart upload of %s created just before a crash", key)
            await recovery.writer.abort_quietly(key, upload.upload_id)
    await recovery.cache.run_io(recovery.journal.intent_done, intent["intent"])

