"""Proxmox conformance: storage activation and status through a real mount.

pvestatd activates every storage every 10 s (`-d`, mkpath and realpath of each content dir) and
asks statvfs in a forked child with a 2 s timeout: a total of 0, an error or a timeout marks the
storage inactive. So all of it must answer locally and fast, also while S3 is unreachable (a
fault proxy between the mount and moto is stopped: connections are refused).
"""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest
from helpers import keys, needs_fuse
from proxmox_sequences import (
    CONTENT_DIRS,
    PREFIX,
    activation_probe,
    log_tail,
    run,
    sync,
)

pytestmark = [needs_fuse]

TIMEOUT = 2.0  # Proxmox's own timeout for these checks


def check_activation(mount, steps: list[dict], dirs: list[str] = CONTENT_DIRS) -> None:
    slow = [s for s in steps if s["seconds"] >= TIMEOUT]
    failed = [s for s in steps if s["errno"] is not None]
    assert not slow and not failed, (slow, failed, log_tail(mount))
    by_step = {s["step"]: s["value"] for s in steps}
    root = str(mount.path)
    assert by_step[f"-d {root}"] is True
    assert stat.S_ISDIR(by_step[f"stat {root}"])
    for key in (f"statvfs {root}", f"statvfs again {root}"):
        bsize, frsize, blocks, bfree, bavail = by_step[key][:5]
        assert blocks > 0 and bavail > 0 and frsize > 0, by_step[key]
    for d in dirs:
        assert stat.S_ISDIR(by_step[f"stat {d}"]), d
        assert by_step[f"realpath {d}"] == os.path.join(root, d)


def test_activation_and_status_with_s3_up(mount_s3pvefs):
    mount = mount_s3pvefs()
    # is_mountpoint yes: the exact path is in /proc/mounts, as this filesystem.
    entries = [line.split() for line in open("/proc/mounts")]
    mine = [e for e in entries if e[1] == str(mount.path)]
    assert len(mine) == 1 and mine[0][2] == "fuse.s3pvefs", mine
    run(["mountpoint", "-q", str(mount.path)])
    check_activation(mount, activation_probe(mount.path))
    check_activation(mount, activation_probe(mount.path))  # the next pvestatd round
    assert mount.unmount() == 0, log_tail(mount)


def test_activation_and_status_while_s3_is_stopped(faulty_mount, proxy, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key=PREFIX + "dump/vzdump-qemu-100.vma.zst", Body=b"x")
    mount = faulty_mount("--dir-ttl", "1")
    for d in CONTENT_DIRS:
        os.listdir(mount.path / d)  # listed once, while S3 answered
    proxy.stop()
    check_activation(mount, activation_probe(mount.path))
    time.sleep(1.5)  # the listings (dir_ttl) and the kernel's attribute cache expired
    check_activation(mount, activation_probe(mount.path))
    time.sleep(1.5)  # a background refresh failed meanwhile: still answered at once
    check_activation(mount, activation_probe(mount.path))
    assert os.listdir(mount.path / "dump") == ["vzdump-qemu-100.vma.zst"]

    proxy.start()
    (mount.path / "snippets" / "after.txt").write_text("S3 is back\n")
    sync(mount)
    assert PREFIX + "snippets/after.txt" in keys(s3_client, bucket)
    assert mount.unmount() == 0, log_tail(mount)


def test_status_while_s3_is_stopped_before_any_listing(faulty_mount, proxy, s3_client,
                                                       bucket):
    """S3 goes away right after the mount came up, before anything was read or listed."""
    s3_client.put_object(Bucket=bucket, Key=PREFIX + "dump/vzdump-qemu-100.vma.zst", Body=b"x")
    mount = faulty_mount("--dir-ttl", "1")
    proxy.stop()
    started = time.monotonic()
    info = os.statvfs(mount.path)
    assert time.monotonic() - started < TIMEOUT, log_tail(mount)
    assert info.f_blocks > 0 and info.f_bavail > 0
    check_activation(mount, activation_probe(mount.path))
    time.sleep(1.5)
    check_activation(mount, activation_probe(mount.path))

    # A content listing that cannot be fetched is an error, never an empty directory
    # (an empty backup list would mislead the GUI and prune); and it does not hang.
    started = time.monotonic()
    with pytest.raises(OSError) as excinfo:
        os.listdir(mount.path / "dump")
    assert excinfo.value.errno == errno.EIO
    assert time.monotonic() - started < 10, log_tail(mount)
    proxy.start()
    assert os.listdir(mount.path / "dump") == ["vzdump-qemu-100.vma.zst"]
    assert mount.unmount() == 0, log_tail(mount)


def test_activation_recreates_a_removed_content_dir(faulty_mount, proxy, s3_client, bucket):
    """Deleting the last volume removes its directory; the next activation's mkpath creates it
    again. With S3 stopped that mkpath fails cleanly (EIO) within a bounded time, and works
    once S3 is back."""
    mount = faulty_mount()
    os.rmdir(mount.path / "import")
    assert PREFIX + "import/" not in keys(s3_client, bucket)
    proxy.stop()
    started = time.monotonic()
    try:
        os.makedirs(mount.path / "import", exist_ok=True)
        outcome = 0
    except OSError as exc:
        outcome = exc.errno
    seconds = time.monotonic() - started
    assert seconds < 10, (seconds, log_tail(mount))
    assert outcome in (0, errno.EIO), (outcome, log_tail(mount))
    if outcome:
        assert not os.path.exists(mount.path / "import")
    proxy.start()
    os.makedirs(mount.path / "import", exist_ok=True)
    assert os.path.isdir(mount.path / "import")
    check_activation(mount, activation_probe(mount.path))
    sync(mount)
    assert PREFIX + "import/" in keys(s3_client, bucket)
    assert mount.unmount() == 0, log_tail(mount)
