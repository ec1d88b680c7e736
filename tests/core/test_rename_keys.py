"""Keys a file leaves behind when it moves (found by the stress tier, seeds 8 and 10).

Interleavings recreated deterministically against the core: every key a file published and
no longer owns is deleted, unless another file owns it now (and then that file deletes it
with its own object, or replaces it).
"""

from __future__ import annotations

import os

import trio
from corekit import (
    BLOCK,
    PREFIX,
    TIMEOUT,
    drain,
    inode,
    payload,
    write_file,
)

from s3pvefs.store.faults import FaultInjectingStore, store_error

RETRY_WAIT = 2.0  # seconds: the uploader retries a failed delete after 1 s


class GatedStore(FaultInjectingStore):
    """Requests of one operation on one key wait at a gate until the test opens it; the
    test learns when the first one arrived."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.gates: dict[tuple[str, str], tuple[trio.Event, trio.Event]] = {}

    def gate(self, operation: str, key: str) -> trio.Event:
        """Returns the event set when a request arrives at the gate."""
        arrived, opened = trio.Event(), trio.Event()
        self.gates[(operation, key)] = (arrived, opened)
        return arrived

    def open_gate(self, operation: str, key: str) -> None:
        self.gates.pop((operation, key))[1].set()

    async def _wait_at_gate(self, operation: str, key: str) -> None:
        gate = self.gates.get((operation, key))
        if gate is not None:
            gate[0].set()
            await gate[1].wait()

    async def delete(self, key: str) -> None:
        await self._wait_at_gate("DeleteObject", key)
        await super().delete(key)


def fail_delete_once(faulty: FaultInjectingStore, key: str) -> None:
    faulty.fail("DeleteObject", store_error("DeleteObject", "ServiceUnavailable", key),
                times=1, key_filter=lambda k: k == key)


async def renamed_with_its_old_key_left(make_core, store, seed: int):
    """images/a.raw uploaded, then renamed to b.raw while the DELETE of its old key fails
    once (the retry comes later): returns (core, images inode)."""
    faulty = FaultInjectingStore(store)
    core = await make_core(faulty)
    images = await inode(core, "images")
    await write_file(core, images, "a.raw", payload(3 * BLOCK, seed=seed))
    await drain(core)
    fail_delete_once(faulty, f"{PREFIX}images/a.raw")
    await core.rename(images, "a.raw", images, "b.raw")
    return core, images


# -- stale keys (stress seed 8) ----------------------------------------------------------------


async def test_a_stale_key_whose_delete_was_cancelled_is_deleted_later(make_core, store,
                                                                      s3):
    """The upload after a rename deletes the old key last; an unlink that cancels that delete
    must still see the key to delete (it was forgotten before the DELETE returned)."""
    gated = GatedStore(store)
    core = await make_core(gated)
    images = await inode(core, "images")
    await write_file(core, images, "a.raw", payload(3 * BLOCK, seed=1))
    await drain(core)
    fh, _ = await core.open(await inode(core, "images/a.raw"), os.O_RDWR)
    await core.write(fh, 0, b"dirty")
    fail_delete_once(gated, f"{PREFIX}images/a.raw")  # the rename's own delete fails
    await core.rename(images, "a.raw", images, "b.raw")
    arrived = gated.gate("DeleteObject", f"{PREFIX}images/a.raw")
    await core.release(fh)  # uploads b.raw, then deletes a.raw: held at the gate
    with trio.fail_after(TIMEOUT):
        await arrived.wait()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.unlink, images, "b.raw")  # cancels that upload
            await trio.sleep(0.2)
            gated.open_gate("DeleteObject", f"{PREFIX}images/a.raw")
    await drain(core)
    assert s3.keys(f"{PREFIX}images/") == [f"{PREFIX}images/"]


async def test_two_renames_before_the_first_old_key_is_deleted_leave_neither(
        make_core, store, s3):
    faulty = FaultInjectingStore(store)
    core = await make_core(faulty)
    images = await inode(core, "images")
    data = payload(3 * BLOCK, seed=2)
    await write_file(core, images, "a.raw", data)
    await drain(core)
    fail_delete_once(faulty, f"{PREFIX}images/a.raw")
    await core.rename(images, "a.raw", images, "b.raw")
    await core.rename(images, "b.raw", images, "c.raw")
    await trio.sleep(RETRY_WAIT)
    await drain(core)
    assert s3.keys(f"{PREFIX}images/") == [f"{PREFIX}images/",
                                                             f"{PREFIX}images/c.raw"]
    assert s3.body(f"{PREFIX}images/c.raw") == data


async def test_a_file_created_at_a_stale_key_deletes_the_object_there_when_unlinked(
        make_core, store, s3):
    """The old key of a renamed file is not deleted while a new file is there (its upload
    will replace the object); should that file go before it was uploaded, the object must
    go with it."""
    core, images = await renamed_with_its_old_key_left(make_core, store, seed=3)
    fh, _ = await write_file(core, images, "a.raw", b"new", release=False)
    await trio.sleep(RETRY_WAIT)  # the retry finds the new file at the key: not deleted
    await core.unlink(images, "a.raw")
    await core.release(fh)
    await drain(core)
    assert s3.keys(f"{PREFIX}images/") == [f"{PREFIX}images/",
                                                             f"{PREFIX}images/b.raw"]


async def test_a_file_replaced_by_a_rename_hands_its_stale_key_on(make_core, store, s3):
    faulty = FaultInjectingStore(store)
    core = await make_core(faulty)
    images = await inode(core, "images")
    await write_file(core, images, "x.raw", payload(3 * BLOCK, seed=4))
    new = payload(2 * BLOCK, seed=5)
    await write_file(core, images, "n.raw", new)
    await drain(core)
    fail_delete_once(faulty, f"{PREFIX}images/x.raw")
    await core.rename(images, "x.raw", images, "t.raw")  # x.raw still to delete
    await core.rename(images, "n.raw", images, "t.raw")  # ... when t.raw is replaced
    await trio.sleep(RETRY_WAIT)
    await drain(core)
    assert s3.keys(f"{PREFIX}images/") == [f"{PREFIX}images/",
                                                             f"{PREFIX}images/t.raw"]
    assert s3.body(f"{PREFIX}images/t.raw") == new


async def test_a_listing_does_not_show_an_object_left_at_an_old_key(make_core, store, s3):
    """Stress seed 8: a stream completed at the key its file was renamed from; a listing
    before that key's DELETE made a file of the object, which then owned the key and kept it
    from ever being deleted."""
    core, images = await renamed_with_its_old_key_left(make_core, store, seed=6)
    core.dirs.invalidate(core.node(images))
    assert [name for name, _ in await core.readdir(images)] == ["b.raw"]
    await trio.sleep(RETRY_WAIT)
    await drain(core)
    assert s3.keys(f"{PREFIX}images/") == [f"{PREFIX}images/",
                                                             f"{PREFIX}images/b.raw"]
