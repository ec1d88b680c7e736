"""POSIX answers through a real mount, checked against what ext4 and tmpfs answer (the cases
pjdfstest found). The mounts use --attr-ttl 0, so that every stat asks s3pvefs rather than the
kernel's attribute cache."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest
from helpers import needs_fuse

pytestmark = needs_fuse

OLD_NS = 1_500_000_000_000_000_000  # 2017: far from "now"


@pytest.fixture
def mount(mount_s3pvefs):
    mounted = mount_s3pvefs("--attr-ttl", "0")
    yield mounted
    assert mounted.unmount() == 0


def test_fstat_of_an_unlinked_open_file_has_no_links(mount):
    path = mount.path / "snippets" / "gone"
    path.write_bytes(b"data")
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.fstat(fd).st_nlink == 1
        os.unlink(path)
        info = os.fstat(fd)
        assert info.st_nlink == 0
        assert os.pread(fd, 4, 0) == b"data"  # still readable until closed
    finally:
        os.close(fd)


@pytest.mark.parametrize("content", [b"", b"not empty"], ids=["empty", "not-empty"])
@pytest.mark.parametrize("access", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY],
                         ids=["wronly", "rdwr", "rdonly"])
def test_open_with_o_trunc_updates_mtime_and_ctime(mount, content, access):
    """Linux (ext4, tmpfs) sets both times on open(O_TRUNC) of an existing file, even one that
    was empty already, and truncates with O_RDONLY too (the kernel checked write access)."""
    path = mount.path / "snippets" / "truncated"
    path.write_bytes(content)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    before = os.stat(path)
    time.sleep(0.01)
    os.close(os.open(path, access | os.O_TRUNC))
    after = os.stat(path)
    assert after.st_size == 0 and path.read_bytes() == b""
    assert after.st_mtime_ns > before.st_mtime_ns
    assert after.st_ctime_ns > before.st_ctime_ns
    assert abs(after.st_mtime_ns - time.time_ns()) < 60 * 10**9  # now


def test_directory_links_count_its_subdirectories(mount):
    top = mount.path / "private" / "d"
    top.mkdir()
    assert os.stat(top).st_nlink == 2
    (top / "a").mkdir()
    (top / "b").mkdir()
    (top / "file").write_bytes(b"x")
    os.symlink("file", top / "link")
    assert os.stat(top).st_nlink == 4  # ".", and ".." of a and b; files do not count
    os.rename(top / "b", mount.path / "private" / "b")
    assert os.stat(top).st_nlink == 3
    os.rmdir(top / "a")
    assert os.stat(top).st_nlink == 2
    assert os.stat(mount.path / "template").st_nlink == 4  # template/iso, template/cache
    fd = os.open(top / "a2", os.O_RDONLY | os.O_CREAT, 0o644)  # a file: nlink 1
    assert os.fstat(fd).st_nlink == 1
    os.close(fd)


def test_utimensat_keeps_the_atime(mount):
    path = mount.path / "snippets" / "times"
    path.write_bytes(b"x")
    atime, mtime = 1_600_000_000_123_456_789, 1_500_000_000_987_654_321
    os.utime(path, ns=(atime, mtime))
    info = os.stat(path)
    assert (info.st_atime_ns, info.st_mtime_ns) == (atime, mtime)
    # atime alone (touch -a): the mtime stays, the ctime moves
    ctime = info.st_ctime_ns
    time.sleep(0.01)
    os.utime(path, ns=(atime + 1, mtime))
    info = os.stat(path)
    assert (info.st_atime_ns, info.st_mtime_ns) == (atime + 1, mtime)
    assert info.st_ctime_ns > ctime
    # a write moves the mtime, not an atime that was set
    with open(path, "ab") as f:
        f.write(b"y")
    info = os.stat(path)
    assert info.st_atime_ns == atime + 1 and info.st_mtime_ns > mtime
    # a file whose atime was never set shows its mtime
    other = mount.path / "snippets" / "untouched"
    other.write_bytes(b"z")
    info = os.stat(other)
    assert info.st_atime_ns == info.st_mtime_ns


def _errno_of(call, *args) -> int:
    try:
        call(*args)
    except OSError as exc:
        return exc.errno
    return 0


def test_namespace_errors_stay_as_they_were(mount):
    """What pjdfstest found right: the errno of rename, rmdir, unlink, mkdir and open, and
    ENAMETOOLONG at S3's key limit (1024 bytes)."""
    base = mount.path / "private"
    (base / "dir").mkdir()
    (base / "dir" / "inside").write_bytes(b"x")
    (base / "file").write_bytes(b"x")
    (base / "empty").mkdir()
    cases = [
        (errno.ENOENT, os.unlink, base / "missing"),
        (errno.EISDIR, os.unlink, base / "dir"),
        (errno.ENOTDIR, os.rmdir, base / "file"),
        (errno.ENOTEMPTY, os.rmdir, base / "dir"),
        (errno.ENOENT, os.rmdir, base / "missing"),
        (errno.EEXIST, os.mkdir, base / "file"),
        (errno.EEXIST, os.mkdir, base / "dir"),
        (errno.ENOENT, os.mkdir, base / "missing" / "sub"),
        (errno.ENOTDIR, os.mkdir, base / "file" / "sub"),
        (errno.ENOENT, os.open, base / "missing", os.O_RDONLY),
        (errno.EEXIST, os.open, base / "file", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
        (errno.EISDIR, os.open, base / "dir", os.O_WRONLY),
        (errno.ENOTDIR, os.open, base / "file" / "x", os.O_RDONLY),
        (errno.ENOENT, os.rename, base / "missing", base / "other"),
        (errno.EISDIR, os.rename, base / "file", base / "empty"),
        (errno.ENOTDIR, os.rename, base / "empty", base / "file"),
        (errno.ENOTEMPTY, os.rename, base / "empty", base / "dir"),
        (errno.EINVAL, os.rename, base / "dir", base / "dir" / "sub"),
        (errno.ENAMETOOLONG, os.mkdir, base / ("n" * 256)),
    ]
    for expected, call, *args in cases:
        assert _errno_of(call, *args) == expected, (call.__name__, args)
    # Names of 255 bytes are fine until the whole key passes 1024 bytes.
    deep = base
    for index in range(3):
        deep = deep / (f"{index}" * 255)
        deep.mkdir()
    assert _errno_of(os.mkdir, deep / ("x" * 250)) == errno.ENAMETOOLONG
    assert _errno_of(os.open, deep / ("x" * 250), os.O_WRONLY | os.O_CREAT) == errno.ENAMETOOLONG
    (deep / "f").write_bytes(b"x")
    assert _errno_of(os.rename, deep / "f", deep / ("x" * 250)) == errno.ENAMETOOLONG


def test_ownership_and_setuid_rules_stay(mount):
    """chown/chmod as root are kept; a chown by root clears the setuid bit of a file (the
    kernel's rule, as on ext4)."""
    path = mount.path / "snippets" / "owned"
    path.write_bytes(b"#!/bin/sh\n")
    os.chmod(path, 0o4755)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o4755
    os.chown(path, 1234, 5678)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (1234, 5678)
    assert stat.S_IMODE(info.st_mode) == 0o755
