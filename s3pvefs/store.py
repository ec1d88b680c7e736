"""The only module that talks to S3: a trio-facing object store over aiobotocore.

aiobotocore runs in the asyncio loop of a ``bridge.AsyncioThread``; every request is a small
coroutine executed there, and only plain values (bytes, str, dicts of str) come back to trio.
Failures become ``StoreError`` with the S3 error code, which ``errors.py`` classifies (a
``StoreKind``); only the FUSE boundary turns that into an errno (``errno_map.py``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import trio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from . import logsetup
from .bridge import AsyncioThread
from .config import Config
from .errors import ConfigError, StoreError
from .names import INDEX_PREFIX
from .objectstore import (  # noqa: F401 (re-exported: callers import them from here too)
    DELETE_BATCH,  # a global here: tests patch store.DELETE_BATCH
    ListPage,
    MultipartUploadInfo,
    ObjectInfo,
    ObjectStore,
    StoreStats,
    multipart_etag,
)
from .objectstore import is_md5 as _is_md5
from .objectstore import quote_etag as _quote
from .objectstore import unquote_etag as _unquote
from .s3options import ARCHIVE_CLASSES, SSE_C, SSE_KMS, SSE_S3, storage_class_for

log = logging.getLogger("s3pvefs.store")

T = TypeVar("T")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Network and protocol failures (anything else is a bug and propagates as is).
_TRANSPORT_FAILURES = (BotoCoreError, ClientError, aiohttp.ClientError, OSError)


# -- conversions ----------------------------------------------------------------------------


def _contradicts(etag: str, expected: str) -> bool:
    """Whether an ETag of the form S3 uses proves the object is not what was sent (servers
    with other forms of multipart ETags are judged by size alone)."""
    digest, dash, count = etag.partition("-")
    same_form = _is_md5(digest) and (count.isdigit() if dash else "-" not in expected)
    return same_form and etag != expected


async def body_etag(data: bytes) -> str:
    """The ETag S3 gives a PUT of ``data`` where ETags are MD5s (``etags_are_md5``)."""
    return (await _md5(data)).hex()


async def _md5(data: bytes) -> bytes:
    """MD5 of a body, in a worker thread for large ones (hashlib releases the GIL)."""
    if len(data) < 1024 * 1024:
        return hashlib.md5(data, usedforsecurity=False).digest()
    return await trio.to_thread.run_sync(
        lambda: hashlib.md5(data, usedforsecurity=False).digest())


def _unverified(operation: str, key: str, message: str) -> StoreError:
    """S3 answered, but not with what was sent: the upload failed (and is retried)."""
    return StoreError(operation, key, "UploadNotVerified", message)


def _ns(timestamp: dt.datetime) -> int:
    return (timestamp - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _range_header(start: int, length: int | None) -> str | None:
    if start == 0 and length is None:
        return None
    if length is None:
        return f"bytes={start}-"
    return f"bytes={start}-{start + length - 1}"


def _listed_object(entry: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=entry["Key"],
        size=entry["Size"],
        etag=_unquote(entry.get("ETag", "")),
        mtime_ns=_ns(entry["LastModified"]),
        storage_class=entry.get("StorageClass"),
    )


class _BodyReadError(Exception):
    """Reading a GET body failed after the response headers arrived (botocore won't retry)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


# Failures that become StoreError.
_REQUEST_FAILURES = (*_TRANSPORT_FAILURES, _BodyReadError)


def _error_from_client_error(operation: str, exc: ClientError) -> tuple[str | None, str]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.get("Code") or (str(status) if status else None)
    if code == "404":  # a HEAD answer has no body, so only the status says what is missing
        code = "NoSuchBucket" if operation == "HeadBucket" else "NotFound"
    message = error.get("Message") or str(exc)
    return code, f"HTTP {status}: {message}" if status else message


def to_store_error(operation: str, key: str | None, exc: BaseException) -> StoreError:
    """Describe a failed request as a StoreError (its code decides the kind)."""
    if isinstance(exc, ClientError):
        code, message = _error_from_client_error(operation, exc)
    elif isinstance(exc, EndpointConnectionError):
        code, message = "EndpointConnectionError", str(exc)
    elif isinstance(exc, ConnectTimeoutError):
        code, message = "ConnectTimeout", str(exc)
    elif isinstance(exc, ReadTimeoutError):
        code, message = "ReadTimeout", str(exc)
    elif isinstance(exc, _BodyReadError):
        code, message = "IncompleteBody", f"reading the response body failed: {exc.cause}"
    else:
        code, message = type(exc).__name__, str(exc) or type(exc).__name__
    return StoreError(operation, key, code, message)


# -- parameters from the configuration -----------------------------------------------------

# Names s3pvefs writes next to the data (attribute indexes, `s3pvefs check` probes): small,
# rewritten and read often, so they never go to a colder class than the server's default.
INTERNAL_NAME_PREFIX = ".s3pvefs-"
assert INDEX_PREFIX.startswith(INTERNAL_NAME_PREFIX)


@dataclass(frozen=True)
class ObjectOptions:
    """Request parameters the configuration adds, per kind of request.

    SSE-S3 and SSE-KMS are asked for only where an object is created (PutObject,
    CreateMultipartUpload, CopyObject): S3 rejects them on reads. SSE-C needs the key on every
    request that touches object data, and the source's key (the same one) on copies.
    """

    prefix: str = ""
    default_class: str | None = None
    class_by_dir: dict[str, str] = field(default_factory=dict)
    # PutObject, CreateMultipartUpload, CopyObject: SSE-S3, SSE-KMS or SSE-C
    on_create: dict[str, Any] = field(default_factory=dict, repr=False)
    # Every other request on object data (GET, HEAD, parts, completion): the SSE-C key
    sse_c: dict[str, Any] = field(default_factory=dict, repr=False)
    # CopyObject, UploadPartCopy: the SSE-C key of the source
    sse_c_source: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> ObjectOptions:
        on_create: dict[str, Any] = {}
        sse_c: dict[str, Any] = {}
        sse_c_source: dict[str, Any] = {}
        if config.sse == SSE_S3:
            on_create = {"ServerSideEncryption": "AES256"}
        elif config.sse == SSE_KMS:
            on_create = {"ServerSideEncryption": "aws:kms"}
            if config.kms_key_id:
                on_create["SSEKMSKeyId"] = config.kms_key_id
        elif config.sse == SSE_C:
            if not config.sse_customer_key:
                raise ConfigError("SSE-C is configured without a customer key")
            # botocore adds the key's MD5 and base64-encodes both (handlers.sse_md5), in its
            # own copy of the parameters: these dicts are reused as they are.
            customer_key = config.sse_customer_key
            sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer_key}
            on_create = dict(sse_c)
            sse_c_source = {"CopySourceSSECustomerAlgorithm": "AES256",
                            "CopySourceSSECustomerKey": customer_key}
        return cls(config.prefix, config.storage_class, dict(config.storage_class_by_dir),
                   on_create, sse_c, sse_c_source)

    @property
    def etags_are_md5(self) -> bool:
        """Whether S3 makes a PUT's or a part's ETag the MD5 of its body (not under SSE-C or
        SSE-KMS)."""
        return not self.sse_c and self.on_create.get("ServerSideEncryption") != "aws:kms"

    def storage_class(self, key: str) -> str | None:
        """The class a new object at `key` gets (None: the server's default)."""
        name = key.rsplit("/", 1)[-1]
        if not name or name.startswith(INTERNAL_NAME_PREFIX):
            return None  # a directory marker or an object of s3pvefs's own
        relative = key[len(self.prefix):] if key.startswith(self.prefix) else key
        return storage_class_for(relative, self.default_class, self.class_by_dir)

    def for_create(self, key: str, storage_class: str | None = None) -> dict[str, Any]:
        chosen = storage_class or self.storage_class(key)
        return {**self.on_create, **({"StorageClass": chosen} if chosen else {})}

    def configured_classes(self) -> set[str]:
        return {c for c in (self.default_class, *self.class_by_dir.values()) if c}


