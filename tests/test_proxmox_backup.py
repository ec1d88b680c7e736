"""Proxmox conformance: vzdump backups, their listing, "show configuration", restore and prune,
replayed through a real mount on moto and on a Ceph RGW exactly as ../shared/proxmox-io.md
describes.

Each file must end up as one plain S3 object under `pve/dump/`; vzdump's temporary names
(`*.dat`, `<basename>.tmp/`, `*.notes.tmp.<pid>`) must never be left on S3.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat

import pytest
from helpers import keys, needs_fuse, object_bytes, open_uploads
from proxmox_sequences import (
    PREFIX,
    MiB,
    backup_basename,
    dat_name,
    data_keys,
    file_sha256,
    kill_reader_part_way,
    log_tail,
    mixed_data,
    needs_tools,
    object_sha256,
    perl_rmtree,
    proxmox_listing,
    qemu_config_tmpdir,
    run,
    set_protected,
    sha256,
    show_config_tar,
    show_config_vma,
    sync,
    unlink_errno,
    write_all,
    write_dat_through_shared_fd,
    write_notes,
    write_sizes,
    zstd_compress,
)

pytestmark = [needs_fuse, needs_tools("zstd", "tar", "perl", "gzip"), pytest.mark.real_server]

PROMPT = 10.0  # seconds "show configuration" may take on a loaded test machine, at most
DUMP = PREFIX + "dump/"
VMA_CONF = b"boot: order=scsi0\ncores: 2\nmemory: 2048\nscsi0: local:100/vm-100-disk-0.qcow2\n"
VMA_FW = b"[OPTIONS]\nenable: 1\n"
LOG = b"".join(b"INFO: 2026-11-21 01:00:%02d line %d of the backup log\n" % (i % 60, i)
               for i in range(400))


def forget_kernel_caches() -> None:
    """Make the kernel drop cached dentries and inodes (FORGET), as memory pressure does
    (where /proc/sys is read-only the check below only covers the cached inodes)."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as caches:
            caches.write("2\n")
    except OSError:
        pass


def qemu_backup_data() -> tuple[bytes, bytes]:
    """(raw stream the child compresses, raw stream the parent compresses): about 3.6 + 13.7
    MiB of zstd output, so the `.dat` spans several 5 MiB parts."""
    return b"VMA\x00" + mixed_data(6 * MiB - 4, 1), mixed_data(26 * MiB, 2)


