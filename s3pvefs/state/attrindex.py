"""Attribute index: modes and owners without a HEAD request per file.

A listing gives each object's size, ETag and LastModified, not its metadata. Most files on a
Proxmox storage have the default attributes (root, 0644, mtime = LastModified), so a directory
gets an index object only when some entry differs: ``<dir key>.s3pvefs-attrs.<host>``, JSON
``{name: {"etag", "modified_s", "mode", "uid", "gid", "mtime_ns", "crc64nvme"}}`` (directories as
``name/``). Each host writes only its own index object, so hosts sharing a bucket never
overwrite each other's.

``crc64nvme`` is the content checksum of a file uploaded in parts (known only once every part
went), for ``s3pvefs verify``; an entry may hold only that (and its ETag), the attributes
then being the defaults.

An entry holds for the object version whose ETag it names. Before an object with non-default
attributes is uploaded, its entry is written with ETag ``*`` (pending); a reader that meets a
pending entry, or an entry for another version, reads the object's own metadata with a HEAD.
So a crash or a lost update only costs a HEAD, never a wrong mode. The object metadata
(``x-amz-meta-*``) stays authoritative; the index is a cache of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import stat

import trio
from cachetools import LRUCache

from s3pvefs.checksums import INDEX_FIELD
from s3pvefs.errors import StoreError
from s3pvefs.names import INDEX_PREFIX, Attributes
from s3pvefs.state.lifecycle import ContentChecksum
from s3pvefs.state.nodes import Node

log = logging.getLogger(__name__)

PENDING = "*"
DIRECTORY_ETAG = "dir"  # directories are matched by name


def host_id(cache_dir) -> str:
    """This mount's name in index object keys: the host, and which cache directory (two mounts
    of one bucket on one host keep separate indexes)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    return f"{host}-{hashlib.sha256(str(cache_dir).encode()).hexdigest()[:8]}"


def is_index_name(name: str) -> bool:
    return name.startswith(INDEX_PREFIX)


