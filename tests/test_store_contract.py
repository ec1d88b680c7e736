"""The ObjectStore contract: one set of tests on MemoryStore, S3Store on moto and S3Store on a
Ceph RGW (``contract_store``, see tests/conftest.py), so the in-memory store cannot drift
from what the real ones answer.

Where the stores differ, the test says so with the expectation per store, never by skipping
one. The MemoryStore takes the real side: AWS's where a server is lenient (moto or RGW), RGW's
where RGW is stricter than AWS. Differences found (moto 5, Ceph RGW 16.2):

| behaviour | memory | moto | rgw |
|---|---|---|---|
| copy / UploadPartCopy with a source If-Match that fails | PreconditionFailed (AWS) | copies | copies |
| ETag of a copy of a multipart object | the source's | MD5 of the data | the source's |
| a completion leaving out an uploaded part | InvalidPart | completes | InvalidPart |
| UploadPartCopy to an unknown upload id | NoSuchUpload | HTTP 500 | NoSuchUpload |
| UploadPart after the upload completed | NoSuchUpload | HTTP 500 | NoSuchUpload |
| UploadPart / CompleteMultipartUpload after an abort | NoSuchUpload (AWS) | HTTP 500 | NoSuchUpload / InternalError |
| UploadPartCopy of a range past the source's end | InvalidRange | clipped | InvalidRange |
| UploadPartCopy of a missing source | NoSuchKey | a bare 404 (NotFound) | NoSuchKey |
| part number 10001 | InvalidArgument | InvalidArgument | accepted |
| key over 1024 bytes | KeyTooLongError (AWS) | accepted | InvalidObjectName |
| user metadata over 2 KiB | MetadataTooLarge (AWS) | accepted | accepted |
| an upload's Initiated time | the store's clock | always 2010-11-10 | now |
| ListMultipartUploads order | by key | by creation | by key |
"""

from __future__ import annotations

import hashlib
import time

import pytest
import trio

from s3pvefs.errors import StoreError, StoreKind
from s3pvefs.store import s3store as store_module
from s3pvefs.store.memstore import MemoryStore
from s3pvefs.store.objectstore import ObjectStore, multipart_etag

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part that may be followed by another, everywhere
OTHER_ETAG = "0123456789abcdef0123456789abcdef"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def fails(request, code: str) -> StoreError:
    """Await ``request``; it must fail with the S3 error ``code``."""
    with pytest.raises(StoreError) as failure:
        await request
    assert failure.value.code == code, failure.value
    return failure.value


async def list_all(store: ObjectStore, prefix: str, delimiter: str | None = "/",
                   max_keys: int = 1000) -> list[list[str]]:
    """Every page of a listing: its entries' names, objects and common prefixes merged in
    S3's order (the page boundaries show where each entry came)."""
    pages: list[list[str]] = []
    token = None
    while True:
        page = await store.list_page(prefix, delimiter, token, max_keys)
        pages.append(sorted([info.key for info in page.objects] + page.prefixes))
        if page.next_token is None:
            return pages
        token = page.next_token


async def two_part_upload(store: ObjectStore, key: str, metadata: dict[str, str] | None = None
                          ) -> tuple[str, list[tuple[int, str]], bytes]:
    """An upload with a full first part and a short last one (not completed)."""
    upload_id = await store.create_multipart(key, metadata or {})
    first, last = b"a" * PART, b"tail"
    parts = [(1, await store.upload_part(key, upload_id, 1, first)),
             (2, await store.upload_part(key, upload_id, 2, last))]
    return upload_id, parts, first + last


# -- objects --------------------------------------------------------------------------------


