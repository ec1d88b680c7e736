"""The object store against a moto server process; the trio/asyncio bridge; fault injection."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid

import pytest
import trio

from s3pvefs.config.check import validate_config
from s3pvefs.config.settings import Config
from s3pvefs.config.values import MiB
from s3pvefs.errors import StoreError, StoreKind
from s3pvefs.store import s3store as store_module
from s3pvefs.store.bridge import AsyncioThread, LoopStoppedError
from s3pvefs.store.faults import FaultInjectingStore, store_error
from s3pvefs.store.s3errors import BodyReadError
from s3pvefs.store.s3store import S3Store, multipart_etag, open_s3_store

PART = 5 * MiB  # S3's (and moto's) minimum size of a part that is not the last


# -- objects --------------------------------------------------------------------------------


async def test_put_get_and_ranges(store: S3Store) -> None:
    data = bytes(range(256)) * 4
    etag = await store.put("dir/file", data, {})
    assert etag and '"' not in etag
    assert await store.get("dir/file") == data
    assert await store.get("dir/file", 10, 5) == data[10:15]
    assert await store.get("dir/file", 1000) == data[1000:]
    assert await store.get("dir/file", 3, 0) == b""
    assert await store.get("dir/file", if_match=etag) == data


async def test_head_returns_metadata(store: S3Store) -> None:
    etag = await store.put("f", b"abc", {"mode": "33188", "uid": "1000"})
    before_ns = time.time_ns()
    info = await store.head("f")
    assert (info.key, info.size, info.etag) == ("f", 3, etag)
    assert info.metadata == {"mode": "33188", "uid": "1000"}
    assert abs(info.mtime_ns - before_ns) < 120 * 10**9


async def test_list_pages_with_delimiter(store: S3Store) -> None:
    keys = ["d/a", "d/b", "d/c", "d/sub/x", "d/sub2/", "other"]
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(store.put, key, key.encode(), {})

    objects: list[str] = []
    prefixes: list[str] = []
    token = None
    pages = 0
    while True:
        page = await store.list_page("d/", "/", token, max_keys=2)
        pages += 1
        objects += [info.key for info in page.objects]
        prefixes += page.prefixes
        if page.next_token is None:
            break
        token = page.next_token
    assert objects == ["d/a", "d/b", "d/c"]
    assert prefixes == ["d/sub/", "d/sub2/"]
    assert pages == 3
    listed = (await store.list_page("d/", "/")).objects[0]
    assert listed.size == 3 and listed.metadata is None and listed.etag


async def test_recursive_listing(store: S3Store) -> None:
    for key in ["r/a", "r/s/b", "r/s/t/c"]:
        await store.put(key, b"x", {})
    page = await store.list_page("r/", None)
    assert [info.key for info in page.objects] == ["r/a", "r/s/b", "r/s/t/c"]
    assert page.prefixes == [] and page.next_token is None


async def test_copy_keeps_or_replaces_metadata(store: S3Store) -> None:
    etag = await store.put("src", b"payload", {"mode": "1"})
    assert await store.copy("src", "kept") == etag
    assert (await store.head("kept")).metadata == {"mode": "1"}
    await store.copy("src", "replaced", metadata={"mode": "2", "mtime": "5"}, if_match=etag)
    replaced = await store.head("replaced")
    assert replaced.metadata == {"mode": "2", "mtime": "5"}
    assert await store.get("replaced") == b"payload"


async def test_delete_and_delete_many_in_batches(
    store: S3Store, s3_client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DELETE_BATCH", 2)
    keys = [f"k{i}" for i in range(5)]
    for key in keys + ["single"]:
        await store.put(key, b"", {})
    await store.delete("single")
    await store.delete("never-existed")  # S3 deletes are idempotent
    await store.delete_many(keys)
    assert store.stats.requests["DeleteObjects"] == 3
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


async def test_get_retries_a_body_cut_off_mid_stream(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put("f", b"data", {})
    real_get_in_loop = store._get_in_loop
    attempts: list[int] = []

    async def cut_off_once(params: dict) -> bytes:
        attempts.append(1)
        if len(attempts) == 1:
            raise BodyReadError(ConnectionResetError("reset by peer"))
        return await real_get_in_loop(params)

    monkeypatch.setattr(store, "_get_in_loop", cut_off_once)
    assert await store.get("f") == b"data"
    assert store.stats.requests["GetObject"] == 2 and store.stats.errors["GetObject"] == 1


# -- what S3 answers must show it holds what was sent ---------------------------------------


def answer_with(store: S3Store, monkeypatch, operation: str, etag: str) -> None:
    """Replace the ETag in S3's answers to ``operation`` (the request itself goes through)."""
    real = store._call_in_loop

    async def changed(name, params):
        response = await real(name, params)
        if name == operation:
            response["ETag"] = etag
        return response

    monkeypatch.setattr(store, "_call_in_loop", changed)


