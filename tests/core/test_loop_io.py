"""No blocking disk call on the trio loop.

Every FUSE request, upload and readahead of a mount shares one trio thread: a disk call made
there stalls all of them (the unlink of a multi-GiB sparse cache file takes seconds). Disk I/O
belongs in worker threads (``BlockCache.run_io``). These tests watch the os/io functions that
touch the disk and fail when s3pvefs code calls one from the loop thread while a mount's
operations run. Setting up a core (before the watch starts) may touch the disk directly.
"""

from __future__ import annotations

import builtins
import fcntl
import genericpath
import glob
import io
import os
import pathlib
import posixpath
import shutil
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from corekit import (
    BLOCK,
    PART,
    PREFIX,
    TIMEOUT,
    drain,
    inode,
    payload,
    read_file,
    settled,
    write_file,
)

import s3pvefs
from s3pvefs.fs.assembly import recover_journal
from s3pvefs.service.control import serve_control
from s3pvefs.state import cachefile

PACKAGE = Path(s3pvefs.__file__).parent
PACKAGE_PREFIX = f"{PACKAGE}{os.sep}"
WATCHED = [
    (os, ("open", "close", "unlink", "remove", "rename", "replace", "fsync", "fdatasync",
          "ftruncate", "truncate", "pread", "pwrite", "stat", "lstat", "listdir", "scandir",
          "mkdir", "rmdir", "chmod")),
    (builtins, ("open",)),
    (io, ("open",)),
    (fcntl, ("flock",)),
    (cachefile, ("punch_hole",)),
]
# Modules that only pass a call on (Path.exists calls os.stat): the caller that counts is the
# first frame outside them. Other standard modules (logging formatting a traceback reads
# source files) are not s3pvefs's doing.
PASS_THROUGH = {module.__file__ for module in (os, pathlib, posixpath, genericpath, shutil, glob)}
PASS_THROUGH |= {f"<frozen {module.__name__}>" for module in (os, posixpath, genericpath)}


def _on_the_loop() -> bool:
    try:
        trio.lowlevel.current_task()  # worker threads have no current task
    except RuntimeError:
        return False
    return True