def test_qemu_vzdump_backup_then_listing_show_config_and_restore_elsewhere(
        mount_s3pvefs, s3_client, bucket, tmp_path):
    child_raw, parent_raw = qemu_backup_data()
    frame1, frame2 = zstd_compress(child_raw), zstd_compress(parent_raw)
    archive_bytes = frame1 + frame2
    (tmp_path / "vzdump.log").write_bytes(LOG)

    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    base = backup_basename("qemu", 100)
    name = f"{base}.vma.zst"
    archive, dat, logfile = dump / name, dump / dat_name(name), dump / f"{base}.log"
    assert dat.name == f"{base}.vma.dat"

    # vzdump starts by removing leftovers of an earlier attempt: there are none.
    assert unlink_errno(dat) == errno.ENOENT
    assert unlink_errno(logfile) == errno.ENOENT

    # The configuration files, written by one process and read by QEMU (another one).
    tmpdir = qemu_config_tmpdir(dump, base, VMA_CONF, VMA_FW)
    tmp_ino = os.stat(tmpdir).st_ino
    read_back = run(["cat", str(tmpdir / "qemu-server.conf"), str(tmpdir / "qemu-server.fw")])
    assert read_back.stdout == VMA_CONF + VMA_FW
    assert sorted(os.listdir(tmpdir)) == ["qemu-server.conf", "qemu-server.fw"]

    # The archive: one fd shared by two writers with O_NONBLOCK, closed, renamed at once
    # (possibly before the kernel's RELEASE arrives), then stat of the final name.
    child_end = write_dat_through_shared_fd(dat, child_raw, frame2)
    os.rename(dat, archive)
    info = os.stat(archive)
    assert child_end == len(frame1)
    assert info.st_size == len(archive_bytes), log_tail(mount)
    assert stat.S_ISREG(info.st_mode)
    assert not os.path.exists(dat)

    write_notes(archive, "nightly backup\nkept for a year\n")
    set_protected(archive)
    run(["cp", str(tmp_path / "vzdump.log"), str(logfile)])
    # Inode numbers stay while the files exist, even once the kernel forgot them (rmtree
    # compares lstat with stat(".") after chdir).
    inodes = {p: os.stat(p).st_ino for p in (tmpdir, tmpdir / "qemu-server.conf", archive)}
    forget_kernel_caches()
    assert {p: os.stat(p).st_ino for p in inodes} == inodes
    assert inodes[tmpdir] == tmp_ino
    removed = perl_rmtree(tmpdir)
    assert removed.returncode == 0, (removed.stderr, log_tail(mount))
    assert not os.path.exists(tmpdir)

    assert file_sha256(archive) == sha256(archive_bytes)
    listing = proxmox_listing(dump)
    expected_names = {name, f"{name}.notes", f"{name}.protected", f"{base}.log"}
    assert set(listing) == expected_names, listing
    assert listing[name]["size"] == len(archive_bytes)
    assert listing[name]["notes"] == "nightly backup" and listing[name]["protected"] is True
    assert listing[f"{name}.protected"]["size"] == 0
    assert listing[f"{base}.log"]["size"] == len(LOG)
    write_notes(archive, "edited in the GUI\n")  # a second rename, over the existing notes

    sync(mount)
    assert data_keys(s3_client, bucket, DUMP) == {DUMP + n for n in expected_names}
    every_key = keys(s3_client, bucket)
    assert not [k for k in every_key if k.endswith(".dat") or ".tmp" in k], every_key
    assert object_sha256(s3_client, bucket, DUMP + name) == sha256(archive_bytes)
    assert object_bytes(s3_client, bucket, DUMP + f"{name}.notes") == b"edited in the GUI\n"
    assert object_bytes(s3_client, bucket, DUMP + f"{name}.protected") == b""
    assert object_bytes(s3_client, bucket, DUMP + f"{base}.log") == LOG
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)
    assert data_keys(s3_client, bucket, DUMP) == {DUMP + n for n in expected_names}
    assert not [k for k in keys(s3_client, bucket) if k.endswith(".dat") or ".tmp" in k]

    # Another node: an empty cache, everything comes from S3.
    other = mount_s3pvefs()
    dump = other.path / "dump"
    listing = proxmox_listing(dump)
    assert set(listing) == expected_names, listing
    assert listing[name]["size"] == len(archive_bytes)
    assert listing[name]["notes"] == "edited in the GUI" and listing[name]["protected"] is True

    shown, seconds = show_config_vma(dump / name)
    assert shown.stdout == (child_raw + parent_raw)[:64 * 1024], (shown.stderr, log_tail(other))
    assert seconds < PROMPT, seconds
    # A reader killed while its reads are outstanding; the mount keeps serving.
    assert kill_reader_part_way(["zstd", "-dc", str(dump / name)]) == 256 * 1024

    restored = run(f"zstd -dc '{dump / name}' | sha256sum", text=True)
    assert restored.stdout.split()[0] == sha256(child_raw + parent_raw), log_tail(other)
    assert file_sha256(dump / name, read_size=3_700_000) == sha256(archive_bytes)
    assert other.unmount() == 0, log_tail(other)


def container_tree(root) -> dict[str, bytes]:
    files = {
        "etc/vzdump/pct.conf": b"arch: amd64\ncores: 2\nhostname: ct101\nmemory: 1024\n"
                               b"rootfs: local:101/vm-101-disk-0.raw,size=8G\n",
        "var/big": os.urandom(9 * MiB),  # incompressible: the .tar.zst spans two parts
        "etc/hostname": b"ct101\n",
    }
    for path, body in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)
    return files


def test_lxc_vzdump_backup_then_show_config_and_restore_elsewhere(
        mount_s3pvefs, s3_client, bucket, tmp_path):
    files = container_tree(tmp_path / "ct")
    (tmp_path / "vzdump.log").write_bytes(LOG)
    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    base = backup_basename("lxc", 101)
    name = f"{base}.tar.zst"
    archive, dat, logfile = dump / name, dump / dat_name(name), dump / f"{base}.log"
    assert dat.name == f"{base}.tar.dat"
    assert unlink_errno(dat) == errno.ENOENT
    assert unlink_errno(logfile) == errno.ENOENT

    # tar | zstd with the compressor's stdout on the .dat (O_WRONLY|O_CREAT|O_TRUNC); tee keeps
    # a copy of exactly the bytes written.
    expected = tmp_path / "expected.tar.zst"
    run(f"tar -cpf - -C '{tmp_path / 'ct'}' ./etc/vzdump/pct.conf ./etc/hostname ./var "
        f"| zstd -q -1 | tee '{expected}' > '{dat}'")
    os.rename(dat, archive)
    assert os.stat(archive).st_size == expected.stat().st_size, log_tail(mount)
    run(["cp", str(tmp_path / "vzdump.log"), str(logfile)])
    assert set(proxmox_listing(dump)) == {name, f"{base}.log"}

    sync(mount)
    assert data_keys(s3_client, bucket, DUMP) == {DUMP + name, DUMP + f"{base}.log"}
    assert object_sha256(s3_client, bucket, DUMP + name) == file_sha256(expected)
    assert object_bytes(s3_client, bucket, DUMP + f"{base}.log") == LOG
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()
    archive = other.path / "dump" / name
    shown, seconds = show_config_tar(archive)
    assert shown.returncode == 0, (shown.stderr, log_tail(other))
    assert shown.stdout == files["etc/vzdump/pct.conf"]
    assert seconds < PROMPT, seconds
    assert kill_reader_part_way(["tar", "-xOf", str(archive), "./var/big"]) == 256 * 1024

    restore = tmp_path / "restore"
    restore.mkdir()
    with open(archive, "rb") as inherited:  # pct restore: tar reads an fd opened for it
        run(["tar", "-I", "zstd", "-xpf", "-", "-C", str(restore)], stdin=inherited)
    for path, body in files.items():
        assert (restore / path).read_bytes() == body, path
    assert other.unmount() == 0, log_tail(other)


