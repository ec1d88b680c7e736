"""The module that sends a mount's S3 requests: a trio-facing object store over aiobotocore.

aiobotocore runs in the asyncio loop of a ``bridge.AsyncioThread``; every request is a small
coroutine executed there, and only plain values (bytes, str, dicts of str) come back to trio.
The client comes from ``s3client.py``, the storage class and SSE parameters added to each
request from ``s3params.py``. Failures become ``StoreError`` with the S3 error code
(``s3errors.py``), which ``errors.py`` classifies (a ``StoreKind``); only the FUSE boundary
turns that into an errno (``errno_map.py``).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import trio
from botocore.exceptions import BotoCoreError

from s3pvefs.config.settings import Config
from s3pvefs.errors import ConfigError, StoreError, StoreKind
from s3pvefs.store.body import SliceBody
from s3pvefs.store.bridge import AsyncioThread
from s3pvefs.store.httpbody import SlicePayload  # noqa: F401 (registers how aiohttp sends slices)
from s3pvefs.store.objectstore import (  # noqa: F401 (re-exported: callers import them from here too)
    DELETE_BATCH,  # a global here: tests patch store.DELETE_BATCH
    BucketProtection,
    ListPage,
    MultipartUploadInfo,
    ObjectInfo,
    ObjectStore,
    ObjectVersion,
    StoreStats,
    multipart_etag,
)
from s3pvefs.store.objectstore import quote_etag as _quote
from s3pvefs.store.objectstore import unquote_etag as _unquote
from s3pvefs.store.s3client import CredentialInfo, open_client
from s3pvefs.store.s3convert import (
    body_etag,  # noqa: F401 (re-exported for the object writer)
    contradicts,
    copy_source,
    listed_object,
    md5_of,
    ns,
    range_header,
    read_throttled,
    snake_case,
    unverified,
    warn_about_options,
)
from s3pvefs.store.s3errors import (
    REQUEST_FAILURES,
    TRANSPORT_FAILURES,
    BodyReadError,
    to_store_error,
)
from s3pvefs.store.s3params import ObjectOptions
from s3pvefs.store.throttle import TrafficLimits

log = logging.getLogger("s3pvefs.store.s3store")

T = TypeVar("T")

# Requests whose key is the object they delete or replace (a copy's key is its source)
_CHANGES_KEY = ("DeleteObject", "PutObject", "CreateMultipartUpload", "CompleteMultipartUpload")
# What servers answer GetObjectLockConfiguration on a bucket without Object Lock
_NO_LOCK_CODES = ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound",
                  "NoSuchObjectLockConfiguration", "InvalidRequest")


# -- the store ------------------------------------------------------------------------------


class S3Store:
    """``ObjectStore`` over one aiobotocore client living in an ``AsyncioThread``."""

    def __init__(
        self, bridge: AsyncioThread, client: Any, client_stack: AsyncExitStack, config: Config,
        credentials: CredentialInfo | None = None, limits: TrafficLimits | None = None,
    ) -> None:
        assert config.bucket
        self.bucket: str = config.bucket
        self.stats = StoreStats()
        self.options = ObjectOptions.from_config(config)
        self.credentials = credentials or CredentialInfo(None, False, None)
        self._bridge = bridge
        self._client = client
        self._client_stack = client_stack
        self._region = config.region
        self._max_attempts = max(1, config.max_attempts)
        self._limiter = trio.CapacityLimiter(config.max_connections)
        self.limits = limits or TrafficLimits.from_config(config)
        self._closed = False
        # botocore says in each answer how many attempts it made again before it.
        client.meta.events.register("after-call.s3", self._count_retries)
        warn_about_options(config, self.options)

    # -- plumbing --

    async def _request(
        self,
        operation: str,
        key: str | None,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        quiet_not_found: bool = False,
        quiet_codes: tuple[str, ...] = (),
    ) -> T:
        """Run ``fn(*args)`` in the loop under the limiter; count it and translate failures."""
        await trio.sleep(self.limits.requests.reserve(1))
        async with self._limiter:
            self.stats.requests[operation] += 1
            started = time.monotonic()
            try:
                result = await self._bridge.run(fn, *args)
            except REQUEST_FAILURES as exc:
                error = to_store_error(operation, key, exc)
                error.__cause__ = exc
                self.stats.finished(operation, time.monotonic() - started, error.kind)
                quiet = (quiet_not_found and error.not_found) or error.code in quiet_codes
                self._record_failure(error, quiet)
            else:
                self.stats.finished(operation, time.monotonic() - started, None)
                return result
        # A refusal because of Object Lock (a delete, an overwrite) says until when; the HEAD
        # that asks takes a connection of its own, outside the limiter.
        if error.kind is StoreKind.LOCKED and operation in _CHANGES_KEY:
            await self._log_lock(key)
        raise error

    def _count_retries(self, parsed: dict[str, Any] | None = None, **_: Any) -> None:
        """An after-call handler: it runs in the loop thread, the only one that adds."""
        retried = (parsed or {}).get("ResponseMetadata", {}).get("RetryAttempts", 0)
        self.stats.retries += retried

    async def _call(self, operation: str, key: str | None, **params: Any) -> dict[str, Any]:
        """One plain client call: ``operation`` is the S3 name, params go to botocore as is."""
        return await self._request(operation, key, self._call_in_loop, operation, params)

    async def _call_in_loop(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        method = getattr(self._client, snake_case(operation))
        response: dict[str, Any] = await method(Bucket=self.bucket, **params)
        response.pop("ResponseMetadata", None)
        return response

    def _record_failure(self, error: StoreError, quiet: bool) -> None:
        """Count and log a failed request; `quiet` ones (expected answers) only at DEBUG."""
        self.stats.errors[error.operation] += 1
        where = f"s3://{self.bucket}/{error.key}" if error.key else f"s3://{self.bucket}"
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "S3 request %s %s failed: %s: %s",
                error.operation, where, error.code, error.detail)

    # -- bucket --

    async def head_bucket(self) -> None:
        await self._call("HeadBucket", None)

    async def create_bucket(self, object_lock: bool = False) -> None:
        """Create the bucket (with Object Lock, which also turns versioning on)."""
        params: dict[str, Any] = {"ObjectLockEnabledForBucket": True} if object_lock else {}
        if self._region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self._request("CreateBucket", None, self._call_in_loop, "CreateBucket", params,
                                quiet_codes=("BucketAlreadyOwnedByYou",))
        except StoreError as error:
            if error.code != "BucketAlreadyOwnedByYou":  # created meanwhile: what we wanted
                raise

    async def bucket_region(self) -> str:
        """The bucket's LocationConstraint as a region name (us-east-1 answers none)."""
        response = await self._call("GetBucketLocation", None)
        return response.get("LocationConstraint") or "us-east-1"

    async def get_lifecycle(self) -> dict[str, Any]:
        """The bucket's lifecycle configuration: {"Rules": [...]} and any other top-level
        setting the server returned; {"Rules": []} when the bucket has none."""
        try:
            return await self._request(
                "GetBucketLifecycleConfiguration", None, self._call_in_loop,
                "GetBucketLifecycleConfiguration", {},
                quiet_codes=("NoSuchLifecycleConfiguration",),
            )
        except StoreError as error:
            if error.code == "NoSuchLifecycleConfiguration":
                return {"Rules": []}
            raise

    async def put_lifecycle(self, configuration: dict[str, Any]) -> None:
        """Replace the bucket's lifecycle configuration (no rules left: delete it)."""
        rules = configuration.get("Rules") or []
        if not rules:
            await self._call("DeleteBucketLifecycle", None)
            return
        params: dict[str, Any] = {"LifecycleConfiguration": {"Rules": rules}}
        if "TransitionDefaultMinimumObjectSize" in configuration:
            params["TransitionDefaultMinimumObjectSize"] = (
                configuration["TransitionDefaultMinimumObjectSize"]
            )
        await self._call("PutBucketLifecycleConfiguration", None, **params)

    @property
    def etags_are_md5(self) -> bool:
        return self.options.etags_are_md5

    # -- objects --

    async def head(self, key: str, version_id: str | None = None,
                   with_checksum: bool = False) -> ObjectInfo:
        """An object's size, ETag, metadata, class, encryption and Object Lock (of one version
        with ``version_id``); ``with_checksum`` also asks for the whole-object checksum S3
        keeps, where it keeps one."""
        extra = {"VersionId": version_id} if version_id else {}
        if with_checksum:
            extra["ChecksumMode"] = "ENABLED"
        response = await self._request(
            "HeadObject", key, self._call_in_loop, "HeadObject",
            {"Key": key, **extra, **self.options.sse_c}, quiet_not_found=True,
        )
        until = response.get("ObjectLockRetainUntilDate")
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=_unquote(response.get("ETag", "")),
            mtime_ns=ns(response["LastModified"]),
            metadata=dict(response.get("Metadata", {})),
            storage_class=response.get("StorageClass"),
            encryption="SSE-C" if response.get("SSECustomerAlgorithm")
            else response.get("ServerSideEncryption"),
            kms_key_id=response.get("SSEKMSKeyId"),
            lock_mode=response.get("ObjectLockMode"),
            retain_until_ns=ns(until) if until else None,
            crc64nvme=(response.get("ChecksumCRC64NVME")
                       if response.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT" else None),
        )

    async def get(
        self, key: str, start: int = 0, length: int | None = None, if_match: str | None = None,
        version_id: str | None = None,
    ) -> bytes:
        if length == 0:
            return b""
        params: dict[str, Any] = {"Key": key, **self.options.sse_c}
        if version_id is not None:
            params["VersionId"] = version_id
        if (byte_range := range_header(start, length)) is not None:
            params["Range"] = byte_range
        if if_match is not None:
            params["IfMatch"] = _quote(if_match)
        data = await self._get_with_body_retries(key, params)
        self.stats.bytes_received += len(data)
        return data

    async def get_range(self, key: str, start: int, length: int) -> tuple[bytes, str | None]:
        """A ranged GET that also returns the Content-Range header the server sent (None: it
        answered the whole object), for `s3pvefs check`."""
        params = {"Key": key, "Range": range_header(start, length), **self.options.sse_c}
        return await self._request("GetObject", key, self._get_range_in_loop, params)

    async def _get_range_in_loop(self, params: dict[str, Any]) -> tuple[bytes, str | None]:
        response = await self._client.get_object(Bucket=self.bucket, **params)
        async with response["Body"] as body:
            return await body.read(), response.get("ContentRange")

    async def _get_with_body_retries(self, key: str, params: dict[str, Any]) -> bytes:
        # botocore retries a request, not a body cut off mid-stream; that is done here.
        attempt = 1
        while True:
            try:
                return await self._request(
                    "GetObject", key, self._get_in_loop, params, quiet_not_found=True
                )
            except StoreError as error:
                if error.code != "IncompleteBody" or attempt >= self._max_attempts:
                    raise
                attempt += 1

    async def _get_in_loop(self, params: dict[str, Any]) -> bytes:
        response = await self._client.get_object(Bucket=self.bucket, **params)
        async with response["Body"] as body:
            try:
                if self.limits.download.rate() is None:
                    return await body.read()  # type: ignore[no-any-return]
                return await read_throttled(body, self.limits.download)
            except TRANSPORT_FAILURES as exc:
                raise BodyReadError(exc) from exc

    async def put(
        self, key: str, data: bytes | SliceBody, metadata: dict[str, str], *,
        storage_class: str | None = None,
    ) -> str:
        """PUT one object; `storage_class` overrides the configured one (s3pvefs check). A
        ``SliceBody`` is read from its file as it is sent.

        Returns the ETag once S3 has shown that it stored exactly these bytes: it checked the
        body against its Content-MD5, and the ETag it answers is the body's MD5 (where the
        answer has none, or another, a HEAD decides)."""
        digest, response = await self._send("PutObject", data, dict(
            Key=key, Metadata=metadata, **self.options.for_create(key, storage_class)))
        self.stats.bytes_sent += len(data)  # counted once accepted: failures are no progress
        expected = digest.hex() if self.options.etags_are_md5 else None
        return await self._confirm("PutObject", key, response, expected, len(data))

    async def _send(self, operation: str, body: bytes | SliceBody,
                    params: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """A request with a body and its Content-MD5 (PutObject, UploadPart), under the upload
        limit; the body's MD5 and the answer. A file slice goes through a reader of its own."""
        if isinstance(body, SliceBody):
            params["ContentMD5"] = base64.b64encode(body.md5).decode()
            return body.md5, await self._request(operation, params["Key"], self._send_slice,
                                                 operation, params, body)
        digest = await md5_of(body)
        await trio.sleep(self.limits.upload.reserve(len(body)))
        params["ContentMD5"] = base64.b64encode(digest).decode()
        return digest, await self._call(operation, params["Key"], Body=body, **params)

    async def _send_slice(self, operation: str, params: dict[str, Any],
                          body: SliceBody) -> dict[str, Any]:
        with body.slice.open(self.limits.upload) as reader:
            return await self._call_in_loop(operation, {**params, "Body": reader})

    async def delete(self, key: str) -> None:
        await self._call("DeleteObject", key, Key=key)

    async def _log_lock(self, key: str) -> None:
        """Say which object a lock protects, and until when (a HEAD)."""
        try:
            info = await self.head(key)
        except StoreError:
            info = None
        until = ("an unknown date" if info is None or info.retain_until_ns is None else
                 dt.datetime.fromtimestamp(info.retain_until_ns / 1e9, dt.timezone.utc)
                 .isoformat(timespec="seconds"))
        mode = info.lock_mode if info is not None and info.lock_mode else "a lock"
        log.error("S3 refuses to delete or replace s3://%s/%s: it is protected by Object Lock "
                  "(%s) until %s", self.bucket, key, mode, until)

    async def delete_many(self, keys: list[str]) -> None:
        for first in range(0, len(keys), DELETE_BATCH):
            await self._delete_batch(keys[first:first + DELETE_BATCH])

    async def _delete_batch(self, keys: list[str]) -> None:
        response = await self._call(
            "DeleteObjects", keys[0],
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        failures = response.get("Errors") or []
        if failures:
            first = failures[0]
            error = StoreError(
                "DeleteObjects", first.get("Key"), first.get("Code"),
                f"{len(failures)} of {len(keys)} keys not deleted; first: {first.get('Message')}",
            )
            self._record_failure(error, quiet=False)
            raise error

    async def list_page(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        params: dict[str, Any] = {"Prefix": prefix, "MaxKeys": max_keys}
        if delimiter is not None:
            params["Delimiter"] = delimiter
        if token is not None:
            params["ContinuationToken"] = token
        response = await self._call("ListObjectsV2", prefix, **params)
        truncated = bool(response.get("IsTruncated"))
        return ListPage(
            objects=[listed_object(entry) for entry in response.get("Contents", [])],
            prefixes=[entry["Prefix"] for entry in response.get("CommonPrefixes", [])],
            next_token=response.get("NextContinuationToken") if truncated else None,
        )

    async def copy(
        self, src_key: str, dst_key: str, metadata: dict[str, str] | None = None,
        if_match: str | None = None, src_version: str | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "Key": dst_key,
            "CopySource": copy_source(self.bucket, src_key, src_version),
        }
        if metadata is None:
            params["MetadataDirective"] = "COPY"
        else:
            params["MetadataDirective"] = "REPLACE"
            params["Metadata"] = metadata
        if if_match is not None:
            params["CopySourceIfMatch"] = _quote(if_match)
        # S3 gives a copy the class and encryption asked for, not the source's.
        params.update(self.options.for_create(dst_key, retention=False),
                      **self.options.sse_c_source)
        response = await self._call("CopyObject", src_key, **params)
        etag = _unquote(response.get("CopyObjectResult", {}).get("ETag") or "")
        await self._ensure_retention(dst_key, None)
        return etag or (await self.head(dst_key)).etag  # no ETag in the answer: ask

    # -- multipart --

    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        response = await self._call(
            "CreateMultipartUpload", key, Key=key, Metadata=metadata,
            **self.options.for_create(key),
        )
        return response["UploadId"]  # type: ignore[no-any-return]

    async def upload_part(self, key: str, upload_id: str, part_number: int,
                          body: bytes | SliceBody) -> str:
        """Upload one part; its ETag, checked as for ``put`` (no HEAD can see a part)."""
        digest, response = await self._send("UploadPart", body, dict(
            Key=key, UploadId=upload_id, PartNumber=part_number, **self.options.sse_c))
        self.stats.bytes_sent += len(body)
        etag = _unquote(response.get("ETag") or "")
        if not etag:
            raise unverified("UploadPart", key, f"part {part_number}: no ETag in the answer")
        if self.options.etags_are_md5 and etag.lower() != digest.hex():
            raise unverified("UploadPart", key, f"part {part_number}: the server answered "
                                                f"ETag {etag} for a body whose MD5 is "
                                                f"{digest.hex()}")
        return etag

    async def upload_part_copy(
        self, key: str, upload_id: str, part_number: int, src_key: str, start: int,
        end_inclusive: int, if_match: str | None = None, src_version: str | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "CopySource": copy_source(self.bucket, src_key, src_version),
            "CopySourceRange": f"bytes={start}-{end_inclusive}",
            **self.options.sse_c,
            **self.options.sse_c_source,
        }
        if if_match is not None:
            params["CopySourceIfMatch"] = _quote(if_match)
        response = await self._call("UploadPartCopy", src_key, **params)
        etag = _unquote(response.get("CopyPartResult", {}).get("ETag") or "")
        if not etag:
            raise unverified("UploadPartCopy", key, f"part {part_number}: no ETag in the answer")
        return etag

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]], size: int
    ) -> str:
        """Complete an upload of ``size`` bytes; returns the object's ETag once S3 has shown
        that the object is made of these parts: the answer's ETag is the MD5 of the parts'
        MD5s, "-" and their count, or else (Ceph RGW 16.2 answers an empty one) a HEAD shows
        the size and the ETag that later conditional requests must use."""
        ordered = [{"PartNumber": number, "ETag": _quote(etag)} for number, etag in sorted(parts)]
        response = await self._call(
            "CompleteMultipartUpload", key,
            Key=key, UploadId=upload_id, MultipartUpload={"Parts": ordered},
            **self.options.sse_c,  # AWS wants the SSE-C key here when a bucket policy asks
        )
        expected = (multipart_etag([etag for _, etag in sorted(parts)])
                    if self.options.etags_are_md5 else None)
        etag = await self._confirm("CompleteMultipartUpload", key, response, expected, size)
        await self._ensure_retention(key, "CreateMultipartUpload")
        return etag

    async def _ensure_retention(self, key: str, asked_in: str | None) -> None:
        """An object made under a retained directory has its Object Lock, or gets it now:
        servers that accept the headers and ignore them exist (Ceph RGW 16 and moto on
        multipart uploads), and a backup must not stay deletable because of them. Copies
        never ask (``asked_in`` None): their retention is always set here."""
        wanted = self.options.retention(key)
        if not wanted:
            return
        found = await self.head(key)
        if found.lock_mode and found.retain_until_ns:
            return
        if asked_in is not None:
            log.warning("the server did not apply the Object Lock retention asked for in %s "
                        "to %s; setting it with PutObjectRetention", asked_in, key)
        await self._call("PutObjectRetention", key, Key=key, Retention={
            "Mode": wanted["ObjectLockMode"],
            "RetainUntilDate": wanted["ObjectLockRetainUntilDate"]})

    async def _confirm(self, operation: str, key: str, response: dict[str, Any],
                       expected: str | None, size: int) -> str:
        """The ETag of an object just written: the answer's when it is the one expected;
        otherwise a HEAD's, once it shows the size sent and an ETag that does not contradict
        what was sent (a multipart ETag of another form than S3's is judged by size)."""
        answered = _unquote(response.get("ETag") or "")
        if answered and (expected is None or answered.lower() == expected):
            return answered
        info = await self.head(key)
        found = info.etag
        if info.size != size:
            raise unverified(operation, key, f"the object holds {info.size} bytes where "
                                              f"{size} were sent")
        if not found or (answered and found != answered):
            raise unverified(operation, key, f"the server answered ETag {answered!r}, "
                                              f"a HEAD shows {found!r}")
        if expected is not None and contradicts(found.lower(), expected):
            raise unverified(operation, key, f"the object's ETag is {found}, the data sent "
                                              f"gives {expected}")
        return found

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call("AbortMultipartUpload", key, Key=key, UploadId=upload_id)

    async def list_multipart_uploads(self, prefix: str) -> list[MultipartUploadInfo]:
        uploads: list[MultipartUploadInfo] = []
        markers: dict[str, str] = {}
        while True:
            response = await self._call("ListMultipartUploads", prefix, Prefix=prefix, **markers)
            uploads.extend(
                MultipartUploadInfo(entry["Key"], entry["UploadId"], ns(entry["Initiated"]))
                for entry in response.get("Uploads", [])
            )
            if not response.get("IsTruncated"):
                return uploads
            markers = {
                "KeyMarker": response.get("NextKeyMarker", ""),
                "UploadIdMarker": response.get("NextUploadIdMarker", ""),
            }

    # -- versions and Object Lock (admin commands; the filesystem never asks) --

    async def bucket_protection(self) -> BucketProtection:
        """The bucket's versioning status and Object Lock configuration."""
        versioning = (await self._call("GetBucketVersioning", None)).get("Status")
        try:
            lock = await self._request(
                "GetObjectLockConfiguration", None, self._call_in_loop,
                "GetObjectLockConfiguration", {}, quiet_codes=_NO_LOCK_CODES)
        except StoreError as error:
            if error.code not in _NO_LOCK_CODES:
                raise
            lock = {}
        configuration = lock.get("ObjectLockConfiguration") or {}
        default = (configuration.get("Rule") or {}).get("DefaultRetention") or {}
        period = (f"{default['Days']}d" if "Days" in default
                  else f"{default['Years']}y" if "Years" in default else None)
        return BucketProtection(
            versioning=versioning or "Disabled",
            object_lock=configuration.get("ObjectLockEnabled") == "Enabled",
            default_mode=default.get("Mode"), default_period=period)

    async def list_versions(self, prefix: str) -> list[ObjectVersion]:
        """Every version and delete marker under ``prefix``, newest first per key."""
        found: list[ObjectVersion] = []
        markers: dict[str, str] = {}
        while True:
            response = await self._call("ListObjectVersions", prefix, Prefix=prefix, **markers)
            for entry in response.get("Versions", []):
                found.append(ObjectVersion(entry["Key"], entry["VersionId"], entry["Size"],
                                           _unquote(entry.get("ETag", "")),
                                           ns(entry["LastModified"]), entry["IsLatest"], False))
            for entry in response.get("DeleteMarkers", []):
                found.append(ObjectVersion(entry["Key"], entry["VersionId"], 0, "",
                                           ns(entry["LastModified"]), entry["IsLatest"], True))
            if not response.get("IsTruncated"):
                break
            markers = {"KeyMarker": response.get("NextKeyMarker", ""),
                       "VersionIdMarker": response.get("NextVersionIdMarker", "")}
        return sorted(found, key=lambda v: (v.key, -v.mtime_ns, not v.is_latest))

    # -- teardown --

    async def aclose(self) -> None:
        """Close the client inside its loop, then stop the loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                await self._bridge.run(self._client_stack.aclose)
            except Exception:
                log.warning("closing the S3 client failed", exc_info=True)
            await trio.to_thread.run_sync(self._bridge.stop)


@asynccontextmanager
async def open_s3_store(config: Config,
                        limits: TrafficLimits | None = None) -> AsyncIterator[S3Store]:
    """Start the loop thread, create the client in it, and tear both down on exit."""
    if not config.bucket:
        raise ConfigError("no bucket configured")
    bridge = AsyncioThread()
    await trio.to_thread.run_sync(bridge.start)
    try:
        client_stack, client, credentials = await bridge.run(open_client, config)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(bridge.stop)
        if isinstance(exc, (BotoCoreError, ValueError, OSError)):
            raise ConfigError(f"cannot create the S3 client: {exc}") from exc
        raise
    store = S3Store(bridge, client, client_stack, config, credentials, limits)
    try:
        yield store
    finally:
        await store.aclose()
