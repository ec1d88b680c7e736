"""Directory listings and attribute loading: how the tree learns what is on S3.

A directory's children come from ListObjectsV2 pages (delimiter "/"); a listing stays trusted
for ``dir_ttl`` seconds. Merging a listing never undoes a local change made after the listing
started, and never drops a node that holds unsaved data or open handles.
"""

from __future__ import annotations

import contextlib
import logging
import stat
from collections.abc import Callable, Iterator

import trio

from s3pvefs.config.s3options import ARCHIVE_CLASSES
from s3pvefs.errors import FsError, FsKind, StoreError
from s3pvefs.names import (
    INDEX_PREFIX,
    KEPT_PREFIX,
    META_MTIME,
    Attributes,
    SkippedKeys,
    check_key_length,
    decode_attributes,
    listing_name,
)
from s3pvefs.state.attrindex import AttributeIndex
from s3pvefs.state.lifecycle import State
from s3pvefs.state.nodes import InodeTable, Node, next_change, now_ns
from s3pvefs.store.objectstore import RemoteObject
from s3pvefs.store.s3store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)


class Directories:
    def __init__(
        self,
        store: ObjectStore,
        inodes: InodeTable,
        prefix: str,
        dir_ttl: float,
        defaults: Callable[[int, int], Attributes],
        max_parallel: int,
        *,
        attr_index: AttributeIndex,
        left_behind: Callable[[str], bool],
        listed: trio.MemorySendChannel[Node],
    ):
        self.store = store
        self.inodes = inodes
        self.prefix = prefix
        self.dir_ttl = dir_ttl
        self.defaults = defaults  # (file type bits, mtime_ns) -> default attributes
        self.skipped = SkippedKeys()
        self.limiter = trio.CapacityLimiter(max_parallel)
        self._refreshing: set[Node] = set()
        self.attr_index = attr_index
        self.left_behind = left_behind  # keys a file left, still there until deleted: unlisted
        self.listed = listed  # every directory (re)listed; dropped while the reader lags

    # -- listings ---------------------------------------------------------------------------

    async def ensure_listed(self, directory: Node) -> None:
        """Make the directory's children known.

        A listing older than ``dir_ttl`` is still answered from at once while a fresh one is
        fetched in the background (so lookups never wait on S3 once a directory was listed,
        and keep working while S3 is unreachable); only a directory never listed waits.
        """
        if not directory.is_dir:
            raise FsError(FsKind.NOT_A_DIRECTORY)
        if directory.listing_fresh(trio.current_time(), self.dir_ttl):
            return
        if directory.listed_at is not None:
            self._refresh_in_background(directory)
            return
        await self._relist(directory)

    async def _relist(self, directory: Node) -> None:
        async with directory.listing_lock:
            if directory.listing_fresh(trio.current_time(), self.dir_ttl):
                return
            started = trio.current_time()
            start_seq = next_change()
            dir_key = directory.key(self.prefix)
            objects, prefixes = await self._list_directory(dir_key)
            self._merge(directory, objects, prefixes, start_seq)
            await self._apply_index(directory, dir_key, objects)
            directory.listed_at = started
            directory.forget_removals_before(start_seq)
        with contextlib.suppress(trio.WouldBlock):
            self.listed.send_nowait(directory)

    async def _apply_index(self, directory: Node, dir_key: str, objects) -> None:
        """Attributes of the listed entries from the directory's attribute indexes: defaults
        where no entry is, HEAD only where an entry is pending or for another version."""
        index_keys = [o.key for o in objects
                      if o.key.startswith(dir_key + INDEX_PREFIX) and "/" not in o.key[len(dir_key):]]
        entries = await self.attr_index.read(dir_key, index_keys) if index_keys else {}
        if not index_keys:
            self.attr_index.read_none(dir_key)
        for name, child in directory.children.items():
            if child.meta_loaded or child.busy or child.unlinked:
                continue
            if self.attr_index.apply(child, entries.get(name + ("/" if child.is_dir else ""))):
                child.meta_loaded = True

    def _refresh_in_background(self, directory: Node) -> None:
        if directory.listing_lock.locked() or directory in self._refreshing:
            return
        self._refreshing.add(directory)
        trio.lowlevel.spawn_system_task(self._relist_quietly, directory)

    async def _relist_quietly(self, directory: Node) -> None:
        try:
            await self._relist(directory)
        except Exception as exc:  # S3 away: keep serving the old listing, try again later
            log.warning("cannot refresh the listing of /%s: %s", directory.path(), exc)
            directory.listed_at = trio.current_time() - self.dir_ttl + min(self.dir_ttl, 5.0)
        finally:
            self._refreshing.discard(directory)

    def invalidate(self, directory: Node) -> None:
        directory.listed_at = None

    async def _list_directory(self, dir_key: str) -> tuple[list[ObjectInfo], list[str]]:
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        token = None
        while True:
            page = await self.store.list_page(dir_key, "/", token)
            objects.extend(page.objects)
            prefixes.extend(page.prefixes)
            token = page.next_token
            if not token:
                return objects, prefixes

    async def list_tree(self, dir_key: str) -> list[ObjectInfo]:
        """Every object below ``dir_key``, recursively (for directory renames)."""
        objects: list[ObjectInfo] = []
        token = None
        while True:
            page = await self.store.list_page(dir_key, None, token)
            objects.extend(page.objects)
            token = page.next_token
            if not token:
                return objects

    async def remote_leftovers(self, directory: Node) -> list[str] | None:
        """Ask S3 directly what lies below a directory: None if anything but its marker and
        attribute indexes, else those keys (what rmdir deletes)."""
        dir_key = directory.key(self.prefix)
        page = await self.store.list_page(dir_key, None, None, max_keys=20)
        keys = [obj.key for obj in page.objects]
        own = [k for k in keys if k == dir_key or k.startswith(dir_key + INDEX_PREFIX)]
        if len(own) != len(keys) or page.next_token:
            return None
        return own or [dir_key]

    def _merge(self, directory: Node, objects, prefixes, start_seq: int) -> None:
        dir_key = directory.key(self.prefix)
        seen = self._entries(dir_key, objects, prefixes)
        for name, entry in seen.items():
            if directory.removed.get(name, 0) > start_seq:
                continue  # deleted here while the listing was in flight
            child = directory.children.get(name)
            if child is None:
                directory.children[name] = self._node_from_listing(directory, name, entry)
            elif not (child.busy or child.changed_seq > start_seq):
                self._refresh(directory, child, name, entry)
        for name, child in list(directory.children.items()):
            if name in seen or child.changed_seq > start_seq or self._holds_local_state(child):
                continue
            self.detach(directory, name, child)

    def _entries(self, dir_key: str, objects, prefixes) -> dict[str, ObjectInfo | str]:
        """Child name -> ObjectInfo (file) or common prefix (directory)."""
        seen: dict[str, ObjectInfo | str] = {}
        for obj in objects:
            if obj.key == dir_key:
                continue  # this directory's own marker
            name = listing_name(dir_key, obj.key)
            if name is None or obj.key.endswith("/"):
                self.skipped.warn(obj.key, "its name cannot be shown in a directory tree")
                continue
            if name.startswith((INDEX_PREFIX, KEPT_PREFIX)):
                continue  # an attribute index, or a deleted file's data: not a file
            if self.left_behind(obj.key):
                continue  # left by a file of ours that moved away: deleted soon, not a file
            seen[name] = obj
        for common_prefix in prefixes:
            name = listing_name(dir_key, common_prefix)
            if name is None:
                self.skipped.warn(common_prefix, "empty, '.', '..' or over-long path component")
                continue
            if name in seen:
                self.skipped.warn(
                    dir_key + name, "the key is also a directory prefix; showing the directory"
                )
            seen[name] = common_prefix
        return seen

    def _node_from_listing(self, directory: Node, name: str, entry: ObjectInfo | str) -> Node:
        if isinstance(entry, str):
            node = self.inodes.new(directory, name, self.defaults(stat.S_IFDIR, directory.mtime_ns))
            return node
        node = self.inodes.new(directory, name, self.defaults(stat.S_IFREG, entry.mtime_ns))
        self._set_remote(node, entry)
        return node

    def _refresh(self, directory: Node, child: Node, name: str, entry: ObjectInfo | str) -> None:
        is_dir_entry = isinstance(entry, str)
        if is_dir_entry != child.is_dir:
            self.detach(directory, name, child)
            directory.children[name] = self._node_from_listing(directory, name, entry)
        elif not is_dir_entry and (child.file.base is None or child.file.base.etag != entry.etag):
            log.debug("%s changed on S3; dropping cached data", entry.key)
            self._set_remote(child, entry)
            child.meta_loaded = False

    def _set_remote(self, node: Node, info: ObjectInfo) -> None:
        """Point a clean node at a (new) remote object, dropping cached data of the old one."""
        node.file.remote_changed(RemoteObject(info.key, info.etag, info.size,
                                              archived=info.storage_class in ARCHIVE_CLASSES))
        node.size = info.size
        node.mtime_ns = node.ctime_ns = info.mtime_ns

    def _holds_local_state(self, node: Node) -> bool:
        return any(n.busy for n in walk(node))

    # -- changes of the tree ----------------------------------------------------------------

    async def check_free(self, parent: Node, name: str, is_dir: bool = False) -> None:
        """EEXIST if ``name`` is taken in ``parent`` (as listed); the key must fit S3."""
        await self.ensure_listed(parent)
        if name in parent.children:
            raise FsError(FsKind.EXISTS)
        check_key_length(parent.key(self.prefix) + name + ("/" if is_dir else ""))

    async def check_empty(self, directory: Node) -> list[str]:
        """ENOTEMPTY unless the directory is empty here and on S3 (a listing may be up to
        dir_ttl old); returns its marker and attribute-index keys."""
        await self.ensure_listed(directory)
        if any(not child.unlinked for child in directory.children.values()):
            raise FsError(FsKind.NOT_EMPTY)
        leftovers = await self.remote_leftovers(directory)
        if leftovers is None:
            self.invalidate(directory)
            raise FsError(FsKind.NOT_EMPTY)
        return leftovers

    @staticmethod
    def insert(parent: Node, name: str, node: Node) -> None:
        parent.children[name] = node
        parent.mtime_ns = parent.ctime_ns = now_ns()
        parent.touch()
        node.touch()

    def remove(self, parent: Node, name: str, node: Node) -> None:
        parent.remember_removal(name)
        parent.mtime_ns = parent.ctime_ns = now_ns()
        self.detach(parent, name, node)

    def move(self, node: Node, new_parent: Node, new_name: str, target: Node | None) -> None:
        """``node`` is at ``new_name`` in ``new_parent`` now, in place of ``target``."""
        old_parent, old_name = node.parent, node.name
        if target is not None:
            self.remove(new_parent, new_name, target)
        old_parent.children.pop(old_name, None)
        old_parent.remember_removal(old_name)
        node.parent, node.name = new_parent, new_name
        self.insert(new_parent, new_name, node)

    def detach(self, directory: Node, name: str, child: Node) -> None:
        """Take a node out of the tree; it lives on while the kernel or a handle holds it."""
        if directory.children.get(name) is child:
            del directory.children[name]
        for node in walk(child):
            node.unlinked = True
            if node.open_count == 0:
                node.file.discard_data()
            if node.lookups <= 0:
                self.inodes.drop(node)

    def forget_listed(self, node: Node) -> bool:
        """The kernel forgot a file that is only on S3 (nothing cached, nothing pending, not
        open): drop it, so that a bucket of millions of objects does not keep a node for each
        one it ever listed. Its directory is listed again when next needed (the entry must
        not vanish from a listing still trusted). False when the node holds anything more."""
        parent = node.parent
        if (parent is None or node.is_dir or node.open_count or node.busy or node.unlinked
                or node.state is not State.REMOTE or parent.children.get(node.name) is not node):
            return False
        del parent.children[node.name]
        parent.listed_at = None
        self.inodes.drop(node)
        return True

    # -- attributes -------------------------------------------------------------------------

    async def load_attributes(self, node: Node) -> None:
        """Replace listing defaults by the attributes kept in the object's metadata."""
        if node.meta_loaded or node.parent is None:
            return
        async with self.limiter:
            if node.is_dir:
                await self._load_directory_attributes(node)
            elif node.file.base is not None:
                await self._load_file_attributes(node)
        node.meta_loaded = True

    async def _load_directory_attributes(self, node: Node) -> None:
        try:
            info = await self.store.head(node.key(self.prefix))
        except StoreError as exc:
            if not exc.not_found:
                raise
            return  # a directory made only of key prefixes: defaults
        self._apply(node, info, stat.S_IFDIR)

    async def _load_file_attributes(self, node: Node) -> None:
        info = await self.store.head(node.file.base.key)
        if info.etag != node.file.base.etag:
            self._set_remote(node, info)
        self._apply(node, info, stat.S_IFREG)

    def _apply(self, node: Node, info: ObjectInfo, kind: int) -> None:
        attrs = decode_attributes(info.metadata, self.defaults(kind, info.mtime_ns))
        if stat.S_ISDIR(attrs.mode) != (kind == stat.S_IFDIR):
            attrs = self.defaults(kind, attrs.mtime_ns)  # metadata that contradicts the key
        node.mode, node.uid, node.gid = attrs.mode, attrs.uid, attrs.gid
        node.mtime_ns = node.ctime_ns = attrs.mtime_ns
        node.mtime_explicit = META_MTIME in (info.metadata or {})

    async def load_many(self, nodes: list[Node]) -> None:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                if not node.meta_loaded:
                    nursery.start_soon(self._load_quietly, node)

    async def _load_quietly(self, node: Node) -> None:
        try:
            await self.load_attributes(node)
        except Exception as exc:  # one bad object must not fail the whole listing
            log.warning("cannot read attributes of %s: %s", node.path(), exc)


def walk(node: Node) -> Iterator[Node]:
    """The node and every loaded descendant."""
    yield node
    for child in list(node.children.values()):
        yield from walk(child)
