"""The one place where failures become errno values: what the mount answers the kernel.

Below the FUSE adapter, failures are typed (errors.FsError with an FsKind, errors.StoreError
with a StoreKind). Their errno is chosen here, with the operation that failed as context: a
key missing on S3 is "no such file" to a lookup, but to a read of an open file it is the
file's object gone under it.
"""

from __future__ import annotations

import errno
import logging

from s3pvefs.errors import FsError, FsKind, StoreError, StoreKind

log = logging.getLogger("s3pvefs.adapter.fuse_adapter")

FS_ERRNO: dict[FsKind, int] = {
    FsKind.NOT_FOUND: errno.ENOENT,
    FsKind.EXISTS: errno.EEXIST,
    FsKind.NOT_EMPTY: errno.ENOTEMPTY,
    FsKind.IS_A_DIRECTORY: errno.EISDIR,
    FsKind.NOT_A_DIRECTORY: errno.ENOTDIR,
    FsKind.NAME_TOO_LONG: errno.ENAMETOOLONG,
    FsKind.INVALID_NAME: errno.EINVAL,
    FsKind.RESERVED_NAME: errno.EPERM,
    FsKind.NOT_PERMITTED: errno.EPERM,
    FsKind.INVALID_ARGUMENT: errno.EINVAL,
    FsKind.BAD_HANDLE: errno.EBADF,
    FsKind.FILE_TOO_LARGE: errno.EFBIG,
    FsKind.STALE: errno.ESTALE,
    FsKind.RACED: errno.EAGAIN,
    FsKind.RENAME_PENDING: errno.EAGAIN,
    FsKind.BUSY: errno.EBUSY,
    FsKind.NOT_SUPPORTED: errno.ENOTSUP,
    FsKind.NO_ATTRIBUTE: errno.ENODATA,  # pyfuse3.ENOATTR on Linux
    FsKind.IO: errno.EIO,
}

# A store failure that reaches the kernel: what it means when nothing more specific applies.
STORE_ERRNO: dict[StoreKind, int] = {
    StoreKind.NOT_FOUND: errno.ENOENT,
    # An upload of ours vanished (aborted by a lifecycle rule or another host): no name is
    # missing, the data could not be stored.
    StoreKind.NO_SUCH_UPLOAD: errno.EIO,
    StoreKind.PRECONDITION_FAILED: errno.ESTALE,
    StoreKind.ACCESS_DENIED: errno.EACCES,
    StoreKind.LOCKED: errno.EPERM,  # the object is immutable until its date: not a permission
    StoreKind.BUCKET_MISSING: errno.EIO,  # the bucket vanishing under a mount is an I/O failure
    StoreKind.TOO_LARGE: errno.EFBIG,
    StoreKind.KEY_TOO_LONG: errno.ENAMETOOLONG,
    StoreKind.ARCHIVED: errno.EIO,  # reader.py logs how to restore it
    StoreKind.INVALID_RANGE: errno.EINVAL,
    StoreKind.QUOTA: errno.EDQUOT,
    StoreKind.NOT_IMPLEMENTED: errno.EOPNOTSUPP,
    StoreKind.UNVERIFIED: errno.EIO,
    StoreKind.UNAVAILABLE: errno.EIO,
    StoreKind.OTHER: errno.EIO,
}

# Operations on an open file's data: the name was resolved when the file was opened, so a key
# missing now is the file's object deleted under it (by another host), as NFS answers it.
OPEN_FILE_OPERATIONS = frozenset({"read", "write", "flush", "fsync", "release"})


def errno_for(exc: FsError | StoreError, operation: str | None = None) -> int:
    """The errno that ``operation`` (a pyfuse3 handler's name) answers for ``exc``."""
    if isinstance(exc, FsError):
        return FS_ERRNO[exc.kind]
    if exc.kind is StoreKind.NOT_FOUND and operation in OPEN_FILE_OPERATIONS:
        return errno.ESTALE
    return STORE_ERRNO[exc.kind]


def answer(exc: Exception, operation: str) -> int:
    """The errno for any failure of a kernel request, logged with its message: typed errors
    as mapped above, the local cache disk's OSError as the disk answered it, anything
    unexpected EIO (with its traceback: a bug)."""
    if isinstance(exc, (FsError, StoreError)):
        value = errno_for(exc, operation)
        # Expected answers (ENOENT, EEXIST, ...) are routine; I/O failures are not.
        level = logging.WARNING if value == errno.EIO else logging.DEBUG
        log.log(level, "%s: %s (%s)", operation, exc, errno.errorcode.get(value, value))
        return value
    if isinstance(exc, OSError):  # the local cache disk: ENOSPC, EDQUOT, EIO
        log.error("%s: local cache I/O failed: %s", operation, exc)
        return exc.errno or errno.EIO
    log.error("unexpected error in %s; answering EIO", operation, exc_info=exc)
    return errno.EIO
