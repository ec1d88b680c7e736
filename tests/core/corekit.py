"""The core tier's constants and helpers (its fixtures are in conftest.py here).

The tier builds FsCore objects (assembly.build_filesystem), calls them with inode numbers and
str names as the FUSE adapter does, and checks the bucket (the ``s3`` fixture, a view that
counts no request) and the store's request counts. A "second core" on the same bucket with an
empty cache plays another mount, or this mount after a restart.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import random
import shutil
import stat
from pathlib import Path

import helpers
import pytest
import trio
from helpers import CHECKSUM_META, crc64nvme, settle

from s3pvefs.adapter.errno_map import errno_for
from s3pvefs.config.settings import KiB, MiB
from s3pvefs.errors import FsError, StoreError
from s3pvefs.fs.core import FsCore
from s3pvefs.names import Attributes, decode_attributes
from s3pvefs.state.nodes import ROOT_INODE, Node
from s3pvefs.store.faults import FaultInjectingStore

BLOCK = 64 * KiB
PART = 5 * MiB
PREFIX = "pve/"
UID, GID = 1000, 1001
FILE_MODE = stat.S_IFREG | 0o640
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT
TIMEOUT = 20  # seconds any single wait may take before the test fails (virtual on memory)
ALL_ON_SERVER = os.environ.get("S3PVEFS_CORE_STORE", "memory") == "moto"


def on_s3_server(reason: str):
    """Run the test on S3Store and the test's S3 server (moto), on the real clock."""
    return pytest.mark.on_s3_server(reason)


def runs_on_server(node) -> bool:
    return ALL_ON_SERVER or any(node.get_closest_marker(name)
                                for name in ("on_s3_server", "real_server"))


class Counts:
    """Requests (and GET body bytes) made since the last reset."""

    def __init__(self, store) -> None:
        self.stats = store.stats
        self.reset()

    def reset(self) -> None:
        self._requests = collections.Counter(self.stats.requests)
        self._received = self.stats.bytes_received

    def __getitem__(self, operation: str) -> int:
        return self.stats.requests[operation] - self._requests[operation]

    @property
    def received(self) -> int:
        return self.stats.bytes_received - self._received

    @property
    def changes(self) -> int:
        """Requests that change the bucket."""
        return sum(self[op] for op in ("PutObject", "CopyObject", "DeleteObject", "DeleteObjects",
                                       "CreateMultipartUpload", "UploadPart"))

    @property
    def total(self) -> int:
        """Requests of any kind."""
        return sum(self.stats.requests.values()) - sum(self._requests.values())


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def inode(core: FsCore, path: str) -> int:
    ino = ROOT_INODE
    for part in path.split("/"):
        ino = (await core.lookup(ino, part)).ino
    return ino


async def write_file(core: FsCore, parent: int, name: str, data: bytes, *,
                     release: bool = True, chunk: int = 128 * KiB) -> tuple[int, Node]:
    """Create and write a file as the kernel would (128 KiB writes); returns (fh, node)."""
    fh, node = await core.create(parent, name, FILE_MODE, WRITE_FLAGS, UID, GID)
    for offset in range(0, len(data), chunk):
        assert await core.write(fh, offset, data[offset:offset + chunk]) == len(
            data[offset:offset + chunk])
    if release:
        await core.release(fh)
    return fh, node


async def read_file(core: FsCore, ino: int, offset: int = 0, length: int | None = None) -> bytes:
    fh, _ = await core.open(ino, os.O_RDONLY)
    try:
        if length is None:
            length = core.node(ino).size - offset
        return await core.read(fh, offset, length)
    finally:
        await core.release(fh)


async def drain(core: FsCore) -> None:
    with trio.fail_after(TIMEOUT):
        await core.uploader.drain(core.dirty_nodes())


def s3_attributes(s3, key: str, explicit_mtime: bool | None = None) -> Attributes:
    """The attributes kept in an object's metadata. The mtime is kept only once it was set
    (utime); otherwise S3's LastModified stands for it (decoded here as -1). A content checksum
    in the metadata must be the object's."""
    metadata = s3.metadata(key)
    assert {"mode", "uid", "gid"} <= set(metadata) <= {"mode", "uid", "gid", "mtime",
                                                         CHECKSUM_META}, metadata
    if CHECKSUM_META in metadata:
        assert metadata[CHECKSUM_META] == crc64nvme(s3.body(key)), key
    if explicit_mtime is not None:
        assert ("mtime" in metadata) == explicit_mtime, metadata
    return decode_attributes(metadata, Attributes(0, -1, -1, -1))


def recorded_checksum(s3, key: str) -> str | None:
    """The content checksum recorded for the object at ``key`` (helpers.recorded_checksum)."""
    return helpers.recorded_checksum(s3, key, s3.etag(key), s3.metadata(key))


async def fails_with(code: int, fn, *args, **kwargs) -> None:
    """The call fails with one typed error that the FUSE adapter answers with errno ``code``
    (errno_map, in the context of the operation of that name)."""
    with pytest.raises((FsError, StoreError)) as info:
        await fn(*args, **kwargs)
    answered = errno_for(info.value, fn.__name__)
    assert answered == code, (f"{info.value!r}: answered {errno.errorcode.get(answered)}, "
                              f"expected {errno.errorcode[code]}")


async def fails_somehow(fn, *args, **kwargs) -> FsError | StoreError:
    """The call fails with one bare typed error (never an exception group), whatever it is."""
    with pytest.raises((FsError, StoreError)) as info:
        await fn(*args, **kwargs)
    return info.value


async def settled(predicate) -> None:
    """Once the core has done all it does without time passing, ``predicate()`` holds."""
    await settle()
    assert predicate()


def crash_copy(cache_dir: Path, crashed: Path) -> Path:
    """What a kill -9 now leaves of a cache directory, copied to ``crashed`` (its lock gone).
    A worker thread may replace a journal record meanwhile: a temporary file that vanishes
    is one the kill would have left or not; each record is copied whole, old or new."""

    def copy(src, dst):
        try:
            return shutil.copy2(src, dst)
        except FileNotFoundError:
            return dst

    shutil.copytree(cache_dir, crashed, copy_function=copy)
    (crashed / "lock").unlink()
    return crashed


class SlowListings(FaultInjectingStore):
    """Listings whose answer arrives ``answer_delay`` seconds after S3 made it."""

    answer_delay = 0.0

    async def list_page(self, *args, **kwargs):
        page = await super().list_page(*args, **kwargs)
        if self.answer_delay:
            await trio.sleep(self.answer_delay)  # virtual time: the answer's latency
        return page