def tar_bytes(tmp_path, size: int) -> bytes:
    src = tmp_path / "src"
    (src / "etc" / "vzdump").mkdir(parents=True)
    (src / "etc" / "vzdump" / "pct.conf").write_bytes(b"hostname: ct102\n")
    (src / "big").write_bytes(mixed_data(size, 5))
    return run(["tar", "-cf", "-", "-C", str(src), "./etc/vzdump/pct.conf", "./big"]).stdout


LZOP_MAGIC = b"\x89LZO\x00\r\n\x1a\n"


@pytest.mark.parametrize("extension", ["vma", "tar", "tar.gz", "vma.gz", "vma.lzo"])
def test_other_archive_formats_land_under_their_final_name(mount_s3pvefs, s3_client, bucket,
                                                          tmp_path, extension):
    """Uncompressed `X.vma` / `X.tar` are written as `X.dat`, gzip ones as `X.vma.dat` /
    `X.tar.dat`; whatever the magic bytes, only the final name reaches S3."""
    if extension.startswith("vma"):
        raw = b"VMA\x00" + mixed_data(8 * MiB, 4)
    else:
        raw = tar_bytes(tmp_path, 8 * MiB)
    if extension.endswith(".gz"):
        body = gzip.compress(raw, compresslevel=1, mtime=0)
    elif extension.endswith(".lzo"):
        body = LZOP_MAGIC + raw  # lzop's header magic (lzop itself is not needed here)
    else:
        body = raw
    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    kind = "qemu" if extension.startswith("vma") else "lxc"
    name = f"{backup_basename(kind, 102)}.{extension}"
    dat = dump / dat_name(name)
    assert dat.name == (f"{backup_basename(kind, 102)}.dat" if "." not in extension
                        else f"{backup_basename(kind, 102)}.{extension.split('.')[0]}.dat")
    assert unlink_errno(dat) == errno.ENOENT
    fd = os.open(dat, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, body, write_sizes(len(body), 3))
    finally:
        os.close(fd)
    os.rename(dat, dump / name)
    assert os.stat(dump / name).st_size == len(body), log_tail(mount)
    assert os.listdir(dump) == [name]
    sync(mount)
    assert data_keys(s3_client, bucket, DUMP) == {DUMP + name}
    assert object_sha256(s3_client, bucket, DUMP + name) == sha256(body)
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)
    assert data_keys(s3_client, bucket, DUMP) == {DUMP + name}


