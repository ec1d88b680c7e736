"""Several Proxmox nodes mounting the same bucket and prefix (a cluster, storage marked shared).

Each "node" is its own s3pvefs process with its own cache directory, against one moto bucket.
What docs/multi-node.md promises is checked here: files written on one node show on the others
within dir_ttl once uploaded (or at once after `s3pvefs refresh`), deletions too, attributes
travel through each node's own attribute index object, and a node's start-up recovery never
touches another node's multipart uploads.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

from helpers import keys, needs_fuse
from mounting import run_cli

MiB = 1024 * 1024
TTL = 1.0  # --dir-ttl of the nodes that rely on expiry
ATTR_TTL = 1.0  # the default --attr-ttl: how long the kernel keeps a name it looked up
SLACK = 4.0  # a listing after the TTL, a loaded CI machine: visible within TTL + SLACK
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

pytestmark = needs_fuse


def sync(path: Path) -> None:
    result = run_cli("sync", "--timeout", "60", str(path))
    assert result.returncode == 0, result.stderr


def refresh(mountpoint: Path) -> None:
    result = run_cli("refresh", str(mountpoint))
    assert result.returncode == 0, result.stderr


def wait_until(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` every 0.1 s; seconds it took, or fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_backup(dump: Path, name: str, data: bytes) -> Path:
    """Like vzdump: write X.vma.dat, rename it to X.vma.zst."""
    temporary, final = dump / f"{name}.vma.dat", dump / f"{name}.vma.zst"
    with open(temporary, "wb") as f:
        f.write(data)
    os.rename(temporary, final)
    return final


def test_files_written_on_one_node_show_on_the_other(mount_s3pvefs, s3_client, bucket):
    a = mount_s3pvefs("--dir-ttl", str(TTL))
    b = mount_s3pvefs("--dir-ttl", str(TTL))
    name = "vzdump-qemu-100-2024_01_02-03_04_05"
    assert os.listdir(b.path / "dump") == []  # B has a (fresh) listing of dump/

    # A backup written on A: once A uploaded it, B lists it within the TTL; same bytes.
    data = ZSTD_MAGIC + os.urandom(7 * MiB)
    archive = write_backup(a.path / "dump", name, data)
    sync(archive)
    took = wait_until(lambda: f"{name}.vma.zst" in os.listdir(b.path / "dump"), TTL + SLACK,
                      "A's backup on B")
    print(f"A's backup listed on B after {took:.2f} s")
    on_b = b.path / "dump" / f"{name}.vma.zst"
    assert on_b.stat().st_size == len(data)
    assert digest(on_b) == hashlib.sha256(data).hexdigest()

    # The other way round, with a log next to it (different files from different nodes).
    log = b.path / "dump" / f"{name}.log"
    log.write_bytes(b"INFO: Finished Backup of VM 100\n")
    other = b.path / "snippets" / "hook.pl"
    other.write_bytes(b"#!/usr/bin/perl\n")
    sync(b.path)
    wait_until(lambda: f"{name}.log" in os.listdir(a.path / "dump"), TTL + SLACK, "B's log on A")
    wait_until(lambda: "hook.pl" in os.listdir(a.path / "snippets"), TTL + SLACK,
               "B's snippet on A")
    assert (a.path / "dump" / f"{name}.log").read_bytes() == b"INFO: Finished Backup of VM 100\n"
    assert sorted(os.listdir(a.path / "dump")) == sorted(os.listdir(b.path / "dump"))

    # A deletion (prune on A) disappears from B after the TTL.
    os.unlink(archive)
    os.unlink(a.path / "dump" / f"{name}.log")
    assert f"pve/dump/{name}.vma.zst" not in keys(s3_client, bucket, "pve/dump/")
    wait_until(lambda: os.listdir(b.path / "dump") == [], TTL + SLACK, "A's prune on B")
    # A lookup by name may still find it while the kernel's entry cache holds it (attr_ttl).
    wait_until(lambda: not on_b.exists(), ATTR_TTL + SLACK, "A's prune on B, by name")

    assert a.unmount() == 0 and b.unmount() == 0


def test_refresh_and_attributes_across_nodes(mount_s3pvefs, s3_client, bucket):
    # Both trust their listings for an hour: only `s3pvefs refresh` shows the other's changes.
    a = mount_s3pvefs("--dir-ttl", "3600")
    # B's kernel may cache attributes for an hour too: refresh must make it forget them.
    b = mount_s3pvefs("--dir-ttl", "3600", "--attr-ttl", "3600")
    assert os.listdir(b.path / "snippets") == []

    script = a.path / "snippets" / "backup-hook.sh"
    script.write_bytes(b"#!/bin/sh\nexit 0\n")
    script.chmod(0o750)
    secret = a.path / "snippets" / "private.conf"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"key=value\n")
    os.close(fd)
    sync(a.path)
    assert os.listdir(b.path / "snippets") == []  # B's listing is still trusted
    refresh(b.path)
    assert sorted(os.listdir(b.path / "snippets")) == ["backup-hook.sh", "private.conf"]
    assert stat.S_IMODE((b.path / "snippets" / "backup-hook.sh").stat().st_mode) == 0o750
    assert stat.S_IMODE((b.path / "snippets" / "private.conf").stat().st_mode) == 0o600

    # B writes a non-default file in the same directory: its own index object, not A's.
    mine = b.path / "snippets" / "b.sh"
    mine.write_bytes(b"#!/bin/sh\n")
    mine.chmod(0o700)
    sync(b.path)
    indexes = sorted(k for k in keys(s3_client, bucket, "pve/snippets/")
                     if ".s3pvefs-attrs." in k)
    assert len(indexes) == 2, indexes  # one per node (host + cache directory)

    # A chmod on A shows on B after a refresh; B's own entries are untouched by A's index.
    script.chmod(0o700)
    sync(a.path)
    assert stat.S_IMODE((b.path / "snippets" / "backup-hook.sh").stat().st_mode) == 0o750
    refresh(b.path)  # forgets the kernel's cached attributes too, before it returns
    assert stat.S_IMODE((b.path / "snippets" / "backup-hook.sh").stat().st_mode) == 0o700
    refresh(a.path)
    assert stat.S_IMODE((a.path / "snippets" / "b.sh").stat().st_mode) == 0o700
    assert (a.path / "snippets" / "b.sh").read_bytes() == b"#!/bin/sh\n"

    # A remount of B (a fresh cache) still gets every mode right from the two indexes.
    assert b.unmount() == 0
    c = mount_s3pvefs("--dir-ttl", "3600")
    modes = {name: stat.S_IMODE((c.path / "snippets" / name).stat().st_mode)
             for name in os.listdir(c.path / "snippets")}
    assert modes == {"backup-hook.sh": 0o700, "private.conf": 0o600, "b.sh": 0o700}
    assert a.unmount() == 0 and c.unmount() == 0


def test_start_up_recovery_leaves_other_nodes_uploads_alone(mount_s3pvefs, s3_client, bucket):
    a = mount_s3pvefs()
    data = ZSTD_MAGIC + os.urandom(12 * MiB)
    path = a.path / "dump" / "vzdump-qemu-200-2024_01_02-03_04_05.vma.dat"
    with open(path, "wb") as f:
        f.write(data[:7 * MiB])
        f.flush()
        uploads = lambda: s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        wait_until(lambda: len(uploads()) == 1, 20, "A's multipart upload")
        # Node B starts while A's backup streams: its recovery aborts only uploads that its own
        # cache directory started.
        b = mount_s3pvefs()
        assert len(uploads()) == 1
        assert b.unmount() == 0
        assert len(uploads()) == 1
        f.write(data[7 * MiB:])
    os.rename(path, path.with_suffix(".zst"))
    sync(path.with_suffix(".zst"))
    stored = s3_client.get_object(Bucket=bucket, Key="pve/dump/" + path.with_suffix(".zst").name)
    assert stored["Body"].read() == data
    assert uploads() == []
    assert a.unmount() == 0


def test_same_file_from_two_nodes_last_upload_wins(mount_s3pvefs, s3_client, bucket):
    """Not safe, and documented so: no locking between nodes. This pins down what happens."""
    a = mount_s3pvefs("--dir-ttl", str(TTL))
    b = mount_s3pvefs("--dir-ttl", str(TTL))
    on_a, on_b = a.path / "snippets" / "shared.txt", b.path / "snippets" / "shared.txt"
    on_a.write_bytes(b"written on A\n")
    sync(on_a)
    wait_until(on_b.exists, TTL + SLACK, "A's file on B")
    assert on_b.read_bytes() == b"written on A\n"
    on_b.write_bytes(b"B overwrote it, and is longer\n")
    sync(on_b)
    stored = s3_client.get_object(Bucket=bucket, Key="pve/snippets/shared.txt")["Body"].read()
    assert stored == b"B overwrote it, and is longer\n"
    # A learns of B's version from a listing after the TTL (or a refresh), then reads it.
    refresh(a.path)
    wait_until(lambda: on_a.stat().st_size == len(stored), TTL + SLACK, "B's version on A")
    assert on_a.read_bytes() == stored
    assert a.unmount() == 0 and b.unmount() == 0
