"""The typed error model and its one errno mapping (s3pvefs/errno_map.py)."""

from __future__ import annotations

import errno
import logging
import re
from pathlib import Path

import pyfuse3
import pytest
import trio

from s3pvefs.adapter.errno_map import (
    FS_ERRNO,
    OPEN_FILE_OPERATIONS,
    STORE_ERRNO,
    answer,
    errno_for,
)
from s3pvefs.adapter.fuse_adapter import _answer
from s3pvefs.errors import (
    FsError,
    FsKind,
    RenamePending,
    StoreError,
    StoreKind,
    first_fs_error,
    is_not_found,
    is_stale,
    kind_of_s3_code,
)

PACKAGE = Path(__file__).resolve().parent.parent / "s3pvefs"

# Every pyfuse3 handler that can fail, as the adapter names the operation.
OPERATIONS = ["lookup", "getattr", "setattr", "readlink", "opendir", "readdir", "mkdir", "rmdir",
              "unlink", "rename", "symlink", "create", "open", "read", "write", "flush",
              "release", "fsync", "statfs", "getxattr", "setxattr"]


def store_error(code: str | None) -> StoreError:
    return StoreError("GetObject", "pve/images/100/a.raw", code, "injected")


# -- the tables ------------------------------------------------------------------------------

def test_every_kind_has_an_errno() -> None:
    assert set(FS_ERRNO) == set(FsKind)
    assert set(STORE_ERRNO) == set(StoreKind)
    for operation in OPERATIONS:
        for kind in FsKind:
            assert errno_for(FsError(kind), operation) == FS_ERRNO[kind]
        for kind in StoreKind:
            assert errno_for(_of_kind(kind), operation) in errno.errorcode


def _of_kind(kind: StoreKind) -> StoreError:
    code = next(c for c in ("NoSuchKey", "NoSuchUpload", "PreconditionFailed", "AccessDenied",
                            "NoSuchBucket", "EntityTooLarge", "KeyTooLongError",
                            "InvalidObjectState", "InvalidRange", "QuotaExceeded",
                            "NotImplemented", "UploadNotVerified", "SlowDown", "ObjectLocked",
                            "Weird")
                if kind_of_s3_code(c) is kind)
    return store_error(code)


# What the mount answered before the typed model, kept (tests/test_posix.py and test_core.py
# check most of them through the real operations).
@pytest.mark.parametrize("kind, expected", [
    (FsKind.NOT_FOUND, errno.ENOENT), (FsKind.EXISTS, errno.EEXIST),
    (FsKind.NOT_EMPTY, errno.ENOTEMPTY), (FsKind.IS_A_DIRECTORY, errno.EISDIR),
    (FsKind.NOT_A_DIRECTORY, errno.ENOTDIR), (FsKind.NAME_TOO_LONG, errno.ENAMETOOLONG),
    (FsKind.INVALID_NAME, errno.EINVAL), (FsKind.RESERVED_NAME, errno.EPERM),
    (FsKind.NOT_PERMITTED, errno.EPERM), (FsKind.INVALID_ARGUMENT, errno.EINVAL),
    (FsKind.BAD_HANDLE, errno.EBADF), (FsKind.FILE_TOO_LARGE, errno.EFBIG),
    (FsKind.STALE, errno.ESTALE), (FsKind.RACED, errno.EAGAIN),
    (FsKind.RENAME_PENDING, errno.EAGAIN), (FsKind.BUSY, errno.EBUSY),
    (FsKind.NOT_SUPPORTED, errno.ENOTSUP), (FsKind.NO_ATTRIBUTE, pyfuse3.ENOATTR),
    (FsKind.IO, errno.EIO),
])
def test_filesystem_kinds(kind: FsKind, expected: int) -> None:
    assert errno_for(FsError(kind, "x"), "lookup") == expected


