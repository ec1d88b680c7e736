"""The read path without the kernel or a core: each handle's readahead policy (prefetch.py's
Prefetcher), reads answered from the GET's payload while the cache file is written in the
background (reader.py), and the rules that keep that right: locally written blocks win,
background cache writes are bounded, readahead stops at release, the own-upload retry.

GETs go to a MemoryStore behind a gate the test opens, so what is in flight at each step is
decided by the test, not by timing. Time is virtual (tests/core/conftest.py): ``settle()``
returns once every task waits and no worker thread (cache-file I/O) runs.
"""

from __future__ import annotations

import errno
import random
import stat
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from helpers import settle

from s3pvefs.adapter.errno_map import errno_for
from s3pvefs.errors import FsError, StoreError
from s3pvefs.names import Attributes
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.cachefile import CachedFile
from s3pvefs.state.nodes import Node
from s3pvefs.store.memstore import MemoryStore
from s3pvefs.store.objectstore import RemoteObject
from s3pvefs.transfer.prefetch import Prefetcher, Reads
from s3pvefs.transfer.reader import CACHE_WRITES, BlockReader

KiB = 1024
BLOCK = 64 * KiB
RANGE = 4 * BLOCK  # the most one GET asks for (the part size in a mount)
READAHEAD_MAX = 8 * BLOCK
KEY = "images/disk.raw"
TIMEOUT = 20  # virtual seconds


class GatedStore(MemoryStore):
    """A MemoryStore whose GETs wait while the gate is closed, and that notes their ranges."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.gate.set()
        self.gets: list[tuple[int, int]] = []

    def close_gate(self) -> None:
        self.gate = trio.Event()

    async def get(self, key, start=0, length=None, if_match=None):
        self.gets.append((start, length))
        await self.gate.wait()
        return await super().get(key, start, length, if_match)


@dataclass
class NoUploads:
    """The uploader as reads see it (prefetch.OwnUploads): ``landed`` is the object an upload
    of ours made, which ``settled`` makes the file's base; None: no upload of ours ran."""

    landed: RemoteObject | None = None
    asked: list[Node] = field(default_factory=list)

    async def settled(self, node: Node) -> None:
        self.asked.append(node)
        if self.landed is not None:
            node.file.landing_announced(self.landed)
            node.file.landing_settled(True)
            self.landed = None


@dataclass
class Rig:
    store: GatedStore
    reader: BlockReader
    reads: Reads
    uploads: NoUploads
    node: Node
    data: CachedFile
    content: bytes

    def handle(self) -> Prefetcher:
        return self.reads.prefetcher(self.node)

    def cached_blocks(self) -> set[int]:
        return set(self.data.cached)


@pytest.fixture
async def make_rig(tmp_path):
    """``await make_rig(size, max_parallel=4, head_bytes=0, name="disk.raw")``: a running
    BlockReader, its Reads, and one file of ``size`` random bytes on the store, nothing of it
    cached."""
    caches: list[BlockCache] = []
    async with trio.open_nursery() as nursery:

        async def make(size: int, max_parallel: int = 4, head_bytes: int = 0,
                       name: str = "disk.raw") -> Rig:
            store = GatedStore()
            content = random.Random(size).randbytes(size)
            etag = await store.put(KEY, content, {})
            cache = BlockCache(tmp_path / f"cache{len(caches)}", BLOCK, 1024 * BLOCK)
            cache.open()
            caches.append(cache)
            reader = BlockReader(store, max_parallel, RANGE)
            await nursery.start(reader.run)
            uploads = NoUploads()
            reads = Reads(reader, uploads, READAHEAD_MAX, head_bytes)
            node = Node(2, None, name, Attributes(stat.S_IFREG | 0o644, 0, 0, 0))
            node.size = size
            node.file.backed_by(RemoteObject(KEY, etag, size))
            node.file.cache_file_attached(cache.new_file())
            node.file.data.keep_fd()
            return Rig(store, reader, reads, uploads, node, node.file.data, content)

        yield make
        nursery.cancel_scope.cancel()
    for cache in caches:
        cache.close()


def policy() -> Prefetcher:
    reads = Reads(BlockReader(MemoryStore(), 4, RANGE), NoUploads(), READAHEAD_MAX)
    return reads.prefetcher(Node(2, None, "f", Attributes(stat.S_IFREG, 0, 0, 0)))


# -- the policy -----------------------------------------------------------------------------


def test_random_reads_never_read_ahead() -> None:
    prefetcher = policy()
    rng = random.Random(3)
    for _ in range(200):
        offset = rng.randrange(1, 100) * BLOCK + rng.randrange(BLOCK)  # never where it left off
        assert prefetcher.next_stretch(BLOCK, offset, BLOCK) is None