async def test_a_completion_answered_without_an_etag_is_confirmed_by_head(
        store: S3Store, monkeypatch) -> None:
    """Ceph RGW 16.2 answers CompleteMultipartUpload with an empty ETag: the one later
    conditional GETs use comes from a HEAD."""
    answer_with(store, monkeypatch, "CompleteMultipartUpload", "")
    upload_id = await store.create_multipart("big", {})
    part = await store.upload_part("big", upload_id, 1, b"x" * 100)
    etag = await store.complete_multipart("big", upload_id, [(1, part)], 100)
    assert etag == multipart_etag([part]) and store.stats.requests["HeadObject"] == 1
    assert await store.get("big", 0, 10, if_match=etag) == b"x" * 10


async def test_a_completion_of_another_size_fails(store: S3Store, monkeypatch) -> None:
    answer_with(store, monkeypatch, "CompleteMultipartUpload", "")
    upload_id = await store.create_multipart("big", {})
    part = await store.upload_part("big", upload_id, 1, b"x" * 100)
    with pytest.raises(StoreError) as info:
        await store.complete_multipart("big", upload_id, [(1, part)], 101)
    assert info.value.code == "UploadNotVerified" and "100 bytes" in str(info.value)


@pytest.mark.parametrize("operation", ["PutObject", "UploadPart", "CompleteMultipartUpload"])
async def test_an_etag_that_is_not_of_what_was_sent_fails_the_upload(
        store: S3Store, monkeypatch, operation: str) -> None:
    other = '"0123456789abcdef0123456789abcdef' + ('-1"' if "Complete" in operation else '"')
    answer_with(store, monkeypatch, operation, other)
    with pytest.raises(StoreError) as info:
        if operation == "PutObject":
            await store.put("f", b"data", {})
        else:
            upload_id = await store.create_multipart("big", {})
            part = await store.upload_part("big", upload_id, 1, b"data")
            await store.complete_multipart("big", upload_id, [(1, part)], 4)
    assert info.value.code == "UploadNotVerified" and info.value.kind is StoreKind.UNVERIFIED


async def test_uploads_carry_the_md5_of_their_body(store: S3Store) -> None:
    """Content-MD5 on every PUT and part: the server refuses a body damaged on the way."""
    sent = []
    real = store._call_in_loop

    async def recording(name, params):
        sent.append((name, params.get("ContentMD5")))
        return await real(name, params)

    store._call_in_loop = recording
    await store.put("f", b"data", {})
    upload_id = await store.create_multipart("big", {})
    await store.upload_part("big", upload_id, 1, b"data")
    assert [(n, md5) for n, md5 in sent if n in ("PutObject", "UploadPart")] == [
        ("PutObject", "jXd/OF09/siBXSD3SWAm3A=="), ("UploadPart", "jXd/OF09/siBXSD3SWAm3A==")]


# -- multipart ------------------------------------------------------------------------------


async def test_multipart_upload_with_part_copy(store: S3Store, s3_client, bucket: str) -> None:
    source = b"s" * PART
    source_etag = await store.put("source", source, {})
    upload_id = await store.create_multipart("big", {"mode": "7"})
    part1 = await store.upload_part_copy(
        "big", upload_id, 1, "source", 0, PART - 1, if_match=source_etag
    )
    part2 = await store.upload_part("big", upload_id, 2, b"tail")
    etag = await store.complete_multipart("big", upload_id, [(2, part2), (1, part1)], PART + 4)
    assert etag.endswith("-2")
    info = await store.head("big")
    assert info.size == PART + 4 and info.metadata == {"mode": "7"} and info.etag == etag
    body = s3_client.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert body == source + b"tail"