@pytest.mark.parametrize("message", [
    "Access Denied because object protected by object lock.",  # AWS
    "forbidden by object lock",  # Ceph RGW
    "Object is WORM protected and cannot be overwritten",  # MinIO's message
])
def test_a_refusal_because_of_a_lock_is_eperm_not_eacces(message: str) -> None:
    failure = StoreError("DeleteObject", "pve/dump/x.vma.zst", "AccessDenied", message)
    assert failure.kind is StoreKind.LOCKED
    assert errno_for(failure, "unlink") == errno.EPERM


@pytest.mark.parametrize("code, kind, expected", [
    ("NoSuchKey", StoreKind.NOT_FOUND, errno.ENOENT),
    ("NotFound", StoreKind.NOT_FOUND, errno.ENOENT),
    ("NoSuchUpload", StoreKind.NO_SUCH_UPLOAD, errno.EIO),
    ("PreconditionFailed", StoreKind.PRECONDITION_FAILED, errno.ESTALE),
    ("412", StoreKind.PRECONDITION_FAILED, errno.ESTALE),
    ("AccessDenied", StoreKind.ACCESS_DENIED, errno.EACCES),
    ("SignatureDoesNotMatch", StoreKind.ACCESS_DENIED, errno.EACCES),
    ("NoSuchBucket", StoreKind.BUCKET_MISSING, errno.EIO),
    ("EntityTooLarge", StoreKind.TOO_LARGE, errno.EFBIG),
    ("KeyTooLongError", StoreKind.KEY_TOO_LONG, errno.ENAMETOOLONG),
    ("InvalidObjectState", StoreKind.ARCHIVED, errno.EIO),
    ("InvalidRange", StoreKind.INVALID_RANGE, errno.EINVAL),
    ("QuotaExceeded", StoreKind.QUOTA, errno.EDQUOT),
    ("NotImplemented", StoreKind.NOT_IMPLEMENTED, errno.EOPNOTSUPP),
    ("501", StoreKind.NOT_IMPLEMENTED, errno.EOPNOTSUPP),
    ("UploadNotVerified", StoreKind.UNVERIFIED, errno.EIO),
    ("SlowDown", StoreKind.UNAVAILABLE, errno.EIO),
    ("EndpointConnectionError", StoreKind.UNAVAILABLE, errno.EIO),
    ("503", StoreKind.UNAVAILABLE, errno.EIO),
    ("InvalidPart", StoreKind.OTHER, errno.EIO),
    (None, StoreKind.OTHER, errno.EIO),
    ("ObjectLocked", StoreKind.LOCKED, errno.EPERM),
])
def test_store_codes_kinds_and_errnos(code, kind: StoreKind, expected: int) -> None:
    failure = store_error(code)
    assert failure.kind is kind and failure.code == code
    assert errno_for(failure, "lookup") == expected
    assert failure.transient == (kind is StoreKind.UNAVAILABLE)


def test_a_store_error_carries_no_errno() -> None:
    failure = store_error("NoSuchKey")
    assert not isinstance(failure, FsError) and not hasattr(failure, "errno")
    assert str(failure) == "GetObject pve/images/100/a.raw failed: NoSuchKey: injected"
    assert failure.not_found and not failure.not_implemented and not failure.transient


def test_an_errno_is_no_filesystem_kind() -> None:
    with pytest.raises(TypeError):
        FsError(errno.EIO, "a branch from before the typed model")
    assert str(FsError(FsKind.NOT_EMPTY)) == "directory not empty"  # the default message
    assert RenamePending("dump/a.dat", "pve/dump/a.vma").kind is FsKind.RENAME_PENDING


# -- context ---------------------------------------------------------------------------------

@pytest.mark.parametrize("operation", sorted(OPEN_FILE_OPERATIONS))
def test_a_key_gone_under_an_open_file_is_stale_not_missing(operation: str) -> None:
    assert errno_for(store_error("NoSuchKey"), operation) == errno.ESTALE
    assert errno_for(store_error("PreconditionFailed"), operation) == errno.ESTALE
    # A name the core found missing is still ENOENT (e.g. the handle's node is gone).
    assert errno_for(FsError(FsKind.NOT_FOUND), operation) == errno.ENOENT