def test_prune_then_rmdir_of_dump(mount_s3pvefs, s3_client, bucket):
    """Two older backups from another node on S3, a new one written here; prune the oldest
    right after the new backup (vzdump's order), refuse the protected one; rmdir of dump/
    answers ENOTEMPTY while anything is left, succeeds once empty, and mkpath re-creates it."""
    old, kept = backup_basename("qemu", 100, "2026_11_19-01_00_00"), \
        backup_basename("qemu", 100, "2026_11_20-01_00_00")
    for base, protected in ((old, False), (kept, True)):
        s3_client.put_object(Bucket=bucket, Key=f"{DUMP}{base}.vma.zst", Body=b"z" * 5000)
        s3_client.put_object(Bucket=bucket, Key=f"{DUMP}{base}.log", Body=b"log\n")
        s3_client.put_object(Bucket=bucket, Key=f"{DUMP}{base}.vma.zst.notes", Body=b"n\n")
        if protected:
            s3_client.put_object(Bucket=bucket, Key=f"{DUMP}{base}.vma.zst.protected", Body=b"")
    mount = mount_s3pvefs()
    dump = mount.path / "dump"

    new = backup_basename("qemu", 100)
    new_data = zstd_compress(mixed_data(12 * MiB, 9))
    fd = os.open(dump / f"{new}.vma.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, new_data, write_sizes(len(new_data), 4))
    finally:
        os.close(fd)
    os.rename(dump / f"{new}.vma.dat", dump / f"{new}.vma.zst")
    write_notes(dump / f"{new}.vma.zst", "fresh\n")

    listing = proxmox_listing(dump)
    assert {n for n in listing if n.endswith(".vma.zst")} == {
        f"{old}.vma.zst", f"{kept}.vma.zst", f"{new}.vma.zst"}
    assert listing[f"{old}.vma.zst"]["protected"] is False
    assert listing[f"{kept}.vma.zst"]["protected"] is True
    assert listing[f"{new}.vma.zst"]["notes"] == "fresh"

    set_protected(dump / f"{kept}.vma.zst")  # protecting it again changes nothing
    assert os.stat(dump / f"{kept}.vma.zst.protected").st_size == 0
    write_notes(dump / f"{kept}.vma.zst", "")  # empty notes remove the notes file
    assert not os.path.exists(dump / f"{kept}.vma.zst.notes")

    # prune: keep-last 2 would remove `old`; `kept` is protected and never removed.
    assert not os.path.exists(dump / f"{old}.vma.zst.protected")
    for suffix in (".vma.zst", ".log", ".vma.zst.notes"):
        os.unlink(dump / f"{old}{suffix}")
        assert unlink_errno(dump / f"{old}{suffix}") == errno.ENOENT
    with pytest.raises(OSError) as excinfo:
        os.rmdir(dump)
    assert excinfo.value.errno == errno.ENOTEMPTY
    assert not any(n.startswith(old) for n in os.listdir(dump))

    sync(mount)
    stored = data_keys(s3_client, bucket, DUMP)
    assert not any(old in key for key in stored), stored
    assert stored == {f"{DUMP}{kept}{s}" for s in (".vma.zst", ".log", ".vma.zst.protected")} | {
        f"{DUMP}{new}.vma.zst", f"{DUMP}{new}.vma.zst.notes"}
    assert object_sha256(s3_client, bucket, f"{DUMP}{new}.vma.zst") == sha256(new_data)

    # The admin deletes everything; the protected flag goes last.
    for suffix in (".vma.zst", ".vma.zst.notes"):
        os.unlink(dump / f"{new}{suffix}")
    for suffix in (".vma.zst", ".log"):
        os.unlink(dump / f"{kept}{suffix}")
    assert os.listdir(dump) == [f"{kept}.vma.zst.protected"]
    with pytest.raises(OSError) as excinfo:
        os.rmdir(dump)
    assert excinfo.value.errno == errno.ENOTEMPTY
    os.unlink(dump / f"{kept}.vma.zst.protected")
    os.rmdir(dump)
    assert not os.path.exists(dump)
    assert keys(s3_client, bucket, DUMP) == set(), log_tail(mount)

    os.makedirs(dump, exist_ok=True)  # the next activation's mkpath
    assert os.path.isdir(dump) and os.listdir(dump) == []
    sync(mount)
    assert keys(s3_client, bucket, DUMP) == {DUMP}
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)


def test_restore_right_after_a_backup_larger_than_the_cache(mount_s3pvefs, s3_client, bucket):
    """A 40 MiB backup through a 16 MiB cache: streamed parts are evicted while it is written.
    "Show configuration" and a restore right after the backup (close, rename, stat, read at
    once, on the same node) must give exactly what was written, never an error."""
    raw = b"VMA\x00" + os.urandom(40 * MiB)
    body = zstd_compress(raw)
    mount = mount_s3pvefs("--cache-size", "16MiB")
    dump = mount.path / "dump"
    name = f"{backup_basename('qemu', 106)}.vma.zst"
    fd = os.open(dump / dat_name(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, body, write_sizes(len(body), 6))
    finally:
        os.close(fd)
    os.rename(dump / dat_name(name), dump / name)
    assert os.stat(dump / name).st_size == len(body)
    shown, _ = show_config_vma(dump / name)
    assert shown.stdout == raw[:64 * 1024], (shown.stderr, log_tail(mount))
    assert file_sha256(dump / name, read_size=3_700_000) == sha256(body), log_tail(mount)
    restored = run(f"zstd -dc '{dump / name}' | sha256sum", text=True)
    assert restored.stdout.split()[0] == sha256(raw), log_tail(mount)
    sync(mount)
    assert data_keys(s3_client, bucket, DUMP) == {DUMP + name}
    assert object_sha256(s3_client, bucket, DUMP + name) == sha256(body)
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)
