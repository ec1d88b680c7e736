"""Injected S3 failures through a real mount: a fault proxy sits between the mount and moto.

Writes land in the cache whatever S3 does; the data reaches S3 once the failures stop; a failure
that does not go away is reported by `s3pvefs sync` and `s3pvefs status`. What is on S3 is
checked with boto3 directly on moto, never through the proxy.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import needs_fuse, object_bytes, open_uploads
from mounting import run_cli

MiB = 1024 * 1024
QUICK = 2.0  # seconds an operation answered from memory or the cache may take, at most

pytestmark = needs_fuse


def write_paced(f, data: bytes, seconds: float = 0.0) -> None:
    """Write in 1 MiB pieces, spread over ``seconds``; every write must take all it is given."""
    pieces = range(0, len(data), MiB)
    for offset in pieces:
        assert f.write(data[offset:offset + MiB]) == len(data[offset:offset + MiB])
        if seconds:
            time.sleep(seconds / len(pieces))


def wait_until_stalled(value, quiet: float, timeout: float):
    """Poll ``value()`` until it stayed the same for ``quiet`` seconds; returns it."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {timeout} s: {last}"
        time.sleep(0.05)
        if (current := value()) != last:
            last, since = current, time.monotonic()
    return last


def timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def details(mount, proxy) -> str:
    return f"proxy: {proxy.describe()}\n--- mount log (tail) ---\n{mount.log()[-8000:]}"


def check_synced(mount, proxy, path: Path, timeout: int = 60) -> None:
    result = run_cli("sync", "--timeout", str(timeout), str(path))
    assert result.returncode == 0, (result.stderr, details(mount, proxy))


# -- transient failures while a backup streams ----------------------------------------------


def test_streamed_write_rides_out_a_503_burst(faulty_mount, proxy, s3_client, bucket):
    mount = faulty_mount()
    path = mount.path / "dump" / "burst.raw"
    data = os.urandom(40 * MiB)
    with open(path, "wb", buffering=0) as f:
        write_paced(f, data[:15 * MiB])
        # The streaming upload is under way (a part went out) when S3 starts throttling.
        assert proxy.wait_for(lambda p: p.requests("PUT", "partNumber="), 20), \
            details(mount, proxy)
        proxy.error503()
        burst_started = time.monotonic()
        write_paced(f, data[15 * MiB:30 * MiB], seconds=1.5)
        assert proxy.wait_for(lambda p: len(p.requests("PUT", "partNumber=", "503")) >= 3, 20), \
            details(mount, proxy)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - burst_started)))
        proxy.passthrough()
        write_paced(f, data[30 * MiB:])
    check_synced(mount, proxy, path)
    assert object_bytes(s3_client, bucket, "pve/dump/burst.raw") == data
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0


def test_streamed_write_survives_connection_resets(faulty_mount, proxy, s3_client, bucket):
    mount = faulty_mount()
    path = mount.path / "dump" / "resets.raw"
    data = os.urandom(40 * MiB)
    with open(path, "wb", buffering=0) as f:
        write_paced(f, data[:10 * MiB])
        proxy.reset(10, match="partNumber=")  # the next 10 attempts to upload a part
        write_paced(f, data[10 * MiB:], seconds=1.0)
        # Every reset part is tried again until it goes through, so all 10 are used up.
        assert proxy.wait_for(lambda p: p.faults["reset"] == 10, 30), details(mount, proxy)
        # Then completing the upload fails, as often as botocore tries, at close.
        proxy.reset(3, methods="POST", match="uploadId=")
    assert proxy.wait_for(lambda p: p.faults["reset"] == 13, 30), details(mount, proxy)
    check_synced(mount, proxy, path)
    assert object_bytes(s3_client, bucket, "pve/dump/resets.raw") == data
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0


# -- the endpoint goes away -----------------------------------------------------------------


