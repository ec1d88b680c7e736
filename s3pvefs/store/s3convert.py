"""Conversions between S3's requests and answers as botocore has them and s3pvefs's values:
ETags and digests, timestamps, ranges, listing entries, copy sources, and a throttled read of a
GET's body. What ``s3store.py`` uses and does not need to see.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from typing import Any

import trio

from s3pvefs.config.s3options import ARCHIVE_CLASSES, SSE_C
from s3pvefs.config.settings import Config
from s3pvefs.errors import StoreError
from s3pvefs.store.objectstore import ObjectInfo
from s3pvefs.store.objectstore import is_md5 as _is_md5
from s3pvefs.store.objectstore import unquote_etag as _unquote
from s3pvefs.store.s3params import ObjectOptions
from s3pvefs.store.throttle import RateLimit

log = logging.getLogger("s3pvefs.store.s3store")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
READ_CHUNK = 1024 * 1024  # of a GET's body, when the download is limited


def contradicts(etag: str, expected: str) -> bool:
    """Whether an ETag of the form S3 uses proves the object is not what was sent (servers
    with other forms of multipart ETags are judged by size alone)."""
    digest, dash, count = etag.partition("-")
    same_form = _is_md5(digest) and (count.isdigit() if dash else "-" not in expected)
    return same_form and etag != expected


async def body_etag(data: bytes) -> str:
    """The ETag S3 gives a PUT of ``data`` where ETags are MD5s (``etags_are_md5``)."""
    return (await md5_of(data)).hex()


async def md5_of(data: bytes) -> bytes:
    """MD5 of a body, in a worker thread for large ones (hashlib releases the GIL)."""
    if len(data) < 1024 * 1024:
        return hashlib.md5(data, usedforsecurity=False).digest()
    return await trio.to_thread.run_sync(
        lambda: hashlib.md5(data, usedforsecurity=False).digest())


def unverified(operation: str, key: str, message: str) -> StoreError:
    """S3 answered, but not with what was sent: the upload failed (and is retried)."""
    return StoreError(operation, key, "UploadNotVerified", message)


def ns(timestamp: dt.datetime) -> int:
    return (timestamp - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def range_header(start: int, length: int | None) -> str | None:
    if start == 0 and length is None:
        return None
    if length is None:
        return f"bytes={start}-"
    return f"bytes={start}-{start + length - 1}"


def listed_object(entry: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=entry["Key"],
        size=entry["Size"],
        etag=_unquote(entry.get("ETag", "")),
        mtime_ns=ns(entry["LastModified"]),
        storage_class=entry.get("StorageClass"),
    )


async def read_throttled(body: Any, limit: RateLimit) -> bytes:
    """A GET's body read a turn of the download limit at a time (in the loop thread): the
    server's sending slows down with the reads (TCP's window), not just the arrival here."""
    chunks = []
    while chunk := await body.read(limit.chunk(READ_CHUNK)):
        await asyncio.sleep(limit.reserve(len(chunk)))
        chunks.append(chunk)
    return b"".join(chunks)


def warn_about_options(config: Config, options: ObjectOptions) -> None:
    archived = sorted(options.configured_classes() & ARCHIVE_CLASSES)
    if archived:
        log.warning(
            "new objects go to %s: they cannot be read back, renamed or have their attributes "
            "changed through the mount before they are restored", " and ".join(archived))
    if config.sse == SSE_C and (config.endpoint_url or "https:").startswith("http:"):
        log.warning("SSE-C over plain http sends the encryption key in clear text; AWS and "
                    "most servers refuse it: use an https endpoint")


def copy_source(bucket: str, key: str, version: str | None) -> dict[str, str]:
    return {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}


def snake_case(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