@pytest.mark.parametrize("operation", ["lookup", "getattr", "readlink", "unlink", "rename"])
def test_a_key_gone_at_a_name_is_no_such_file(operation: str) -> None:
    assert errno_for(store_error("NoSuchKey"), operation) == errno.ENOENT


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_upload_gone_is_an_io_failure_never_a_missing_name(operation: str) -> None:
    assert errno_for(store_error("NoSuchUpload"), operation) == errno.EIO


def test_cross_layer_predicates() -> None:
    assert is_not_found(FsError(FsKind.NOT_FOUND)) and is_not_found(store_error("404"))
    assert not is_not_found(store_error("NoSuchUpload"))
    assert is_stale(FsError(FsKind.STALE)) and is_stale(store_error("PreconditionFailed"))
    assert not is_stale(store_error("NoSuchKey")) and not is_not_found(ValueError())


# -- the adapter answers through the mapping -------------------------------------------------

class _Ops:
    def __init__(self, failure: Exception):
        self.failure = failure

    @_answer
    async def read(self, fh, off, size):
        raise self.failure

    @_answer
    async def lookup(self, parent_inode, name, ctx=None):
        raise self.failure


@pytest.mark.parametrize("failure, operation, expected", [
    (store_error("NoSuchKey"), "read", errno.ESTALE),
    (store_error("NoSuchKey"), "lookup", errno.ENOENT),
    (store_error("NoSuchUpload"), "read", errno.EIO),
    (FsError(FsKind.BAD_HANDLE), "read", errno.EBADF),
    (OSError(errno.ENOSPC, "cache full"), "read", errno.ENOSPC),  # the cache disk's own answer
    (RuntimeError("a bug"), "lookup", errno.EIO),
])
async def test_the_adapter_answers_the_mapped_errno(failure, operation, expected) -> None:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await getattr(_Ops(failure), operation)(1, 0, 1)
    assert info.value.errno == expected


def test_answers_are_logged_by_severity(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="s3pvefs")
    assert answer(FsError(FsKind.EXISTS, "images/a.raw exists"), "mkdir") == errno.EEXIST
    assert answer(store_error("SlowDown"), "read") == errno.EIO
    assert answer(KeyError("oops"), "open") == errno.EIO
    records = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert records == [
        (logging.DEBUG, "mkdir: images/a.raw exists (EEXIST)", False),
        (logging.WARNING, "read: GetObject pve/images/100/a.raw failed: SlowDown: injected (EIO)",
         False),
        (logging.ERROR, "unexpected error in open; answering EIO", True),
    ]


async def test_a_store_error_leaves_a_nursery_as_itself() -> None:
    async def fails() -> None:
        raise store_error("AccessDenied")

    with pytest.raises(StoreError) as info:
        with first_fs_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fails)
                nursery.start_soon(trio.sleep_forever)
    assert info.value.kind is StoreKind.ACCESS_DENIED


# -- errno values stay at the boundary ------------------------------------------------------

# Where the package may still name an errno constant outside errno_map.py, and why.
ALLOWED = {
    ("state/blockcache.py", "ENOSPC"): "the cache disk full, raised as the OSError a full disk gives",
    ("state/cachefile.py", "ESTALE"): "an OSError for a cache file thrown away under a worker thread",
    ("adapter/fuse_adapter.py", "ENOENT"): "the boundary: a lookup answered ENOENT becomes a negative "
                                   "entry; an invalidation of what the kernel dropped fails so",
    ("service/preflight.py", "ENOTCONN"): "os.stat of a stale FUSE mountpoint, before mounting",
}


def test_errno_constants_appear_only_in_the_mapping() -> None:
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "adapter/errno_map.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for constant in re.findall(r"\b(?:errno|pyfuse3)\.(E[A-Z0-9]+)\b", line):
                found.setdefault((relative, constant), []).append(f"{relative}:{number}")
    unexpected = {where: lines for where, lines in found.items() if where not in ALLOWED}
    assert not unexpected, f"errno constants outside errno_map.py: {unexpected}"
    assert set(ALLOWED) <= set(found), f"stale allow-list entries: {set(ALLOWED) - set(found)}"
