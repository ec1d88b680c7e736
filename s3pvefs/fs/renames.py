"""Renames: of a file (its object copied on the server to the new key unless its upload goes
there anyway; the old key left, deleted once the new key is durable in the journal), and of a
directory (every object under it copied, then the old ones deleted).

A rename holds the uploads of what it moves (``Uploader.held``): one in flight is cancelled,
and starts again at the new key afterwards. A file renamed over another lets go of the
other's key first (keptaside.KeptAside: its open handles read on).
"""

from __future__ import annotations

import logging

import trio

from s3pvefs.config.settings import Config
from s3pvefs.errors import FsError, FsKind, StoreError, first_fs_error
from s3pvefs.fs.keptaside import KeptAside
from s3pvefs.fs.listing import Directories, walk
from s3pvefs.names import check_key_length
from s3pvefs.state.attrindex import DIRECTORY_ETAG, AttributeIndex
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.nodes import Node, now_ns, still_at
from s3pvefs.store.objectstore import ObjectStore, RemoteObject
from s3pvefs.transfer.leftkeys import LeftKeys
from s3pvefs.transfer.objectwriter import ObjectWriter
from s3pvefs.transfer.uploader import Uploader

log = logging.getLogger(__name__)


class Renames:
    def __init__(self, config: Config, store: ObjectStore, *, dirs: Directories,
                 uploader: Uploader, writer: ObjectWriter, file_journal: FileJournal,
                 left_keys: LeftKeys, kept_aside: KeptAside, attr_index: AttributeIndex):
        self.config = config
        self.prefix = config.prefix
        self.store = store
        self.dirs = dirs
        self.uploader = uploader
        self.writer = writer
        self.file_journal = file_journal
        self.left_keys = left_keys
        self.kept_aside = kept_aside
        self.attr_index = attr_index

    async def rename(self, node: Node, new_parent: Node, new_name: str,
                     noreplace: bool = False) -> None:
        await self.dirs.ensure_listed(new_parent)
        target = new_parent.children.get(new_name)
        if target is node:
            return
        if target is not None:
            await self._check_replaceable(node, target, noreplace)
        check_key_length(new_parent.key(self.prefix) + new_name + ("/" if node.is_dir else ""))
        if node.is_dir:
            if any(n is node for n in _ancestors(new_parent)):
                raise FsError(FsKind.INVALID_ARGUMENT, "cannot move a directory into itself")
            await self._rename_directory(node, new_parent, new_name, target)
        else:
            await self._rename_file(node, new_parent, new_name, target)

    async def _check_replaceable(self, node: Node, target: Node, noreplace: bool) -> None:
        if noreplace:
            raise FsError(FsKind.EXISTS)
        if target.is_dir:
            if not node.is_dir:
                raise FsError(FsKind.IS_A_DIRECTORY)
            await self.dirs.check_empty(target)
        elif node.is_dir:
            raise FsError(FsKind.NOT_A_DIRECTORY)

    async def _rename_file(self, node: Node, new_parent: Node, new_name: str,
                           target: Node | None) -> None:
        held = [node] if target is None else [node, target]
        old_parent, old_name = node.parent, node.name
        async with self.uploader.held(*held):
            still_at(node, old_parent, old_name)
            if new_parent.children.get(new_name) is not target:
                raise FsError(FsKind.RACED, "the target changed during the rename")
            if target is not None:  # replaced: its upload must not land; handles read on
                await self.kept_aside.let_go_of_key(target)
            await self._move_file(node, new_parent, new_name, target)
            if target is not None:
                await self.file_journal.checkpoint(target)
            await self.uploader.delete_stale_keys(node)
        if target is not None:
            await self.kept_aside.delete_if_closed(target)
        self.uploader.after_change(node)

    async def _move_file(self, node: Node, new_parent: Node, new_name: str,
                         target: Node | None) -> None:
        """Copy what S3 holds of the file to the new key (if needed), move the node, and
        journal the new key; the old object is deleted after that (``stale_keys``), so that
        a failure or a crash never loses the only copy."""
        old_key = node.key(self.prefix)
        old_dir_key, old_name = node.parent.key(self.prefix), node.name
        had_object = node.file.remote_maybe or node.file.base is not None
        copied = await self._carry_base(node, new_parent.key(self.prefix) + new_name)
        target_on_s3 = target is not None and (target.file.remote_maybe
                                                or target.file.base is not None)
        self.dirs.move(node, new_parent, new_name, target)
        node.file.moved(object_at_new_key=copied or target_on_s3)
        node.ctime_ns = now_ns()
        if had_object:
            self.left_keys.leave(node, old_key)
        if target is not None:  # the replaced file's leftovers are ours to delete now
            self.left_keys.hand_over(target, node)
        # Durable before the old object is deleted (the journal must know the new key then);
        # without one, an old record still keeps the data safe.
        await self.file_journal.checkpoint(node, durable=had_object)
        await self.attr_index.forget(old_dir_key, old_name)
        if copied:
            await self.attr_index.publish_uploaded(node, node.file.base.key, node.file.base.etag)

    async def _carry_base(self, node: Node, new_key: str) -> bool:
        """Make the file's remote data available at ``new_key``; True if copied there.

        A file whose every byte is in the cache and that must be uploaded anyway needs no copy:
        its upload goes to the new key. Otherwise the server copies the object.
        """
        if node.file.landing is not None:  # an upload cancelled by this rename may have landed
            await self.uploader.settle_landing(node)
        if node.file.base is None:
            return False
        data = node.file.data
        if node.file.data_dirty and data is not None and data.fully_local(node.size):
            node.file.local_only()
            return False
        metadata = await self.writer.metadata_for_copy(node)
        etag = await self.writer.copy_object(node.file.base, new_key, metadata)
        node.file.copied_with_attributes(RemoteObject(new_key, etag, node.file.base.size))
        return True

    async def _rename_directory(self, node: Node, new_parent: Node, new_name: str,
                                target: Node | None) -> None:
        loaded = [n for n in walk(node) if n is not node]
        async with self.uploader.held(*loaded):
            await self._move_tree(node, new_parent, new_name, target, loaded)
            for descendant in loaded:
                await self.file_journal.checkpoint(descendant, durable=True)
        for descendant in loaded:
            self.uploader.after_change(descendant)

    async def _move_tree(self, node: Node, new_parent: Node, new_name: str,
                         target: Node | None, loaded: list[Node]) -> None:
        old_prefix = node.key(self.prefix)
        new_prefix = new_parent.key(self.prefix) + new_name + "/"
        objects = await self.dirs.list_tree(old_prefix)
        keep = {new_prefix} if target is not None else set()  # the target's own marker
        new_etags = await self._copy_tree(objects, old_prefix, new_prefix, keep)
        if old_prefix not in {obj.key for obj in objects}:
            await self.store.put(new_prefix, b"", node.object_metadata())
        await self.store.delete_many([obj.key for obj in objects])
        old_parent_key, old_name = node.parent.key(self.prefix), node.name
        self.dirs.move(node, new_parent, new_name, target)
        for descendant in loaded:
            self._rebase(descendant, old_prefix, new_prefix, new_etags)
        self.attr_index.moved(old_prefix)  # the index objects moved with the other keys
        await self.attr_index.forget(old_parent_key, old_name + "/")
        await self.attr_index.publish(node, DIRECTORY_ETAG)

    async def _copy_tree(self, objects, old_prefix: str, new_prefix: str,
                         keep: set[str]) -> dict[str, str]:
        """Server-side copies of every object; new key -> new etag.

        On failure every destination key except those in ``keep`` is deleted again, including
        copies whose answer never arrived because their task was cancelled.
        """
        new_etags: dict[str, str] = {}
        limiter = trio.CapacityLimiter(self.config.max_connections)

        async def copy_one(obj) -> None:
            new_key = new_prefix + obj.key[len(old_prefix):]
            source = RemoteObject(obj.key, obj.etag, obj.size)
            async with limiter:
                new_etags[new_key] = await self.writer.copy_object(source, new_key, None)

        try:
            with first_fs_error():
                async with trio.open_nursery() as nursery:
                    for obj in objects:
                        nursery.start_soon(copy_one, obj)
        except BaseException:
            destinations = {new_prefix + obj.key[len(old_prefix):] for obj in objects} - keep
            with trio.CancelScope(shield=True):
                try:
                    await self.store.delete_many(sorted(destinations))
                except StoreError as exc:
                    log.warning("could not remove copies after a failed rename: %s", exc)
            raise
        return new_etags

    def _rebase(self, node: Node, old_prefix: str, new_prefix: str, new_etags: dict) -> None:
        if node.file.base is None or not node.file.base.key.startswith(old_prefix):
            return
        new_key = new_prefix + node.file.base.key[len(old_prefix):]
        if new_key in new_etags:
            node.file.backed_by(RemoteObject(new_key, new_etags[new_key], node.file.base.size))
        else:  # it was not on S3 when listed; only local data is left
            node.file.local_only()


def _ancestors(node: Node):
    while node is not None:
        yield node
        node = node.parent
