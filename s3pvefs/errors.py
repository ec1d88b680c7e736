"""The typed errors of both layers, and the line a command prints for an error it stops on.

A store failure is a ``StoreError`` with a ``StoreKind`` (derived from the S3 code in one
table); a filesystem failure is an ``FsError`` with an ``FsKind``. Neither carries an errno:
``errno_map.py`` chooses it at the FUSE boundary, where the operation is known."""

from __future__ import annotations

import enum
import logging
import sys
from contextlib import contextmanager


class StoreKind(enum.Enum):
    """What went wrong with an object-store request, whatever the server called it."""

    NOT_FOUND = "no such key"
    NO_SUCH_UPLOAD = "no such multipart upload"
    PRECONDITION_FAILED = "the object changed (ETag condition failed)"
    ACCESS_DENIED = "access denied"
    LOCKED = "protected by S3 Object Lock (retention or legal hold)"
    BUCKET_MISSING = "no such bucket"
    TOO_LARGE = "entity too large"
    KEY_TOO_LONG = "key too long"
    ARCHIVED = "object in an archive storage class"
    INVALID_RANGE = "range not satisfiable"
    QUOTA = "quota exceeded"
    NOT_IMPLEMENTED = "not implemented by the server"
    UNVERIFIED = "upload not verified"
    UNAVAILABLE = "endpoint unreachable, slow or overloaded"
    OTHER = "request failed"


# S3 error codes (and HTTP statuses as strings) -> kind; see kind_of_s3_code for the rest.
_S3_CODE_KIND: dict[str, StoreKind] = {
    "NoSuchKey": StoreKind.NOT_FOUND,
    "NotFound": StoreKind.NOT_FOUND,
    "404": StoreKind.NOT_FOUND,
    "NoSuchUpload": StoreKind.NO_SUCH_UPLOAD,
    "NoSuchBucket": StoreKind.BUCKET_MISSING,
    "AccessDenied": StoreKind.ACCESS_DENIED,
    "ObjectLocked": StoreKind.LOCKED,  # MinIO: "Object is WORM protected"
    "403": StoreKind.ACCESS_DENIED,
    "Forbidden": StoreKind.ACCESS_DENIED,
    "InvalidAccessKeyId": StoreKind.ACCESS_DENIED,
    "SignatureDoesNotMatch": StoreKind.ACCESS_DENIED,
    "ExpiredToken": StoreKind.ACCESS_DENIED,
    "InvalidToken": StoreKind.ACCESS_DENIED,
    "AllAccessDisabled": StoreKind.ACCESS_DENIED,
    "PreconditionFailed": StoreKind.PRECONDITION_FAILED,
    "412": StoreKind.PRECONDITION_FAILED,
    "NotImplemented": StoreKind.NOT_IMPLEMENTED,
    "501": StoreKind.NOT_IMPLEMENTED,
    "EntityTooLarge": StoreKind.TOO_LARGE,
    "KeyTooLongError": StoreKind.KEY_TOO_LONG,
    "InvalidObjectState": StoreKind.ARCHIVED,
    "InvalidRange": StoreKind.INVALID_RANGE,
    "416": StoreKind.INVALID_RANGE,
    "QuotaExceeded": StoreKind.QUOTA,
    "BadDigest": StoreKind.UNVERIFIED,  # the body was not what its Content-MD5 says
    "UploadNotVerified": StoreKind.UNVERIFIED,  # our own code: S3 answered, not with what was sent
    # Failures that go away by themselves (after botocore's own retries were used up).
    **dict.fromkeys((
        "EndpointConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionClosedError",
        "IncompleteBody", "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
        "Throttling", "ThrottlingException", "RequestTimeTooSkewed",
    ), StoreKind.UNAVAILABLE),
}


# AWS and Ceph answer a delete or overwrite refused by Object Lock with AccessDenied and say
# why in the message only ("... protected by object lock", "forbidden by object lock").
_LOCK_WORDS = ("object lock", "objectlock", "worm", "retention")


def kind_of_s3_code(code: str | None, message: str = "") -> StoreKind:
    """The kind of an S3 error code (and its message) or HTTP status; any other 5xx is the
    server unavailable, anything else unknown is OTHER."""
    code = code or ""
    if code in _S3_CODE_KIND:
        kind = _S3_CODE_KIND[code]
        if kind is StoreKind.ACCESS_DENIED and any(w in message.lower() for w in _LOCK_WORDS):
            return StoreKind.LOCKED
        return kind
    return StoreKind.UNAVAILABLE if code.isdigit() and code.startswith("5") else StoreKind.OTHER


