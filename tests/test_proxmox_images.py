"""Proxmox conformance: VM disk images in images/<vmid>/ through a real mount on moto and on a
Ceph RGW, with QEMU's own tools: qemu-img create/info/check/convert, qemu-io with O_DIRECT
(cache=none, QEMU's default in Proxmox) on the thread pool, io_uring and Linux AIO, dd with
O_DIRECT, sparse raw images whose holes read as zeros, linked clones with a relative backing path,
fallocate (works or EOPNOTSUPP) and chattr (fails cleanly)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import json
import mmap
import os
import random
import stat
import struct

import pytest
from helpers import needs_fuse, open_uploads
from proxmox_sequences import (
    PREFIX,
    KiB,
    MiB,
    data_keys,
    file_sha256,
    log_tail,
    needs_tools,
    object_sha256,
    run,
    sha256,
    sync,
)

pytestmark = [needs_fuse, needs_tools("qemu-img", "qemu-io"), pytest.mark.real_server]

IMAGES = PREFIX + "images/"
DISK_SIZE = 32 * MiB
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x10
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


def image_info(path, *extra: str):
    return json.loads(run(["qemu-img", "info", "--output=json", *extra, str(path)],
                          text=True).stdout)


def qemu_io(path, *commands: str, fmt: str | None = None, aio: str | None = None,
            read_only: bool = False, cache: str = "none"):
    """qemu-io with cache=none (O_DIRECT); any failed command or pattern mismatch fails."""
    cmd = ["qemu-io", "-t", cache]
    cmd += ["-f", fmt] if fmt else []
    cmd += ["-i", aio] if aio else []
    cmd += ["-r"] if read_only else []
    for command in commands:
        cmd += ["-c", command]
    result = run([*cmd, str(path)], text=True)
    output = result.stdout + result.stderr
    assert "failed" not in output.lower() and "error" not in output.lower(), output
    return output


def io_uring_works(tmp_path) -> bool:
    """Whether this kernel/container lets QEMU use io_uring at all (checked on local disk)."""
    probe = tmp_path / "io_uring-probe.raw"
    run(["qemu-img", "create", "-q", "-f", "raw", str(probe), "1M"])
    result = run(["qemu-io", "-f", "raw", "-i", "io_uring", "-c", "read 0 4k", str(probe)],
                 check=False, text=True)
    return result.returncode == 0 and "error" not in (result.stdout + result.stderr).lower()


def direct_pwrite(fd: int, data: bytes, offset: int) -> int:
    buf = mmap.mmap(-1, len(data))  # page-aligned, as O_DIRECT wants
    try:
        buf.write(data)
        return os.pwritev(fd, [buf], offset)
    finally:
        buf.close()


def direct_pread(fd: int, length: int, offset: int) -> bytes:
    buf = mmap.mmap(-1, length)
    try:
        got = os.preadv(fd, [buf], offset)
        return buf[:got]
    finally:
        buf.close()


def test_qcow2_disk_create_check_and_guest_io(mount_s3pvefs, s3_client, bucket, tmp_path):
    mount = mount_s3pvefs()
    vmdir = mount.path / "images" / "100"
    os.makedirs(vmdir, exist_ok=True)
    disk = vmdir / "vm-100-disk-0.qcow2"
    run(["qemu-img", "create", "-f", "qcow2", "-o", "preallocation=metadata", str(disk),
         str(DISK_SIZE)])
    info = image_info(disk)
    assert info["format"] == "qcow2" and info["virtual-size"] == DISK_SIZE
    run(["qemu-img", "check", str(disk)])

    # Guest I/O: O_DIRECT, 512/4096-aligned, flushes (fdatasync), write-zeroes (fallocate
    # ZERO_RANGE or its fallback), through each of QEMU's I/O engines.
    qemu_io(disk, "write -P 0xab 0 1M", "flush", "read -P 0xab 0 1M")
    qemu_io(disk, "write -P 0xad 8M 64k", "write -P 0xae 9M 4k", "aio_flush",
            "read -P 0xad 8M 64k", "read -P 0xae 9M 4k", aio="native")
    if io_uring_works(tmp_path):
        qemu_io(disk, "write -P 0xac 4M 512k", "flush", "read -P 0xac 4M 512k", aio="io_uring")
    qemu_io(disk, "write -P 0x11 12M 1M", "write -z 12M 512k", "read -P 0 12M 512k",
            "read -P 0x11 12800k 512k")

    # The content listing: glob images/[0-9]*/*, then qemu-img info on each image.
    found = glob.glob(str(mount.path / "images" / "[0-9]*" / "*"))
    assert found == [str(disk)]
    for image in found:
        assert image_info(image)["format"] == "qcow2"
    run(["qemu-img", "check", str(disk)])

    sync(mount)
    assert data_keys(s3_client, bucket, IMAGES) == {IMAGES + "100/vm-100-disk-0.qcow2"}
    assert object_sha256(s3_client, bucket, IMAGES + "100/vm-100-disk-0.qcow2") == \
        file_sha256(disk)
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()
    disk = other.path / "images" / "100" / "vm-100-disk-0.qcow2"
    run(["qemu-img", "check", str(disk)])
    qemu_io(disk, "read -P 0xab 0 1M", "read -P 0xad 8M 64k", "read -P 0 12M 512k",
            "read -P 0x11 12800k 512k", "read -P 0 16M 1M", read_only=True)
    assert other.unmount() == 0, log_tail(other)


def check_seek(fd: int, model: bytearray, data_blocks: list[int], block: int) -> str:
    """SEEK_DATA/SEEK_HOLE may know the holes or treat the whole file as data (the kernel's
    generic answer); either way they must never skip data. Returns what was observed."""
    size = len(model)
    observed = []
    for start in (0, data_blocks[1] - block, size - 1):
        try:
            data_at = os.lseek(fd, start, os.SEEK_DATA)
            hole_at = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            assert exc.errno in (errno.ENXIO, errno.EINVAL), exc
            observed.append(f"{start}: {errno.errorcode[exc.errno]}")
            continue
        next_data = min([o for o in data_blocks if o + block > start] + [size])
        assert start <= data_at <= max(start, next_data), (start, data_at)
        assert start <= hole_at <= size, (start, hole_at)
        assert hole_at == size or not any(model[hole_at:hole_at + 1]), (start, hole_at)
        observed.append(f"{start}: data {data_at} hole {hole_at}")
    with pytest.raises(OSError) as excinfo:
        os.lseek(fd, size, os.SEEK_DATA)
    assert excinfo.value.errno == errno.ENXIO
    return "; ".join(observed)


def test_raw_sparse_image_holes_read_as_zeros(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    vmdir = mount.path / "images" / "100"
    vmdir.mkdir()
    disk = vmdir / "vm-100-disk-1.raw"
    run(["qemu-img", "create", "-f", "raw", "-o", "preallocation=off", str(disk),
         str(DISK_SIZE)])
    assert disk.stat().st_size == DISK_SIZE
    model = bytearray(DISK_SIZE)
    fd = os.open(disk, os.O_RDWR)
    try:
        for offset in (0, MiB + 17, DISK_SIZE - 4096, DISK_SIZE - 1):
            length = min(8192, DISK_SIZE - offset)
            assert os.pread(fd, length, offset) == bytes(length), offset
        assert os.pread(fd, 4096, DISK_SIZE) == b""
        # A restore writes the used blocks only, 4 KiB-aligned, and leaves the rest as holes.
        rng = random.Random(5)
        blocks = [0, 5 * MiB, 17 * MiB + 4096, DISK_SIZE - 64 * KiB]
        for offset in blocks:
            body = rng.randbytes(64 * KiB)
            assert os.pwrite(fd, body, offset) == len(body)
            model[offset:offset + len(body)] = body
        os.fdatasync(fd)
        assert os.pread(fd, DISK_SIZE, 0) == model
        seeking = check_seek(fd, model, blocks, 64 * KiB)
    finally:
        os.close(fd)
    print(f"SEEK_DATA/SEEK_HOLE observed: {seeking}")
    # Discard (PUNCH_HOLE) may be refused underneath: QEMU accepts EOPNOTSUPP for it.
    qemu_io(disk, "discard 5M 64k", "read -P 0 1M 1M", fmt="raw")
    sync(mount)
    assert object_sha256(s3_client, bucket, IMAGES + "100/vm-100-disk-1.raw") in (
        sha256(bytes(model)),
        # a discard that did punch the hole
        sha256(bytes(model[:5 * MiB]) + bytes(64 * KiB) + bytes(model[5 * MiB + 64 * KiB:])))
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()
    disk = other.path / "images" / "100" / "vm-100-disk-1.raw"
    assert disk.stat().st_size == DISK_SIZE
    with open(disk, "rb") as f:
        read = f.read()
    assert read[:5 * MiB] == model[:5 * MiB] and read[5 * MiB + 64 * KiB:] == \
        model[5 * MiB + 64 * KiB:]
    assert other.unmount() == 0, log_tail(other)


def test_linked_clone_from_a_base_image(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    images = mount.path / "images"
    (images / "100").mkdir()
    vm = images / "100" / "vm-100-disk-0.qcow2"
    base = images / "100" / "base-100-disk-0.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(vm), str(DISK_SIZE)])
    qemu_io(vm, "write -P 0xab 0 1M", "write -P 0x5a 2M 1M", "flush")

    # Convert to template: rename vm- to base-, chmod 0444, chattr +i (must fail cleanly).
    os.rename(vm, base)
    os.chmod(base, 0o444)
    assert stat.S_IMODE(base.stat().st_mode) == 0o444 and not vm.exists()
    before = file_sha256(base)
    chattr = run(["chattr", "+i", str(base)], check=False, text=True, timeout=20)
    assert chattr.returncode != 0, chattr
    fd = os.open(base, os.O_RDONLY)
    try:
        for request, argument in ((FS_IOC_GETFLAGS, struct.pack("l", 0)),
                                  (FS_IOC_SETFLAGS, struct.pack("l", FS_IMMUTABLE_FL))):
            with pytest.raises(OSError) as excinfo:
                fcntl.ioctl(fd, request, argument)
            assert excinfo.value.errno == errno.ENOTTY, excinfo.value
    finally:
        os.close(fd)
    run(["qemu-img", "check", str(base)])  # still usable
    assert file_sha256(base) == before

    # The linked clone references the base by a relative path.
    (images / "101").mkdir()
    clone = images / "101" / "vm-101-disk-0.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "../100/base-100-disk-0.qcow2",
         "-F", "qcow2", clone.name], cwd=images / "101")
    chain = image_info(clone, "--backing-chain")
    assert len(chain) == 2, chain
    assert chain[0]["backing-filename"] == "../100/base-100-disk-0.qcow2"
    assert chain[0]["backing-filename-format"] == "qcow2" and chain[1]["format"] == "qcow2"
    qemu_io(clone, "read -P 0xab 0 1M", "write -P 0xcd 2M 1M", "flush", "read -P 0xcd 2M 1M")
    run(["qemu-img", "check", str(clone)])
    assert file_sha256(base) == before  # the clone never writes its base

    sync(mount)
    assert data_keys(s3_client, bucket, IMAGES) == {IMAGES + "100/base-100-disk-0.qcow2",
                                                   IMAGES + "101/vm-101-disk-0.qcow2"}
    assert object_sha256(s3_client, bucket, IMAGES + "100/base-100-disk-0.qcow2") == before
    head = s3_client.head_object(Bucket=bucket, Key=IMAGES + "100/base-100-disk-0.qcow2")
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o444, head["Metadata"]
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()
    images = other.path / "images"
    base = images / "100" / "base-100-disk-0.qcow2"
    clone = images / "101" / "vm-101-disk-0.qcow2"
    assert stat.S_IMODE(base.stat().st_mode) == 0o444
    assert len(image_info(clone, "--backing-chain")) == 2
    run(["qemu-img", "check", str(base)])
    run(["qemu-img", "check", str(clone)])
    qemu_io(clone, "read -P 0xab 0 1M", "read -P 0xcd 2M 1M", read_only=True)
    qemu_io(base, "read -P 0x5a 2M 1M", read_only=True)

    # Destroying the clone: unlink its disks, then rmdir images/<vmid>; the template's
    # directory still holds its base image.
    os.unlink(clone)
    os.rmdir(images / "101")
    with pytest.raises(OSError) as excinfo:
        os.rmdir(images / "100")
    assert excinfo.value.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(images)) == ["100"]
    assert data_keys(s3_client, bucket, IMAGES) == {IMAGES + "100/base-100-disk-0.qcow2"}
    assert other.unmount() == 0, log_tail(other)


def sparse_source(path, size: int = 24 * MiB) -> None:
    rng = random.Random(8)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, 2 * MiB):
            if rng.random() < 0.6:
                f.seek(offset + rng.randrange(0, MiB, 4096))
                f.write(rng.randbytes(MiB))


def test_qemu_img_convert_into_the_mount_and_back(mount_s3pvefs, tmp_path):
    source = tmp_path / "source.raw"
    sparse_source(source)
    mount = mount_s3pvefs()
    vmdir = mount.path / "images" / "102"
    vmdir.mkdir()
    qcow2 = vmdir / "vm-102-disk-0.qcow2"
    raw = vmdir / "vm-102-disk-1.raw"
    # -t none: the destination is written with O_DIRECT, as a disk import or move does.
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-t", "none", str(source),
         str(qcow2)])
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", "-t", "none", str(source), str(raw)])
    run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source), str(qcow2)])
    run(["cmp", str(source), str(raw)])
    back = tmp_path / "back.raw"
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-T", "none", str(qcow2),
         str(back)])
    run(["cmp", str(source), str(back)])
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()  # the same from S3
    qcow2 = other.path / "images" / "102" / "vm-102-disk-0.qcow2"
    run(["qemu-img", "check", str(qcow2)])
    back.unlink()
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-T", "none", str(qcow2),
         str(back)])
    run(["cmp", str(source), str(back)])
    run(["cmp", str(source), str(other.path / "images" / "102" / "vm-102-disk-1.raw")])
    assert other.unmount() == 0, log_tail(other)


def test_direct_io_round_trip(mount_s3pvefs, s3_client, bucket, tmp_path):
    """dd oflag=direct / iflag=direct, and QEMU-like aligned O_DIRECT pread/pwrite with
    fdatasync, on the same image."""
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(12 * MiB))
    mount = mount_s3pvefs()
    vmdir = mount.path / "images" / "103"
    vmdir.mkdir()
    disk = vmdir / "vm-103-disk-0.raw"
    run(["dd", f"if={source}", f"of={disk}", "bs=1M", "oflag=direct"])
    back = tmp_path / "back.raw"
    run(["dd", f"if={disk}", f"of={back}", "bs=1M", "iflag=direct"])
    run(["cmp", str(source), str(back)])

    model = bytearray(source.read_bytes())
    rng = random.Random(9)
    fd = os.open(disk, os.O_RDWR | os.O_DIRECT)
    try:
        for _ in range(64):
            length = rng.choice([512, 4096, 65536, 1 << 20])
            offset = rng.randrange(0, len(model) - length, 512)
            if rng.random() < 0.5:
                body = rng.randbytes(length)
                assert direct_pwrite(fd, body, offset) == length
                model[offset:offset + length] = body
            else:
                assert direct_pread(fd, length, offset) == model[offset:offset + length]
            if rng.random() < 0.1:
                os.fdatasync(fd)  # a guest flush
        os.fdatasync(fd)
    finally:
        os.close(fd)
    back.unlink()
    run(["dd", f"if={disk}", f"of={back}", "bs=1M", "iflag=direct"])
    assert back.read_bytes() == model
    sync(mount)
    assert object_sha256(s3_client, bucket, IMAGES + "103/vm-103-disk-0.raw") == \
        sha256(bytes(model))
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()
    back.unlink()
    run(["dd", f"if={other.path / 'images' / '103' / 'vm-103-disk-0.raw'}", f"of={back}",
         "bs=1M", "iflag=direct"])
    assert back.read_bytes() == model
    assert other.unmount() == 0, log_tail(other)


def _fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) == 0:
        return 0
    return ctypes.get_errno()


def test_fallocate_works_or_answers_eopnotsupp(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    vmdir = mount.path / "images" / "104"
    vmdir.mkdir()
    disk = vmdir / "vm-104-disk-0.raw"
    model = bytearray(os.urandom(4 * MiB))
    disk.write_bytes(model)
    observed = {}
    fd = os.open(disk, os.O_RDWR)
    try:
        # mode 0: allocate (and extend)
        result = _fallocate(fd, 0, 0, 6 * MiB)
        observed["allocate"] = errno.errorcode.get(result, "ok")
        assert result in (0, errno.EOPNOTSUPP), observed
        if result == 0:
            model += bytes(2 * MiB)
        # KEEP_SIZE beyond the end: the size must not change
        result = _fallocate(fd, FALLOC_FL_KEEP_SIZE, len(model), MiB)
        observed["keep_size"] = errno.errorcode.get(result, "ok")
        assert result in (0, errno.EOPNOTSUPP), observed
        # PUNCH_HOLE|KEEP_SIZE (discard) and ZERO_RANGE (write zeroes)
        for name, mode, offset in (("punch_hole", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                    MiB), ("zero_range", FALLOC_FL_ZERO_RANGE, 2 * MiB)):
            result = _fallocate(fd, mode, offset, 64 * KiB)
            observed[name] = errno.errorcode.get(result, "ok")
            assert result in (0, errno.EOPNOTSUPP), observed
            if result == 0:
                model[offset:offset + 64 * KiB] = bytes(64 * KiB)
        assert os.fstat(fd).st_size == len(model)
        assert os.pread(fd, len(model), 0) == model

        # glibc's posix_fallocate emulates what the filesystem does not do: it must work.
        os.posix_fallocate(fd, 0, len(model) + 2 * MiB)
        model += bytes(2 * MiB)
        assert os.fstat(fd).st_size == len(model)
        assert os.pread(fd, len(model), 0) == model
        body = os.urandom(4096)  # still an ordinary, writable file
        os.pwrite(fd, body, 4096)
        model[4096:8192] = body
    finally:
        os.close(fd)
    print(f"fallocate(2) on the mount: {observed}")

    for args in (["-l", str(len(model) + MiB)], ["-p", "-o", str(MiB), "-l", "64KiB"]):
        tool = run(["fallocate", *args, str(disk)], check=False, text=True, timeout=20)
        if tool.returncode == 0:
            if "-p" in args:
                model[MiB:MiB + 64 * KiB] = bytes(64 * KiB)
            else:
                model += bytes(MiB)
        else:
            assert tool.returncode == 1 and "unsupported" in tool.stderr.replace(
                "not supported", "unsupported"), tool.stderr
    assert disk.read_bytes() == model
    sync(mount)
    assert object_sha256(s3_client, bucket, IMAGES + "104/vm-104-disk-0.raw") == \
        sha256(bytes(model))
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)


def test_image_renamed_while_open(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    vmdir = mount.path / "images" / "105"
    vmdir.mkdir()
    vm, base = vmdir / "vm-105-disk-0.raw", vmdir / "base-105-disk-0.raw"
    model = bytearray(8 * MiB)
    fd = os.open(vm, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        os.ftruncate(fd, len(model))
        first, second = os.urandom(MiB), os.urandom(MiB)
        assert direct_pwrite(fd, first, 0) == MiB
        model[:MiB] = first
        os.rename(vm, base)
        assert direct_pwrite(fd, second, 6 * MiB) == MiB
        model[6 * MiB:7 * MiB] = second
        os.fdatasync(fd)
        assert direct_pread(fd, len(model), 0) == model
    finally:
        os.close(fd)
    assert os.listdir(vmdir) == [base.name]
    assert base.read_bytes() == model
    assert stat.S_IMODE(base.stat().st_mode) == 0o600
    sync(mount)
    assert data_keys(s3_client, bucket, IMAGES) == {IMAGES + "105/base-105-disk-0.raw"}
    assert object_sha256(s3_client, bucket, IMAGES + "105/base-105-disk-0.raw") == \
        sha256(bytes(model))
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)


def test_guest_writes_into_an_uploaded_image_on_another_node(mount_s3pvefs, s3_client, bucket,
                                                            tmp_path):
    """A VM started on another node (empty cache, smaller than the disk) writes into its
    image: partly covered blocks come from S3 first, evicted blocks come back, and the
    object ends up with exactly the guest's writes on top of the old content."""
    source = tmp_path / "disk.raw"
    source.write_bytes(os.urandom(24 * MiB))
    first = mount_s3pvefs()
    (first.path / "images" / "106").mkdir()
    run(["dd", f"if={source}", f"of={first.path / 'images' / '106' / 'vm-106-disk-0.raw'}",
         "bs=1M", "oflag=direct"])
    assert first.unmount() == 0, log_tail(first)

    model = bytearray(source.read_bytes())
    other = mount_s3pvefs("--cache-size", "16MiB")
    disk = other.path / "images" / "106" / "vm-106-disk-0.raw"
    rng = random.Random(12)
    fd = os.open(disk, os.O_RDWR | os.O_DIRECT)
    try:
        for round_ in range(120):
            length = rng.choice([512, 4096, 65536, 512 * KiB, 2 * MiB])
            offset = rng.randrange(0, len(model) - length, 512)
            if rng.random() < 0.6:
                body = rng.randbytes(length)
                assert direct_pwrite(fd, body, offset) == length
                model[offset:offset + length] = body
            else:
                assert direct_pread(fd, length, offset) == model[offset:offset + length], \
                    (round_, offset, length, log_tail(other))
            if round_ % 20 == 19:
                os.fdatasync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    # Disk resize of a stopped VM: qemu-img resize grows the file (ftruncate); the new tail
    # reads as zeros.
    run(["qemu-img", "resize", "-f", "raw", str(disk), str(32 * MiB)])
    model += bytes(8 * MiB)
    assert disk.stat().st_size == len(model)
    fd = os.open(disk, os.O_RDONLY)
    try:
        assert os.pread(fd, 2 * MiB, 23 * MiB) == model[23 * MiB:25 * MiB]
        assert os.pread(fd, MiB, 31 * MiB) == bytes(MiB)
    finally:
        os.close(fd)
    sync(other)
    assert object_sha256(s3_client, bucket, IMAGES + "106/vm-106-disk-0.raw") == \
        sha256(bytes(model)), log_tail(other)
    assert file_sha256(disk) == sha256(bytes(model))
    assert open_uploads(s3_client, bucket) == []
    assert other.unmount() == 0, log_tail(other)