@dataclass(frozen=True)
class CredentialInfo:
    """Where the credentials in use come from (botocore's provider name), never the secret."""

    method: str | None  # "explicit", "env", "shared-credentials-file", "custom-process", ...
    refreshable: bool  # botocore refreshes them before they expire
    access_key_hint: str | None  # the key id's first characters, for telling keys apart


# -- client setup (runs in the loop thread) -------------------------------------------------


def _client_config(config: Config) -> AioConfig:
    return AioConfig(
        region_name=config.region,
        s3={"addressing_style": config.addressing_style},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"mode": config.retry_mode, "total_max_attempts": config.max_attempts},
        max_pool_connections=config.max_connections,
        # Many S3-compatible servers reject the CRC trailers botocore sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _client_kwargs(config: Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "region_name": config.region,
        "endpoint_url": config.endpoint_url,
        "config": _client_config(config),
    }
    if not config.verify_tls:
        kwargs["verify"] = False
    elif config.ca_bundle:
        kwargs["verify"] = config.ca_bundle
    if config.access_key_id and config.secret_access_key:
        kwargs["aws_access_key_id"] = config.access_key_id
        kwargs["aws_secret_access_key"] = config.secret_access_key
        kwargs["aws_session_token"] = config.session_token
    return kwargs


def _session(config: Config) -> AioSession:
    explicit_keys = bool(config.access_key_id and config.secret_access_key)
    if config.profile and not explicit_keys:
        return AioSession(profile=config.profile)
    return AioSession()  # the standard chain: env, shared files, instance metadata, ...