def _package_caller() -> str | None:
    """file:function:line of the s3pvefs code behind the watched call, if it is s3pvefs's
    (no Path calls here: they would be watched calls themselves)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in PASS_THROUGH:
        frame = frame.f_back
    if frame is None or not frame.f_code.co_filename.startswith(PACKAGE_PREFIX):
        return None
    relative = frame.f_code.co_filename[len(PACKAGE_PREFIX):]
    return f"s3pvefs/{relative}:{frame.f_code.co_name}:{frame.f_lineno}"


def _watch(name: str, real, calls: list[str]):
    def watched(*args, **kwargs):
        if _on_the_loop():
            caller = _package_caller()
            if caller is not None:
                calls.append(f"{name} from {caller}")
        return real(*args, **kwargs)
    return watched


@contextmanager
def disk_calls_on_the_loop():
    """Yields the list of disk calls s3pvefs made on the trio loop thread meanwhile."""
    calls: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for module, names in WATCHED:
            for name in names:
                qualified = f"{module.__name__}.{name}"
                patch.setattr(module, name, _watch(qualified, getattr(module, name), calls))
        yield calls


def listed(calls: list[str]) -> str:
    return "disk calls on the trio loop:\n" + "\n".join(sorted(set(calls)))


# -- the guard itself -------------------------------------------------------------------------


async def test_the_guard_tells_s3pvefs_calls_on_the_loop_from_the_rest(tmp_path):
    with disk_calls_on_the_loop() as calls:
        await trio.to_thread.run_sync(_call_from_package, tmp_path.exists)  # a worker thread
        assert tmp_path.exists()  # the test's own call
        assert _call_from_package(tmp_path.exists)  # s3pvefs code on the loop, via pathlib
    assert len(calls) == 1 and calls[0].startswith("os.stat from s3pvefs/blockcache.py"), calls


def _call_from_package(fn, *args):
    """Call ``fn`` as code in the s3pvefs package would (for testing the guard)."""
    code = compile("fn(*args)", str(PACKAGE / "blockcache.py"), "eval")
    return eval(code, {"fn": fn, "args": args})


# -- a mount's operations -----------------------------------------------------------------


async def test_writes_reads_evictions_and_deletes_leave_the_disk_to_threads(make_core):
    """A backup written past the cache (its parts evicted), fsynced, read back, deleted;
    then a file that needs the room the deleted one held."""
    core = await make_core(cache_size=2 * PART)
    dump = await inode(core, "dump")
    data = payload(3 * PART, seed=1)
    with disk_calls_on_the_loop() as calls:
        fh, node = await write_file(core, dump, "vzdump-qemu-100.vma", data, release=False)
        await core.fsync(fh)
        await core.release(fh)
        await drain(core)
        assert await read_file(core, node.ino) == data
        cache_file = node.file.data.path
        await core.unlink(dump, "vzdump-qemu-100.vma")
        _, other = await write_file(core, dump, "vzdump-qemu-101.vma", payload(2 * PART, 2))
        await drain(core)
    assert not calls, listed(calls)
    await settled(lambda: not cache_file.exists())


async def test_a_file_deleted_while_open_leaves_the_disk_to_threads(make_core):
    """Its cache file is deleted at the last close (release), from the loop's point of view
    instantly."""
    core = await make_core()
    images = await inode(core, "images")
    with disk_calls_on_the_loop() as calls:
        fh, node = await write_file(core, images, "vm-100-disk-0.raw", payload(BLOCK * 3),
                                    release=False)
        await core.flush(fh)
        await core.unlink(images, "vm-100-disk-0.raw")
        assert await core.read(fh, 0, 10) == payload(BLOCK * 3)[:10]
        cache_file = node.file.data.path
        await core.release(fh)
    assert not calls, listed(calls)
    await settled(lambda: not cache_file.exists())


async def test_clean_data_kept_across_a_remount_leaves_the_disk_to_threads(
        make_core, s3, tmp_path):
    """Unmount lists clean cache files; the next mount reuses one, drops one whose object
    changed, and drops the rest when a writer needs their room."""
    cache_dir = tmp_path / "kept"
    first = await make_core(cache_dir=cache_dir)
    dump = await inode(first, "dump")
    for number in range(3):
        await write_file(first, dump, f"notes-{number}.log", payload(PART // 2, seed=number))
    await drain(first)
    with disk_calls_on_the_loop() as calls:
        await first.keep_clean_data()
        await first.cache.aclose()
    assert not calls, listed(calls)
    s3.put(f"{PREFIX}dump/notes-1.log", b"changed")

    second = await make_core(cache_dir=cache_dir, cache_size=PART + PART // 4)
    kept = {path.name for path in (cache_dir / "data").iterdir()}
    with disk_calls_on_the_loop() as calls:
        dump = await inode(second, "dump")
        reused = await inode(second, "dump/notes-0.log")
        assert await read_file(second, reused) == payload(PART // 2, seed=0)
        assert await read_file(second, await inode(second, "dump/notes-1.log")) == b"changed"
        await write_file(second, dump, "big.raw", payload(PART, seed=9))
        await drain(second)
    assert not calls, listed(calls)
    await settled(lambda: len(kept & {p.name for p in (cache_dir / "data").iterdir()}) < 2)


async def test_recovery_leaves_the_disk_to_threads(make_core, tmp_path):
    """A restart after a crash reads the journal, takes over cache files, stats the one
    still being written and deletes the cache files nothing refers to."""
    core = await make_core()
    dump = await inode(core, "dump")
    fh, _ = await write_file(core, dump, "vzdump.dat", payload(BLOCK * 5), release=False)
    await core.flush(fh)
    crashed = tmp_path / "crashed"
    shutil.copytree(core.cache.cache_dir, crashed)  # kill -9 now
    (crashed / "lock").unlink()
    (crashed / "data" / "orphan").write_bytes(b"left by nobody")
    restarted = await make_core(cache_dir=crashed)
    with disk_calls_on_the_loop() as calls:
        assert await recover_journal(restarted) == 1
        await drain(restarted)
    assert not calls, listed(calls)
    assert not (crashed / "data" / "orphan").exists()


async def test_the_admin_socket_leaves_the_disk_to_threads(tmp_path):
    socket_path = tmp_path / "run" / "admin.sock"
    with disk_calls_on_the_loop() as calls:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(TIMEOUT):
                serving = partial(serve_control, socket_path=socket_path)
                assert await nursery.start(serving, None, tmp_path) == socket_path
            nursery.cancel_scope.cancel()
    assert not calls, listed(calls)
    assert not socket_path.exists()
