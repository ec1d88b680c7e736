"""The baseline: a direct S3 client with the mount's own client settings
(`s3client.open_s3_client`), counting its requests and bytes as the mount counts its own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from s3pvefs.store.s3client import open_s3_client

from .measure import KiB

if TYPE_CHECKING:
    from s3pvefs.config.settings import Config


class Counters:
    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_sent = 0
        self.bytes_received = 0

    def snapshot(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received}


class DirectClient:
    """An aiobotocore S3 client with the mount's own client settings, counting what it does.

    It lives on one asyncio loop (an ``asyncio.Runner``) in the calling thread; every method is
    blocking for the caller.
    """

    def __init__(self, config: Config):
        self.config = config
        self.bucket = config.bucket
        self.counters = Counters()
        self._runner = asyncio.Runner()
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    def __enter__(self) -> DirectClient:
        async def open_client() -> None:
            self._stack = contextlib.AsyncExitStack()
            self._client = await self._stack.enter_async_context(open_s3_client(self.config))

        self._runner.run(open_client())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            with contextlib.suppress(Exception):
                self._runner.run(self._stack.aclose())
        self._runner.close()

    def run(self, coroutine: Any) -> Any:
        return self._runner.run(coroutine)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        self.counters.requests[operation] += 1
        body = params.get("Body")
        if body is not None:
            self.counters.bytes_sent += len(body)
        method = getattr(self._client, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        return await method(Bucket=self.bucket, **params)

    async def get_bytes(self, key: str, start: int | None = None, length: int | None = None,
                        sink: Callable[[bytes], bool] | None = None,
                        chunk_size: int = 256 * KiB) -> int:
        """GET (a range of) an object; bytes received. ``sink`` may stop the transfer early."""
        params: dict[str, Any] = {"Key": key}
        if start is not None and length is not None:
            params["Range"] = f"bytes={start}-{start + length - 1}"
        response = await self.call("GetObject", **params)
        received = 0
        body = response["Body"]
        try:
            while True:
                chunk = await body.read(chunk_size)
                if not chunk:
                    break
                received += len(chunk)
                self.counters.bytes_received += len(chunk)
                if sink is not None and not sink(chunk):
                    break
        finally:
            body.close()
        return received

    # -- blocking helpers ---------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self.run(self.call("PutObject", Key=key, Body=data))

    def put_many(self, items: list[tuple[str, bytes]], concurrency: int) -> None:
        async def all_of_them() -> None:
            limit = asyncio.Semaphore(concurrency)

            async def one(key: str, data: bytes) -> None:
                async with limit:
                    await self.call("PutObject", Key=key, Body=data)

            await asyncio.gather(*(one(k, d) for k, d in items))

        self.run(all_of_them())

    def head_size(self, key: str) -> int:
        return int(self.run(self.call("HeadObject", Key=key))["ContentLength"])

    def upload_file(self, path: Path, key: str, part_size: int, concurrency: int,
                    on_part: Callable[[int], None] | None = None) -> None:
        """Multipart upload of a file, ``concurrency`` parts at a time (one PUT if it is small)."""
        size = path.stat().st_size

        async def upload() -> None:
            with path.open("rb") as source:
                if size < part_size:
                    await self.call("PutObject", Key=key, Body=source.read())
                    return
                created = await self.call("CreateMultipartUpload", Key=key)
                upload_id = created["UploadId"]
                limit = asyncio.Semaphore(concurrency)
                parts: dict[int, str] = {}

                async def one(number: int, offset: int) -> None:
                    async with limit:
                        source.seek(offset)  # no await between seek and read: safe
                        data = source.read(part_size)
                        answer = await self.call("UploadPart", Key=key, UploadId=upload_id,
                                                 PartNumber=number, Body=data)
                        parts[number] = answer["ETag"]
                        if on_part is not None:
                            on_part(len(data))

                try:
                    await asyncio.gather(*(one(n, off) for n, off in
                                           enumerate(range(0, size, part_size), start=1)))
                except BaseException:
                    with contextlib.suppress(Exception):
                        await self.call("AbortMultipartUpload", Key=key, UploadId=upload_id)
                    raise
                await self.call("CompleteMultipartUpload", Key=key, UploadId=upload_id,
                                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": parts[n]}
                                                           for n in sorted(parts)]})

        self.run(upload())

    def download(self, key: str, size: int, part_size: int, concurrency: int) -> int:
        """Parallel ranged GETs of a whole object into nothing; bytes received."""
        async def download() -> int:
            limit = asyncio.Semaphore(concurrency)

            async def one(offset: int) -> int:
                async with limit:
                    return await self.get_bytes(key, offset, min(part_size, size - offset))

            return sum(await asyncio.gather(*(one(off) for off in range(0, size, part_size))))

        return self.run(download())

    def list_keys(self, prefix: str, delimiter: str | None = None) -> list[str]:
        async def listing() -> list[str]:
            keys: list[str] = []
            token = None
            while True:
                params: dict[str, Any] = {"Prefix": prefix}
                if delimiter:
                    params["Delimiter"] = delimiter
                if token:
                    params["ContinuationToken"] = token
                page = await self.call("ListObjectsV2", **params)
                keys.extend(item["Key"] for item in page.get("Contents", []))
                if not page.get("IsTruncated"):
                    return keys
                token = page["NextContinuationToken"]

        return self.run(listing())

    def list_and_read(self, prefix: str, suffix: str, concurrency: int) -> int:
        """List ``prefix`` (one level) and GET every key ending in ``suffix``; how many."""
        keys = [k for k in self.list_keys(prefix, "/") if k.endswith(suffix)]
        async def read_all() -> None:
            limit = asyncio.Semaphore(concurrency)

            async def one(key: str) -> None:
                async with limit:
                    await self.get_bytes(key)

            await asyncio.gather(*(one(k) for k in keys))

        self.run(read_all())
        return len(keys)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` and abort its open multipart uploads."""
        keys = self.list_keys(prefix)

        async def delete() -> None:
            for start in range(0, len(keys), 1000):
                batch = keys[start:start + 1000]
                await self.call("DeleteObjects", Delete={
                    "Objects": [{"Key": k} for k in batch], "Quiet": True})
            uploads = await self.call("ListMultipartUploads", Prefix=prefix)
            for upload in uploads.get("Uploads", []):
                with contextlib.suppress(Exception):
                    await self.call("AbortMultipartUpload", Key=upload["Key"],
                                    UploadId=upload["UploadId"])

        self.run(delete())
