"""What many test modules need: the FUSE skip mark, a look at the bucket with a plain boto3
client (the ``s3_client`` fixture) or into a MemoryStore, and virtual time for trio tests
(``run_on_virtual_time``, ``settle``; see docs/testing.md)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

import pytest
import trio
import trio.testing

from s3pvefs.store.memstore import StoredObject

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def keys(s3_client, bucket: str, prefix: str = "") -> set[str]:
    """Every key in ``bucket`` under ``prefix``."""
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def object_bytes(s3_client, bucket: str, key: str) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


def open_uploads(s3_client, bucket: str) -> list:
    """The bucket's multipart uploads not completed or aborted yet."""
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


# -- virtual time ----------------------------------------------------------------------------


class WorkerThreads:
    """Keeps a MockClock from jumping while a worker thread of ``trio.to_thread`` runs.

    The clock jumps to the next deadline as soon as every task is blocked
    (``autojump_threshold=0``). A task waiting for a thread looks blocked to trio, so a plain
    autojump clock would let injected delays, retries and ``fail_after`` timeouts expire while
    the block cache or the journal writes a file. Counted here, the threads in flight turn the
    autojump off (the loop then only waits for them), so a test sees the same order of events
    however slow the disk is."""

    def __init__(self, clock: trio.testing.MockClock | None) -> None:
        self.clock = clock
        self.running = 0
        self._none_running = trio.Event()
        self._none_running.set()

    def started(self) -> None:
        self.running += 1
        if self.running == 1:
            self._none_running = trio.Event()
            if self.clock is not None:
                self.clock.autojump_threshold = math.inf

    def done(self) -> None:
        self.running -= 1
        if self.running == 0:
            if self.clock is not None:
                self.clock.autojump_threshold = 0
            self._none_running.set()

    async def wait_none_running(self) -> None:
        await self._none_running.wait()


_worker_threads: WorkerThreads | None = None  # those of the run_on_virtual_time running now


def run_on_virtual_time(fn, *, clock=None, instruments=()):
    """A ``trio.run`` for pytest-trio (``pytest.mark.trio(run=run_on_virtual_time)``): the
    test runs on a fresh autojumping MockClock (``trio.lowlevel.current_clock()``) that never
    jumps while a worker thread runs (WorkerThreads: ``trio.to_thread.run_sync`` reports its
    threads while the test runs)."""
    clock = trio.testing.MockClock(autojump_threshold=0) if clock is None else clock
    return _run_counting_threads(fn, clock, WorkerThreads(clock), instruments)


def run_on_real_time(fn, *, clock=None, instruments=()):
    """``trio.run`` on the real clock, counting worker threads as run_on_virtual_time does (so
    that ``settle`` waits for them; it cannot see S3 requests in flight)."""
    return _run_counting_threads(fn, clock, WorkerThreads(None), instruments)


def _run_counting_threads(fn, clock, threads: WorkerThreads, instruments):
    global _worker_threads
    original = trio.to_thread.run_sync

    async def counted_run_sync(sync_fn, *args, **kwargs):
        threads.started()
        try:
            return await original(sync_fn, *args, **kwargs)
        finally:
            threads.done()

    trio.to_thread.run_sync = counted_run_sync
    _worker_threads = threads
    try:
        return trio.run(fn, clock=clock, instruments=instruments)
    finally:
        trio.to_thread.run_sync = original
        _worker_threads = None


async def settle() -> None:
    """Return once nothing more happens until (virtual) time passes: every task is blocked and
    no worker thread runs. Never lets time pass itself. Outside run_on_virtual_time: once
    every task is blocked."""
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if _worker_threads is None or _worker_threads.running == 0:
            return
        await _worker_threads.wait_none_running()


def crc64nvme(data: bytes) -> str:
    """CRC64NVME as S3 writes it (base64 of 8 big-endian bytes), straight from awscrt: the
    checksum s3pvefs records for every file it uploads (docs/integrity.md)."""
    import base64

    from awscrt import checksums

    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


CHECKSUM_META = "s3pvefs-crc64nvme"  # where a PUT's checksum is (docs/integrity.md)


def recorded_checksum(bucket, key: str, etag: str, metadata: dict[str, str]) -> str | None:
    """The checksum s3pvefs recorded for the object at ``key`` (with this ETag and metadata):
    in its metadata, else in an attribute index entry of its directory naming its ETag.
    ``bucket`` is a MemoryBucket or ServerBucket."""
    if CHECKSUM_META in metadata:
        return metadata[CHECKSUM_META]
    directory, _, name = key.rpartition("/")
    for index in bucket.keys(f"{directory}/.s3pvefs-attrs."):
        entry = json.loads(bucket.body(index)).get(name) or {}
        if entry.get("etag") == etag.strip('"') and "crc64nvme" in entry:
            return entry["crc64nvme"]
    return None


# -- the bucket, seen from outside the mount -------------------------------------------------


class MemoryBucket:
    """A MemoryStore's bucket as a plain S3 client sees it: reads and writes that bypass the
    store's request counters (tests count the mount's requests)."""

    def __init__(self, store) -> None:
        self.store = store

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.store.objects if key.startswith(prefix))

    def files(self, prefix: str = "") -> list[str]:
        """``keys`` without s3pvefs's attribute index objects (the files and markers)."""
        return [key for key in self.keys(prefix) if ".s3pvefs-attrs." not in key]

    def body(self, key: str) -> bytes:
        return self.store.objects[key].data

    def etag(self, key: str) -> str:
        return self.store.objects[key].etag

    def metadata(self, key: str) -> dict[str, str]:
        return dict(self.store.objects[key].metadata)

    def uploads(self) -> list[str]:
        """Keys of the multipart uploads not completed or aborted yet."""
        return sorted(upload.key for upload in self.store.open_uploads())

    def put(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
        self.store.objects[key] = StoredObject(
            body, hashlib.md5(body, usedforsecurity=False).hexdigest(),
            {name.lower(): value for name, value in (metadata or {}).items()},
            time.time_ns() // 10**9 * 10**9)

    def delete(self, key: str) -> None:
        self.store.objects.pop(key, None)


class ServerBucket:
    """The same view of a bucket on an S3 server (moto or RGW), through boto3."""

    def __init__(self, s3_client, bucket: str) -> None:
        self.client, self.bucket = s3_client, bucket

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(keys(self.client, self.bucket, prefix))

    def files(self, prefix: str = "") -> list[str]:
        """``keys`` without s3pvefs's attribute index objects (the files and markers)."""
        return [key for key in self.keys(prefix) if ".s3pvefs-attrs." not in key]

    def body(self, key: str) -> bytes:
        return object_bytes(self.client, self.bucket, key)

    def etag(self, key: str) -> str:
        return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')

    def metadata(self, key: str) -> dict[str, str]:
        return self.client.head_object(Bucket=self.bucket, Key=key)["Metadata"]

    def uploads(self) -> list[str]:
        return sorted(upload["Key"] for upload in open_uploads(self.client, self.bucket))

    def put(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata or {})

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)
