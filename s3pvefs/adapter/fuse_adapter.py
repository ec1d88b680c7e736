"""Thin pyfuse3 adapter: converts kernel requests to core calls and answers every one.

A handler that raised anything but pyfuse3.FUSEError would leave the calling process (vzdump,
QEMU) hanging forever, so every operation goes through ``_answer``, which answers the errno
``errno_map.answer`` chooses for the failure (typed errors in context, anything unexpected EIO
with its traceback in the log).
"""

from __future__ import annotations

import errno
import functools
import logging
import os

import pyfuse3
import trio
from cachetools import TTLCache

from s3pvefs.adapter.errno_map import answer, errno_for
from s3pvefs.errors import FsError, FsKind, StoreError
from s3pvefs.fs.core import FsCore
from s3pvefs.names import name_from_kernel
from s3pvefs.state.nodes import Node

log = logging.getLogger(__name__)


def _answer(method):
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # trio.Cancelled is a BaseException: it passes
            raise pyfuse3.FUSEError(answer(exc, method.__name__)) from None

    return wrapper


class KernelCaches:
    """What the kernel may remember beyond its lookups, for `s3pvefs refresh` to drop
    (liveadmin.KernelCache): names answered "does not exist", and the attributes of files."""

    def __init__(self, negative_ttl: float):
        self._negative = TTLCache(maxsize=65536, ttl=max(negative_ttl, 0.001))

    def remember_missing(self, parent_inode: int, name: bytes) -> None:
        self._negative[(parent_inode, name)] = True

    async def forget(self, directories: set[int], files: set[int]) -> None:
        """Make the kernel forget the missing names it remembers in these directories and the
        attributes of these files, before `s3pvefs refresh` returns (from a worker thread:
        the kernel may have to wait for requests this loop answers meanwhile)."""
        entries = [key for key in list(self._negative.keys()) if key[0] in directories]
        for key in entries:
            self._negative.pop(key, None)
        if entries or files:
            await trio.to_thread.run_sync(_invalidate, entries, sorted(files))


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, core: FsCore, kernel: KernelCaches):
        super().__init__()
        self.core = core
        self.kernel = kernel  # shared with the admin, whose refresh makes it forget
        self.attr_timeout = core.config.attr_ttl
        self.negative_timeout = core.config.negative_ttl
        self._dir_snapshots: dict[int, list[tuple[str, Node]]] = {}
        self._next_dir_handle = 1

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.ino
        entry.generation = 0
        entry.entry_timeout = self.attr_timeout
        entry.attr_timeout = self.attr_timeout
        entry.st_mode = node.mode
        entry.st_nlink = node.nlink
        entry.st_uid = node.uid
        entry.st_gid = node.gid
        entry.st_rdev = 0
        entry.st_size = node.size
        entry.st_blksize = 128 * 1024
        entry.st_blocks = -(-node.size // 512)
        entry.st_atime_ns = node.mtime_ns if node.atime_ns is None else node.atime_ns
        entry.st_mtime_ns = node.mtime_ns
        entry.st_ctime_ns = node.ctime_ns
        return entry

    # -- names and attributes ---------------------------------------------------------------

    @_answer
    async def lookup(self, parent_inode, name, ctx=None):
        try:
            node = await self.core.lookup(
                parent_inode, os.fsdecode(name) if name in (b".", b"..") else name_from_kernel(name))
        except (FsError, StoreError) as exc:
            if errno_for(exc, "lookup") != errno.ENOENT or self.negative_timeout <= 0:
                raise
            return self._negative_entry(parent_inode, name)
        return self._entry(node)

    def _negative_entry(self, parent_inode: int, name: bytes) -> pyfuse3.EntryAttributes:
        """"No such name", which the kernel may remember for ``negative_ttl``: Proxmox probes
        a .notes and a .protected name per backup, mostly absent, every time it lists."""
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = 0
        entry.entry_timeout = self.negative_timeout
        self.kernel.remember_missing(parent_inode, name)
        return entry

    @_answer
    async def getattr(self, inode, ctx=None):
        return self._entry(await self.core.getattr(inode))

    @_answer
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = await self.core.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
        )
        return self._entry(node)

    @_answer
    async def readlink(self, inode, ctx):
        return os.fsencode(await self.core.readlink(inode))

    async def forget(self, inode_list):
        for inode, count in inode_list:
            try:
                self.core.forget(inode, count)
            except Exception:
                log.exception("forget of inode %d failed", inode)

    @_answer
    async def statfs(self, ctx):
        info = self.core.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = info.block_size
        data.f_blocks = info.blocks
        data.f_bfree = data.f_bavail = info.blocks_free
        data.f_files = info.files
        data.f_ffree = data.f_favail = info.files_free
        data.f_namemax = info.name_max
        return data

    # -- directories ------------------------------------------------------------------------

    @_answer
    async def opendir(self, inode, ctx):
        snapshot = await self.core.readdir(inode)
        handle = self._next_dir_handle
        self._next_dir_handle += 1
        self._dir_snapshots[handle] = snapshot
        return handle

    @_answer
    async def readdir(self, fh, start_id, token):
        entries = self._dir_snapshots.get(fh, [])
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(node), index + 1):
                return
            self.core.remember(node)

    async def releasedir(self, fh):
        self._dir_snapshots.pop(fh, None)

    @_answer
    async def mkdir(self, parent_inode, name, mode, ctx):
        node = await self.core.mkdir(parent_inode, name_from_kernel(name), mode & ~ctx.umask,
                                     ctx.uid, ctx.gid)
        return self._entry(node)

    @_answer
    async def rmdir(self, parent_inode, name, ctx):
        await self.core.rmdir(parent_inode, name_from_kernel(name))

    @_answer
    async def unlink(self, parent_inode, name, ctx):
        await self.core.unlink(parent_inode, name_from_kernel(name))

    @_answer
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FsError(FsKind.INVALID_ARGUMENT, "RENAME_EXCHANGE is not supported")
        await self.core.rename(parent_inode_old, name_from_kernel(name_old), parent_inode_new,
                               name_from_kernel(name_new),
                               noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))

    @_answer
    async def symlink(self, parent_inode, name, target, ctx):
        node = await self.core.symlink(parent_inode, name_from_kernel(name),
                                       os.fsdecode(target), ctx.uid, ctx.gid)
        return self._entry(node)

    @_answer
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise FsError(FsKind.NOT_PERMITTED, "hard links are not supported")

    @_answer
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise FsError(FsKind.NOT_PERMITTED,
                      "only regular files, directories and symlinks are supported")

    # -- files ------------------------------------------------------------------------------

    @_answer
    async def create(self, parent_inode, name, mode, flags, ctx):
        fh, node = await self.core.create(parent_inode, name_from_kernel(name),
                                          mode & ~ctx.umask, flags, ctx.uid, ctx.gid)
        return pyfuse3.FileInfo(fh=fh), self._entry(node)

    @_answer
    async def open(self, inode, flags, ctx):
        fh, keep_cache = await self.core.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    @_answer
    async def read(self, fh, off, size):
        return await self.core.read(fh, off, size)

    @_answer
    async def write(self, fh, off, buf):
        return await self.core.write(fh, off, buf)

    @_answer
    async def flush(self, fh):
        await self.core.flush(fh)

    @_answer
    async def release(self, fh):
        await self.core.release(fh)

    @_answer
    async def fsync(self, fh, datasync):
        await self.core.fsync(fh)

    @_answer
    async def fsyncdir(self, fh, datasync):
        return None  # directory changes are made on S3 synchronously

    # -- extended attributes: none are stored -------------------------------------------------

    @_answer
    async def getxattr(self, inode, name, ctx):
        raise FsError(FsKind.NO_ATTRIBUTE)

    @_answer
    async def listxattr(self, inode, ctx):
        return []

    @_answer
    async def setxattr(self, inode, name, value, ctx):
        raise FsError(FsKind.NOT_SUPPORTED, "extended attributes are not supported")

    @_answer
    async def removexattr(self, inode, name, ctx):
        raise FsError(FsKind.NO_ATTRIBUTE)


def _invalidate(entries: list[tuple[int, bytes]], inodes: list[int]) -> None:
    calls = [(pyfuse3.invalidate_entry, parent, name) for parent, name in entries]
    calls += [(pyfuse3.invalidate_inode, inode, True) for inode in inodes]  # attributes only
    for invalidate, *args in calls:
        try:
            invalidate(*args)
        except OSError as exc:  # ENOENT: the kernel had already dropped it
            if exc.errno != errno.ENOENT:
                log.warning("cannot invalidate the kernel's cache of %r: %s", args, exc)