@needs_tools("mkfs.ext4", "e2fsck", "debugfs")
def test_container_raw_disk_formatted_with_ext4(mount_s3pvefs, tmp_path):
    """A container's rootfs on a dir storage is a raw image in images/<vmid>/ that pct
    formats with mkfs.ext4 (many small writes and fsyncs into a sparse file)."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    payload = rootfs / "payload"
    payload.write_bytes(os.urandom(300 * KiB))
    mount = mount_s3pvefs()
    (mount.path / "images" / "107").mkdir()
    disk = mount.path / "images" / "107" / "vm-107-disk-0.raw"
    run(["truncate", "-s", "64M", str(disk)])
    run(["mkfs.ext4", "-q", "-F", "-O", "mmp", "-E", "root_owner=0:0", "-d", str(rootfs),
         str(disk)])
    run(["e2fsck", "-fn", str(disk)])
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()
    disk = other.path / "images" / "107" / "vm-107-disk-0.raw"
    run(["e2fsck", "-fn", str(disk)])
    copied = run(["debugfs", "-R", "cat payload", str(disk)]).stdout
    assert copied == payload.read_bytes()
    assert other.unmount() == 0, log_tail(other)


def test_restore_writes_clusters_out_of_order_into_an_image_larger_than_the_cache(
        mount_s3pvefs, s3_client, bucket):
    """A VMA restore writes clusters mostly in order, but those copied before a guest write
    during the backup come later: into parts already uploaded and evicted from a cache
    smaller than the image."""
    mount = mount_s3pvefs("--cache-size", "16MiB")
    (mount.path / "images" / "100").mkdir()
    disk = mount.path / "images" / "100" / "vm-100-disk-0.raw"
    rng = random.Random(7)
    clusters = {i: rng.randbytes(MiB) for i in range(48)}
    late = [i for i in clusters if i % 10 == 7]
    fd = os.open(disk, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for i in [i for i in clusters if i not in late] + late:
            os.pwrite(fd, clusters[i], i * MiB)
    finally:
        os.close(fd)
    expected = b"".join(clusters[i] for i in range(48))
    assert file_sha256(disk) == sha256(expected)
    sync(mount, disk)
    assert object_sha256(s3_client, bucket, IMAGES + "100/vm-100-disk-0.raw") == sha256(expected)
    assert mount.unmount() == 0
