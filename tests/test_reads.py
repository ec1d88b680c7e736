"""The read engine through a real mount: what "show configuration" fetches, random reads
against the same ranges fetched with boto3, archived objects."""

from __future__ import annotations

import errno
import io
import os
import random
import subprocess
import tarfile

import pytest
from helpers import needs_fuse

MiB = 1024 * 1024

pytestmark = needs_fuse


def received(mount) -> int:
    return mount.status()["bytes_received"]


def read_through(mount) -> int:
    """Bytes the kernel asked the mount for (FUSE reads answered)."""
    return mount.status()["bytes_read"]


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-1", "-c"], input=data, capture_output=True,
                          check=True).stdout


def pct_archive() -> tuple[bytes, bytes]:
    """A container backup: ./etc/vzdump/pct.conf first, then a large incompressible member."""
    conf = b"arch: amd64\ncores: 2\nhostname: ct101\nmemory: 1024\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, body in (("./etc/vzdump/pct.conf", conf), ("./var/big", os.urandom(12 * MiB))):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return zstd(buffer.getvalue()), conf


@pytest.mark.real_server
def test_show_configuration_fetches_what_the_kernel_asks(mount_s3pvefs, s3_client, bucket):
    tar_zst, conf = pct_archive()
    vma_zst = zstd(b"VMA\x00" + os.urandom(12 * MiB))
    s3_client.put_object(Bucket=bucket, Key="pve/dump/vzdump-lxc-101-2026_11_21-01_00_00.tar.zst",
                         Body=tar_zst)
    s3_client.put_object(Bucket=bucket, Key="pve/dump/vzdump-qemu-100-2026_11_21-01_00_00.vma.zst",
                         Body=vma_zst)
    mount = mount_s3pvefs()
    dump = mount.path / "dump"

    before, asked = received(mount), read_through(mount)
    shown = subprocess.run(["tar", "-xpOf", str(dump / "vzdump-lxc-101-2026_11_21-01_00_00.tar.zst"),
                            "./etc/vzdump/pct.conf", "--occurrence"], capture_output=True)
    assert shown.stdout == conf, shown.stderr
    # tar needs the first 128 KiB; zstd reads ahead in its own buffers (0.5 MiB, up to
    # ~1.4 MiB when tar is slow to exit), and the kernel's readahead asks up to 1 MiB beyond
    # that (the mount sets 1 MiB: a restore reads 1.5x faster). At a file's head the mount
    # fetches just the ranges the kernel asks for: in no whole block, with no readahead.
    assert received(mount) - before == read_through(mount) - asked
    assert received(mount) - before <= 8 * MiB  # of 12: the rest was never read

    before, asked = received(mount), read_through(mount)
    head = subprocess.run(f"zstd -dc {dump}/vzdump-qemu-100-2026_11_21-01_00_00.vma.zst "
                          "| head -c 65536", shell=True, capture_output=True)
    assert head.stdout[:4] == b"VMA\x00" and len(head.stdout) == 65536
    assert received(mount) - before == read_through(mount) - asked
    assert received(mount) - before <= 8 * MiB  # of 12: the rest was never read
    assert mount.unmount() == 0


@pytest.mark.real_server
def test_random_reads_match_ranges_fetched_directly(mount_s3pvefs, s3_client, bucket):
    data = os.urandom(20 * MiB + 12345)
    s3_client.put_object(Bucket=bucket, Key="pve/template/iso/random.iso", Body=data)
    mount = mount_s3pvefs("--cache-size", "16MiB")  # smaller than the file: blocks come and go
    rng = random.Random(7)
    fd = os.open(mount.path / "template" / "iso" / "random.iso", os.O_RDONLY)
    try:
        for _ in range(60):
            offset = rng.randrange(0, len(data))
            length = rng.choice([1, 512, 4096, 65536, MiB + 17, 3 * MiB])
            direct = s3_client.get_object(Bucket=bucket, Key="pve/template/iso/random.iso",
                                          Range=f"bytes={offset}-{offset + length - 1}")
            assert os.pread(fd, length, offset) == direct["Body"].read()
    finally:
        os.close(fd)
    with open(mount.path / "template" / "iso" / "random.iso", "rb") as image:
        assert image.read() == data  # and a full sequential read, across every boundary
    assert mount.unmount() == 0


# moto only: RGW 16.2 has no GLACIER storage class unless its placement defines one (a PUT with
# it is refused) and no archive tier whose GET fails until a restore.
def test_archived_object_gives_a_clear_error(mount_s3pvefs, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="pve/dump/old.vma.zst", Body=b"z" * 1000,
                         StorageClass="GLACIER")
    mount = mount_s3pvefs()
    with pytest.raises(OSError) as excinfo:
        (mount.path / "dump" / "old.vma.zst").read_bytes()
    assert excinfo.value.errno == errno.EIO
    assert mount.unmount() == 0
    assert "restore it first" in mount.log()


def gets(mount) -> int:
    return mount.status()["requests"].get("GetObject", 0)


@pytest.mark.real_server
def test_cached_data_survives_a_remount_unless_the_object_changed(mount_s3pvefs, s3_client,
                                                                  bucket, tmp_path):
    cache = tmp_path / "cache"
    data = os.urandom(6 * MiB)
    s3_client.put_object(Bucket=bucket, Key="pve/template/iso/a.iso", Body=data)
    s3_client.put_object(Bucket=bucket, Key="pve/template/iso/b.iso", Body=data)
    mount = mount_s3pvefs(cache_dir=cache)
    for name in ("a.iso", "b.iso"):
        assert (mount.path / "template" / "iso" / name).read_bytes() == data
    assert mount.unmount() == 0

    changed = os.urandom(6 * MiB)  # another host replaces b.iso meanwhile
    s3_client.put_object(Bucket=bucket, Key="pve/template/iso/b.iso", Body=changed)
    mount = mount_s3pvefs(cache_dir=cache)
    before = gets(mount)
    assert (mount.path / "template" / "iso" / "a.iso").read_bytes() == data
    assert gets(mount) == before  # from the cache kept at unmount: no GET
    assert (mount.path / "template" / "iso" / "b.iso").read_bytes() == changed
    assert gets(mount) > before  # a new version: fetched, never the stale blocks
    assert mount.unmount() == 0
