"""Cache space accounting without the kernel: blocks are charged by the pages they can hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from s3pvefs.state.blockcache import BlockCache
from s3pvefs.state.cachefile import PAGE, block_charge

KiB = 1024
BLOCK = 64 * KiB


@pytest.fixture
async def cache(tmp_path: Path):
    """A cache whose background task (closing and deleting cache files) runs."""
    cache = BlockCache(tmp_path / "cache", BLOCK, 4 * BLOCK)
    cache.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        yield cache
        nursery.cancel_scope.cancel()
    cache.close()


async def eventually(predicate) -> None:
    """Wait (a little) for the cache's background task to get there."""
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.001)


def test_block_charge_counts_whole_pages_up_to_a_block():
    assert block_charge(BLOCK, 0) == PAGE  # an empty cached block still costs a page
    assert block_charge(BLOCK, 1) == PAGE
    assert block_charge(BLOCK, PAGE + 1) == 2 * PAGE
    assert block_charge(BLOCK, 10 * BLOCK) == BLOCK


async def test_small_files_cost_pages_not_blocks(cache: BlockCache):
    files = [cache.new_file() for _ in range(40)]
    for cached_file in files:
        await cached_file.write(0, b"nightly backup\n")
    assert cache.used_bytes == 40 * PAGE  # 40 full blocks would be 10x the limit
    for cached_file in files:
        cached_file.discard()
    await eventually(lambda: cache.used_bytes == 0)


async def test_a_growing_last_block_is_charged_for_what_it_holds(cache: BlockCache):
    cached_file = cache.new_file()
    await cached_file.write(0, b"a" * 100)
    await cached_file.write(100, b"b" * (2 * PAGE))
    assert cache.used_bytes == 3 * PAGE
    await cached_file.write(BLOCK - 10, b"c" * 20)  # fills block 0, starts block 1
    assert cache.used_bytes == BLOCK + PAGE
    await cached_file.truncate(BLOCK + 20, 10)  # block 1 gone; block 0 keeps its charge
    assert cache.used_bytes == BLOCK
    cached_file.discard()
    await eventually(lambda: cache.used_bytes == 0)


async def test_fetched_partial_block_and_eviction_free_what_they_charged(cache: BlockCache):
    cached_file = cache.new_file()
    size = BLOCK + 5000
    cached_file.reset_base(size)
    await cached_file.install_run(0, 2, b"x" * size)
    assert cache.used_bytes == BLOCK + 2 * PAGE
    assert await cache.evict(1) == BLOCK  # the oldest clean block is enough
    assert cache.used_bytes == 2 * PAGE
    assert await cache.evict(1) == 2 * PAGE
    assert cache.used_bytes == 0
    assert not cached_file.cached


async def test_files_without_handles_do_not_keep_descriptors_open(cache: BlockCache):
    """Hundreds of notes prefetched after a listing must not pile up open files."""
    cached_file = cache.new_file()
    cached_file.reset_base(100)
    await cached_file.install_run(0, 1, b"n" * 100)
    await eventually(lambda: cached_file._fd is None)
    cached_file.keep_fd()  # a handle opened it: the descriptor may stay
    assert await cached_file.read(0, 100) == b"n" * 100
    assert cached_file._fd is not None
    cached_file.release_fd()
    await eventually(lambda: cached_file._fd is None)
    await cached_file.read(0, 10)  # an upload reading a closed file
    await eventually(lambda: cached_file._fd is None)


async def test_a_fetch_landing_after_discard_is_dropped(cache: BlockCache):
    """A file deleted while its prefetch GET ran: nothing comes back, nothing stays charged."""
    cached_file = cache.new_file()
    cached_file.reset_base(100)
    cached_file.discard()
    await cached_file.install_run(0, 1, b"n" * 100)
    assert cache.used_bytes == 0
    assert not cached_file.path.exists()


async def test_a_deleted_file_counts_as_used_until_it_is_gone_from_the_disk(cache: BlockCache):
    cached_file = cache.new_file()
    await cached_file.write(0, b"d" * (2 * BLOCK))
    cached_file.discard()  # deleted in the background, never on the trio loop
    assert cache.used_bytes == 2 * BLOCK and cached_file.path.exists()
    await eventually(lambda: cache.used_bytes == 0)
    assert not cached_file.path.exists()


async def test_a_writer_waits_for_a_deletion_instead_of_evicting_more(cache: BlockCache):
    """The room a file being deleted holds is on its way: evicting clean blocks as well
    would drop data a reader may want next."""
    clean = cache.new_file()
    clean.reset_base(2 * BLOCK)
    await clean.install_run(0, 2, b"c" * (2 * BLOCK))
    deleted = cache.new_file()
    await deleted.write(0, b"d" * (2 * BLOCK))
    deleted.discard()
    writer = cache.new_file()
    with trio.fail_after(5):
        await cache.reserve(writer, 2, lambda: 0)
    assert sorted(clean.cached) == [0, 1]
    assert not deleted.path.exists() and cache.used_bytes == 2 * BLOCK