class AttributeIndex:
    def __init__(self, store, prefix: str, host: str, defaults):
        self.store = store
        self.prefix = prefix
        self.host = host
        self.defaults = defaults  # (file type bits, mtime_ns) -> default Attributes
        # dir key -> this mount's entries, for the directories it touched lately (bounded; one
        # that falls out is read again from its index object before the next change)
        self._own: LRUCache[str, dict[str, dict]] = LRUCache(maxsize=4096)
        self._locks: dict[str, trio.Lock] = {}

    def own_key(self, dir_key: str) -> str:
        return f"{dir_key}{INDEX_PREFIX}{self.host}"

    # -- reading ------------------------------------------------------------------------------

    async def read(self, dir_key: str, index_keys: list[str]) -> dict[str, list[dict]]:
        """Every host's entries of a directory (its listing named the index objects)."""
        merged: dict[str, list[dict]] = {}
        found: dict[str, dict] = {}

        async def fetch(key: str) -> None:
            try:
                found[key] = json.loads(await self.store.get(key))
            except (StoreError, ValueError) as exc:
                log.warning("attribute index %s unreadable (%s); HEADs instead", key, exc)

        async with trio.open_nursery() as nursery:
            for key in index_keys:
                nursery.start_soon(fetch, key)
        # Only this mount writes its own index: what it holds in memory is newer than any
        # listing (one that began before our last write would undo it).
        self._own.setdefault(dir_key, found.get(self.own_key(dir_key)) or {})
        for entries in found.values():
            if isinstance(entries, dict):
                for name, entry in entries.items():
                    if isinstance(entry, dict):
                        merged.setdefault(name, []).append(entry)
        return merged

    def read_none(self, dir_key: str) -> None:
        """The directory's listing showed no index object of this host."""
        self._own.setdefault(dir_key, {})

    def apply(self, node: Node, entries: list[dict] | None) -> bool:
        """Give a listed node its attributes from the index; False when a HEAD must decide."""
        etag = DIRECTORY_ETAG if node.is_dir else (node.file.base.etag if node.file.base else None)
        listed_second = node.mtime_ns // 1_000_000_000  # LastModified, from the listing
        # A copy onto itself (a metadata change) keeps the ETag of a single-part object but
        # not its LastModified; entries of two hosts that still both match (within one
        # second) and disagree leave the answer to the object's own metadata.
        matching = [entry for entry in entries or []
                    if entry.get("etag") == etag
                    and entry.get("modified_s") in (None, listed_second)]
        if len({json.dumps(e, sort_keys=True) for e in matching}) > 1:
            return False
        if not matching:
            return not entries  # no entry: the defaults are right; a stale one: ask the object
        try:
            attrs = _attributes(matching[0], node)
        except (KeyError, TypeError, ValueError):
            return False
        node.mode, node.uid, node.gid = attrs.mode, attrs.uid, attrs.gid
        node.mtime_ns = node.ctime_ns = attrs.mtime_ns
        node.mtime_explicit = matching[0].get("mtime_ns") is not None
        if node.is_file and isinstance(matching[0].get(INDEX_FIELD), str):
            node.file.checksum_learned(ContentChecksum(matching[0][INDEX_FIELD], in_metadata=False))
        return True

    # -- writing ------------------------------------------------------------------------------

    def entry_for(self, node: Node) -> dict | None:
        """The index entry a node needs: its attributes unless they are the defaults, and the
        checksum of its object where the object's metadata cannot carry it; None for
        neither."""
        entry = self.attributes_entry(node) or {}
        checksum = node.file.checksum if node.is_file else None
        if checksum is not None and not checksum.in_metadata:
            entry[INDEX_FIELD] = checksum.value
        return entry or None

    def attributes_entry(self, node: Node) -> dict | None:
        """The attributes part of a node's entry, or None when they are the defaults."""
        kind = stat.S_IFMT(node.mode)
        default = self.defaults(kind, node.mtime_ns)
        if kind != stat.S_IFLNK and (node.mode, node.uid, node.gid) == (
                default.mode, default.uid, default.gid) and not node.mtime_explicit:
            return None
        return {"mode": node.mode, "uid": node.uid, "gid": node.gid,
                "mtime_ns": node.mtime_ns if node.mtime_explicit else None}

    async def publish(self, node: Node, etag: str, modified_s: int | None = None) -> None:
        """Record a node's attributes for the object version ``etag`` (or PENDING) last
        modified at ``modified_s`` (seconds, when known)."""
        if node.parent is None:
            return
        entry = self.entry_for(node)
        dir_key = node.parent.key(self.prefix)
        name = node.name + ("/" if node.is_dir else "")
        if entry is None and name not in self._own.get(dir_key, {}):
            return  # defaults, and nothing to take back (an unknown index: a stale entry
            # only costs a HEAD later, it can never give a wrong answer)
        async with self._lock(dir_key):
            own = await self._load_own(dir_key)
            if entry is None:
                if own.pop(name, None) is None:
                    return
            else:
                entry = {"etag": DIRECTORY_ETAG if node.is_dir else etag,
                         "modified_s": modified_s, **entry}
                if own.get(name) == entry:
                    return  # already says so
                own[name] = entry
            await self._write(dir_key, own)

    def moved(self, old_prefix: str) -> None:
        """A directory was renamed: its index objects moved with its keys."""
        for dir_key in [k for k in self._own if k.startswith(old_prefix)]:
            del self._own[dir_key]

    async def publish_uploaded(self, node: Node, key: str, etag: str) -> None:
        """After an upload or copy: entries of non-default files name the version exactly
        (one HEAD for its LastModified, only for such files)."""
        if node.parent is None or (self.entry_for(node) is None
                                   and node.name not in self._own.get(node.parent.key(self.prefix), {})):
            return
        modified = None
        if self.attributes_entry(node) is not None:
            try:
                modified = (await self.store.head(key)).mtime_ns // 1_000_000_000
            except StoreError as exc:
                log.info("no LastModified for %s (%s): its entry stays pending", key, exc)
                return
        await self.publish(node, etag, modified)

    async def forget(self, dir_key: str, name: str) -> None:
        """An entry left (deleted or renamed away)."""
        if name not in self._own.get(dir_key, {}):
            return
        async with self._lock(dir_key):
            own = self._own[dir_key]
            if own.pop(name, None) is not None:
                await self._write(dir_key, own)

    def _lock(self, dir_key: str) -> trio.Lock:
        return self._locks.setdefault(dir_key, trio.Lock())

    async def _load_own(self, dir_key: str) -> dict:
        if dir_key not in self._own:
            try:
                self._own[dir_key] = json.loads(await self.store.get(self.own_key(dir_key)))
            except StoreError as exc:
                if not exc.not_found:
                    raise
                self._own[dir_key] = {}
            except ValueError:
                self._own[dir_key] = {}
        return self._own[dir_key]

    async def _write(self, dir_key: str, own: dict) -> None:
        key = self.own_key(dir_key)
        if own:
            await self.store.put(key, json.dumps(own, sort_keys=True).encode(), {})
        else:
            await self.store.delete(key)


def _attributes(entry: dict, node: Node) -> Attributes:
    if "mode" not in entry:  # a checksum only: the defaults the listing gave stand
        return Attributes(node.mode, node.uid, node.gid, node.mtime_ns)
    mode, uid, gid = int(entry["mode"]), int(entry["uid"]), int(entry["gid"])
    if stat.S_IFMT(mode) != stat.S_IFMT(node.mode) and not (
            stat.S_ISLNK(mode) and node.is_file):
        raise ValueError("entry of another file type")
    mtime = entry.get("mtime_ns")
    return Attributes(mode, uid, gid, int(mtime) if mtime is not None else node.mtime_ns)