def test_stopped_endpoint_writes_go_to_the_cache_and_catch_up(faulty_mount, proxy, s3_client,
                                                              bucket):
    # A long listing TTL: this test is about writes; expired listings are tested below.
    mount = faulty_mount("--dir-ttl", "120")
    big, small = mount.path / "dump" / "offline.raw", mount.path / "snippets" / "offline.txt"
    big_data, small_data = os.urandom(10 * MiB + 12345), b"written while S3 was away\n"
    proxy.stop()
    started = time.monotonic()
    with open(big, "wb", buffering=0) as f:
        write_paced(f, big_data)
        _, seconds = timed(os.fsync, f.fileno())  # durability = journal: S3 is not waited for
        assert seconds < QUICK, (seconds, details(mount, proxy))
    small.write_bytes(small_data)
    assert time.monotonic() - started < 2 * QUICK, details(mount, proxy)

    for check in (lambda: os.listdir(big.parent), lambda: os.stat(big), lambda: os.stat(small),
                  lambda: os.statvfs(mount.path)):
        _, seconds = timed(check)
        assert seconds < QUICK, (seconds, details(mount, proxy))
    assert "offline.raw" in os.listdir(big.parent)
    assert os.stat(big).st_size == len(big_data) and os.stat(small).st_size == len(small_data)
    big_read, seconds = timed(big.read_bytes)
    assert big_read == big_data and seconds < QUICK  # cached reads keep working
    assert small.read_bytes() == small_data

    status = run_cli("status", "--json", str(mount.path), timeout=30)
    assert status.returncode in (0, 1), status.stderr
    assert json.loads(status.stdout)["dirty_files"] == 2

    time.sleep(2)  # let the uploads fail and back off for a while
    proxy.start()
    result = run_cli("sync", "--timeout", "120", str(mount.path))
    assert result.returncode == 0, (result.stderr, details(mount, proxy))
    assert object_bytes(s3_client, bucket, "pve/dump/offline.raw") == big_data
    assert object_bytes(s3_client, bucket, "pve/snippets/offline.txt") == small_data
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0


def test_full_cache_blocks_writes_until_the_endpoint_is_back(faulty_mount, proxy, s3_client,
                                                             bucket):
    mount = faulty_mount("--dir-ttl", "120")  # the fixture's cache holds 64 MiB
    path = mount.path / "dump" / "larger-than-cache.raw"
    data = os.urandom(80 * MiB)
    progress = {"written": 0, "error": None}

    def writer() -> None:
        try:
            with open(path, "wb", buffering=0) as f:
                for offset in range(0, len(data), MiB):
                    f.write(data[offset:offset + MiB])
                    progress["written"] = offset + MiB
        except OSError as exc:
            progress["error"] = exc

    proxy.stop()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        # The writer fills the cache, then waits: no error, no progress. The cache may exceed
        # its limit by one part (5 MiB) of a file being written; writes are 1 MiB.
        stalled_at = wait_until_stalled(lambda: progress["written"], 1.0, 30)
        assert thread.is_alive() and progress["error"] is None, progress
        assert 48 * MiB <= stalled_at <= 70 * MiB, (progress, details(mount, proxy))
        for check in (lambda: os.statvfs(mount.path), lambda: os.stat(path),
                      lambda: os.listdir(path.parent)):
            _, seconds = timed(check)
            assert seconds < QUICK, (seconds, details(mount, proxy))
    finally:
        proxy.start()
        thread.join(60)
    assert not thread.is_alive() and progress["error"] is None, (progress, details(mount, proxy))
    check_synced(mount, proxy, path)
    assert object_bytes(s3_client, bucket, "pve/dump/larger-than-cache.raw") == data
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0


def test_known_entries_answer_while_stopped_after_the_listing_expired(faulty_mount, proxy):
    mount = faulty_mount("--dir-ttl", "1")
    path = mount.path / "dump" / "known.txt"
    path.write_bytes(b"on S3 and in the cache\n")
    check_synced(mount, proxy, path)
    proxy.stop()
    time.sleep(1.5)  # the listing (dir_ttl) and the kernel's entry cache (attr_ttl) expired
    for check in (lambda: os.stat(path), lambda: os.listdir(path.parent), path.read_bytes):
        _, seconds = timed(check)
        assert seconds < QUICK, (seconds, details(mount, proxy))
    assert path.read_bytes() == b"on S3 and in the cache\n"


def test_sync_waits_out_a_short_outage_within_its_timeout(faulty_mount, proxy, s3_client,
                                                          bucket):
    mount = faulty_mount("--max-attempts", "2")
    path = mount.path / "snippets" / "small.txt"
    proxy.stop()
    path.write_bytes(b"small file, written while S3 was away\n")
    restart = threading.Timer(5.0, proxy.start)  # botocore gives up well before this
    restart.start()
    try:
        result = run_cli("sync", "--timeout", "60", str(path))
    finally:
        restart.cancel()
        restart.join()
        proxy.start()
    assert result.returncode == 0, (result.stderr, details(mount, proxy))
    assert object_bytes(s3_client, bucket, "pve/snippets/small.txt") == path.read_bytes()


# -- failures that do not go away by themselves ---------------------------------------------


