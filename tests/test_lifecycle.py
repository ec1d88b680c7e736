"""The file lifecycle (lifecycle.FileState), its journal record (journal.JournalRecord) and the
checkpoint that builds it (filejournal.FileJournal): fast, no store, no mount."""

from __future__ import annotations

import copy
import dataclasses
import json
import stat

import pytest
import trio

from s3pvefs.errors import FsError, FsKind, StoreError
from s3pvefs.names import Attributes
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.journal import Journal, JournalRecord, StreamRecord
from s3pvefs.state.lifecycle import FileState, State
from s3pvefs.state.nodes import InodeTable
from s3pvefs.store.objectstore import RemoteObject

BLOCK = 4096
PREFIX = "pve/"

# Written by the code before this record type (commit fe3e7a3): a backup still being written,
# two parts of its streaming upload on S3 (a FsCore on a MemoryStore, journal file verbatim).
VERSION_1 = json.loads(
    '{"version":1,"id":"1a086c61a2ce45a19358a4ebf456571f","key":"pve/dump/vzdump-qemu-100.vma.'
    'dat","state":"open","size":11534336,"mode":33184,"uid":0,"gid":0,"mtime_ns":17961530871854'
    '11967,"base":null,"landing":null,"base_valid_len":0,"cached":[[160,176]],"dirty":[[160,176'
    ']],"seq":1796153087363842919,"stale_keys":[],"data_dirty":true,"meta_dirty":false,"stream"'
    ':{"key":"pve/dump/vzdump-qemu-100.vma.dat","upload_id":"mem-upload-1","predicted":false,"o'
    'rigin_name":"vzdump-qemu-100.vma.dat","meta_current":true,"parts":[[1,0,5242880,"006a88ed7'
    'd5826af90d38dba4666fd89"],[2,5242880,5242880,"006a88ed7d5826af90d38dba4666fd89"]],"launche'
    'd":[[1,0,5242880],[2,5242880,5242880]]}}')


@pytest.fixture
def cache(tmp_path):
    cache = BlockCache(tmp_path / "cache", BLOCK, 1 << 20)
    cache.open()
    yield cache
    cache.close()


def a_file(cache: BlockCache | None = None) -> FileState:
    file = FileState()
    if cache is not None:
        file.cache_file_attached(cache.new_file())
    return file


def state(file: FileState, writing: bool = False, unlinked: bool = False) -> State:
    return file.state(writing=writing, unlinked=unlinked)


# -- the record ------------------------------------------------------------------------------


def test_a_version_1_record_reads_and_writes_back_unchanged() -> None:
    record = JournalRecord.from_json(VERSION_1)
    assert record.writing and record.data_dirty and not record.meta_dirty
    assert record.cached == record.dirty == set(range(160, 176))
    assert record.stream.parts[1] == (2, 5242880, 5242880, "006a88ed7d5826af90d38dba4666fd89")
    assert record.to_json() == VERSION_1


def test_a_record_with_objects_and_left_keys_survives_the_round_trip() -> None:
    record = JournalRecord(
        file_id="f", key="pve/a", writing=False, size=10, mode=stat.S_IFREG | 0o600, uid=1,
        gid=2, mtime_ns=3, base=RemoteObject("pve/a", "e1", 10),
        landing=RemoteObject("pve/a", "e2", 10), base_valid_len=10, cached_runs=((0, 1),),
        dirty_runs=(), seq=4, stale_keys=("pve/old",), data_dirty=False, meta_dirty=True,
        stream=StreamRecord("pve/b", "u", True, "a.dat", False, (), ((1, 0, 5),)))
    assert JournalRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_records_before_stale_keys_name_one_stale_key() -> None:
    legacy = copy.deepcopy(VERSION_1)
    del legacy["stale_keys"]
    legacy["stale_key"] = "pve/dump/old.vma.dat"
    assert JournalRecord.from_json(legacy).stale_keys == ("pve/dump/old.vma.dat",)
    del legacy["stale_key"]
    assert JournalRecord.from_json(legacy).stale_keys == ()


