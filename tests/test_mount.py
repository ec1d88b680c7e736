"""Through a real FUSE mount against a real moto server process."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import time

import pytest
from helpers import keys, needs_fuse, object_bytes, open_uploads

from s3pvefs.service.mountproc import MountProcessError
from s3pvefs.service.preflight import is_mounted

MiB = 1024 * 1024
PROXMOX_DIRS = ["dump", "images", "private", "snippets", "import", "template/iso",
                "template/cache"]

pytestmark = needs_fuse


def test_proxmox_layout_and_statfs(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    for path in PROXMOX_DIRS:
        assert (mount.path / path).is_dir(), path
        assert f"pve/{path}/" in keys(s3_client, bucket)
    info = os.statvfs(mount.path)
    assert info.f_blocks > 0 and info.f_bavail > 0 and info.f_bsize > 0
    assert mount.unmount() == 0


SIZES = [0, 1, 5 * MiB - 1, 5 * MiB + 1, 64 * MiB]


def test_files_survive_remount_with_empty_cache(mount_s3pvefs, s3_client, bucket):
    first = mount_s3pvefs()
    digests = {}
    for size in SIZES:
        data = os.urandom(size)
        digests[size] = hashlib.sha256(data).hexdigest()
        (first.path / "dump" / f"file-{size}").write_bytes(data)
    assert first.unmount() == 0
    assert open_uploads(s3_client, bucket) == []
    for size in SIZES:
        stored = object_bytes(s3_client, bucket, f"pve/dump/file-{size}")
        assert hashlib.sha256(stored).hexdigest() == digests[size], size

    second = mount_s3pvefs()  # a new, empty cache directory
    for size in SIZES:
        path = second.path / "dump" / f"file-{size}"
        assert path.stat().st_size == size
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[size], size
    assert second.unmount() == 0


def test_sigterm_uploads_then_unmounts(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    data = os.urandom(7 * MiB)
    (mount.path / "snippets" / "hook.pl").write_bytes(data)
    assert mount.terminate(signal.SIGTERM) == 0
    assert not is_mounted(mount.path)
    assert object_bytes(s3_client, bucket, "pve/snippets/hook.pl") == data


def test_directory_errors_and_exclusive_create(mount_s3pvefs):
    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    (dump / "a.log").write_text("log")
    with pytest.raises(OSError) as excinfo:
        os.rmdir(dump)
    assert excinfo.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        os.open(dump / "a.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fd = os.open(dump / "new.notes.tmp.123", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"notes")
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.mkdir(dump)
    with pytest.raises(OSError) as excinfo:
        os.link(dump / "a.log", dump / "hard")
    assert excinfo.value.errno == errno.EPERM
    os.unlink(dump / "a.log")
    os.unlink(dump / "new.notes.tmp.123")
    os.rmdir(dump)  # empty now: Proxmox removes it and mkpath re-creates it
    os.mkdir(dump)
    assert mount.unmount() == 0


def test_rename_over_existing_file(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    iso = mount.path / "template" / "iso"
    (iso / "x.iso").write_bytes(b"old" * 1000)
    (iso / "x.iso.tmp_dwnl.42").write_bytes(b"new" * 1000)
    os.rename(iso / "x.iso.tmp_dwnl.42", iso / "x.iso")
    assert (iso / "x.iso").read_bytes() == b"new" * 1000
    assert sorted(os.listdir(iso)) == ["x.iso"]
    assert mount.unmount() == 0
    assert object_bytes(s3_client, bucket, "pve/template/iso/x.iso") == b"new" * 1000
    assert "pve/template/iso/x.iso.tmp_dwnl.42" not in keys(s3_client, bucket)


def test_rename_while_open_then_write(mount_s3pvefs, s3_client, bucket):
    """vzdump renames the .dat right after close, possibly before RELEASE; here even earlier."""
    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    head, tail = os.urandom(6 * MiB), os.urandom(3 * MiB)
    fd = os.open(dump / "vzdump-qemu-100.vma.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, head)
    os.rename(dump / "vzdump-qemu-100.vma.dat", dump / "vzdump-qemu-100.vma.zst")
    os.write(fd, tail)
    os.close(fd)
    assert (dump / "vzdump-qemu-100.vma.zst").stat().st_size == len(head) + len(tail)
    assert mount.unmount() == 0
    stored = keys(s3_client, bucket)
    assert "pve/dump/vzdump-qemu-100.vma.dat" not in stored
    assert object_bytes(s3_client, bucket, "pve/dump/vzdump-qemu-100.vma.zst") == head + tail
    assert open_uploads(s3_client, bucket) == []


def test_rename_of_uploaded_file_and_directory(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    data = os.urandom(6 * MiB)
    (mount.path / "images" / "100").mkdir()
    (mount.path / "images" / "100" / "vm-100-disk-0.qcow2").write_bytes(data)
    assert mount.unmount() == 0

    mount = mount_s3pvefs()
    images = mount.path / "images"
    os.rename(images / "100" / "vm-100-disk-0.qcow2", images / "100" / "base-100-disk-0.qcow2")
    os.rename(images / "100", images / "200")
    assert (images / "200" / "base-100-disk-0.qcow2").read_bytes() == data
    assert mount.unmount() == 0
    stored = keys(s3_client, bucket)
    assert "pve/images/200/base-100-disk-0.qcow2" in stored
    assert not any(key.startswith("pve/images/100/") for key in stored)


def test_unlinked_dat_leaves_nothing(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    dat = mount.path / "dump" / "vzdump-lxc-101.tar.dat"
    with pytest.raises(FileNotFoundError):
        os.unlink(dat)  # vzdump's first step
    dat.write_bytes(os.urandom(11 * MiB))
    os.unlink(dat)  # a failed backup
    assert mount.unmount() == 0
    assert not any("vzdump-lxc-101" in key for key in keys(s3_client, bucket))
    assert open_uploads(s3_client, bucket) == []


@pytest.mark.real_server  # the data is copied aside on the server: RGW too
def test_a_file_deleted_while_open_reads_on_until_closed(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs("--cache-size", "16MiB")
    dump = mount.path / "dump"
    data = os.urandom(40 * MiB)  # parts of it left the cache before the unlink
    with open(dump / "restore.vma", "w+b", buffering=0) as file:
        file.write(data)
        os.fsync(file.fileno())
        os.unlink(dump / "restore.vma")
        assert os.listdir(dump) == [] and os.fstat(file.fileno()).st_nlink == 0
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read from the mount
        read_back = b"".join(os.pread(file.fileno(), MiB, offset)
                             for offset in range(0, len(data), MiB))
        assert hashlib.sha256(read_back).digest() == hashlib.sha256(data).digest()
    markers = {f"pve/{path}/" for path in PROXMOX_DIRS + ["template"]}
    deadline = time.monotonic() + 10  # the kernel sends RELEASE after close() returned
    while keys(s3_client, bucket) != markers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert keys(s3_client, bucket) == markers
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0


def test_foreign_objects_appear(mount_s3pvefs, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="pve/template/cache/debian.tar.zst", Body=b"t" * 100)
    s3_client.put_object(Bucket=bucket, Key="pve/dump//odd", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="pve/snippets/" + "n" * 300, Body=b"x")
    mount = mount_s3pvefs()
    cache = mount.path / "template" / "cache"
    assert os.listdir(cache) == ["debian.tar.zst"]
    entry = (cache / "debian.tar.zst").stat()
    assert entry.st_size == 100 and stat.S_IMODE(entry.st_mode) == 0o644
    assert (cache / "debian.tar.zst").read_bytes() == b"t" * 100
    assert os.listdir(mount.path / "snippets") == []
    os.listdir(mount.path / "dump")  # listing works despite the unshowable key
    assert mount.unmount() == 0
    assert "skipping S3 key" in mount.log()


def test_attributes_survive_remount(mount_s3pvefs):
    mount = mount_s3pvefs()
    hook = mount.path / "snippets" / "hook.sh"
    hook.write_text("#!/bin/sh\necho hooked\n")
    os.chmod(hook, 0o755)
    os.utime(hook, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (mount.path / "images" / "100").mkdir()
    os.symlink("../100/base-100-disk-0.qcow2", mount.path / "images" / "100" / "link")
    assert mount.unmount() == 0

    mount = mount_s3pvefs()
    hook = mount.path / "snippets" / "hook.sh"
    info = hook.stat()
    assert stat.S_IMODE(info.st_mode) == 0o755
    assert info.st_mtime_ns == 1_600_000_000_123_456_789
    assert os.readlink(mount.path / "images" / "100" / "link") == "../100/base-100-disk-0.qcow2"
    import subprocess
    assert subprocess.run([str(hook)], capture_output=True, text=True).stdout == "hooked\n"
    assert mount.unmount() == 0


def test_inode_numbers_stable(mount_s3pvefs):
    mount = mount_s3pvefs()
    tmp = mount.path / "dump" / "vzdump-qemu-100.tmp"
    tmp.mkdir()
    (tmp / "qemu-server.conf").write_text("cores: 2\n")
    before = tmp.stat().st_ino, (tmp / "qemu-server.conf").stat().st_ino
    os.rename(tmp / "qemu-server.conf", tmp / "qemu-server.conf.new")
    os.rename(tmp / "qemu-server.conf.new", tmp / "qemu-server.conf")
    assert (tmp.stat().st_ino, (tmp / "qemu-server.conf").stat().st_ino) == before
    import shutil
    shutil.rmtree(tmp)
    assert not tmp.exists()
    assert mount.unmount() == 0


def test_truncate_append_and_overwrite(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    path = mount.path / "snippets" / "f"
    path.write_bytes(b"0123456789")
    with open(path, "ab") as f:
        f.write(b"abc")
    os.truncate(path, 4)
    os.truncate(path, 8)
    assert path.read_bytes() == b"0123\0\0\0\0"
    with open(path, "wb") as f:  # O_TRUNC
        f.write(b"fresh")
    assert mount.unmount() == 0
    assert object_bytes(s3_client, bucket, "pve/snippets/f") == b"fresh"


def test_missing_bucket_fails_clearly(mount_s3pvefs, tmp_path):
    with pytest.raises(MountProcessError) as excinfo:
        mount_s3pvefs("--bucket", "no-such-bucket-here")
    message = str(excinfo.value)
    assert "does not exist" in message and "--create-bucket" in message
    assert not is_mounted(tmp_path / "mnt1")


def test_create_bucket_option(mount_s3pvefs, s3_client):
    mount = mount_s3pvefs("--bucket", "created-by-s3pvefs", "--create-bucket")
    assert (mount.path / "dump").is_dir()
    assert mount.unmount() == 0
    assert "pve/dump/" in keys(s3_client, "created-by-s3pvefs")


def test_unreachable_endpoint_fails_clearly(mount_s3pvefs, unreachable_endpoint_url, tmp_path):
    with pytest.raises(MountProcessError) as excinfo:
        mount_s3pvefs("--endpoint-url", unreachable_endpoint_url, "--connect-timeout", "1")
    assert "cannot reach" in str(excinfo.value)
    assert unreachable_endpoint_url in str(excinfo.value)
    assert not is_mounted(tmp_path / "mnt1")


@pytest.fixture
def authenticating_server(tmp_path):
    """A moto server that checks credentials after its first request (the bucket creation)."""
    from s3pvefs.service.embedded import LocalS3

    with LocalS3(tmp_path / "moto-auth", bucket=None,
                 env={"INITIAL_NO_AUTH_ACTION_COUNT": "1"}) as server:
        yield server.endpoint_url


def test_wrong_credentials_fail_clearly(mount_s3pvefs, authenticating_server, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=authenticating_server, region_name="us-east-1")
    client.create_bucket(Bucket="guarded")
    with pytest.raises(MountProcessError) as excinfo:
        mount_s3pvefs("--endpoint-url", authenticating_server, "--bucket", "guarded",
                      env={"AWS_ACCESS_KEY_ID": "AKIAWRONGKEY", "AWS_SECRET_ACCESS_KEY": "wrong"})
    message = str(excinfo.value)
    assert "denied" in message and "InvalidAccessKeyId" in message
    assert "wrong" not in message.replace("wrong_credentials", "")  # no secret in the output
    assert not is_mounted(tmp_path / "mnt1")