def test_permanent_failure_is_reported_then_recovers(faulty_mount, proxy, s3_client, bucket):
    mount = faulty_mount()
    small, big = mount.path / "snippets" / "denied.txt", mount.path / "dump" / "denied.raw"
    small_data, big_data = b"no permission to store this\n", os.urandom(12 * MiB + 1)
    proxy.error(403, "AccessDenied", "Access Denied", methods="PUT")  # every upload, for good
    small.write_bytes(small_data)
    with open(big, "wb", buffering=0) as f:
        write_paced(f, big_data)

    result = run_cli("sync", "--timeout", "30", str(small))
    assert result.returncode == 1, (result.stdout, result.stderr, details(mount, proxy))
    assert f"{small}: " in result.stderr and "AccessDenied" in result.stderr, result.stderr
    result = run_cli("sync", "--timeout", "30", str(mount.path))
    assert result.returncode == 1, (result.stdout, result.stderr, details(mount, proxy))
    assert f"{small}: " in result.stderr and f"{big}: " in result.stderr, result.stderr

    result = run_cli("status", str(mount.path), timeout=30)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "upload errors:  2" in result.stdout, result.stdout
    assert "snippets/denied.txt: " in result.stdout and "dump/denied.raw: " in result.stdout
    assert "AccessDenied" in result.stdout
    assert proxy.faults["403"] >= 2

    proxy.passthrough()
    result = run_cli("sync", "--timeout", "60", str(mount.path))
    assert result.returncode == 0, (result.stderr, details(mount, proxy))
    assert object_bytes(s3_client, bucket, "pve/snippets/denied.txt") == small_data
    assert object_bytes(s3_client, bucket, "pve/dump/denied.raw") == big_data
    assert open_uploads(s3_client, bucket) == []
    result = run_cli("status", str(mount.path), timeout=30)
    assert result.returncode == 0 and "upload errors:  0" in result.stdout, result.stdout
    assert mount.unmount() == 0


@pytest.mark.parametrize("size", [100_000, 12 * MiB], ids=["single", "multipart"])
def test_rename_falls_back_when_the_server_cannot_copy(faulty_mount, proxy, s3_client, bucket,
                                                       size):
    """A server without CopyObject / UploadPartCopy (answers 501 NotImplemented): renaming an
    uploaded file re-uploads it under the new name instead of failing."""
    mount = faulty_mount()
    iso = mount.path / "template" / "iso"
    data = os.urandom(size)
    (iso / "old.iso").write_bytes(data)
    check_synced(mount, proxy, iso / "old.iso")
    proxy.error(501, "NotImplemented", "no server-side copy here", header="x-amz-copy-source")
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
    os.rename(iso / "old.iso", iso / "new.iso")
    assert proxy.faults, proxy.describe()  # the copy was tried and refused
    assert (iso / "new.iso").read_bytes() == data
    keys = {obj["Key"] for obj in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "pve/template/iso/new.iso" in keys and "pve/template/iso/old.iso" not in keys
    assert object_bytes(s3_client, bucket, "pve/template/iso/new.iso") == data
    assert open_uploads(s3_client, bucket) == []
    proxy.passthrough()
    assert mount.unmount() == 0


def test_a_delete_refused_by_object_lock_is_eperm_and_the_file_stays(faulty_mount, proxy,
                                                                      s3_client, bucket):
    """AWS answers a delete that Object Lock forbids with 403 AccessDenied and says why in the
    message: rm gets EPERM (not EACCES, never EIO), the log names the object, the file stays,
    and the mount goes on serving."""
    mount = faulty_mount()
    path = mount.path / "dump" / "locked.vma.zst"
    path.write_bytes(b"backup" * 1000)
    check_synced(mount, proxy, mount.path)
    proxy.error(403, "AccessDenied", "Access Denied because object protected by object lock.",
                methods=["DELETE"])
    with pytest.raises(PermissionError) as refused:
        path.unlink()
    assert refused.value.errno == errno.EPERM
    proxy.passthrough()
    assert path.read_bytes() == b"backup" * 1000
    assert "protected by Object Lock" in mount.log() and "dump/locked.vma.zst" in mount.log()
    (mount.path / "dump" / "other.log").write_text("still serving\n")
    check_synced(mount, proxy, mount.path)
    assert object_bytes(s3_client, bucket, "pve/dump/other.log") == b"still serving\n"
    assert object_bytes(s3_client, bucket, "pve/dump/locked.vma.zst") == b"backup" * 1000