async def test_put_head_get_round_trip(contract_store: ObjectStore) -> None:
    store = contract_store
    data = bytes(range(256)) * 3
    before_ns = time.time_ns()
    etag = await store.put("dir/file", data, {"Mode": "33188", "uid": "1000"})
    assert etag == md5(data)  # unquoted, the body's MD5
    info = await store.head("dir/file")
    assert (info.key, info.size, info.etag) == ("dir/file", len(data), etag)
    assert info.metadata == {"mode": "33188", "uid": "1000"}  # S3 lower-cases the names
    assert info.storage_class is None and info.encryption is None  # STANDARD, no SSE
    assert info.mtime_ns % 10**9 == 0  # HTTP dates have whole seconds
    assert before_ns - 2 * 10**9 <= info.mtime_ns <= time.time_ns() + 2 * 10**9
    assert await store.get("dir/file") == data
    listed = (await store.list_page("dir/")).objects
    assert [(o.key, o.size, o.etag, o.metadata) for o in listed] == [
        ("dir/file", len(data), etag, None)]
    # RGW's listings have milliseconds, its HEADs whole seconds: the same second.
    assert abs(listed[0].mtime_ns - info.mtime_ns) < 10**9


async def test_empty_object(contract_store: ObjectStore) -> None:
    etag = await contract_store.put("empty", b"", {})
    assert etag == md5(b"") and (await contract_store.head("empty")).size == 0
    assert await contract_store.get("empty") == b""


async def test_ranged_gets(contract_store: ObjectStore) -> None:
    store = contract_store
    data = bytes(range(100))
    await store.put("r", data, {})
    await store.put("empty", b"", {})
    assert await store.get("r", 10, 5) == data[10:15]
    assert await store.get("r", 90) == data[90:]
    assert await store.get("r", 90, 50) == data[90:]  # a length past the end stops at the end
    assert await store.get("r", 99, 1) == data[99:]
    for start, length in ((100, None), (100, 5), (150, 1)):  # a start at or past the end
        failure = await fails(store.get("r", start, length), "InvalidRange")
        assert failure.kind is StoreKind.INVALID_RANGE
    await fails(store.get("empty", 0, 10), "InvalidRange")  # any range of an empty object
    requests = sum(store.stats.requests.values())
    assert await store.get("no/such/key", 7, 0) == b""  # length 0: answered without asking
    assert sum(store.stats.requests.values()) == requests


async def test_if_match(contract_store: ObjectStore) -> None:
    store = contract_store
    etag = await store.put("f", b"content", {})
    assert await store.get("f", if_match=etag) == b"content"
    assert await store.get("f", 2, 3, if_match=f'"{etag}"') == b"nte"  # quoted works too
    failure = await fails(store.get("f", 0, 2, if_match=OTHER_ETAG), "PreconditionFailed")
    assert failure.kind is StoreKind.PRECONDITION_FAILED and failure.key == "f"
    await fails(store.get("f", 50, if_match=OTHER_ETAG), "PreconditionFailed")  # before range
    await fails(store.get("missing", if_match=etag), "NoSuchKey")


async def test_missing_key_is_not_found(contract_store: ObjectStore) -> None:
    # A HEAD's 404 has no body: S3Store names it NotFound; a GET's says NoSuchKey.
    for request, code in ((contract_store.head, "NotFound"), (contract_store.get, "NoSuchKey")):
        failure = await fails(request("no/such/key"), code)
        assert failure.kind is StoreKind.NOT_FOUND and failure.key == "no/such/key"
        assert failure.not_found and not failure.transient


async def test_overwrite_changes_the_etag(contract_store: ObjectStore) -> None:
    store = contract_store
    old = await store.put("f", b"old", {"v": "1"})
    new = await store.put("f", b"new!", {"v": "2"})
    assert new != old and new == md5(b"new!")
    info = await store.head("f")
    assert (info.etag, info.size, info.metadata) == (new, 4, {"v": "2"})
    await fails(store.get("f", if_match=old), "PreconditionFailed")
    assert await store.get("f", if_match=new) == b"new!"


async def test_delete_is_idempotent(contract_store: ObjectStore) -> None:
    store = contract_store
    await store.put("f", b"x", {})
    await store.delete("f")
    await fails(store.head("f"), "NotFound")
    await store.delete("f")
    await store.delete("never/existed")
    assert store.stats.errors["DeleteObject"] == 0