async def test_abort_and_list_multipart_uploads(store: S3Store) -> None:
    first = await store.create_multipart("up/one", {})
    second = await store.create_multipart("up/two", {})
    await store.create_multipart("elsewhere", {})
    listed = await store.list_multipart_uploads("up/")
    assert {(u.key, u.upload_id) for u in listed} == {("up/one", first), ("up/two", second)}
    await store.abort_multipart("up/one", first)
    assert [u.upload_id for u in await store.list_multipart_uploads("up/")] == [second]
    with pytest.raises(StoreError):  # AWS says NoSuchUpload; moto answers HTTP 500
        await store.upload_part("up/one", first, 1, b"x")


# -- errors ---------------------------------------------------------------------------------


async def test_if_match_mismatch_is_precondition_failed(store: S3Store) -> None:
    await store.put("f", b"old", {})
    with pytest.raises(StoreError) as failure:
        await store.get("f", 0, 2, if_match="0123456789abcdef0123456789abcdef")
    assert failure.value.kind is StoreKind.PRECONDITION_FAILED
    assert failure.value.code == "PreconditionFailed"


async def test_missing_key_is_not_found_and_logged_quietly(
    store: S3Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="s3pvefs.store.s3store")
    for request in (store.head, store.get):
        with pytest.raises(StoreError) as failure:
            await request("no/such/key")
        assert failure.value.kind is StoreKind.NOT_FOUND
        assert failure.value.key == "no/such/key"
    records = [r for r in caplog.records if r.name == "s3pvefs.store.s3store"]
    assert len(records) == 2 and all(r.levelno == logging.DEBUG for r in records)


async def test_missing_bucket(store_config: Config, caplog: pytest.LogCaptureFixture) -> None:
    # A name of its own: the bucket is created below, on the server other tests share.
    name = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    config = dataclasses.replace(store_config, bucket=name)
    async with open_s3_store(config) as missing:
        with pytest.raises(StoreError) as failure:
            await missing.head_bucket()
        assert failure.value.code == "NoSuchBucket" and failure.value.kind is StoreKind.BUCKET_MISSING
        with pytest.raises(StoreError) as failure:
            await missing.put("k", b"x", {})
        assert failure.value.code == "NoSuchBucket"
        await missing.create_bucket()
        await missing.head_bucket()
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("PutObject" in m and f"{name}/k" in m for m in warning)


async def test_unreachable_endpoint_fails_fast_as_unavailable(
    store_config: Config, unreachable_endpoint_url: str
) -> None:
    endpoint = unreachable_endpoint_url
    config = dataclasses.replace(store_config, endpoint_url=endpoint, max_attempts=1)
    started = time.monotonic()
    async with open_s3_store(config) as unreachable:
        with pytest.raises(StoreError) as failure:
            await unreachable.get("some/key")
        assert unreachable.stats.errors["GetObject"] == 1
    assert time.monotonic() - started < 5
    assert failure.value.kind is StoreKind.UNAVAILABLE and failure.value.transient
    assert failure.value.code == "EndpointConnectionError"
    assert endpoint in str(failure.value)


async def test_explicit_credentials(store_config: Config) -> None:
    """Configured keys win over the environment's (AWS_ACCESS_KEY_ID=testing) and sign every
    request; path-style addressing puts the bucket in the path."""
    config = dataclasses.replace(
        store_config, access_key_id="other", secret_access_key="secret", addressing_style="path"
    )
    urls: list[str] = []
    async with open_s3_store(config) as explicit:
        sent = record_requests(explicit)
        explicit._client.meta.events.register(
            "before-send.s3", lambda request, **_: urls.append(request.url))
        await explicit.head_bucket()
        assert explicit.credentials.method == "explicit"
        assert explicit.credentials.access_key_hint == "***"  # too short to show a part of
    authorization = headers_of(sent, "HeadBucket")[0]["authorization"]
    assert "Credential=other/" in authorization
    assert urls == [f"{store_config.endpoint_url}/{store_config.bucket}"]


