"""Inodes: the in-memory tree of what the mount shows, and its directory-listing cache."""

from __future__ import annotations

import itertools
import stat
import time

import trio

from s3pvefs.errors import FsError, FsKind
from s3pvefs.names import Attributes, encode_attributes
from s3pvefs.state.lifecycle import FileState, State

ROOT_INODE = 1

# Every local change gets a number from this sequence, so that a listing that started before
# the change can tell that it must not undo it.
_change_sequence = itertools.count(1)


def next_change() -> int:
    return next(_change_sequence)


def now_ns() -> int:
    return time.time_ns()


class Node:
    """One inode. Directories hold their children; files their lifecycle (``file``)."""

    # Slots, and locks made on first use: a listed entry costs about 0.9 KiB, not 3.
    __slots__ = (
        "ino", "parent", "name", "mode", "uid", "gid", "mtime_ns", "ctime_ns", "atime_ns", "size",
        "lookups", "changed_seq", "unlinked", "meta_loaded", "mtime_explicit", "children",
        "listed_at", "_listing_lock", "removed", "file", "open_count", "write_handles",
        "symlink_target", "kernel_version",
    )

    def __init__(self, ino: int, parent: Node | None, name: str, attrs: Attributes):
        self.ino = ino
        self.parent = parent
        self.name = name
        self.mode = attrs.mode
        self.uid = attrs.uid
        self.gid = attrs.gid
        self.mtime_ns = attrs.mtime_ns
        self.ctime_ns = attrs.mtime_ns
        # Set by utimensat only, and kept in memory only (not on S3): None shows the mtime.
        self.atime_ns: int | None = None
        self.size = 0
        self.lookups = 0  # the kernel's references (lookup, create, readdirplus minus forget)
        self.changed_seq = next_change()
        self.unlinked = False
        # Attributes known (metadata, attribute index or our own write), not listing defaults.
        self.meta_loaded = False
        self.mtime_explicit = False  # set by utime: kept in metadata; else LastModified is it
        # -- directories --
        self.children: dict[str, Node] = {}
        self.listed_at: float | None = None  # trio.current_time() of the listing's start
        self._listing_lock: trio.Lock | None = None  # locks made when first needed
        self.removed: dict[str, int] = {}  # names removed locally -> change number
        # -- files and symlinks (a rename holds directories through theirs too) --
        self.file = FileState()  # written by its transitions only (lifecycle.py)
        self.open_count = 0
        self.write_handles = 0
        self.symlink_target: str | None = None
        self.kernel_version = -1  # file.data_version the kernel's page cache was filled from

    @property
    def listing_lock(self) -> trio.Lock:
        if self._listing_lock is None:
            self._listing_lock = trio.Lock()
        return self._listing_lock

    # -- kind -------------------------------------------------------------------------------

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    # -- naming -----------------------------------------------------------------------------

    def path(self) -> str:
        parts = []
        node = self
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))

    def key(self, prefix: str) -> str:
        """The object key of a file, or the marker key (ending in "/") of a directory."""
        path = self.path()
        if self.is_dir:
            return prefix + path + "/" if path else prefix
        return prefix + path

    @property
    def nlink(self) -> int:
        """0 once unlinked (fstat of an open, deleted file); a directory counts "." and its
        subdirectories' ".." (those this mount has listed), like a local filesystem."""
        if self.unlinked:
            return 0
        if not self.is_dir:
            return 1
        return 2 + sum(1 for child in self.children.values() if child.is_dir)

    def attributes(self) -> Attributes:
        return Attributes(self.mode, self.uid, self.gid, self.mtime_ns)

    def object_metadata(self) -> dict[str, str]:
        """x-amz-meta-* of its object: mode, uid, gid, and the mtime once it was set (utime);
        otherwise S3's LastModified stands for it."""
        metadata = encode_attributes(self.attributes())
        if not self.mtime_explicit:
            metadata.pop("mtime")
        return metadata

    # -- state ------------------------------------------------------------------------------

    def touch(self) -> None:
        self.changed_seq = next_change()

    def data_changed(self) -> None:
        """Creation or truncation: the object must be uploaded again."""
        self.file.data_changed()
        self.touch()

    def attributes_changed(self) -> None:
        self.file.attributes_changed()
        self.touch()

    @property
    def needs_upload(self) -> bool:
        if self.unlinked or self.is_dir:
            return False
        return self.file.changed

    @property
    def busy(self) -> bool:
        """Local state a listing must not override."""
        return (self.open_count > 0 or self.needs_upload or self.file.syncing
                or self.file.stream is not None)

    @property
    def state(self) -> State:
        return self.file.state(writing=self.write_handles > 0, unlinked=self.unlinked)

    def listing_fresh(self, now: float, ttl: float) -> bool:
        return self.listed_at is not None and now - self.listed_at < ttl

    def remember_removal(self, name: str) -> None:
        self.removed[name] = next_change()
        self.touch()

    def forget_removals_before(self, seq: int) -> None:
        self.removed = {name: s for name, s in self.removed.items() if s > seq}


class InodeTable:
    """Inode number -> node. Numbers are never reused while the mount is up."""

    def __init__(self, root: Attributes) -> None:
        self._nodes: dict[int, Node] = {}
        self._numbers = itertools.count(ROOT_INODE + 1)
        self.root = self.new(None, "", root)
        self.root.meta_loaded = True

    def new(self, parent: Node | None, name: str, attrs: Attributes) -> Node:
        ino = ROOT_INODE if parent is None else next(self._numbers)
        node = Node(ino, parent, name, attrs)
        self._nodes[ino] = node
        return node

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def drop(self, node: Node) -> None:
        self._nodes.pop(node.ino, None)

    def at_path(self, path: str) -> Node | None:
        """The node at ``path`` (from the root) if this mount has seen it."""
        node = self.root
        for part in filter(None, path.split("/")):
            node = node.children.get(part)
            if node is None:
                return None
        return node

    def needing_upload(self) -> list[Node]:
        return [node for node in self if node.needs_upload]

    def __iter__(self):
        return iter(list(self._nodes.values()))

    def __len__(self) -> int:
        return len(self._nodes)


def still_at(node: Node, parent: Node, name: str) -> None:
    """After waiting for a node's lock: it must still be where the operation found it (the
    kernel serialises operations on one directory; this guards every other caller)."""
    if node.unlinked or node.parent is not parent or node.name != name:
        raise FsError(FsKind.NOT_FOUND, f"{name} moved or vanished meanwhile")
