"""An in-memory ``ObjectStore`` for tests: what ``S3Store`` answers its callers, without a server.

It follows S3Store as a caller sees it (unquoted ETags, error codes as ``to_store_error``
makes them, the same ``StoreStats`` counters) and, where moto and Ceph RGW disagree, the
stricter real behaviour: AWS's where RGW is lenient (copy-source-if-match is honoured, a part
number above 10000 or a key over 1024 bytes is refused), RGW's where AWS is lenient (a
completion must list every uploaded part). tests/test_store_contract.py runs the same tests
on this store, on S3Store over moto and over Ceph RGW, and names every difference.

Every request starts with a trio checkpoint (a cancelled request has no effect) and then runs
without yielding, so a request is atomic, as S3 makes a single request. No real I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import trio

from s3pvefs.errors import StoreError
from s3pvefs.store.body import SliceBody
from s3pvefs.store.bridge import LoopStoppedError
from s3pvefs.store.objectstore import (
    DELETE_BATCH,
    ListPage,
    MultipartUploadInfo,
    ObjectInfo,
    StoreStats,
    multipart_etag,
    unquote_etag,
)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # every part but the last, on AWS and RGW (rgw_multipart_min_part_size)
MAX_PART_NUMBER = 10_000
MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048  # AWS: names and values of user metadata, UTF-8
MAX_LIST_KEYS = 1000  # ListObjectsV2 answers at most this many entries per page
_TOKEN_PREFIX = "mem1:"

# S3 error code -> (HTTP status, message), for errors worded as S3Store words them.
_ERRORS: dict[str, tuple[int, str]] = {
    "NoSuchKey": (404, "The specified key does not exist."),
    "NotFound": (404, "Not Found"),  # a HEAD's 404 has no body: S3Store names it NotFound
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchUpload": (404, "The specified upload does not exist."),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidPart": (400, "One or more of the specified parts could not be found"),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order"),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed size"),
    "MalformedXML": (400, "The XML you provided was not well-formed"),
    "InvalidArgument": (400, "Invalid argument"),
    "InvalidRequest": (400, "This copy request is illegal: an object onto itself, unchanged"),
    "KeyTooLongError": (400, "Your key is too long"),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size"),
}


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str  # unquoted, as S3Store returns it
    metadata: dict[str, str]
    mtime_ns: int


@dataclass
class _Upload:
    key: str
    metadata: dict[str, str]
    initiated_ns: int
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # number -> (data, etag)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _encode_token(after: str) -> str:
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(after.encode()).decode()


class MemoryStore:
    """``ObjectStore`` holding one bucket in dicts.

    ``clock`` gives the time in seconds for LastModified and upload initiation (pass
    ``trio.current_time`` under a MockClock); ``min_part_size`` is the size every part but
    the last must reach at completion. ``objects`` may be read (and seeded) by tests.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time,
                 min_part_size: int = MIN_PART_SIZE, bucket_exists: bool = True) -> None:
        self.stats = StoreStats()
        self.objects: dict[str, StoredObject] = {}
        self.min_part_size = min_part_size
        self.delete_batch = DELETE_BATCH  # keys per DeleteObjects request
        self._uploads: dict[str, _Upload] = {}
        self._clock = clock
        self._bucket_exists = bucket_exists
        self._upload_ids: Iterator[int] = itertools.count(1)
        self._closed = False

    @property
    def etags_are_md5(self) -> bool:
        return True  # no SSE-KMS / SSE-C here: a PUT's ETag is its body's MD5

    # -- plumbing --

    async def _begin(self, operation: str, bucket_needed: bool = True) -> None:
        """Where S3Store sends the request: cancellation lands here, before any effect."""
        await trio.lowlevel.checkpoint()
        self.stats.requests[operation] += 1
        if self._closed:
            raise LoopStoppedError("the memory store is closed")
        if bucket_needed and not self._bucket_exists:
            raise self._error(operation, None, "NoSuchBucket")

    def _error(self, operation: str, key: str | None, code: str, detail: str = "") -> StoreError:
        """A failure as S3Store reports it (and counts it)."""
        self.stats.errors[operation] += 1
        status, message = _ERRORS.get(code, (400, code))
        return StoreError(operation, key, code, f"HTTP {status}: {detail or message}")

    def _now_ns(self) -> int:
        # HTTP dates (HEAD's Last-Modified) have whole seconds; listings agree with HEADs here.
        return int(self._clock()) * 1_000_000_000

    def _existing(self, operation: str, key: str, missing_code: str = "NoSuchKey",
                  error_key: str | None = None) -> StoredObject:
        found = self.objects.get(key)
        if found is None:
            raise self._error(operation, key if error_key is None else error_key, missing_code)
        return found

    def _check_if_match(self, operation: str, key: str, found: StoredObject,
                        if_match: str | None) -> None:
        if if_match is not None and unquote_etag(if_match) != found.etag:
            raise self._error(operation, key, "PreconditionFailed")

    def _check_new_object(self, operation: str, key: str, error_key: str,
                          metadata: dict[str, str]) -> dict[str, str]:
        """The checks AWS makes on a key and metadata it is to create; the metadata as stored
        (S3 lower-cases names)."""
        if len(key.encode()) > MAX_KEY_BYTES:
            raise self._error(operation, error_key, "KeyTooLongError")
        stored = {name.lower(): value for name, value in metadata.items()}
        if sum(len(n.encode()) + len(v.encode()) for n, v in stored.items()) > MAX_METADATA_BYTES:
            raise self._error(operation, error_key, "MetadataTooLarge")
        return stored

    def _upload(self, operation: str, key: str, upload_id: str,
                error_key: str | None = None) -> _Upload:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise self._error(operation, key if error_key is None else error_key, "NoSuchUpload")
        return upload

    def _check_part_number(self, operation: str, key: str, part_number: int) -> None:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise self._error(operation, key, "InvalidArgument",
                              f"Part number must be an integer between 1 and {MAX_PART_NUMBER}")

    # -- bucket --

    async def head_bucket(self) -> None:
        await self._begin("HeadBucket")

    async def create_bucket(self) -> None:
        await self._begin("CreateBucket", bucket_needed=False)
        self._bucket_exists = True  # S3Store takes BucketAlreadyOwnedByYou as done too

    # -- objects --

    async def head(self, key: str) -> ObjectInfo:
        await self._begin("HeadObject")
        found = self._existing("HeadObject", key, "NotFound")
        # STANDARD objects have no x-amz-storage-class header, so S3Store reports None.
        return ObjectInfo(key, len(found.data), found.etag, found.mtime_ns,
                          metadata=dict(found.metadata))

    async def get(self, key: str, start: int = 0, length: int | None = None,
                  if_match: str | None = None) -> bytes:
        if length == 0:
            return b""  # S3Store answers this without a request
        await self._begin("GetObject")
        found = self._existing("GetObject", key)
        self._check_if_match("GetObject", key, found, if_match)
        ranged = start != 0 or length is not None
        if ranged and start >= len(found.data):  # also any range of an empty object
            raise self._error("GetObject", key, "InvalidRange")
        data = found.data[start:] if length is None else found.data[start:start + length]
        self.stats.bytes_received += len(data)
        return data

    async def put(self, key: str, body: bytes | SliceBody, metadata: dict[str, str]) -> str:
        data = await self._body_bytes("PutObject", key, body)
        await self._begin("PutObject")
        stored = self._check_new_object("PutObject", key, key, metadata)
        etag = _md5(data)
        self.objects[key] = StoredObject(bytes(data), etag, stored, self._now_ns())
        self.stats.bytes_sent += len(data)
        return etag

    async def delete(self, key: str) -> None:
        await self._begin("DeleteObject")
        self.objects.pop(key, None)  # deleting nothing succeeds, as on S3

    async def delete_many(self, keys: list[str]) -> None:
        for first in range(0, len(keys), self.delete_batch):  # a request per batch, as S3Store
            await self._begin("DeleteObjects")
            for key in keys[first:first + self.delete_batch]:
                self.objects.pop(key, None)

    async def list_page(self, prefix: str, delimiter: str | None = "/",
                        token: str | None = None, max_keys: int = 1000) -> ListPage:
        await self._begin("ListObjectsV2")
        after = self._token_position(prefix, token)
        limit = max(0, min(max_keys, MAX_LIST_KEYS))
        entries = itertools.islice(self._entries_after(prefix, delimiter or None, after),
                                   limit + 1)
        page = list(entries)
        more = len(page) > limit
        page = page[:limit]
        return ListPage(
            objects=[entry for entry in page if isinstance(entry, ObjectInfo)],
            prefixes=[entry for entry in page if isinstance(entry, str)],
            next_token=_encode_token(_name(page[-1])) if more and page else None,
        )

    def _token_position(self, prefix: str, token: str | None) -> str:
        """The last name a page ended with ("" from the start)."""
        if token is None:
            return ""
        try:
            if not token.startswith(_TOKEN_PREFIX):
                raise ValueError(token)
            return base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX):]).decode()
        except (ValueError, binascii.Error):
            raise self._error("ListObjectsV2", prefix, "InvalidArgument",
                              "The continuation token provided is incorrect") from None

    def _entries_after(self, prefix: str, delimiter: str | None,
                       after: str) -> Iterator[ObjectInfo | str]:
        """Objects and common prefixes in S3's order (UTF-8 byte order is code point order),
        each common prefix once, at the place of its first key."""
        last_prefix = None
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[:cut + len(delimiter or "")]
                if common > after and common != last_prefix:
                    last_prefix = common
                    yield common
            elif key > after:
                found = self.objects[key]
                yield ObjectInfo(key, len(found.data), found.etag, found.mtime_ns,
                                 storage_class="STANDARD")

    async def copy(self, src_key: str, dst_key: str, metadata: dict[str, str] | None = None,
                   if_match: str | None = None) -> str:
        # S3Store reports CopyObject failures under the source key.
        await self._begin("CopyObject")
        source = self._existing("CopyObject", src_key)
        self._check_if_match("CopyObject", src_key, source, if_match)  # AWS; moto, RGW ignore
        if src_key == dst_key and metadata is None:
            raise self._error("CopyObject", src_key, "InvalidRequest")
        chosen = source.metadata if metadata is None else metadata
        stored = self._check_new_object("CopyObject", dst_key, src_key, chosen)
        # The copy keeps the source's ETag, a multipart one too (RGW; moto makes it an MD5).
        self.objects[dst_key] = StoredObject(source.data, source.etag, stored, self._now_ns())
        return source.etag

    # -- multipart --

    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        await self._begin("CreateMultipartUpload")
        stored = self._check_new_object("CreateMultipartUpload", key, key, metadata)
        upload_id = f"mem-upload-{next(self._upload_ids)}"
        self._uploads[upload_id] = _Upload(key, stored, self._now_ns())
        return upload_id

    async def upload_part(self, key: str, upload_id: str, part_number: int,
                          body: bytes | SliceBody) -> str:
        data = await self._body_bytes("UploadPart", key, body)
        await self._begin("UploadPart")
        upload = self._upload("UploadPart", key, upload_id)
        self._check_part_number("UploadPart", key, part_number)
        etag = _md5(data)
        upload.parts[part_number] = (bytes(data), etag)
        self.stats.bytes_sent += len(data)
        return etag

    async def _body_bytes(self, operation: str, key: str, body: bytes | SliceBody) -> bytes:
        """A body's bytes; a file slice read as S3 reads it, checked against its Content-MD5
        (the file may have changed since it was hashed)."""
        if not isinstance(body, SliceBody):
            return body
        data = await trio.to_thread.run_sync(body.slice.read_all)
        if hashlib.md5(data, usedforsecurity=False).digest() != body.md5:
            raise self._error(operation, key, "BadDigest",
                              "the Content-MD5 you specified did not match what we received")
        return data

    async def upload_part_copy(self, key: str, upload_id: str, part_number: int, src_key: str,
                               start: int, end_inclusive: int,
                               if_match: str | None = None) -> str:
        # S3Store reports UploadPartCopy failures under the source key.
        await self._begin("UploadPartCopy")
        upload = self._upload("UploadPartCopy", key, upload_id, error_key=src_key)
        self._check_part_number("UploadPartCopy", src_key, part_number)
        source = self._existing("UploadPartCopy", src_key)
        self._check_if_match("UploadPartCopy", src_key, source, if_match)  # AWS; moto, RGW ignore
        if not 0 <= start <= end_inclusive < len(source.data):  # RGW; moto clips the range
            raise self._error("UploadPartCopy", src_key, "InvalidRange")
        data = source.data[start:end_inclusive + 1]
        etag = _md5(data)
        upload.parts[part_number] = (data, etag)
        return etag

    async def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]],
                                 size: int) -> str:
        operation = "CompleteMultipartUpload"
        await self._begin(operation)
        upload = self._upload(operation, key, upload_id)
        ordered = sorted(parts)  # S3Store sends the parts sorted
        chosen = self._chosen_parts(key, upload, ordered)
        data = b"".join(part for part, _etag in chosen)
        if len(data) != size:  # S3Store's check where the answer has no usable ETag (RGW)
            raise self._error(operation, key, "UploadNotVerified",
                              f"the object holds {len(data)} bytes where {size} were sent")
        etag = multipart_etag([part_etag for _data, part_etag in chosen])
        assert etag is not None  # part ETags here are always MD5s
        del self._uploads[upload_id]
        self.objects[key] = StoredObject(data, etag, upload.metadata, self._now_ns())
        return etag

    def _chosen_parts(self, key: str, upload: _Upload,
                      ordered: list[tuple[int, str]]) -> list[tuple[bytes, str]]:
        """The parts a completion lists, checked as AWS and RGW check them."""
        operation = "CompleteMultipartUpload"
        numbers = [number for number, _etag in ordered]
        if not numbers:
            raise self._error(operation, key, "MalformedXML")
        if len(set(numbers)) != len(numbers):
            raise self._error(operation, key, "InvalidPartOrder")
        for number, etag in ordered:
            held = upload.parts.get(number)
            if held is None or held[1] != unquote_etag(etag).lower():
                raise self._error(operation, key, "InvalidPart", f"part {number}")
        if set(upload.parts) - set(numbers):  # RGW refuses this; AWS and moto drop the rest
            raise self._error(operation, key, "InvalidPart", "an uploaded part is not listed")
        chosen = [upload.parts[number] for number in numbers]
        if any(len(data) < self.min_part_size for data, _etag in chosen[:-1]):
            raise self._error(operation, key, "EntityTooSmall")
        return chosen

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._begin("AbortMultipartUpload")
        self._upload("AbortMultipartUpload", key, upload_id)
        del self._uploads[upload_id]

    async def list_multipart_uploads(self, prefix: str) -> list[MultipartUploadInfo]:
        await self._begin("ListMultipartUploads")
        found = [MultipartUploadInfo(u.key, upload_id, u.initiated_ns)
                 for upload_id, u in self._uploads.items() if u.key.startswith(prefix)]
        return sorted(found, key=lambda u: (u.key, u.initiated_ns))  # S3: by key, then age

    def open_uploads(self) -> list[MultipartUploadInfo]:
        """The multipart uploads not completed or aborted yet, for tests to look at without a
        request (nothing counted, no checkpoint)."""
        return sorted((MultipartUploadInfo(u.key, upload_id, u.initiated_ns)
                       for upload_id, u in self._uploads.items()),
                      key=lambda u: (u.key, u.initiated_ns))

    async def aclose(self) -> None:
        self._closed = True


def _name(entry: ObjectInfo | str) -> str:
    return entry.key if isinstance(entry, ObjectInfo) else entry