# -- stats and concurrency ------------------------------------------------------------------


async def test_stats_count_requests_bytes_and_errors(store: S3Store) -> None:
    await store.put("a", b"12345", {})
    await store.get("a", 1, 2)
    with pytest.raises(StoreError):
        await store.get("missing")
    snapshot = store.stats.snapshot()
    assert snapshot == {
        "requests": {"PutObject": 1, "GetObject": 2},
        "bytes_sent": 5,
        "bytes_received": 2,
        "errors": {"GetObject": 1},
    }


async def test_many_concurrent_requests(store: S3Store) -> None:
    async def put_and_check(i: int) -> None:
        await store.put(f"c/{i}", str(i).encode(), {})
        assert await store.get(f"c/{i}") == str(i).encode()

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(put_and_check, i)
    assert store.stats.requests["PutObject"] == 40


async def test_cancelled_requests_leave_the_store_usable(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GETs cancelled while their request runs in the loop thread: each caller sees the
    cancellation, the request in the loop is really interrupted, and the store serves the
    next requests (no limiter token or connection left behind)."""
    await store.put("big", b"x" * PART, {})
    real_get_in_loop = store._get_in_loop
    token = trio.lowlevel.current_trio_token()
    scopes: list[trio.CancelScope] = []
    interrupted: list[int] = []

    async def cancelled_on_the_way(params: dict) -> bytes:
        # In the loop thread: the caller cancels now, while this request is in flight.
        trio.from_thread.run_sync(scopes[-1].cancel, trio_token=token)
        try:
            return await real_get_in_loop(params)
        except asyncio.CancelledError:
            interrupted.append(len(scopes))
            raise

    monkeypatch.setattr(store, "_get_in_loop", cancelled_on_the_way)
    for _ in range(3):
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await store.get("big")
        assert scope.cancelled_caught
    assert interrupted == [1, 2, 3]
    assert store.stats.requests["GetObject"] == 3 and store.stats.errors["GetObject"] == 0
    monkeypatch.setattr(store, "_get_in_loop", real_get_in_loop)
    assert store._limiter.borrowed_tokens == 0
    assert await store.get("big", 0, 3) == b"xxx"
    assert await store.get("big") == b"x" * PART


async def test_store_closes_inside_a_cancelled_scope(store_config: Config) -> None:
    with trio.CancelScope() as scope:
        async with open_s3_store(store_config) as opened:
            await opened.head_bucket()
            scope.cancel()
            await trio.sleep(10)
    assert scope.cancelled_caught
    assert not any(t.name == "s3pvefs-asyncio" for t in threading.enumerate())


# -- bridge ---------------------------------------------------------------------------------


@pytest.fixture
def loop_thread():
    thread = AsyncioThread()
    thread.start()
    yield thread
    thread.stop()


async def test_bridge_returns_results_and_raises_errors(loop_thread: AsyncioThread) -> None:
    async def in_loop(value: int) -> tuple[int, bool]:
        await asyncio.sleep(0)
        return value * 2, threading.current_thread() is not threading.main_thread()

    async def failing() -> None:
        raise KeyError("boom")

    assert await loop_thread.run(in_loop, 21) == (42, True)
    with pytest.raises(KeyError):
        await loop_thread.run(failing)
    assert (await trio.to_thread.run_sync(loop_thread.run_sync_in_loop, in_loop, 2))[0] == 4


async def test_bridge_cancellation_waits_for_the_asyncio_task(loop_thread: AsyncioThread) -> None:
    started = threading.Event()
    finished_cancelled = threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that the trio side must wait for
            finished_cancelled.set()
            raise

    begin = time.monotonic()
    with trio.move_on_after(0.2) as scope:
        await loop_thread.run(slow)
    assert scope.cancelled_caught
    assert time.monotonic() - begin < 2
    assert started.is_set()
    assert finished_cancelled.is_set()  # already finished when the trio task resumed


async def test_bridge_cancelled_before_start(loop_thread: AsyncioThread) -> None:
    ran = threading.Event()

    async def never() -> None:
        ran.set()
        await asyncio.sleep(30)

    for _ in range(20):  # the cancel races with task creation in the loop thread
        with trio.CancelScope() as scope:
            scope.cancel()
            await loop_thread.run(never)
        assert scope.cancelled_caught
    assert await loop_thread.run(asyncio.sleep, 0, "still works") == "still works"


async def test_bridge_stop_wakes_pending_calls(loop_thread: AsyncioThread) -> None:
    failures: list[BaseException] = []

    async def pending_call() -> None:
        try:
            await loop_thread.run(asyncio.sleep, 30)
        except LoopStoppedError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pending_call)
        await trio.sleep(0.05)
        await trio.to_thread.run_sync(loop_thread.stop)
    assert len(failures) == 1
    loop_thread.stop()  # idempotent
    with pytest.raises(LoopStoppedError):
        await loop_thread.run(asyncio.sleep, 0)


# -- fault injection ------------------------------------------------------------------------


async def test_faults_fail_times_and_key_filter(store: S3Store) -> None:
    faulty = FaultInjectingStore(store)
    await faulty.put("a", b"1", {})
    await faulty.put("b", b"2", {})

    faulty.fail("GetObject", store_error("GetObject", "AccessDenied"), times=1,
                key_filter=lambda key: key == "b")
    assert await faulty.get("a") == b"1"
    with pytest.raises(StoreError) as failure:
        await faulty.get("b")
    assert failure.value.kind is StoreKind.ACCESS_DENIED
    assert await faulty.get("b") == b"2"  # used up

    faulty.fail("CopyObject", RuntimeError("injected"), key_filter=lambda key: key == "dst")
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await faulty.copy("a", "dst")
    faulty.clear()
    await faulty.copy("a", "dst")
    assert faulty.injected == {"GetObject": 1, "CopyObject": 2}
    assert faulty.stats is store.stats
    assert store.stats.requests["CopyObject"] == 1  # injected failures never reach S3


async def test_faults_any_operation_and_validation(store: S3Store) -> None:
    faulty = FaultInjectingStore(store)
    faulty.fail("*", store_error("X", "ServiceUnavailable"), times=2)
    for request in (faulty.head_bucket(), faulty.list_page("")):
        with pytest.raises(StoreError):
            await request
    await faulty.head_bucket()
    with pytest.raises(ValueError):
        faulty.fail("Get", RuntimeError())


async def test_faults_delay(store: S3Store) -> None:
    faulty = FaultInjectingStore(store)
    faulty.delay("PutObject", 10)
    with trio.move_on_after(0.1) as scope:
        await faulty.put("slow", b"", {})
    assert scope.cancelled_caught
    assert store.stats.requests["PutObject"] == 0
    faulty.delay("PutObject", 0)
    faulty.delay("HeadObject", 0.05)
    await faulty.put("slow", b"", {})
    begin = trio.current_time()
    await faulty.head("slow")
    assert trio.current_time() - begin >= 0.05


# -- storage class, server-side encryption, credentials, bucket creation --------------------


def record_requests(store: S3Store) -> list[tuple[str, dict[str, str]]]:
    """(operation, lower-case request headers) of every request the store's client sends.

    Checked on the wire rather than trusted to moto: moto ignores SSE-C entirely.
    """
    sent: list[tuple[str, dict[str, str]]] = []

    def remember(request, event_name: str, **_kwargs) -> None:
        headers = {
            name.lower(): value.decode() if isinstance(value, bytes) else str(value)
            for name, value in request.headers.items()
        }
        sent.append((event_name.rsplit(".", 1)[-1], headers))

    store._client.meta.events.register("before-send.s3", remember)
    return sent


def headers_of(sent: list[tuple[str, dict[str, str]]], operation: str) -> list[dict[str, str]]:
    found = [headers for name, headers in sent if name == operation]
    assert found, f"no {operation} request was sent"
    return found


async def exercise_every_object_request(store: S3Store, key: str = "enc/obj") -> None:
    """PUT, GET (whole and ranged), HEAD, multipart with UploadPart and UploadPartCopy, copy."""
    await store.put(key, b"p" * PART, {})
    assert await store.get(key) == b"p" * PART
    assert await store.get(key, 5, 3) == b"ppp"
    await store.head(key)
    upload_id = await store.create_multipart("enc/big", {})
    first = await store.upload_part_copy("enc/big", upload_id, 1, key, 0, PART - 1)
    second = await store.upload_part("enc/big", upload_id, 2, b"tail")
    await store.complete_multipart("enc/big", upload_id, [(1, first), (2, second)], PART + 4)
    await store.copy(key, "enc/copied")
    await store.list_page("enc/")
    await store.delete("enc/copied")


CREATING = ("PutObject", "CreateMultipartUpload", "CopyObject")
NOT_CREATING = ("GetObject", "HeadObject", "UploadPart", "UploadPartCopy",
                "CompleteMultipartUpload")
SSE_C_DATA_REQUESTS = CREATING + NOT_CREATING
SSE_HEADER = "x-amz-server-side-encryption"
SSE_C_HEADERS = ("x-amz-server-side-encryption-customer-algorithm",
                 "x-amz-server-side-encryption-customer-key",
                 "x-amz-server-side-encryption-customer-key-md5")
COPY_SOURCE_SSE_C_HEADERS = tuple(h.replace("x-amz-", "x-amz-copy-source-") for h in SSE_C_HEADERS)


@pytest.fixture
def options_config(store_config: Config):
    """A validated copy of the store configuration with some settings changed."""
    def make(**changes) -> Config:
        config = dataclasses.replace(store_config, **changes)
        validate_config(config)
        return config
    return make


async def test_storage_class_per_content_directory(options_config, s3_client, bucket) -> None:
    config = options_config(
        prefix="pve", storage_class="standard_ia",
        storage_class_by_dir={"template": "STANDARD", "dump": "GLACIER_IR",
                              "dump/keep/": "ONEZONE_IA"},
    )
    expected = {
        "pve/dump/vzdump.vma.zst": "GLACIER_IR",
        "pve/dump/keep/vzdump.tar.zst": "ONEZONE_IA",  # the longest directory wins
        "pve/template/iso/debian.iso": "STANDARD",
        "pve/snippets/hook.pl": "STANDARD_IA",  # the default
        "pve/dumpster/x": "STANDARD_IA",  # "dump/" is a directory, not a string prefix
        "pve/dump/": "STANDARD",  # directory markers and s3pvefs's own objects: never cold
        "pve/dump/.s3pvefs-attrs.host-1": "STANDARD",
        "elsewhere/dump/x": "STANDARD_IA",  # outside the prefix: the default
    }
    async with open_s3_store(config) as store:
        for key in expected:
            await store.put(key, b"data", {})
        upload_id = await store.create_multipart("pve/dump/big.vma", {})
        etag = await store.upload_part("pve/dump/big.vma", upload_id, 1, b"part")
        await store.complete_multipart("pve/dump/big.vma", upload_id, [(1, etag)], 4)
        await store.copy("pve/snippets/hook.pl", "pve/template/cache/moved.tar.gz")
        await store.copy("pve/template/iso/debian.iso", "pve/dump/copied", metadata={"m": "1"})
    expected |= {"pve/dump/big.vma": "GLACIER_IR", "pve/template/cache/moved.tar.gz": "STANDARD",
                 "pve/dump/copied": "GLACIER_IR"}
    stored = {key: s3_client.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD")
              for key in expected}
    assert stored == expected


async def test_no_storage_class_header_unless_configured(store: S3Store) -> None:
    sent = record_requests(store)
    await exercise_every_object_request(store)
    assert all("x-amz-storage-class" not in headers for _op, headers in sent)


async def test_sse_s3_only_where_objects_are_created(options_config, s3_client, bucket) -> None:
    async with open_s3_store(options_config(sse="AES256")) as store:
        sent = record_requests(store)
        await exercise_every_object_request(store)
    for operation in CREATING:
        assert all(h.get(SSE_HEADER) == "AES256" for h in headers_of(sent, operation)), operation
    for operation in NOT_CREATING:  # S3 rejects SSE-S3/KMS headers on reads and parts
        assert all(SSE_HEADER not in h for h in headers_of(sent, operation)), operation
    assert not any(name.startswith("x-amz-server-side-encryption-customer")
                   for _op, headers in sent for name in headers)
    for key in ("enc/obj", "enc/big"):
        assert s3_client.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"


async def test_sse_kms_with_key_id(options_config, s3_client, bucket) -> None:
    key_id = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    async with open_s3_store(options_config(sse="aws:kms", kms_key_id=key_id)) as store:
        sent = record_requests(store)
        await exercise_every_object_request(store)
        assert (await store.head("enc/obj")).encryption == "aws:kms"
    for operation in CREATING:
        for headers in headers_of(sent, operation):
            assert headers[SSE_HEADER] == "aws:kms", operation
            assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == key_id
    for operation in NOT_CREATING:
        assert all(not any(n.startswith(SSE_HEADER) for n in h)
                   for h in headers_of(sent, operation)), operation
    stored = s3_client.head_object(Bucket=bucket, Key="enc/big")
    assert stored["ServerSideEncryption"] == "aws:kms" and stored["SSEKMSKeyId"] == key_id


async def test_sse_c_key_goes_with_every_data_request(options_config) -> None:
    import base64
    import hashlib

    customer_key = bytes(range(32))
    key_b64 = base64.b64encode(customer_key).decode()
    key_md5 = base64.b64encode(hashlib.md5(customer_key).digest()).decode()
    async with open_s3_store(options_config(sse="SSE-C", sse_customer_key=customer_key)) as store:
        sent = record_requests(store)
        await exercise_every_object_request(store)
        await store.get("enc/obj", 1, 1)  # a second read: the key must not be encoded twice
    expected = dict(zip(SSE_C_HEADERS, ("AES256", key_b64, key_md5)))
    expected_source = dict(zip(COPY_SOURCE_SSE_C_HEADERS, ("AES256", key_b64, key_md5)))
    for operation in SSE_C_DATA_REQUESTS:
        for headers in headers_of(sent, operation):
            assert {name: headers.get(name) for name in SSE_C_HEADERS} == expected, operation
            assert SSE_HEADER not in headers  # SSE-C is not SSE-S3
    for operation in ("CopyObject", "UploadPartCopy"):  # the source needs the key too
        for headers in headers_of(sent, operation):
            assert {n: headers.get(n) for n in COPY_SOURCE_SSE_C_HEADERS} == expected_source
    for operation in ("GetObject", "HeadObject", "PutObject", "UploadPart"):
        assert all(not any(n.startswith("x-amz-copy-source") for n in h)
                   for h in headers_of(sent, operation)), operation
    for operation in ("ListObjectsV2", "DeleteObject"):  # no object data: no key
        assert all(not any(n.startswith(SSE_HEADER) for n in h)
                   for h in headers_of(sent, operation)), operation


async def test_get_range_reports_content_range(store: S3Store) -> None:
    await store.put("r", bytes(range(100)), {})
    data, content_range = await store.get_range("r", 10, 5)
    assert data == bytes(range(10, 15)) and content_range == "bytes 10-14/100"


async def test_static_keys_and_session_token_are_sent(options_config) -> None:
    config = options_config(access_key_id="AKIASTATICEXAMPLE01", secret_access_key="s" * 40,
                            session_token="FwoGZXIvYXdzEXAMPLETOKEN")
    async with open_s3_store(config) as store:
        sent = record_requests(store)
        await store.head_bucket()
        assert store.credentials.method == "explicit"
    headers = headers_of(sent, "HeadBucket")[0]
    assert headers["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLETOKEN"
    assert "Credential=AKIASTATICEXAMPLE01/" in headers["authorization"]


def write_aws_config(tmp_path, monkeypatch, text: str):
    path = tmp_path / "aws-config"
    path.write_text(text)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    return path


async def test_profile_is_honoured_over_environment_keys(
    options_config, tmp_path, monkeypatch
) -> None:
    write_aws_config(tmp_path, monkeypatch,
                     "[profile pve-backup]\naws_access_key_id = AKIAPROFILEEXAMPLE1\n"
                     "aws_secret_access_key = profile-secret-key-example\n")
    # AWS_ACCESS_KEY_ID=testing stays in the environment: an explicit profile wins over it.
    async with open_s3_store(options_config(profile="pve-backup")) as store:
        sent = record_requests(store)
        await store.head_bucket()
        assert store.credentials.method == "config-file"
    assert "Credential=AKIAPROFILEEXAMPLE1/" in headers_of(sent, "HeadBucket")[0]["authorization"]


async def test_missing_profile_is_a_config_error(options_config, tmp_path, monkeypatch) -> None:
    from s3pvefs.errors import ConfigError

    write_aws_config(tmp_path, monkeypatch, "[profile other]\nregion = us-east-1\n")
    with pytest.raises(ConfigError, match="no-such-profile"):
        async with open_s3_store(options_config(profile="no-such-profile")):
            pass


CREDENTIAL_PROCESS = '''
import datetime, json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
count = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(count))
# Five minutes ahead: inside botocore's refresh window, so every request refreshes first.
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
print(json.dumps({"Version": 1, "AccessKeyId": f"AKIAROTATING{count:05d}",
                  "SecretAccessKey": f"rotating-secret-{count}", "SessionToken": f"tok-{count}",
                  "Expiration": expires.isoformat()}))
'''


async def test_expiring_credentials_are_refreshed_during_an_upload(
    options_config, tmp_path, monkeypatch, s3_client, bucket
) -> None:
    import sys

    script = tmp_path / "creds.py"
    script.write_text(CREDENTIAL_PROCESS)
    counter = tmp_path / "count"
    write_aws_config(tmp_path, monkeypatch, "[profile rotating]\n"
                     f"credential_process = {sys.executable} {script} {counter}\n")
    async with open_s3_store(options_config(profile="rotating")) as store:
        assert store.credentials.method == "custom-process" and store.credentials.refreshable
        sent = record_requests(store)
        upload_id = await store.create_multipart("rotating/big", {})
        etags = [(n, await store.upload_part("rotating/big", upload_id, n, bytes([n]) * PART))
                 for n in (1, 2)]
        etags.append((3, await store.upload_part("rotating/big", upload_id, 3, b"end")))
        await store.complete_multipart("rotating/big", upload_id, etags, 2 * PART + 3)
    key_ids = [headers["authorization"].split("Credential=")[1].split("/")[0]
               for _op, headers in sent]
    tokens = [headers["x-amz-security-token"] for _op, headers in sent]
    assert len(sent) == 5 and len(set(key_ids)) == 5 and len(set(tokens)) == 5
    assert int(counter.read_text()) >= 6  # the first fetch, then one per request
    assert s3_client.head_object(Bucket=bucket, Key="rotating/big")["ContentLength"] == 2 * PART + 3


@pytest.mark.parametrize("region", ["eu-central-1", "us-east-1"])
async def test_create_bucket_in_the_configured_region(options_config, s3_client, region) -> None:
    from s3pvefs.service.mount import check_bucket

    config = options_config(region=region, bucket=f"created-{region}-{time.time_ns()}",
                            create_bucket=True)
    async with open_s3_store(config) as store:
        await check_bucket(store, config)  # the mount's start: the bucket is missing
        assert await store.bucket_region() == region
        await store.put("k", b"v", {})
    location = s3_client.get_bucket_location(Bucket=config.bucket)["LocationConstraint"]
    assert location == (None if region == "us-east-1" else region)


async def test_chain_secrets_are_masked_in_logs(store_config: Config, monkeypatch,
                                                tmp_path) -> None:
    from s3pvefs.logsetup import setup_logging

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret-0123456789")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "chain-token-0123456789")
    log_file = tmp_path / "log"
    handler = setup_logging(dataclasses.replace(store_config, log_file=log_file))
    try:
        async with open_s3_store(store_config) as store:
            assert store.credentials.method == "env"
            logging.getLogger("s3pvefs.test").warning(
                "leak? %s %s", "chain-secret-0123456789", "chain-token-0123456789")
        handler.flush()
        text = log_file.read_text()
        assert "leak? *** ***" in text and "0123456789" not in text
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
