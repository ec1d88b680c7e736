"""What the filesystem needs from an object store: the ``ObjectStore`` protocol, the values it
passes around, and S3's ETag rules.

Kept apart from ``store.py`` (aiobotocore) so that ``memstore.py`` and ``faults.py`` import
nothing of botocore; ``store.py`` re-exports every name here.
"""

from __future__ import annotations

import collections
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Histogram

from s3pvefs.errors import StoreKind

if TYPE_CHECKING:
    from s3pvefs.store.body import SliceBody

DELETE_BATCH = 1000  # DeleteObjects accepts at most 1000 keys per request


# -- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # full key including prefix
    size: int
    etag: str  # without surrounding quotes
    mtime_ns: int  # LastModified in ns since the epoch
    # User metadata (x-amz-meta-* names, lower-case, without the prefix); None from a listing.
    metadata: dict[str, str] | None = None
    storage_class: str | None = None
    # From a HEAD: "AES256", "aws:kms" or "SSE-C" as the server reports it; None: not reported.
    encryption: str | None = None
    kms_key_id: str | None = None
    # From a HEAD: the Object Lock retention of this version, if any
    lock_mode: str | None = None
    retain_until_ns: int | None = None
    # From a HEAD with_checksum: the whole-object CRC64NVME S3 keeps (base64), if it keeps one
    crc64nvme: str | None = None


@dataclass
class ListPage:
    objects: list[ObjectInfo]
    prefixes: list[str]  # CommonPrefixes: full keys ending with the delimiter
    next_token: str | None  # ContinuationToken of the next page; None at the end


@dataclass(frozen=True)
class RemoteObject:
    """The S3 object a file's clean data comes from."""

    key: str
    etag: str
    size: int
    archived: bool = False  # GLACIER / DEEP_ARCHIVE, per the listing: GETs fail until restored


@dataclass(frozen=True)
class MultipartUploadInfo:
    key: str
    upload_id: str
    initiated_ns: int


@dataclass(frozen=True)
class ObjectVersion:
    """One entry of ListObjectVersions: a version of an object, or a delete marker."""

    key: str
    version_id: str
    size: int
    etag: str
    mtime_ns: int
    is_latest: bool
    delete_marker: bool


@dataclass(frozen=True)
class BucketProtection:
    versioning: str  # "Enabled", "Suspended" or "Disabled"
    object_lock: bool
    default_mode: str | None = None  # the bucket's default retention, if any
    default_period: str | None = None  # "30d", "1y"


# Seconds a request takes (every attempt botocore makes included): the buckets of its histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)
OK = "ok"  # the outcome of a request that succeeded; a failed one's is its StoreKind's name
# Requests whose success means an object was written.
OBJECT_WRITES = frozenset({"PutObject", "CompleteMultipartUpload", "CopyObject"})


def _latency_histogram() -> Histogram:
    return Histogram("s3pvefs_request_duration_seconds",
                     "Seconds an S3 request took, retries included, by operation",
                     ["operation"], buckets=LATENCY_BUCKETS, registry=None)


@dataclass
class StoreStats:
    """Counted where requests are made (one per API call, not per botocore retry)."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_sent: int = 0  # body bytes of PutObject/UploadPart
    bytes_received: int = 0  # body bytes of GetObject
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    # What the metrics show (S3Store keeps them): (operation, outcome) -> requests finished
    outcomes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    retries: int = 0  # attempts botocore made again inside those requests
    seconds: Histogram = field(default_factory=_latency_histogram)
    last_answer: float | None = None  # wall-clock time of the server's last answer
    last_unreachable: float | None = None  # ... of the last request that got none in time
    last_object_written: float | None = None  # ... of the last request that wrote an object

    def finished(self, operation: str, seconds: float, failure: StoreKind | None) -> None:
        """One request ended: ``failure`` is None when it succeeded."""
        now = time.time()
        self.outcomes[operation, OK if failure is None else failure.name.lower()] += 1
        self.seconds.labels(operation).observe(seconds)
        if failure is StoreKind.UNAVAILABLE:
            self.last_unreachable = now
        else:
            self.last_answer = now
        if failure is None and operation in OBJECT_WRITES:
            self.last_object_written = now

    @property
    def endpoint_up(self) -> bool:
        """Whether the server answered the last request (an error answer counts)."""
        return self.last_unreachable is None or (self.last_answer or 0) > self.last_unreachable

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "errors": dict(self.errors),
        }


class ObjectStore(Protocol):
    """What the filesystem needs from S3. Keys are full keys; the bucket is fixed."""

    stats: StoreStats

    @property
    def etags_are_md5(self) -> bool:
        """Whether an object's ETag can be known before it is written (see ``body_etag``)."""
        ...

    async def head_bucket(self) -> None: ...
    async def create_bucket(self) -> None: ...
    async def head(self, key: str) -> ObjectInfo: ...
    async def get(
        self, key: str, start: int = 0, length: int | None = None, if_match: str | None = None
    ) -> bytes: ...
    async def put(self, key: str, data: bytes | SliceBody, metadata: dict[str, str]) -> str: ...
    async def delete(self, key: str) -> None: ...
    async def delete_many(self, keys: list[str]) -> None: ...
    async def list_page(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage: ...
    async def copy(
        self, src_key: str, dst_key: str, metadata: dict[str, str] | None = None,
        if_match: str | None = None,
    ) -> str: ...
    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str: ...
    async def upload_part(self, key: str, upload_id: str, part_number: int,
                          body: bytes | SliceBody) -> str: ...
    async def upload_part_copy(
        self, key: str, upload_id: str, part_number: int, src_key: str, start: int,
        end_inclusive: int, if_match: str | None = None,
    ) -> str: ...
    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]], size: int
    ) -> str: ...
    async def abort_multipart(self, key: str, upload_id: str) -> None: ...
    async def list_multipart_uploads(self, prefix: str) -> list[MultipartUploadInfo]: ...
    async def aclose(self) -> None: ...


# -- ETags ----------------------------------------------------------------------------------


def unquote_etag(etag: str) -> str:
    """An ETag as s3pvefs keeps it: without the quotes S3 puts around it on the wire."""
    return etag.strip('"')


def quote_etag(etag: str) -> str:
    """An ETag as request headers (If-Match, x-amz-copy-source-if-match) carry it."""
    return f'"{unquote_etag(etag)}"'


def is_md5(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)


def multipart_etag(part_etags: list[str]) -> str | None:
    """The ETag S3 gives a completed multipart upload: the MD5 of the parts' MD5s, "-" and
    their count. None when a part's ETag is not an MD5 (SSE-KMS, SSE-C)."""
    parts = [unquote_etag(etag).lower() for etag in part_etags]
    if not parts or not all(is_md5(p) for p in parts):
        return None
    joined = b"".join(bytes.fromhex(p) for p in parts)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}"
