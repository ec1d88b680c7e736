"""Cheap listings through a real mount: Proxmox's listing sequence costs one ListObjectsV2 per
1,000 keys plus one GET per notes file, no HEAD; warm, nothing."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from helpers import needs_fuse

pytestmark = needs_fuse


def requests(mount) -> dict:
    return mount.status()["requests"]


def delta(after: dict, before: dict) -> dict:
    return {op: n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}


def proxmox_listing(dump) -> int:
    """readdir, stat each entry, probe .notes and .protected, read the first notes line."""
    notes_read = 0
    for name in sorted(os.listdir(dump)):
        os.stat(dump / name)
        if name.endswith((".vma.zst", ".tar.zst")):
            if (dump / f"{name}.notes").is_file():
                with open(dump / f"{name}.notes") as notes:
                    notes.readline()
                notes_read += 1
            (dump / f"{name}.protected").exists()
    return notes_read


def test_listing_300_backups_costs_no_head(mount_s3pvefs, s3_client, bucket):
    for vmid in range(300):
        name = f"pve/dump/vzdump-qemu-{100 + vmid}-2026_11_21-01_00_00.vma.zst"
        s3_client.put_object(Bucket=bucket, Key=name, Body=b"x" * 100)
        if vmid % 3 == 0:
            s3_client.put_object(Bucket=bucket, Key=f"{name}.notes", Body=b"nightly\n")
    mount = mount_s3pvefs("--dir-ttl", "600")
    dump = mount.path / "dump"
    before = requests(mount)
    assert proxmox_listing(dump) == 100
    cold = delta(requests(mount), before)
    assert cold == {"ListObjectsV2": 1, "GetObject": 100}, cold

    before = requests(mount)
    assert proxmox_listing(dump) == 100
    assert delta(requests(mount), before) == {}  # warm: answered from the caches
    assert mount.unmount() == 0


def test_notes_are_fetched_when_their_directory_is_listed(mount_s3pvefs, s3_client, bucket):
    for vmid in range(40):
        name = f"pve/dump/vzdump-lxc-{100 + vmid}-2026_11_21-01_00_00.tar.zst"
        s3_client.put_object(Bucket=bucket, Key=name, Body=b"x" * 100)
        s3_client.put_object(Bucket=bucket, Key=f"{name}.notes", Body=f"ct {vmid}\n".encode())
    s3_client.put_object(Bucket=bucket, Key="pve/dump/big.log", Body=b"l" * (200 * 1024))
    mount = mount_s3pvefs("--dir-ttl", "600")
    dump = mount.path / "dump"
    os.listdir(dump)
    deadline = time.monotonic() + 30
    while requests(mount).get("GetObject", 0) < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # nothing else follows: not the archives, not a log over the size limit
    assert requests(mount).get("GetObject", 0) == 40
    before = requests(mount)
    for vmid in range(40):
        name = f"vzdump-lxc-{100 + vmid}-2026_11_21-01_00_00.tar.zst.notes"
        assert (dump / name).read_text() == f"ct {vmid}\n"
    assert delta(requests(mount), before) == {}  # every notes file came from the cache
    assert mount.unmount() == 0


def test_attributes_come_back_without_head(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    snippets = mount.path / "snippets"
    (snippets / "hook.pl").write_text("#!/usr/bin/perl\n")
    os.chmod(snippets / "hook.pl", 0o755)
    (snippets / "plain.txt").write_text("plain\n")
    (mount.path / "images" / "100").mkdir(mode=0o700)
    assert mount.unmount() == 0

    other = mount_s3pvefs()  # another cache directory: another host's view
    before = requests(other)
    assert stat.S_IMODE((other.path / "snippets" / "hook.pl").stat().st_mode) == 0o755
    assert stat.S_IMODE((other.path / "snippets" / "plain.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((other.path / "images" / "100").stat().st_mode) == 0o700
    used = delta(requests(other), before)
    assert "HeadObject" not in used, used
    # the index says so as long as it describes the object: a change by another tool
    s3_client.copy_object(Bucket=bucket, Key="pve/snippets/hook.pl", MetadataDirective="REPLACE",
                          CopySource={"Bucket": bucket, "Key": "pve/snippets/hook.pl"},
                          Metadata={"mode": str(stat.S_IFREG | 0o750)})
    assert other.unmount() == 0
    third = mount_s3pvefs()
    assert stat.S_IMODE((third.path / "snippets" / "hook.pl").stat().st_mode) == 0o750
    assert third.unmount() == 0


def test_files_the_kernel_forgets_leave_the_mount_s_memory(mount_s3pvefs, s3_client, bucket):
    for n in range(400):
        s3_client.put_object(Bucket=bucket, Key=f"pve/template/iso/f{n:03d}.iso", Body=b"x")
    mount = mount_s3pvefs()
    iso = mount.path / "template" / "iso"
    assert len([os.stat(iso / name) for name in os.listdir(iso)]) == 400
    assert mount.status()["known_nodes"] > 400
    # The kernel drops its dentries and inodes, and tells the mount (FORGET).
    Path("/proc/sys/vm/drop_caches").write_text("2\n")
    deadline = time.monotonic() + 30
    while mount.status()["known_nodes"] > 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mount.status()["known_nodes"] <= 50
    assert sorted(os.listdir(iso)) == [f"f{n:03d}.iso" for n in range(400)]  # listed again
    assert (iso / "f123.iso").read_bytes() == b"x"