async def test_delete_many_in_batches(contract_store: ObjectStore,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = contract_store
    if isinstance(store, MemoryStore):
        store.delete_batch = 2
    else:
        monkeypatch.setattr(store_module, "DELETE_BATCH", 2)
    keys = [f"k/{i}" for i in range(5)]
    for key in keys + ["kept"]:
        await store.put(key, b"", {})
    await store.delete_many(keys + ["k/missing"])  # 6 keys: 3 requests; missing ones are fine
    await store.delete_many([])  # no request at all
    assert store.stats.requests["DeleteObjects"] == 3
    assert await list_all(store, "", None) == [["kept"]]


# -- listings -------------------------------------------------------------------------------


LISTED_KEYS = ["d/", "d/a", "d/b", "d/c", "d/sub-1", "d/sub/x", "d/sub/y/z", "d/sub2/", "d/z",
               "d/\u00e9", "e/x", "d"]


async def put_all(store: ObjectStore, keys: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(store.put, key, key.encode(), {})


async def test_list_pages_with_delimiter(contract_store: ObjectStore) -> None:
    await put_all(contract_store, LISTED_KEYS)
    # Objects and common prefixes share the page size and S3's byte order: "-" < "/" < "2",
    # and "é" (UTF-8 0xc3 0xa9) after every ASCII name.
    assert await list_all(contract_store, "d/", "/", max_keys=3) == [
        ["d/", "d/a", "d/b"], ["d/c", "d/sub-1", "d/sub/"], ["d/sub2/", "d/z", "d/\u00e9"]]
    assert await list_all(contract_store, "", "/", max_keys=2) == [["d", "d/"], ["e/"]]
    assert await list_all(contract_store, "d/sub", "/") == [["d/sub-1", "d/sub/", "d/sub2/"]]
    page = await contract_store.list_page("nothing/")
    assert (page.objects, page.prefixes, page.next_token) == ([], [], None)


async def test_recursive_listing(contract_store: ObjectStore) -> None:
    await put_all(contract_store, LISTED_KEYS)
    under_d = sorted(key for key in LISTED_KEYS if key.startswith("d/"))
    pages = await list_all(contract_store, "d/", None, max_keys=4)
    assert [len(page) for page in pages] == [4, 4, 2]
    assert [key for page in pages for key in page] == under_d
    listed = (await contract_store.list_page("d/s", None)).objects
    assert [(o.key, o.size, o.etag) for o in listed] == [
        (key, len(key), md5(key.encode())) for key in under_d if key.startswith("d/s")]


# -- copies ---------------------------------------------------------------------------------


async def test_copy_keeps_or_replaces_metadata(contract_store: ObjectStore) -> None:
    store = contract_store
    etag = await store.put("src", b"payload", {"mode": "1"})
    assert await store.copy("src", "kept") == etag
    assert (await store.head("kept")).metadata == {"mode": "1"}
    assert await store.copy("src", "replaced", {"mode": "2", "mtime": "5"}, if_match=etag) == etag
    replaced = await store.head("replaced")
    assert (replaced.metadata, replaced.etag) == ({"mode": "2", "mtime": "5"}, etag)
    assert await store.get("replaced") == b"payload"
    # Onto itself: new metadata is a change (s3pvefs's attribute updates), none is refused.
    assert await store.copy("src", "src", {"mode": "3"}) == etag
    assert (await store.head("src")).metadata == {"mode": "3"}
    await fails(store.copy("src", "src"), "InvalidRequest")
    await fails(store.copy("missing", "dst"), "NoSuchKey")


async def test_copy_source_if_match(contract_store: ObjectStore, contract_kind: str) -> None:
    """AWS refuses a copy whose source does not match; moto and Ceph RGW ignore the header and
    copy (so the uploader HEADs a copy's source before it completes), the MemoryStore refuses
    as AWS does."""
    store = contract_store
    await store.put("src", b"new content", {})
    copy = store.copy("src", "dst", {"m": "1"}, if_match=OTHER_ETAG)
    if contract_kind == "memory":
        failure = await fails(copy, "PreconditionFailed")
        assert failure.kind is StoreKind.PRECONDITION_FAILED and failure.key == "src"
        await fails(store.head("dst"), "NotFound")
    else:
        assert await copy == md5(b"new content")
        assert await store.get("dst") == b"new content"


async def test_copy_of_a_multipart_object(contract_store: ObjectStore, contract_kind: str) -> None:
    store = contract_store
    upload_id, parts, data = await two_part_upload(store, "big", {"mode": "7"})
    etag = await store.complete_multipart("big", upload_id, parts, len(data))
    copied = await store.copy("big", "copy", if_match=etag)
    # moto makes the copy's ETag the data's MD5; RGW keeps the source's, and so does memory.
    assert copied == (md5(data) if contract_kind == "moto" else etag)
    info = await store.head("copy")
    assert (info.etag, info.size, info.metadata) == (copied, len(data), {"mode": "7"})
    assert await store.get("copy", PART - 2, 6, if_match=copied) == b"aatail"


# -- multipart ------------------------------------------------------------------------------


async def test_multipart_upload(contract_store: ObjectStore) -> None:
    store = contract_store
    upload_id, parts, data = await two_part_upload(store, "big", {"mode": "7"})
    assert [etag for _n, etag in parts] == [md5(b"a" * PART), md5(b"tail")]
    etag = await store.complete_multipart("big", upload_id, parts[::-1], len(data))  # any order
    assert etag == multipart_etag([e for _n, e in parts]) and etag.endswith("-2")
    info = await store.head("big")
    assert (info.etag, info.size, info.metadata) == (etag, len(data), {"mode": "7"})
    assert await store.get("big", PART - 1, 3, if_match=etag) == b"ata"
    assert await store.list_multipart_uploads("big") == []


async def test_a_single_small_part_is_a_whole_object(contract_store: ObjectStore) -> None:
    store = contract_store
    upload_id = await store.create_multipart("small", {})
    part = await store.upload_part("small", upload_id, 1, b"tiny")
    assert await store.complete_multipart("small", upload_id, [(1, part)], 4) == \
        multipart_etag([md5(b"tiny")])
    assert await store.get("small") == b"tiny"


async def test_entity_too_small(contract_store: ObjectStore) -> None:
    store = contract_store
    upload_id = await store.create_multipart("small", {})
    parts = [(n, await store.upload_part("small", upload_id, n, b"x" * 10)) for n in (1, 2)]
    await fails(store.complete_multipart("small", upload_id, parts, 20), "EntityTooSmall")
    await fails(store.head("small"), "NotFound")
    await store.abort_multipart("small", upload_id)


async def test_invalid_parts(contract_store: ObjectStore) -> None:
    store = contract_store
    upload_id, parts, data = await two_part_upload(store, "big")
    (_, first), (_, last) = parts
    for wrong, code in (([(1, first), (2, OTHER_ETAG)], "InvalidPart"),  # not that part's ETag
                        ([(1, first), (3, last)], "InvalidPart"),  # a part never uploaded
                        ([], "MalformedXML")):
        await fails(store.complete_multipart("big", upload_id, wrong, len(data)), code)
    await fails(store.head("big"), "NotFound")
    # Failed completions leave the upload as it was.
    assert await store.complete_multipart("big", upload_id, parts, len(data)) == \
        multipart_etag([first, last])


async def test_a_completion_must_list_every_uploaded_part(contract_store: ObjectStore,
                                                         contract_kind: str) -> None:
    """AWS (and moto) drop uploaded parts a completion leaves out; Ceph RGW refuses the
    completion, and so does the MemoryStore: completing a prefix of a stream's parts must
    not leave later parts uploaded."""
    store = contract_store
    upload_id, parts, data = await two_part_upload(store, "big")
    await store.upload_part("big", upload_id, 3, b"left out")
    complete = store.complete_multipart("big", upload_id, parts, len(data))
    if contract_kind == "moto":
        assert await complete == multipart_etag([e for _n, e in parts])
        assert (await store.head("big")).size == len(data)
    else:
        await fails(complete, "InvalidPart")
        await store.abort_multipart("big", upload_id)


async def test_no_such_upload_after_abort(contract_store: ObjectStore, contract_kind: str) -> None:
    store = contract_store
    upload_id, parts, data = await two_part_upload(store, "big")
    await store.abort_multipart("big", upload_id)
    assert await store.list_multipart_uploads("big") == []
    failure = await fails(store.abort_multipart("big", upload_id), "NoSuchUpload")
    assert failure.kind is StoreKind.NO_SUCH_UPLOAD
    # AWS answers NoSuchUpload to both; moto answers HTTP 500 to both (so
    # test_store.py's abort test checks for a StoreError only); RGW NoSuchUpload to the part,
    # and InternalError "This multipart completion is already in progress" to the completion.
    part_code, complete_code = {"memory": ("NoSuchUpload", "NoSuchUpload"),
                                "moto": ("500", "500"),
                                "rgw": ("NoSuchUpload", "InternalError")}[contract_kind]
    await fails(store.upload_part("big", upload_id, 3, b"x"), part_code)
    await fails(store.complete_multipart("big", upload_id, parts, len(data)), complete_code)
    await fails(store.head("big"), "NotFound")


async def test_an_upload_after_its_completion(contract_store: ObjectStore,
                                              contract_kind: str) -> None:
    """AWS and Ceph RGW answer NoSuchUpload to a part of a completed upload, moto HTTP 500."""
    store = contract_store
    upload_id, parts, data = await two_part_upload(store, "big")
    etag = await store.complete_multipart("big", upload_id, parts, len(data))
    late = store.upload_part("big", upload_id, 3, b"late")
    await fails(late, "500" if contract_kind == "moto" else "NoSuchUpload")
    info = await store.head("big")
    assert (info.etag, info.size) == (etag, len(data))


async def test_list_multipart_uploads_then_abort(contract_store: ObjectStore,
                                                 contract_kind: str) -> None:
    store = contract_store
    before_ns = time.time_ns()
    second = await store.create_multipart("up/two", {})
    first = await store.create_multipart("up/one", {})
    await store.create_multipart("elsewhere", {})
    listed = await store.list_multipart_uploads("up/")
    found = [(u.key, u.upload_id) for u in listed]
    if contract_kind == "moto":  # moto lists in the order of creation, AWS and RGW by key
        found.sort()
    assert found == [("up/one", first), ("up/two", second)]
    for upload in listed:
        if contract_kind == "moto":  # moto reports every upload as initiated in 2010
            assert upload.initiated_ns < 1_300_000_000 * 10**9
        else:
            assert before_ns - 2 * 10**9 <= upload.initiated_ns <= time.time_ns() + 2 * 10**9
    await store.abort_multipart("up/one", first)
    assert [u.upload_id for u in await store.list_multipart_uploads("up/")] == [second]
    assert len(await store.list_multipart_uploads("")) == 2


async def test_upload_part_copy(contract_store: ObjectStore, contract_kind: str) -> None:
    store = contract_store
    source = bytes(range(256)) * (PART // 256 + 1)
    source_etag = await store.put("source", source, {})
    upload_id = await store.create_multipart("big", {"mode": "7"})
    first = await store.upload_part_copy("big", upload_id, 1, "source", 0, PART - 1,
                                         if_match=source_etag)
    middle = await store.upload_part_copy("big", upload_id, 2, "source", 10, PART + 9)
    last = await store.upload_part_copy("big", upload_id, 3, "source", 5, 9)
    # A copied part's ETag is the MD5 of its bytes.
    assert (first, middle, last) == (md5(source[:PART]), md5(source[10:PART + 10]),
                                     md5(source[5:10]))
    parts = [(1, first), (2, middle), (3, last)]
    expected = source[:PART] + source[10:PART + 10] + source[5:10]
    etag = await store.complete_multipart("big", upload_id, parts, len(expected))
    assert etag == multipart_etag([first, middle, last])
    assert await store.get("big", PART - 3, 8) == expected[PART - 3:PART + 5]
    assert (await store.head("big")).size == len(expected)
    unknown = store.upload_part_copy("big", "no-such-upload", 1, "source", 0, 9)
    await fails(unknown, "500" if contract_kind == "moto" else "NoSuchUpload")


async def test_upload_part_copy_where_servers_differ(contract_store: ObjectStore,
                                                     contract_kind: str) -> None:
    """A source If-Match that fails: AWS and memory refuse, moto and RGW copy. A range past
    the source's end: RGW and memory InvalidRange, moto copies what there is."""
    store = contract_store
    await store.put("source", bytes(range(100)), {})
    upload_id = await store.create_multipart("big", {})
    copy = store.upload_part_copy("big", upload_id, 1, "source", 0, 9, if_match=OTHER_ETAG)
    if contract_kind == "memory":
        await fails(copy, "PreconditionFailed")
    else:
        assert await copy == md5(bytes(range(10)))
    past_end = store.upload_part_copy("big", upload_id, 2, "source", 90, 109)
    if contract_kind == "moto":
        assert await past_end == md5(bytes(range(90, 100)))
    else:
        await fails(past_end, "InvalidRange")
    missing = store.upload_part_copy("big", upload_id, 3, "missing", 0, 9)
    await fails(missing, "NotFound" if contract_kind == "moto" else "NoSuchKey")  # moto: no body
    await store.abort_multipart("big", upload_id)


# -- limits ---------------------------------------------------------------------------------


async def test_limits(contract_store: ObjectStore, contract_kind: str) -> None:
    """AWS's limits: part numbers 1-10000, keys of 1024 bytes, 2 KiB of user metadata. The
    MemoryStore enforces all three; the servers some (the table in the module docstring)."""
    store = contract_store
    upload_id = await store.create_multipart("parts", {})
    part = store.upload_part("parts", upload_id, 10_001, b"x")
    if contract_kind == "rgw":
        await part
    else:
        await fails(part, "InvalidArgument")
    await store.abort_multipart("parts", upload_id)

    long_key = "k" * 1025
    key_code = {"memory": "KeyTooLongError", "rgw": "InvalidObjectName"}.get(contract_kind)
    if key_code is None:
        await store.put(long_key, b"", {})
    else:
        await fails(store.put(long_key, b"", {}), key_code)

    big = {"x": "y" * 2100}
    if contract_kind == "memory":
        await fails(store.put("m", b"", big), "MetadataTooLarge")
    else:
        await store.put("m", b"", big)
        assert (await store.head("m")).metadata == big


# -- what callers see besides answers -------------------------------------------------------


async def test_stats_count_requests_bytes_and_errors(contract_store: ObjectStore) -> None:
    store = contract_store
    await store.put("a", b"12345", {})
    await store.get("a", 1, 2)
    await store.get("a", 0, 0)  # no request
    await fails(store.get("missing"), "NoSuchKey")
    await fails(store.head("missing"), "NotFound")
    await store.list_page("")
    upload_id = await store.create_multipart("m", {})
    await store.upload_part("m", upload_id, 1, b"xyz")
    await store.abort_multipart("m", upload_id)
    assert store.stats.snapshot() == {
        "requests": {"PutObject": 1, "GetObject": 2, "HeadObject": 1, "ListObjectsV2": 1,
                     "CreateMultipartUpload": 1, "UploadPart": 1, "AbortMultipartUpload": 1},
        "bytes_sent": 8,
        "bytes_received": 2,
        "errors": {"GetObject": 1, "HeadObject": 1},
    }


async def test_concurrent_requests(contract_store: ObjectStore) -> None:
    async def put_and_check(i: int) -> None:
        await contract_store.put(f"c/{i}", str(i).encode(), {})
        assert await contract_store.get(f"c/{i}") == str(i).encode()

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(put_and_check, i)
    assert contract_store.stats.requests["PutObject"] == 20
    assert len((await contract_store.list_page("c/")).objects) == 20


async def test_bucket_requests(contract_store: ObjectStore) -> None:
    await contract_store.head_bucket()
    await contract_store.create_bucket()  # already there: fine, as the mount's check expects
    await contract_store.head_bucket()
