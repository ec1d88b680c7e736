"""Typed errors, the one place where S3 failures become errno values, and the line a command
prints for an error it stops on."""

from __future__ import annotations

import errno
import logging
import sys
from contextlib import contextmanager

# S3 error codes (and HTTP statuses as strings) -> errno. Anything unknown is EIO.
_S3_CODE_ERRNO: dict[str, int] = {
    "NoSuchKey": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "404": errno.ENOENT,
    "NoSuchUpload": errno.ENOENT,
    "NoSuchBucket": errno.EIO,  # the bucket vanishing under a mount is an I/O failure
    "AccessDenied": errno.EACCES,
    "403": errno.EACCES,
    "Forbidden": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "ExpiredToken": errno.EACCES,
    "InvalidToken": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
    "PreconditionFailed": errno.ESTALE,
    "412": errno.ESTALE,
    "NotImplemented": errno.EOPNOTSUPP,
    "501": errno.EOPNOTSUPP,
    "EntityTooLarge": errno.EFBIG,
    "KeyTooLongError": errno.ENAMETOOLONG,
    "InvalidObjectState": errno.EIO,
    "InvalidRange": errno.EINVAL,
    "416": errno.EINVAL,
    "QuotaExceeded": errno.EDQUOT,
}


# Failures that go away by themselves (after botocore's own retries were used up).
_TRANSIENT_CODES = frozenset({
    "EndpointConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionClosedError",
    "IncompleteBody", "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
    "Throttling", "ThrottlingException", "RequestTimeTooSkewed",
})


def errno_for_s3_code(code: str | None) -> int:
    """Map an S3 error code or HTTP status to an errno; unknown codes are EIO."""
    return _S3_CODE_ERRNO.get(code or "", errno.EIO)


class S3PveFsError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(S3PveFsError):
    """Invalid configuration or environment; the message is shown to the admin as is."""


class FsError(S3PveFsError):
    """A filesystem operation fails with this errno (answered to the kernel as is)."""

    def __init__(self, errno_value: int, message: str = ""):
        super().__init__(message or errno.errorcode.get(errno_value, str(errno_value)))
        self.errno = errno_value


class StoreError(FsError):
    """An object-store request failed for good (after botocore's retries)."""

    def __init__(self, operation: str, key: str | None, code: str | None, message: str):
        super().__init__(errno_for_s3_code(code), message)
        self.operation = operation
        self.key = key
        self.code = code
        self.detail = message

    def __str__(self) -> str:
        where = f" {self.key}" if self.key else ""
        return f"{self.operation}{where} failed: {self.code or 'error'}: {self.detail}"

    @property
    def transient(self) -> bool:
        """Worth trying again later: the endpoint was unreachable, slow or overloaded."""
        code = self.code or ""
        return code in _TRANSIENT_CODES or (code.isdigit() and code.startswith("5"))

    @property
    def not_found(self) -> bool:
        return self.errno == errno.ENOENT

    @property
    def not_implemented(self) -> bool:
        return self.errno == errno.EOPNOTSUPP


class StaleObjectError(FsError):
    """The object changed on S3 under a file whose blocks we still rely on."""

    def __init__(self, key: str):
        super().__init__(errno.ESTALE, f"object {key} changed on the server")
        self.key = key


@contextmanager
def first_fs_error():
    """Let an FsError raised inside a trio nursery reach callers as itself.

    Nurseries wrap failures in exception groups; callers of the core expect one FsError with
    the errno to answer. Groups holding anything else propagate unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        matched, rest = group.split(FsError)
        if matched is None or rest is not None:
            raise
        raise _first_leaf(matched) from group


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


class RenamePending(FsError):
    """A file's data was streamed to the name it was expected to be renamed to, and it was not
    renamed (yet): completing the upload would publish it under a name its writer never chose.
    It waits, journaled, for that rename (or its deletion)."""

    def __init__(self, path: str, final_key: str):
        super().__init__(errno.EAGAIN, f"{path}: waiting to be renamed to {final_key}, where "
                                       "its data was streamed")


def print_error(message: str, log: logging.Logger | None = None) -> None:
    """`s3pvefs: error: MESSAGE` on stderr, the form every command uses; also into ``log``
    when the command logs to a file (the admin may only read that)."""
    print(f"s3pvefs: error: {message}", file=sys.stderr, flush=True)
    if log is not None:
        log.error("%s", message)