def test_a_sequential_reader_gets_a_doubling_window_in_aligned_stretches() -> None:
    prefetcher = policy()
    step = BLOCK // 4  # as the kernel reads: smaller than a block
    asked = {offset: prefetcher.next_stretch(BLOCK, offset, step)
             for offset in range(0, 6 * RANGE, step)}
    # Nothing before two whole blocks were read (a backup's header, read through zstd's own
    # buffers, costs those blocks only).
    assert [asked[o] for o in range(0, 2 * BLOCK - step, step)] == [None] * 7
    stretches = {offset: s for offset, s in asked.items() if s is not None}
    assert list(stretches.items())[:4] == [
        (2 * BLOCK - step, (2 * BLOCK, RANGE - 2 * BLOCK)),  # window 2 blocks: to the boundary
        (2 * BLOCK, (RANGE, RANGE)),  # window 4 blocks
        (2 * BLOCK + step, (2 * RANGE, RANGE)),  # window 8 blocks (READAHEAD_MAX) from here on
        (RANGE, (3 * RANGE, RANGE)),  # then a stretch each time the last one is reached
    ]
    ends = [start + length for start, length in stretches.values()]
    starts = [start for start, _ in stretches.values()]
    assert starts[1:] == ends[:-1]  # each stretch where the last ended: no byte asked twice
    assert all(end % RANGE == 0 for end in ends)  # whole aligned stretches: one GET each
    for offset, (start, length) in stretches.items():
        assert start + length <= offset + step + READAHEAD_MAX + RANGE
    assert prefetcher.window == READAHEAD_MAX


