"""The content checksum (CRC64NVME) an upload records for ``s3pvefs verify``: computed from the
bodies sent, in the PUT's metadata or, after a multipart upload, in the directory's attribute
index; never a checksum of anything but the object's content (none rather than a wrong one).
"""

from __future__ import annotations

import os

from corekit import (
    BLOCK,
    PART,
    PREFIX,
    drain,
    inode,
    payload,
    recorded_checksum,
    write_file,
)
from helpers import crc64nvme


async def test_a_streamed_backup_records_the_checksum_of_its_parts(make_core, s3) -> None:
    core = await make_core()
    dump = await inode(core, "dump")
    data = payload(3 * PART + 12345, seed=40)
    _, node = await write_file(core, dump, "vzdump-qemu-100.vma", data)
    await drain(core)
    key = f"{PREFIX}dump/vzdump-qemu-100.vma"
    assert s3.body(key) == data
    assert recorded_checksum(s3, key) == crc64nvme(bytes(data))
    assert node.file.checksum is not None and not node.file.checksum.in_metadata


async def test_a_part_rewritten_behind_a_stream_records_no_checksum(make_core, s3) -> None:
    core = await make_core()
    images = await inode(core, "images")
    data = bytearray(payload(3 * PART, seed=41))
    fh, node = await write_file(core, images, "disk.raw", bytes(data), release=False)
    patch = payload(BLOCK, seed=42)
    await core.write(fh, 10, patch)  # into part 1, uploaded (or on its way) already
    data[10:10 + BLOCK] = patch
    await core.release(fh)
    await drain(core)
    key = f"{PREFIX}images/disk.raw"
    assert s3.body(key) == data
    assert recorded_checksum(s3, key) in (None, crc64nvme(bytes(data)))  # never the first pass's hash


async def test_metadata_changes_and_renames_keep_a_put_checksum(make_core, s3) -> None:
    core = await make_core()
    dump = await inode(core, "dump")
    data = b"notes of a backup\n"
    _, node = await write_file(core, dump, "x.notes", data)
    await drain(core)
    await core.setattr(node.ino, mode=0o100600)
    await drain(core)
    assert recorded_checksum(s3, f"{PREFIX}dump/x.notes") == crc64nvme(bytes(data))
    await core.rename(dump, "x.notes", dump, "y.notes")
    await drain(core)
    assert recorded_checksum(s3, f"{PREFIX}dump/y.notes") == crc64nvme(bytes(data))
    restarted = await make_core()  # knows nothing of the checksum: the copy keeps it all the same
    ino = await inode(restarted, "dump/y.notes")
    await restarted.setattr(ino, mode=0o100644)
    await drain(restarted)
    assert recorded_checksum(s3, f"{PREFIX}dump/y.notes") == crc64nvme(bytes(data))


async def test_an_upload_that_copies_parts_on_the_server_records_no_checksum(make_core, s3):
    """Parts copied from the old object were not seen here: no checksum is claimed for them."""
    first = await make_core()
    images = await inode(first, "images")
    data = bytearray(os.urandom(2 * PART + 100))
    await write_file(first, images, "big.raw", bytes(data))
    await drain(first)
    core = await make_core(cache_size=4 * PART)  # a fresh cache: part 2 is not cached here
    ino = await inode(core, "images/big.raw")
    fh, _ = await core.open(ino, os.O_WRONLY)
    await core.write(fh, 0, b"changed")
    data[0:7] = b"changed"
    await core.release(fh)
    await drain(core)
    key = f"{PREFIX}images/big.raw"
    assert s3.body(key) == data
    assert recorded_checksum(s3, key) is None
