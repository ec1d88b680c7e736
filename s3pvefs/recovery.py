"""Crash recovery at mount time: put journaled files back in the tree and finish them.

Runs before the mount serves requests. Every journal record becomes a local file node again,
at the key it had, holding its cache file; its upload resumes (a journaled streaming upload
keeps its parts on S3 and uploads only the rest). A file that was still being written is kept
as far as its cache file goes. Multipart uploads that this cache directory started and that no
record needs are aborted.
"""

from __future__ import annotations

import logging
import os

from .errors import FsError
from .journal import expand_runs
from .names import Attributes
from .nodes import Node, RemoteObject

log = logging.getLogger(__name__)


async def recover(core) -> int:
    """Recover every journaled file; returns how many were recovered."""
    records = core.journal.records()
    needed_uploads: set[str] = set()
    recovered = 0
    for record in records:
        try:
            node = await _recover_file(core, record)
        except (FsError, OSError, KeyError, ValueError) as exc:
            log.error("cannot recover %s from the journal: %s; its record and data stay in %s",
                      record.get("key"), exc, core.cache.cache_dir)
            core.cache.keep_file_id(record.get("id", ""))
            continue
        recovered += 1
        if node.stream is not None:
            needed_uploads.add(node.stream.upload_id)
        log.warning("recovered %s (%d bytes) from the journal; uploading it", node.path(), node.size)
    await _abort_orphaned_uploads(core, needed_uploads)
    core.cache.remove_unreferenced()
    return recovered


async def _recover_file(core, record: dict) -> Node:
    key = record["key"]
    if not key.startswith(core.prefix):
        raise ValueError(f"it belongs to prefix-less key {key!r}, not under {core.prefix!r}")
    *dir_names, name = key[len(core.prefix):].split("/")
    parent = await _directory(core, dir_names)
    existing = parent.children.get(name)
    if existing is not None:
        core.dirs.detach(parent, name, existing)  # the journal is newer than what S3 holds
    attrs = Attributes(record["mode"], record["uid"], record["gid"], record["mtime_ns"])
    node = core.inodes.new(parent, name, attrs)
    node.meta_loaded = node.remote_maybe = True
    node.size = record["size"]
    base = record["base"]
    node.base = RemoteObject(base["key"], base["etag"], base["size"]) if base else None
    dirty = expand_runs(record["dirty"])
    node.data = core.cache.adopt_file(record["id"], expand_runs(record["cached"]), dirty)
    node.data.reset_base(record["base_valid_len"])
    node.data_gen = 1 if record["data_dirty"] or record["state"] == "open" else 0
    node.meta_gen = 1 if record["meta_dirty"] else 0
    if record["stream"]:
        core.streamer.restore(node, record["stream"])
    if record["state"] == "open":
        await _keep_what_was_written(core, node)
    node.journal_id = record["id"]
    parent.children[name] = node
    node.touch()
    core.schedule_upload(node)
    return node


async def _keep_what_was_written(core, node: Node) -> None:
    """A writer was still at work: writes after its last checkpoint are in the cache file."""
    length = (await core.cache.run_io(os.fstat, node.data.fd())).st_size
    if length > node.size:
        node.data.mark_written(node.size, length - node.size)
        node.size = length


async def _directory(core, names: list[str]) -> Node:
    """The directory at that path, made again (as a marker) if it vanished meanwhile."""
    directory = core.root
    for name in names:
        await core.dirs.ensure_listed(directory)
        child = directory.children.get(name)
        if child is None or not child.is_dir:
            child = await core.make_directory(directory, name)
        directory = child
    return directory


async def _abort_orphaned_uploads(core, needed: set[str]) -> None:
    for upload in core.journal.uploads():
        if upload["upload_id"] in needed:
            continue
        log.info("aborting multipart upload of %s left by a crash", upload["key"])
        await core.uploader.abort_quietly(upload["key"], upload["upload_id"])

