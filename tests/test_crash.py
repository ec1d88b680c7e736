"""kill -9 of the mount at points of the write / close / rename / upload sequence, then a
remount on the same cache directory: nothing acknowledged is lost, nothing half-written is
published under a name its writer never gave it, and no multipart upload is left open."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from helpers import keys, needs_fuse, object_bytes, open_uploads

MiB = 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ARCHIVE = "vzdump-qemu-100-2026_11_21-10_00_00"

pytestmark = needs_fuse


def sync(mount, path=None) -> subprocess.CompletedProcess:
    return mount.cli("sync", "--timeout", "60", path or mount.path)


def journal_records(cache_dir) -> list:
    return sorted((cache_dir / "journal").glob("*.json"))


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_kill_after_close_keeps_the_file(mount_s3pvefs, s3_client, bucket, tmp_path):
    cache = tmp_path / "cache"
    mount = mount_s3pvefs(cache_dir=cache)
    small, large = os.urandom(100_000), os.urandom(12 * MiB)
    # Temporary names wait a few seconds for their rename before uploading: killed before that.
    (mount.path / "dump" / "notes.tmp.4242").write_bytes(small)
    (mount.path / "template" / "iso" / "x.iso.tmp_dwnl.77").write_bytes(large)
    mount.kill()
    assert "pve/dump/notes.tmp.4242" not in keys(s3_client, bucket)
    assert len(journal_records(cache)) == 2

    mount = mount_s3pvefs(cache_dir=cache)
    assert (mount.path / "dump" / "notes.tmp.4242").read_bytes() == small
    assert sync(mount).returncode == 0
    assert object_bytes(s3_client, bucket, "pve/dump/notes.tmp.4242") == small
    assert object_bytes(s3_client, bucket, "pve/template/iso/x.iso.tmp_dwnl.77") == large
    assert journal_records(cache) == []
    assert mount.unmount() == 0
    assert open_uploads(s3_client, bucket) == []
    assert "recovered" in mount.log()


def test_kill_after_vzdump_rename_completes_the_backup(mount_s3pvefs, s3_client, bucket,
                                                       tmp_path):
    cache = tmp_path / "cache"
    mount = mount_s3pvefs(cache_dir=cache)
    data = ZSTD_MAGIC + os.urandom(30 * MiB)
    dump = mount.path / "dump"
    (dump / f"{ARCHIVE}.vma.dat").write_bytes(data)
    os.rename(dump / f"{ARCHIVE}.vma.dat", dump / f"{ARCHIVE}.vma.zst")
    mount.kill()  # parts may be on S3, the upload is not complete

    mount = mount_s3pvefs(cache_dir=cache)
    assert sync(mount).returncode == 0
    assert object_bytes(s3_client, bucket, f"pve/dump/{ARCHIVE}.vma.zst") == data
    stored = keys(s3_client, bucket)
    assert f"pve/dump/{ARCHIVE}.vma.dat" not in stored
    assert mount.unmount() == 0
    assert open_uploads(s3_client, bucket) == []
    assert journal_records(cache) == []


WRITER = r"""
import os, sys, time
path, total, chunk = sys.argv[1], int(sys.argv[2]), 1024 * 1024
data = open(sys.argv[3], "rb").read()
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for offset in range(0, total, chunk):
    os.write(fd, data[offset:offset + chunk])
    print(offset + chunk, flush=True)
    time.sleep(0.02)
os.close(fd)
"""


def test_kill_while_backup_is_written(mount_s3pvefs, s3_client, bucket, tmp_path):
    """The writer is cut off mid-stream: the .dat is kept as far as it was written, and nothing
    appears under the final archive name until somebody renames it there."""
    cache = tmp_path / "cache"
    source = tmp_path / "source"
    data = ZSTD_MAGIC + os.urandom(40 * MiB - 4)
    source.write_bytes(data)
    mount = mount_s3pvefs(cache_dir=cache)
    dat = mount.path / "dump" / f"{ARCHIVE}.vma.dat"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(dat), str(len(data)),
                               str(source)], stdout=subprocess.PIPE, text=True)
    written = 0
    while written < 25 * MiB:
        written = int(writer.stdout.readline())
    mount.kill()
    writer.kill()
    writer.wait()
    assert f"pve/dump/{ARCHIVE}.vma.zst" not in keys(s3_client, bucket)

    mount = mount_s3pvefs(cache_dir=cache)
    dat = mount.path / "dump" / f"{ARCHIVE}.vma.dat"
    kept = dat.stat().st_size
    assert written <= kept <= len(data)
    time.sleep(1)  # the recovered upload had its chance: it must wait for the rename
    stored = keys(s3_client, bucket)
    assert f"pve/dump/{ARCHIVE}.vma.zst" not in stored
    assert f"pve/dump/{ARCHIVE}.vma.dat" not in stored
    status = mount.cli("status", mount.path)
    assert "1 file(s)" in status.stdout, status.stdout

    os.rename(dat, mount.path / "dump" / f"{ARCHIVE}.vma.zst")
    assert sync(mount).returncode == 0
    assert object_bytes(s3_client, bucket, f"pve/dump/{ARCHIVE}.vma.zst") == data[:kept]
    assert mount.unmount() == 0
    assert open_uploads(s3_client, bucket) == []
    assert journal_records(cache) == []


def test_kill_while_backup_is_written_then_deleted(mount_s3pvefs, s3_client, bucket, tmp_path):
    """vzdump's cleanup of a failed backup after the restart leaves nothing behind."""
    cache = tmp_path / "cache"
    mount = mount_s3pvefs(cache_dir=cache)
    dat = mount.path / "dump" / f"{ARCHIVE}.vma.dat"
    fd = os.open(dat, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, ZSTD_MAGIC + os.urandom(20 * MiB))
    wait_for(lambda: len(journal_records(cache)) == 1 and b"upload_id" in
             journal_records(cache)[0].read_bytes())  # a streamed part is recorded
    mount.kill()
    try:
        os.close(fd)
    except OSError:
        pass

    mount = mount_s3pvefs(cache_dir=cache)
    os.unlink(mount.path / "dump" / f"{ARCHIVE}.vma.dat")
    assert mount.unmount() == 0
    assert not any("vzdump" in key for key in keys(s3_client, bucket))
    assert open_uploads(s3_client, bucket) == []
    assert journal_records(cache) == []
