"""An ObjectStore wrapper that injects failures and delays, for tests of the layers above."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from s3pvefs.errors import StoreError
from s3pvefs.store.body import SliceBody
from s3pvefs.store.objectstore import (
    ListPage,
    MultipartUploadInfo,
    ObjectInfo,
    ObjectStore,
    StoreStats,
)

ANY_OPERATION = "*"

# ObjectStore method -> S3 operation name (the names StoreStats counts).
OPERATIONS: dict[str, str] = {
    "head_bucket": "HeadBucket",
    "create_bucket": "CreateBucket",
    "head": "HeadObject",
    "get": "GetObject",
    "put": "PutObject",
    "delete": "DeleteObject",
    "delete_many": "DeleteObjects",
    "list_page": "ListObjectsV2",
    "copy": "CopyObject",
    "create_multipart": "CreateMultipartUpload",
    "upload_part": "UploadPart",
    "upload_part_copy": "UploadPartCopy",
    "complete_multipart": "CompleteMultipartUpload",
    "abort_multipart": "AbortMultipartUpload",
    "list_multipart_uploads": "ListMultipartUploads",
}
_KNOWN = frozenset(OPERATIONS.values()) | {ANY_OPERATION}

KeyFilter = Callable[[str], bool]


def store_error(operation: str, code: str, key: str | None = None,
                message: str = "injected fault") -> StoreError:
    """A StoreError as S3Store would raise it, e.g. ``store_error("GetObject", "NoSuchKey")``."""
    return StoreError(operation, key, code, message)


@dataclass
class _FailRule:
    operation: str
    error: BaseException
    remaining: int | None  # None: until cleared
    key_filter: KeyFilter | None

    def matches(self, operation: str, keys: tuple[str, ...]) -> bool:
        if self.operation not in (operation, ANY_OPERATION):
            return False
        return self.key_filter is None or any(self.key_filter(key) for key in keys)


class FaultInjectingStore(ObjectStore):
    """Delegates to ``inner`` unless a rule says to fail or delay the request first.

    ``key_filter`` is called with each key a request involves (both keys of a copy, every key
    of ``delete_many``, the prefix of a listing, "" for bucket requests); the rule applies when
    any of them matches. The operation ``"*"`` matches every request.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self._fail_rules: list[_FailRule] = []
        self._delays: dict[str, float] = {}
        self.injected: collections.Counter[str] = collections.Counter()  # operation -> faults

    @property
    def stats(self) -> StoreStats:
        return self.inner.stats

    @property
    def etags_are_md5(self) -> bool:
        return self.inner.etags_are_md5

    # -- rules --

    def fail(self, operation: str, error: BaseException, times: int | None = None,
             key_filter: KeyFilter | None = None) -> None:
        """Make ``operation`` raise ``error`` (``times`` times, or until ``clear()``)."""
        _check_operation(operation)
        if times is not None and times <= 0:
            raise ValueError("times must be positive or None")
        self._fail_rules.append(_FailRule(operation, error, times, key_filter))

    def delay(self, operation: str, seconds: float) -> None:
        """Sleep ``seconds`` before every ``operation`` request (0 removes the delay)."""
        _check_operation(operation)
        if seconds > 0:
            self._delays[operation] = seconds
        else:
            self._delays.pop(operation, None)

    def clear(self) -> None:
        self._fail_rules.clear()
        self._delays.clear()

    async def _before(self, operation: str, keys: Iterable[str]) -> None:
        seconds = self._delays.get(operation, self._delays.get(ANY_OPERATION, 0.0))
        if seconds:
            await trio.sleep(seconds)
        key_tuple = tuple(keys)
        for rule in self._fail_rules:
            if rule.matches(operation, key_tuple):
                self._consume(rule)
                self.injected[operation] += 1
                # A fresh traceback each time: re-raising one instance would keep growing it.
                raise rule.error.with_traceback(None)

    def _consume(self, rule: _FailRule) -> None:
        if rule.remaining is None:
            return
        rule.remaining -= 1
        if rule.remaining == 0:
            self._fail_rules.remove(rule)

    # -- ObjectStore --

    async def head_bucket(self) -> None:
        await self._before("HeadBucket", ("",))
        await self.inner.head_bucket()

    async def create_bucket(self) -> None:
        await self._before("CreateBucket", ("",))
        await self.inner.create_bucket()

    async def head(self, key: str) -> ObjectInfo:
        await self._before("HeadObject", (key,))
        return await self.inner.head(key)

    async def get(self, key: str, start: int = 0, length: int | None = None,
                  if_match: str | None = None) -> bytes:
        await self._before("GetObject", (key,))
        return await self.inner.get(key, start, length, if_match)

    async def put(self, key: str, data: bytes | SliceBody, metadata: dict[str, str]) -> str:
        await self._before("PutObject", (key,))
        return await self.inner.put(key, data, metadata)

    async def delete(self, key: str) -> None:
        await self._before("DeleteObject", (key,))
        await self.inner.delete(key)

    async def delete_many(self, keys: list[str]) -> None:
        await self._before("DeleteObjects", keys)
        await self.inner.delete_many(keys)

    async def list_page(self, prefix: str, delimiter: str | None = "/",
                        token: str | None = None, max_keys: int = 1000) -> ListPage:
        await self._before("ListObjectsV2", (prefix,))
        return await self.inner.list_page(prefix, delimiter, token, max_keys)

    async def copy(self, src_key: str, dst_key: str, metadata: dict[str, str] | None = None,
                   if_match: str | None = None) -> str:
        await self._before("CopyObject", (src_key, dst_key))
        return await self.inner.copy(src_key, dst_key, metadata, if_match)

    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        await self._before("CreateMultipartUpload", (key,))
        return await self.inner.create_multipart(key, metadata)

    async def upload_part(self, key: str, upload_id: str, part_number: int,
                          data: bytes | SliceBody) -> str:
        await self._before("UploadPart", (key,))
        return await self.inner.upload_part(key, upload_id, part_number, data)

    async def upload_part_copy(self, key: str, upload_id: str, part_number: int, src_key: str,
                               start: int, end_inclusive: int,
                               if_match: str | None = None) -> str:
        await self._before("UploadPartCopy", (key, src_key))
        return await self.inner.upload_part_copy(
            key, upload_id, part_number, src_key, start, end_inclusive, if_match
        )

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: list[tuple[int, str]], size: int) -> str:
        await self._before("CompleteMultipartUpload", (key,))
        return await self.inner.complete_multipart(key, upload_id, parts, size)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._before("AbortMultipartUpload", (key,))
        await self.inner.abort_multipart(key, upload_id)

    async def list_multipart_uploads(self, prefix: str) -> list[MultipartUploadInfo]:
        await self._before("ListMultipartUploads", (prefix,))
        return await self.inner.list_multipart_uploads(prefix)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _check_operation(operation: str) -> None:
    if operation not in _KNOWN:
        raise ValueError(f"unknown S3 operation {operation!r}; expected one of {sorted(_KNOWN)}")