class S3PveFsError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(S3PveFsError):
    """Invalid configuration or environment; the message is shown to the admin as is."""


class StoreError(S3PveFsError):
    """An object-store request failed for good (after botocore's retries). Not a filesystem
    error: what it means for the operation that made the request is decided by that operation
    or, at the FUSE boundary, by errno_map."""

    def __init__(self, operation: str, key: str | None, code: str | None, message: str):
        super().__init__(message)
        self.operation = operation
        self.key = key
        self.code = code
        self.detail = message
        self.kind = kind_of_s3_code(code, message)

    def __str__(self) -> str:
        where = f" {self.key}" if self.key else ""
        return f"{self.operation}{where} failed: {self.code or 'error'}: {self.detail}"

    @property
    def transient(self) -> bool:
        """Worth trying again later: the endpoint was unreachable, slow or overloaded."""
        return self.kind is StoreKind.UNAVAILABLE

    @property
    def not_found(self) -> bool:
        return self.kind is StoreKind.NOT_FOUND

    @property
    def not_implemented(self) -> bool:
        return self.kind is StoreKind.NOT_IMPLEMENTED


class FsKind(enum.Enum):
    """What went wrong, in filesystem terms (the value is the default message)."""

    NOT_FOUND = "no such file or directory"
    EXISTS = "file exists"
    NOT_EMPTY = "directory not empty"
    IS_A_DIRECTORY = "is a directory"
    NOT_A_DIRECTORY = "not a directory"
    NAME_TOO_LONG = "name too long"
    INVALID_NAME = "invalid name"
    RESERVED_NAME = "reserved name"
    NOT_PERMITTED = "operation not permitted"
    INVALID_ARGUMENT = "invalid argument"
    BAD_HANDLE = "bad file handle"
    FILE_TOO_LARGE = "file too large"
    STALE = "changed on S3"
    RACED = "changed by another operation meanwhile"
    RENAME_PENDING = "waiting for its rename"
    BUSY = "busy"
    NOT_SUPPORTED = "not supported"
    NO_ATTRIBUTE = "no such attribute"
    IO = "input/output error"


class FsError(S3PveFsError):
    """A filesystem operation fails; ``kind`` says how (errno_map answers the kernel)."""

    def __init__(self, kind: FsKind, message: str = ""):
        if not isinstance(kind, FsKind):  # an errno from before the typed model
            raise TypeError(f"FsError needs an FsKind, not {kind!r}")
        super().__init__(message or kind.value)
        self.kind = kind


def is_not_found(exc: BaseException) -> bool:
    """Nothing is at that name (FsError) or key (StoreError)."""
    return ((isinstance(exc, FsError) and exc.kind is FsKind.NOT_FOUND)
            or (isinstance(exc, StoreError) and exc.kind is StoreKind.NOT_FOUND))


def is_stale(exc: BaseException) -> bool:
    """The object a file is based on changed on S3 (a failed ETag condition, or found out)."""
    return ((isinstance(exc, FsError) and exc.kind is FsKind.STALE)
            or (isinstance(exc, StoreError) and exc.kind is StoreKind.PRECONDITION_FAILED))


@contextmanager
def first_fs_error():
    """Let an FsError or StoreError raised inside a trio nursery reach callers as itself.

    Nurseries wrap failures in exception groups; callers of the core expect one typed error
    to act on or answer. Groups holding anything else propagate unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        matched, rest = group.split((FsError, StoreError))
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
        super().__init__(FsKind.RENAME_PENDING, f"{path}: waiting to be renamed to {final_key}, "
                                                "where its data was streamed")


class StreamAhead(FsError):
    """Another file streamed its data to this file's key before it was renamed away; its
    upload completes there first (and is copied to its new name), then this file's upload
    replaces it. Uploaded the other way round, that completion would replace this file's
    object."""

    def __init__(self, path: str, other: str):
        super().__init__(FsKind.BUSY, f"{path}: its upload waits for that of {other}, which was "
                                      "streamed to this name before it was renamed")


def print_error(message: str, log: logging.Logger | None = None) -> None:
    """`s3pvefs: error: MESSAGE` on stderr, the form every command uses; also into ``log``
    when the command logs to a file (the admin may only read that)."""
    print(f"s3pvefs: error: {message}", file=sys.stderr, flush=True)
    if log is not None:
        log.error("%s", message)
