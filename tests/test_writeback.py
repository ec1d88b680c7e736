"""The write-back engine through a real mount: streaming through a small cache, zero-copy
vzdump renames, backpressure."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading

import pytest
from helpers import crc64nvme, needs_fuse

MiB = 1024 * 1024
CACHE = 16 * MiB
PART = 5 * MiB
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

pytestmark = [needs_fuse,
              pytest.mark.real_server]


def disk_usage(path) -> int:
    return sum(entry.stat().st_blocks * 512 for entry in os.scandir(path))


class DiskWatcher:
    """Samples the real disk usage of the cache's data directory while a test writes."""

    def __init__(self, path):
        self.path = path
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, disk_usage(self.path))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_vzdump_stream_through_a_small_cache(mount_s3pvefs, s3_client, bucket, tmp_path):
    """A backup 8x the cache size, written with dd and renamed like vzdump: byte-identical,
    the cache stays within its limit plus one part, and the rename copies nothing."""
    cache = tmp_path / "cache"
    mount = mount_s3pvefs("--cache-size", "16MiB", cache_dir=cache)
    source = tmp_path / "backup.vma.zst"
    with source.open("wb") as out:
        out.write(ZSTD_MAGIC)
        for _ in range(128):
            out.write(os.urandom(MiB))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    name = "vzdump-qemu-100-2026_11_21-10_00_00"
    dat = mount.path / "dump" / f"{name}.vma.dat"
    before = mount.status()["requests"]

    with DiskWatcher(cache / "data") as watcher:
        subprocess.run(["dd", f"if={source}", f"of={dat}", "bs=1M", "status=none"], check=True)
        os.rename(dat, mount.path / "dump" / f"{name}.vma.zst")
        assert mount.cli("sync", mount.path).returncode == 0

    stored = s3_client.get_object(Bucket=bucket, Key=f"pve/dump/{name}.vma.zst")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == digest
    state = mount.status()
    assert state["cache_peak_bytes"] <= CACHE + PART, state
    assert watcher.peak <= CACHE + PART + MiB, watcher.peak  # + file-system slack
    requests = {op: n - before.get(op, 0) for op, n in state["requests"].items()}
    assert requests.get("CopyObject", 0) == 0 and requests.get("UploadPartCopy", 0) == 0
    # one PUT: the directory's attribute index, with the streamed backup's CRC64NVME
    assert requests.get("PutObject", 0) == 1
    index = [k["Key"] for k in s3_client.list_objects_v2(
        Bucket=bucket, Prefix="pve/dump/.s3pvefs-attrs.")["Contents"]]
    entry = json.loads(s3_client.get_object(Bucket=bucket, Key=index[0])["Body"].read())
    assert entry[f"{name}.vma.zst"]["crc64nvme"] == crc64nvme(source.read_bytes())
    assert requests["CreateMultipartUpload"] == 1
    assert requests["UploadPart"] * PART >= 128 * MiB  # each byte once (parts of 5 MiB)
    assert requests["UploadPart"] == -(-(128 * MiB + 4) // PART)
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert f"pve/dump/{name}.vma.dat" not in {
        obj["Key"] for obj in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert mount.unmount() == 0


def test_notes_and_download_renames_upload_once(mount_s3pvefs, s3_client, bucket):
    """Proxmox's other temporary names: the data goes to the final key, and only once."""
    mount = mount_s3pvefs()
    dump, iso = mount.path / "dump", mount.path / "template" / "iso"
    before_status = mount.status()
    before, before_bytes = before_status["requests"], before_status["bytes_sent"]
    notes = dump / "vzdump-qemu-100-2026_11_21-10_00_00.vma.zst.notes.tmp.1234"
    fd = os.open(notes, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"nightly backup\n")
    os.close(fd)
    os.rename(notes, dump / "vzdump-qemu-100-2026_11_21-10_00_00.vma.zst.notes")
    image = os.urandom(12 * MiB)
    (iso / "debian.iso.tmp_dwnl.999").write_bytes(image)
    os.utime(iso / "debian.iso.tmp_dwnl.999", (1_700_000_000, 1_700_000_000))
    assert (iso / "debian.iso.tmp_dwnl.999").read_bytes() == image  # the checksum pass
    os.rename(iso / "debian.iso.tmp_dwnl.999", iso / "debian.iso")
    assert mount.cli("sync", mount.path).returncode == 0
    after = mount.status()["requests"]
    sent = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    assert sent.get("CopyObject", 0) <= 1  # at most the utime, as a metadata-only copy
    assert sent.get("UploadPartCopy", 0) == 0
    assert sent.get("UploadPart", 0) == 3  # 12 MiB in 5 MiB parts, once
    # Every byte once: the notes, the image, and the small attribute index of the utime'd file.
    data_bytes = len(b"nightly backup\n") + len(image)
    bytes_sent = mount.status()["bytes_sent"] - before_bytes
    assert data_bytes <= bytes_sent < data_bytes + 16 * 1024, bytes_sent
    stored = {obj["Key"] for obj in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "pve/template/iso/debian.iso" in stored
    assert not any("tmp" in key for key in stored)
    head = s3_client.head_object(Bucket=bucket, Key="pve/template/iso/debian.iso")
    assert head["Metadata"]["mtime"] == "1700000000"
    assert mount.unmount() == 0


def test_random_writes_larger_than_the_cache(mount_s3pvefs, s3_client, bucket):
    """A writer that is not sequential waits for uploads instead of failing (backpressure)."""
    mount = mount_s3pvefs("--cache-size", "16MiB")
    path = mount.path / "images" / "vm-100-disk-0.raw"
    size = 40 * MiB
    expected = bytearray(size)
    with open(path, "wb") as image:
        image.truncate(size)
        for offset in range(size - MiB, -1, -MiB):  # backwards: never streamed
            chunk = os.urandom(MiB)
            image.seek(offset)
            image.write(chunk)
            image.flush()
            expected[offset:offset + MiB] = chunk
    assert mount.cli("sync", path).returncode == 0
    assert mount.status()["cache_peak_bytes"] <= CACHE + PART
    assert s3_client.get_object(Bucket=bucket, Key="pve/images/vm-100-disk-0.raw")[
        "Body"].read() == bytes(expected)
    assert mount.unmount() == 0
