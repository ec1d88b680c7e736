"""What only the MemoryStore has: an injectable clock, trio checkpoints, its constructor's
parameters. What it shares with S3Store is in test_store_contract.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from s3pvefs.errors import StoreError
from s3pvefs.store.bridge import LoopStoppedError
from s3pvefs.store.faults import FaultInjectingStore, store_error
from s3pvefs.store.memstore import MemoryStore


async def test_times_come_from_the_clock(mock_clock: trio.testing.MockClock) -> None:
    store = MemoryStore(clock=trio.current_time)
    mock_clock.jump(1000.4)
    await store.put("a", b"1", {})
    upload_id = await store.create_multipart("big", {})
    mock_clock.jump(60)
    await store.put("b", b"2", {})
    assert (await store.head("a")).mtime_ns == 1000 * 10**9  # whole seconds, as HTTP dates
    assert (await store.head("b")).mtime_ns == 1060 * 10**9
    [upload] = await store.list_multipart_uploads("")
    assert (upload.upload_id, upload.initiated_ns) == (upload_id, 1000 * 10**9)
    listed = (await store.list_page("")).objects
    assert [o.mtime_ns for o in listed] == [1000 * 10**9, 1060 * 10**9]


async def test_every_request_is_a_checkpoint() -> None:
    store = MemoryStore()
    await store.put("k", b"data", {})
    requests = [store.head_bucket(), store.head("k"), store.get("k"), store.put("k", b"", {}),
                store.copy("k", "c"), store.list_page(""), store.delete("c"),
                store.delete_many(["c"]), store.list_multipart_uploads("")]
    for request in requests:
        with trio.testing.assert_checkpoints():
            await request


async def test_a_cancelled_request_has_no_effect() -> None:
    store = MemoryStore()
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.put("k", b"data", {})
    assert scope.cancelled_caught
    assert store.objects == {} and store.stats.snapshot()["requests"] == {}


async def test_requests_interleave_at_their_checkpoints() -> None:
    """Two tasks' requests alternate as two clients' would: neither runs all its own first."""
    store = MemoryStore()
    order: list[str] = []

    async def writer(name: str) -> None:
        for i in range(3):
            await store.put(f"{name}/{i}", b"", {})
            order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "a")
        nursery.start_soon(writer, "b")
    assert sorted(order) == ["a"] * 3 + ["b"] * 3
    assert order != sorted(order) and order != sorted(order, reverse=True)


async def test_min_part_size() -> None:
    store = MemoryStore(min_part_size=4)
    upload_id = await store.create_multipart("big", {})
    parts = [(n, await store.upload_part("big", upload_id, n, body))
             for n, body in ((1, b"four"), (2, b"x"))]
    await store.complete_multipart("big", upload_id, parts, 5)
    assert await store.get("big") == b"fourx"
    upload_id = await store.create_multipart("big", {})
    parts = [(n, await store.upload_part("big", upload_id, n, b"abc")) for n in (1, 2)]
    with pytest.raises(StoreError) as failure:
        await store.complete_multipart("big", upload_id, parts, 6)
    assert failure.value.code == "EntityTooSmall"


async def test_a_completion_of_another_size_fails() -> None:
    """As S3Store's check where the answer has no ETag (Ceph RGW): size is what was sent."""
    store = MemoryStore()
    upload_id = await store.create_multipart("big", {})
    part = await store.upload_part("big", upload_id, 1, b"x" * 100)
    with pytest.raises(StoreError) as failure:
        await store.complete_multipart("big", upload_id, [(1, part)], 101)
    assert failure.value.code == "UploadNotVerified" and "100 bytes" in str(failure.value)
    assert [u.upload_id for u in await store.list_multipart_uploads("")] == [upload_id]


async def test_duplicate_part_numbers_are_refused() -> None:
    store = MemoryStore()
    upload_id = await store.create_multipart("big", {})
    part = await store.upload_part("big", upload_id, 1, b"x")
    with pytest.raises(StoreError) as failure:
        await store.complete_multipart("big", upload_id, [(1, part), (1, part)], 2)
    assert failure.value.code == "InvalidPartOrder"


async def test_a_missing_bucket_and_its_creation() -> None:
    store = MemoryStore(bucket_exists=False)
    for request in (store.head_bucket(), store.put("k", b"", {}), store.list_page("")):
        with pytest.raises(StoreError) as failure:
            await request
        assert failure.value.code == "NoSuchBucket"
    await store.create_bucket()
    await store.head_bucket()
    await store.put("k", b"", {})


async def test_a_bad_continuation_token() -> None:
    store = MemoryStore()
    with pytest.raises(StoreError) as failure:
        await store.list_page("", token="not-a-token")
    assert failure.value.code == "InvalidArgument"


async def test_requests_after_aclose_fail() -> None:
    store = MemoryStore()
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(LoopStoppedError):  # what S3Store's closed loop thread raises
        await store.head("k")


async def test_under_the_fault_injecting_wrapper() -> None:
    store = MemoryStore()
    faulty = FaultInjectingStore(store)
    faulty.fail("PutObject", store_error("PutObject", "SlowDown"), times=1)
    with pytest.raises(StoreError):
        await faulty.put("k", b"v", {})
    assert "k" not in store.objects
    await faulty.put("k", b"v", {})
    assert faulty.stats is store.stats and store.stats.requests["PutObject"] == 1


def test_importable_without_botocore() -> None:
    """The memory store, the protocol and the fault wrapper need no aiobotocore."""
    code = ("import sys\n"
            "for name in ('aiobotocore', 'botocore', 'aiohttp', 'boto3'):\n"
            "    sys.modules[name] = None  # importing them now fails\n"
            "import s3pvefs.store.memstore, s3pvefs.store.faults, s3pvefs.store.objectstore\n"
            "assert 's3pvefs.store.s3store' not in sys.modules\n")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