@pytest.mark.parametrize("change", [{"version": 2}, {"version": None}, {"size": None},
                                    {"stream": {"key": "k"}}])
def test_a_record_this_version_cannot_read_is_refused(change: dict) -> None:
    record = {key: value for key, value in {**VERSION_1, **change}.items() if value is not None}
    with pytest.raises(ValueError):
        JournalRecord.from_json(record)


def test_the_journal_keeps_unreadable_records_apart(tmp_path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.write(JournalRecord.from_json(VERSION_1), durable=False)
    (journal.dir / "broken.json").write_text('{"version": 1, "id": "broken"}')
    records, unreadable = journal.records()
    assert [r.file_id for r in records] == [VERSION_1["id"]] and unreadable == ["broken"]


# -- transitions -----------------------------------------------------------------------------


def test_a_new_file_is_dirty_until_an_upload_carries_its_generations(cache) -> None:
    file = a_file(cache)
    file.data_changed()
    assert file.changed and state(file, writing=True) is State.WRITING
    assert state(file) is State.DIRTY
    file.upload_started()
    file.uploaded(RemoteObject("pve/a", "e", 0), data_gen=1, meta_gen=0)
    assert file.remote_maybe and not file.changed and state(file) is State.REMOTE
    file.attributes_changed()
    assert file.meta_dirty and not file.data_dirty


def test_an_upload_of_older_generations_leaves_the_file_dirty() -> None:
    file = a_file()
    file.data_changed()
    file.data_changed()
    file.uploaded(RemoteObject("pve/a", "e", 0), data_gen=1, meta_gen=0)
    assert file.data_dirty


@pytest.mark.parametrize("landed", [True, False])
def test_an_announced_landing_settles_into_the_base_only_if_it_landed(cache, landed) -> None:
    old, new = RemoteObject("pve/a", "old", 8 * BLOCK), RemoteObject("pve/a", "new", 2 * BLOCK)
    file = FileState()
    file.backed_by(old)
    file.cache_file_attached(cache.new_file())
    file.landing_announced(new)
    assert file.landing == new
    file.landing_settled(landed)
    assert file.landing is None and file.base == (new if landed else old)
    assert file.data.base_valid_len == (2 * BLOCK if landed else 8 * BLOCK)


def test_a_completed_stream_backs_the_file_at_once(cache) -> None:
    file = a_file(cache)
    stream = object()
    file.stream_started(stream)
    file.data.streamed_len, file.data.pinned_blocks = 4 * BLOCK, 1
    assert file.data_dirty and state(file, writing=True) is State.STREAMING
    file.stream_completed(stream, RemoteObject("pve/a", "e-2", 4 * BLOCK), 4 * BLOCK)
    assert file.stream is None and file.base.etag == "e-2" and file.remote_maybe
    assert (file.data.base_valid_len, file.data.streamed_len, file.data.pinned_blocks) == (
        4 * BLOCK, 0, 0)


def test_forgetting_another_stream_keeps_the_current_one(cache) -> None:
    file = a_file(cache)
    current = object()
    file.stream_started(current)
    file.stream_forgotten(object())
    assert file.stream is current


def test_a_stream_waiting_for_its_rename_says_so() -> None:
    file = a_file()
    file.stream_started(object())
    file.rename_awaited("pve/dump/x.vma.zst")
    assert state(file) is State.PENDING_RENAME
    file.rename_not_awaited()
    assert state(file) is State.STREAMING


def test_a_left_key_is_counted_once_and_forgotten_once() -> None:
    file = a_file()
    assert file.left_key("pve/old") and not file.left_key("pve/old")
    assert file.forget_left_key("pve/old") and not file.forget_left_key("pve/old")
    assert file.stale_keys == set()


def test_a_copy_or_a_local_only_file_changes_the_base(cache) -> None:
    file = a_file(cache)
    file.backed_by(RemoteObject("pve/a", "e", 3 * BLOCK), valid_len=3 * BLOCK)
    file.attributes_changed()
    file.copied_with_attributes(RemoteObject("pve/b", "e", 3 * BLOCK))
    assert file.base.key == "pve/b" and not file.meta_dirty
    file.local_only()
    assert file.base is None and file.data.base_valid_len == 0
    file.moved(object_at_new_key=False)
    assert not file.remote_maybe


def test_a_remote_change_drops_the_cache_file_and_the_kernels_pages(cache) -> None:
    file = a_file(cache)
    data = file.data
    file.remote_changed(RemoteObject("pve/a", "theirs", 1))
    assert data.discarded and file.data is None and file.data_version == 1
    assert file.base.etag == "theirs"


async def test_holds_and_the_upload_in_flight() -> None:
    file = a_file()
    file.hold()
    assert state(file) is State.HELD
    file.release_hold()
    async with file.sync_lock:
        assert file.syncing and state(file) is State.UPLOADING
    assert not file.syncing and state(file, unlinked=True) is State.UNLINKED


@pytest.mark.parametrize("error", [FsError(FsKind.IO, "disk"),
                                   StoreError("PutObject", "pve/a", "SlowDown", "S3 away")])
async def test_an_upload_attempt_records_its_outcome(error) -> None:
    file = a_file()
    with pytest.raises(type(error)), trio.CancelScope() as scope, file.upload_attempt(scope):
        assert file.sync_scope is scope
        raise error
    assert file.sync_scope is None and file.last_error == str(error)
    with trio.CancelScope() as scope, file.upload_attempt(scope):
        file.cancel_upload()  # a hold cancels the upload in flight: no outcome
        await trio.sleep(1)
    assert scope.cancelled_caught and file.last_error == str(error)
    with trio.CancelScope() as scope, file.upload_attempt(scope):
        pass
    assert file.last_error is None


def test_a_restored_file_counts_what_it_had_not_uploaded_as_one_change(cache) -> None:
    record = JournalRecord.from_json({**VERSION_1, "state": "closed", "data_dirty": False,
                                      "meta_dirty": True})
    file = FileState()
    file.restored(record, cache.new_file())
    assert (file.data_gen, file.meta_gen, file.journal_id) == (0, 1, record.file_id)
    assert file.remote_maybe and file.meta_dirty and not file.data_dirty
    writing = FileState()
    writing.restored(JournalRecord.from_json(VERSION_1), cache.new_file())
    assert writing.data_gen == 1


# -- the checkpoint --------------------------------------------------------------------------


async def test_a_checkpoint_journals_a_dirty_file_and_drops_a_clean_one(cache) -> None:
    journal = Journal(cache.cache_dir)
    journal.open()
    files = FileJournal(journal, cache, PREFIX)
    inodes = InodeTable(Attributes(stat.S_IFDIR | 0o755, 0, 0, 0))
    root = inodes.root
    node = inodes.new(root, "a.raw", Attributes(stat.S_IFREG | 0o640, 7, 8, 9))
    root.children["a.raw"] = node
    node.file.cache_file_attached(cache.new_file())
    await node.file.data.write(0, b"x" * (BLOCK + 1))
    node.size = BLOCK + 1
    node.data_changed()
    node.file.left_key(PREFIX + "b.raw")
    await files.checkpoint(node, durable=True)
    [record], _ = journal.records()
    assert record == dataclasses.replace(files.record(node), seq=record.seq)
    assert (record.key, record.size, record.mode, record.uid) == (
        PREFIX + "a.raw", BLOCK + 1, stat.S_IFREG | 0o640, 7)
    assert record.dirty == record.cached == {0, 1} and record.stale_keys == (PREFIX + "b.raw",)
    assert node.file.journal_id == record.file_id
    node.file.uploaded(RemoteObject(PREFIX + "a.raw", "e", BLOCK + 1), 1, 0)
    node.file.data.mark_clean(node.file.data.dirty_snapshot())
    await files.checkpoint(node)
    assert journal.records() == ([], []) and node.file.journal_id is None