def test_a_seek_starts_the_policy_again() -> None:
    prefetcher = policy()
    for offset in range(0, 4 * BLOCK, BLOCK):
        prefetcher.next_stretch(BLOCK, offset, BLOCK)
    assert prefetcher.window > 2 * BLOCK
    far = 10 * RANGE
    assert prefetcher.next_stretch(BLOCK, far, BLOCK // 2) is None  # the seek itself
    assert prefetcher.window == 0
    # The seek's own read counts for nothing: it may be a lone random read.
    for offset in (far + BLOCK // 2, far + BLOCK, far + 3 * BLOCK // 2):
        assert prefetcher.next_stretch(BLOCK, offset, BLOCK // 2) is None  # under two blocks
    # Two whole blocks after the seek: two blocks ahead, rounded up to a boundary.
    assert prefetcher.next_stretch(BLOCK, far + 2 * BLOCK, BLOCK // 2) == (
        far + 5 * BLOCK // 2, 2 * RANGE - 5 * BLOCK // 2)


# -- through the store ----------------------------------------------------------------------


async def test_the_head_of_a_backup_archive_is_fetched_as_asked(make_rig) -> None:
    rig = await make_rig(64 * BLOCK, head_bytes=4 * BLOCK,
                         name="vzdump-lxc-101-2026_12_02-01_00_00.tar.zst")
    handle = rig.handle()
    # "show configuration": the kernel's requests, in any order, nothing more fetched
    assert await handle.read(rig.data, BLOCK // 2, BLOCK) == rig.content[BLOCK // 2:3 * BLOCK // 2]
    assert await handle.read(rig.data, 0, BLOCK // 2) == rig.content[:BLOCK // 2]
    assert rig.store.gets == [(BLOCK // 2, BLOCK), (0, BLOCK // 2)]
    await settle()
    assert rig.cached_blocks() == set()
    # Read on in sequence past the head: readahead starts, and the head is cached too.
    for offset in range(3 * BLOCK // 2, 6 * BLOCK, BLOCK):
        assert await handle.read(rig.data, offset, BLOCK) == rig.content[offset:offset + BLOCK]
    await settle()
    assert {0, 1, 2, 6, 7} <= rig.cached_blocks(), rig.cached_blocks()


async def test_the_head_of_other_files_is_read_in_blocks(make_rig) -> None:
    rig = await make_rig(64 * BLOCK, head_bytes=4 * BLOCK, name="vm-100-disk-0.qcow2")
    assert await rig.handle().read(rig.data, 100, 200) == rig.content[100:300]
    assert rig.store.gets == [(0, BLOCK)]


async def test_a_cold_read_is_answered_before_its_blocks_are_written(make_rig) -> None:
    rig = await make_rig(3 * BLOCK)
    async with rig.data.write_lock:  # the cache file cannot be written meanwhile
        with trio.fail_after(TIMEOUT):
            got = await rig.handle().read(rig.data, 100, BLOCK)
        assert got == rig.content[100:100 + BLOCK]
        assert rig.cached_blocks() == set()  # only once written do they count as cached
    await settle()
    assert rig.cached_blocks() == {0, 1} and not rig.reader._in_flight  # payload let go
    assert await rig.data.read(0, 2 * BLOCK) == rig.content[:2 * BLOCK]
    assert rig.store.gets == [(0, 2 * BLOCK)]


async def test_a_read_of_a_block_on_its_way_into_the_cache_file_needs_no_get(
        make_rig) -> None:
    rig = await make_rig(2 * BLOCK)
    handle = rig.handle()
    async with rig.data.write_lock:
        assert await handle.read(rig.data, 0, 10) == rig.content[:10]
        assert await handle.read(rig.data, BLOCK - 10, 20) == rig.content[BLOCK - 10:BLOCK + 10]
        assert rig.cached_blocks() == set()
    assert rig.store.gets == [(0, BLOCK), (BLOCK, BLOCK)]  # block 0 once: from its payload


async def test_a_block_written_while_its_get_runs_wins(make_rig) -> None:
    rig = await make_rig(2 * BLOCK)
    rig.store.close_gate()
    answers = []

    async def read_two_blocks() -> None:
        answers.append(await rig.handle().read(rig.data, 0, 2 * BLOCK))

    local = b"w" * BLOCK
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_two_blocks)
        await settle()
        assert rig.store.gets
        async with rig.data.write_lock:
            await rig.data.write(BLOCK, local)  # block 1, written here during the GET
        rig.store.gate.set()
    assert answers == [rig.content[:BLOCK] + local]
    await settle()
    assert rig.cached_blocks() == {0, 1}
    assert await rig.data.read(BLOCK, BLOCK) == local and 1 in rig.data.dirty
    assert rig.store.gets == [(0, 2 * BLOCK)]


async def test_a_read_past_a_truncation_inside_a_block_gets_zeros(make_rig) -> None:
    """Cut inside block 1, then extended: a read past the cut in block 1 (which still needs
    its first bytes fetched) is zeros there, also while answered from the payload (fsx found
    a negative length here)."""
    rig = await make_rig(4 * BLOCK)
    cut = BLOCK + 100
    async with rig.data.write_lock:
        await rig.data.truncate(4 * BLOCK, cut)
        await rig.data.truncate(cut, 4 * BLOCK)
    assert rig.data.needs_fetch(1)
    async with rig.data.write_lock:  # answered from the payload: no cache write meanwhile
        assert await rig.handle().read(rig.data, cut + 50, 1000) == bytes(1000)
        assert await rig.handle().read(rig.data, cut - 10, 20) == (
            rig.content[cut - 10:cut] + bytes(10))
    await settle()
    assert await rig.handle().read(rig.data, BLOCK, BLOCK) == (
        rig.content[BLOCK:cut] + bytes(BLOCK - 100))
    assert rig.store.gets == [(BLOCK, 100)]


async def test_readers_of_a_block_in_flight_share_its_get(make_rig) -> None:
    rig = await make_rig(2 * BLOCK)
    rig.store.close_gate()
    answers = {}

    async def read(offset: int) -> None:
        answers[offset] = await rig.handle().read(rig.data, offset, 1000)

    async with trio.open_nursery() as nursery:
        for offset in (0, 10, 5000, BLOCK - 1000):
            nursery.start_soon(read, offset)
        await settle()
        rig.store.gate.set()
    assert rig.store.gets == [(0, BLOCK)]
    assert answers == {o: rig.content[o:o + 1000] for o in answers}


async def test_a_sequential_read_fetches_each_byte_once_in_aligned_stretches(make_rig) -> None:
    size = 6 * RANGE + 1234
    rig = await make_rig(size)
    handle = rig.handle()
    step = BLOCK // 4
    got = [await handle.read(rig.data, offset, min(step, size - offset))
           for offset in range(0, size, step)]
    assert b"".join(got) == rig.content
    gets = sorted(rig.store.gets)  # readahead GETs start in any order
    assert gets[:2] == [(0, BLOCK), (BLOCK, BLOCK)]  # before readahead: the blocks read only
    assert [start for start, _ in gets[1:]] == [start + length for start, length in gets[:-1]]
    assert sum(length for _, length in gets) == size  # each byte once, nothing past the end
    assert all((start + length) % RANGE == 0 for start, length in gets[2:-1])
    assert len(rig.store.gets) <= 3 + size // RANGE


async def test_a_random_reader_fetches_just_the_blocks_it_reads(make_rig) -> None:
    rig = await make_rig(40 * BLOCK)
    handle = rig.handle()
    for block in (7, 30, 2, 19, 11):
        offset = block * BLOCK + 100
        assert await handle.read(rig.data, offset, 500) == rig.content[offset:offset + 500]
    assert rig.store.gets == [(b * BLOCK, BLOCK) for b in (7, 30, 2, 19, 11)]


async def test_a_partial_write_waits_until_its_block_is_in_the_cache_file(make_rig) -> None:
    rig = await make_rig(2 * BLOCK)
    await rig.reads.make_cached(rig.node, rig.data, [1])
    assert rig.cached_blocks() == {1}
    assert await rig.data.read(BLOCK, BLOCK) == rig.content[BLOCK:]


async def test_background_cache_writes_are_bounded(make_rig) -> None:
    """With the cache disk stuck, GETs stop once every write slot is taken and every
    connection holds a payload: memory stays bounded, nothing is dropped."""
    max_parallel = 2
    rig = await make_rig(16 * RANGE, max_parallel=max_parallel)
    async with rig.data.write_lock:
        rig.reader.prefetch(rig.data, rig.node.file.base, 0, 16 * RANGE)
        await settle()
        assert len(rig.store.gets) == max_parallel + CACHE_WRITES
        assert rig.reader.cache_writes.borrowed_tokens == CACHE_WRITES
    await settle()
    assert len(rig.cached_blocks()) == 16 * RANGE // BLOCK
    assert await rig.data.read(0, 16 * RANGE) == rig.content
    assert len(rig.store.gets) == 16 and not rig.reader._in_flight


async def test_release_cancels_the_readahead_in_flight(make_rig) -> None:
    rig = await make_rig(8 * RANGE)
    handle = rig.handle()
    for offset in range(0, 2 * BLOCK, BLOCK // 2):  # two whole blocks read: readahead starts
        await handle.read(rig.data, offset, BLOCK // 2)
    await settle()
    assert rig.cached_blocks() == set(range(RANGE // BLOCK))
    assert rig.store.gets == [(0, BLOCK), (BLOCK, BLOCK), (2 * BLOCK, RANGE - 2 * BLOCK)]
    rig.store.close_gate()
    with trio.fail_after(TIMEOUT):  # cached: the window doubles, the next stretch is asked for
        await handle.read(rig.data, 2 * BLOCK, BLOCK // 2)
    await settle()
    assert len(rig.store.gets) == 4 and rig.reader._in_flight
    handle.close()
    await settle()
    assert not rig.reader._in_flight
    rig.store.gate.set()
    await settle()
    assert rig.cached_blocks() == set(range(RANGE // BLOCK))  # nothing from the cancelled GET
    assert rig.store.stats.requests["GetObject"] == 3  # the cancelled one never reached S3


async def test_a_read_sharing_a_cancelled_readahead_fetches_again(make_rig) -> None:
    rig = await make_rig(4 * BLOCK)
    rig.store.close_gate()
    scopes: set[trio.CancelScope] = set()
    rig.reader.prefetch(rig.data, rig.node.file.base, 0, 4 * BLOCK, scopes)
    answers = []

    async def read() -> None:
        answers.append(await rig.handle().read(rig.data, BLOCK, BLOCK))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await settle()
        for scope in list(scopes):
            scope.cancel()
        await settle()
        assert len(rig.store.gets) == 2
        rig.store.gate.set()
    assert answers == [rig.content[BLOCK:2 * BLOCK]]
    assert rig.store.gets == [(0, 4 * BLOCK), (BLOCK, BLOCK)]


# -- the object changing under a read ---------------------------------------------------------


async def test_a_read_after_the_own_upload_replaced_the_object_reads_the_new_one(
        make_rig) -> None:
    rig = await make_rig(2 * BLOCK)
    # An upload of ours with a block written here: the others hold the same bytes.
    new_etag = await rig.store.put(KEY, rig.content[:BLOCK] + b"w" * BLOCK, {})
    rig.uploads.landed = RemoteObject(KEY, new_etag, 2 * BLOCK)
    assert await rig.handle().read(rig.data, 0, 100) == rig.content[:100]
    assert rig.uploads.asked == [rig.node] and rig.node.file.base.etag == new_etag


async def test_an_object_changed_by_someone_else_is_estale(make_rig) -> None:
    rig = await make_rig(2 * BLOCK)
    await rig.store.put(KEY, b"another host's version", {})
    with pytest.raises((FsError, StoreError)) as failure:
        await rig.handle().read(rig.data, 0, 100)
    assert errno_for(failure.value, "read") == errno.ESTALE
    assert rig.uploads.asked == [rig.node]  # no upload of ours: the base stays
    assert rig.cached_blocks() == set() and not rig.reader._in_flight