def open_s3_client(config: Config, session: AioSession | None = None) -> Any:
    """An aiobotocore S3 client with the mount's settings (endpoint, region, addressing style,
    timeouts, retries, connection pool, TLS, checksum mode, credentials), as an async context
    manager to enter in an asyncio loop.

    Every S3 client s3pvefs makes comes from here: the mount's store, and the direct client
    that `s3pvefs bench` measures the mount against, so that both talk to S3 alike.
    ``session`` is the one to ask for the credentials afterwards (default: a new one).
    """
    return (session or _session(config)).create_client("s3", **_client_kwargs(config))


async def _open_client(config: Config) -> tuple[AsyncExitStack, Any, CredentialInfo]:
    stack = AsyncExitStack()
    session = _session(config)
    # create_client resolves the credentials (chain or explicit) before it returns.
    client = await stack.enter_async_context(open_s3_client(config, session))
    try:
        credentials = await _credentials_in_use(session, config)
    except BaseException:
        await stack.aclose()
        raise
    return stack, client, credentials


async def _credentials_in_use(session: AioSession, config: Config) -> CredentialInfo:
    """Describe the client's credentials and mask their secrets in every log from now on."""
    if config.access_key_id and config.secret_access_key:
        return CredentialInfo("explicit", False, _key_hint(config.access_key_id))
    credentials = await session.get_credentials()  # the object the client signs with
    if credentials is None:
        return CredentialInfo(None, False, None)
    frozen = await credentials.get_frozen_credentials()
    for secret in (frozen.secret_key, frozen.token):
        if secret:
            logsetup.add_secret(secret)
    return CredentialInfo(
        credentials.method, isinstance(credentials, RefreshableCredentials),
        _key_hint(frozen.access_key),
    )


def _key_hint(access_key: str | None) -> str | None:
    if not access_key:
        return None
    return access_key[:4] + "***" if len(access_key) > 8 else "***"


# -- the store ------------------------------------------------------------------------------


