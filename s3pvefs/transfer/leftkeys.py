"""Keys a file left where an object of ours may still be: after a rename, a stream completed
at a name the file did not keep, a restart that found the journal's record of one.

Each is deleted once (``delete``), unless another file has that key by then; until then
listings do not show it as a file (a node made of it would own the key and keep it from being
deleted). A key is forgotten only after its DELETE succeeded, or when another file took it.
"""

from __future__ import annotations

import collections
import logging

import trio

from s3pvefs.errors import StoreError
from s3pvefs.state.nodes import InodeTable, Node
from s3pvefs.store.objectstore import ObjectStore

log = logging.getLogger(__name__)


class LeftKeys:
    def __init__(self, store: ObjectStore, inodes: InodeTable, prefix: str):
        self.store = store
        self.inodes = inodes  # which file is at a key
        self.prefix = prefix
        self._left: collections.Counter[str] = collections.Counter()  # key -> files that left it

    def leave(self, node: Node, key: str) -> None:
        """An object of ``node`` may be at ``key``, which it no longer has."""
        if node.file.left_key(key):
            self._left[key] += 1

    def hand_over(self, giver: Node, taker: Node) -> None:
        """``taker`` replaces ``giver`` (a rename over it): the keys it left are taker's to
        delete now."""
        for key in sorted(giver.file.stale_keys):
            self.leave(taker, key)
            self._forget(giver, key)

    def left_behind(self, key: str) -> bool:
        """Whether a file of this mount left an object at ``key`` that is not deleted yet."""
        return key in self._left

    def owner(self, key: str) -> Node | None:
        """The file this mount has at an object key, if any."""
        if not key.startswith(self.prefix) or key.endswith("/"):
            return None
        node = self.inodes.at_path(key[len(self.prefix):])
        return None if node is None or node.unlinked else node

    async def delete(self, node: Node) -> None:
        """Remove the objects ``node`` left, unless another file is there now; raises the
        StoreError of a DELETE that failed (its key stays, to be tried again)."""
        for key in sorted(node.file.stale_keys):
            await self._delete_one(node, key)

    async def _delete_one(self, node: Node, key: str) -> None:
        base = node.file.base
        if base is not None and base.key == key and not node.unlinked:
            return  # its evicted blocks are read from there until its upload or rename
        owner = self.owner(key)
        if owner is not None and not owner.is_dir:
            # That file's upload replaces the object; should it go first, it deletes it.
            owner.file.remote_possible()
            self._forget(node, key)
            return
        try:
            with trio.CancelScope(shield=True):  # a DELETE landing late could hit a new object
                await self.store.delete(key)
        except StoreError as exc:
            log.warning("could not delete %s (left by %s): %s", key, node.path(), exc)
            raise
        self._forget(node, key)  # only now: a failed DELETE is tried again

    def _forget(self, node: Node, key: str) -> None:
        if node.file.forget_left_key(key):
            self._left[key] -= 1
            if self._left[key] <= 0:
                del self._left[key]