class S3Store:
    """``ObjectStore`` over one aiobotocore client living in an ``AsyncioThread``."""

    def __init__(
        self, bridge: AsyncioThread, client: Any, client_stack: AsyncExitStack, config: Config,
        credentials: CredentialInfo | None = None,
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
        self._closed = False
        _warn_about_options(config, self.options)

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
        async with self._limiter:
            self.stats.requests[operation] += 1
            try:
                return await self._bridge.run(fn, *args)
            except _REQUEST_FAILURES as exc:
                error = to_store_error(operation, key, exc)
                quiet = (quiet_not_found and error.not_found) or error.code in quiet_codes
                self._record_failure(error, quiet)
                raise error from exc

    async def _call(self, operation: str, key: str | None, **params: Any) -> dict[str, Any]:
        """One plain client call: ``operation`` is the S3 name, params go to botocore as is."""
        return await self._request(operation, key, self._call_in_loop, operation, params)

    async def _call_in_loop(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        method = getattr(self._client, _snake_case(operation))
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

    async def create_bucket(self) -> None:
        params: dict[str, Any] = {}
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

    async def head(self, key: str) -> ObjectInfo:
        response = await self._request(
            "HeadObject", key, self._call_in_loop, "HeadObject",
            {"Key": key, **self.options.sse_c}, quiet_not_found=True,
        )
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=_unquote(response.get("ETag", "")),
            mtime_ns=_ns(response["LastModified"]),
            metadata=dict(response.get("Metadata", {})),
            storage_class=response.get("StorageClass"),
            encryption="SSE-C" if response.get("SSECustomerAlgorithm")
            else response.get("ServerSideEncryption"),
            kms_key_id=response.get("SSEKMSKeyId"),
        )

    async def get(
        self, key: str, start: int = 0, length: int | None = None, if_match: str | None = None
    ) -> bytes:
        if length == 0:
            return b""
        params: dict[str, Any] = {"Key": key, **self.options.sse_c}
        if (byte_range := _range_header(start, length)) is not None:
            params["Range"] = byte_range
        if if_match is not None:
            params["IfMatch"] = _quote(if_match)
        data = await self._get_with_body_retries(key, params)
        self.stats.bytes_received += len(data)
        return data

    async def get_range(self, key: str, start: int, length: int) -> tuple[bytes, str | None]:
        """A ranged GET that also returns the Content-Range header the server sent (None: it
        answered the whole object), for `s3pvefs check`."""
        params = {"Key": key, "Range": _range_header(start, length), **self.options.sse_c}
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
                return await body.read()  # type: ignore[no-any-return]
            except _TRANSPORT_FAILURES as exc:
                raise _BodyReadError(exc) from exc

    async def put(
        self, key: str, data: bytes, metadata: dict[str, str], *,
        storage_class: str | None = None,
    ) -> str:
        """PUT one object; `storage_class` overrides the configured one (s3pvefs check).

        Returns the ETag once S3 has shown that it stored exactly these bytes: it checked the
        body against its Content-MD5, and the ETag it answers is the body's MD5 (where the
        answer has none, or another, a HEAD decides)."""
        digest = await _md5(data)
        response = await self._call(
            "PutObject", key, Key=key, Body=data, Metadata=metadata,
            ContentMD5=base64.b64encode(digest).decode(),
            **self.options.for_create(key, storage_class),
        )
        self.stats.bytes_sent += len(data)  # counted once accepted: failures are no progress
        expected = digest.hex() if self.options.etags_are_md5 else None
        return await self._confirm("PutObject", key, response, expected, len(data))

    async def delete(self, key: str) -> None:
        await self._call("DeleteObject", key, Key=key)

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
            objects=[_listed_object(entry) for entry in response.get("Contents", [])],
            prefixes=[entry["Prefix"] for entry in response.get("CommonPrefixes", [])],
            next_token=response.get("NextContinuationToken") if truncated else None,
        )

    async def copy(
        self, src_key: str, dst_key: str, metadata: dict[str, str] | None = None,
        if_match: str | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "Key": dst_key,
            "CopySource": {"Bucket": self.bucket, "Key": src_key},
        }
        if metadata is None:
            params["MetadataDirective"] = "COPY"
        else:
            params["MetadataDirective"] = "REPLACE"
            params["Metadata"] = metadata
        if if_match is not None:
            params["CopySourceIfMatch"] = _quote(if_match)
        # S3 gives a copy the class and encryption asked for, not the source's.
        params.update(self.options.for_create(dst_key), **self.options.sse_c_source)
        response = await self._call("CopyObject", src_key, **params)
        etag = _unquote(response.get("CopyObjectResult", {}).get("ETag") or "")
        return etag or (await self.head(dst_key)).etag  # no ETag in the answer: ask

    # -- multipart --

    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        response = await self._call(
            "CreateMultipartUpload", key, Key=key, Metadata=metadata,
            **self.options.for_create(key),
        )
        return response["UploadId"]  # type: ignore[no-any-return]

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        """Upload one part; its ETag, checked as for ``put`` (no HEAD can see a part)."""
        digest = await _md5(data)
        response = await self._call(
            "UploadPart", key, Key=key, UploadId=upload_id, PartNumber=part_number, Body=data,
            ContentMD5=base64.b64encode(digest).decode(), **self.options.sse_c,
        )
        self.stats.bytes_sent += len(data)
        etag = _unquote(response.get("ETag") or "")
        if not etag:
            raise _unverified("UploadPart", key, f"part {part_number}: no ETag in the answer")
        if self.options.etags_are_md5 and etag.lower() != digest.hex():
            raise _unverified("UploadPart", key, f"part {part_number}: the server answered "
                                                 f"ETag {etag} for a body whose MD5 is "
                                                 f"{digest.hex()}")
        return etag

    async def upload_part_copy(
        self, key: str, upload_id: str, part_number: int, src_key: str, start: int,
        end_inclusive: int, if_match: str | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "CopySource": {"Bucket": self.bucket, "Key": src_key},
            "CopySourceRange": f"bytes={start}-{end_inclusive}",
            **self.options.sse_c,
            **self.options.sse_c_source,
        }
        if if_match is not None:
            params["CopySourceIfMatch"] = _quote(if_match)
        response = await self._call("UploadPartCopy", src_key, **params)
        etag = _unquote(response.get("CopyPartResult", {}).get("ETag") or "")
        if not etag:
            raise _unverified("UploadPartCopy", key, f"part {part_number}: no ETag in the answer")
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
        return await self._confirm("CompleteMultipartUpload", key, response, expected, size)

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
            raise _unverified(operation, key, f"the object holds {info.size} bytes where "
                                              f"{size} were sent")
        if not found or (answered and found != answered):
            raise _unverified(operation, key, f"the server answered ETag {answered!r}, "
                                              f"a HEAD shows {found!r}")
        if expected is not None and _contradicts(found.lower(), expected):
            raise _unverified(operation, key, f"the object's ETag is {found}, the data sent "
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
                MultipartUploadInfo(entry["Key"], entry["UploadId"], _ns(entry["Initiated"]))
                for entry in response.get("Uploads", [])
            )
            if not response.get("IsTruncated"):
                return uploads
            markers = {
                "KeyMarker": response.get("NextKeyMarker", ""),
                "UploadIdMarker": response.get("NextUploadIdMarker", ""),
            }

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


def _warn_about_options(config: Config, options: ObjectOptions) -> None:
    archived = sorted(options.configured_classes() & ARCHIVE_CLASSES)
    if archived:
        log.warning(
            "new objects go to %s: they cannot be read back, renamed or have their attributes "
            "changed through the mount before they are restored", " and ".join(archived))
    if config.sse == SSE_C and (config.endpoint_url or "https:").startswith("http:"):
        log.warning("SSE-C over plain http sends the encryption key in clear text; AWS and "
                    "most servers refuse it: use an https endpoint")


def _snake_case(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


@asynccontextmanager
async def open_s3_store(config: Config) -> AsyncIterator[S3Store]:
    """Start the loop thread, create the client in it, and tear both down on exit."""
    if not config.bucket:
        raise ConfigError("no bucket configured")
    bridge = AsyncioThread()
    await trio.to_thread.run_sync(bridge.start)
    try:
        client_stack, client, credentials = await bridge.run(_open_client, config)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(bridge.stop)
        if isinstance(exc, (BotoCoreError, ValueError, OSError)):
            raise ConfigError(f"cannot create the S3 client: {exc}") from exc
        raise
    store = S3Store(bridge, client, client_stack, config, credentials)
    try:
        yield store
    finally:
        await store.aclose()
