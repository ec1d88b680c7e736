"""docs/semantics.md, kept true: every row id of its tables is proved by exactly one test.

A test here names the rows it proves with ``@semantics("row-id", ...)``; a row proved by a
test of another module is listed in ``ELSEWHERE``. ``test_every_row_is_proved_by_one_test``
fails on a row without a test, a row with two, and an id the document does not have. A row
whose result is an errno (`EPERM`) is checked with ``expect_errno``, which takes the errno
from the document: a test that names such a row and does not check it fails.

The POSIX rows run on one mount per module (each test in a directory of its own); the
durability rows mount for themselves, on moto and on the Ceph RGW (``real_server``).
"""

from __future__ import annotations

import ast
import ctypes
import errno
import fcntl
import functools
import mmap
import os
import re
import stat
import time
import uuid
from pathlib import Path

import boto3
import pytest
from helpers import crc64nvme, keys, needs_fuse, object_bytes
from mounting import MountFactory

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "semantics.md"
TESTS = Path(__file__).resolve().parent
MiB = 1024 * 1024
TIB5 = 5 * 1024**4
OLD_NS = 1_500_000_000_000_000_000

pytestmark = needs_fuse


# -- the document ------------------------------------------------------------------------------


def table_rows(text: str) -> list[tuple[str, list[str]]]:
    """(id, cells) of every table row whose first cell is an id (headers and rules are not)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", cells[0]) and cells[0] != "id":
            rows.append((cells[0], cells[1:]))
    return rows


ROW_LIST = table_rows(DOC.read_text())
ROWS = dict(ROW_LIST)


def documented_errno(row_id: str) -> int | None:
    """The errno a row's result starts with (`EXXX`), or None for a row that succeeds."""
    match = re.match(r"`(E[A-Z0-9]+)`", ROWS[row_id][-1])
    return None if match is None else getattr(errno, match[1])


# -- which test proves which row ---------------------------------------------------------------

PROVED_HERE: dict[str, list[str]] = {}
_checked: set[str] = set()  # errno rows the running test compared with the document


def semantics(*ids: str):
    """Mark a test as the proof of these rows; their errno rows must go through expect_errno."""

    def decorate(test):
        for row_id in ids:
            PROVED_HERE.setdefault(row_id, []).append(test.__name__)

        @functools.wraps(test)
        def checked(*args, **kwargs):
            _checked.clear()
            test(*args, **kwargs)
            unchecked = [row_id for row_id in ids
                         if documented_errno(row_id) is not None and row_id not in _checked]
            assert not unchecked, f"errno rows not compared with the document: {unchecked}"

        return checked

    return decorate


def expect_errno(row_id: str, call, *args) -> None:
    """``call(*args)`` fails with the errno docs/semantics.md gives for ``row_id``."""
    expected = documented_errno(row_id)
    assert expected is not None, f"{row_id}: the document gives no errno"
    try:
        call(*args)
    except OSError as exc:
        assert exc.errno == expected, (
            f"{row_id}: the document says {errno.errorcode[expected]}, the mount answered "
            f"{errno.errorcode.get(exc.errno, exc.errno)}")
    else:
        raise AssertionError(f"{row_id}: succeeded, the document says "
                             f"{errno.errorcode[expected]}")
    _checked.add(row_id)


# Rows that tests in other modules prove (none with an errno: those are compared here).
ELSEWHERE = {
    "open-trunc": "test_posix.py::test_open_with_o_trunc_updates_mtime_and_ctime",
    "stat-nlink": "test_posix.py::test_directory_links_count_its_subdirectories",
    "stat-ino": "test_mount.py::test_inode_numbers_stable",
    "unlink-open-evicted": "test_mount.py::test_a_file_deleted_while_open_reads_on_until_closed",
    "dur-fsync-journal": "test_faults.py::test_stopped_endpoint_writes_go_to_the_cache_and_catch_up",
    "dur-kill-writing": "test_crash.py::test_kill_while_backup_is_written",
    "dur-second-host": "test_multinode.py::test_files_written_on_one_node_show_on_the_other",
    "dur-two-writers": "test_multinode.py::test_same_file_from_two_nodes_last_upload_wins",
    "etag-put": "test_store.py::test_an_etag_that_is_not_of_what_was_sent_fails_the_upload",
    "etag-content-md5": "test_store.py::test_uploads_carry_the_md5_of_their_body",
    "etag-empty": "test_store.py::test_a_completion_answered_without_an_etag_is_confirmed_by_head",
}


def _test_functions(module: Path) -> dict[str, list[str]]:
    """Top-level test functions of a module -> the names in their decorators."""
    tree = ast.parse(module.read_text())
    return {node.name: [ast.unparse(d) for d in node.decorator_list]
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")}


def test_every_row_is_proved_by_one_test():
    ids = [row_id for row_id, _ in ROW_LIST]
    assert len(ids) > 50, "docs/semantics.md: no rows found; did the table format change?"
    assert len(ids) == len(set(ids)), f"ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"
    for row_id, cells in ROW_LIST:
        assert len(cells) in (2, 3), f"{row_id}: {len(cells) + 1} cells"
    proofs: dict[str, list[str]] = {row_id: list(tests) for row_id, tests in PROVED_HERE.items()}
    for row_id, target in ELSEWHERE.items():
        proofs.setdefault(row_id, []).append(target)
    unknown = sorted(set(proofs) - set(ROWS))
    missing = sorted(set(ROWS) - set(proofs))
    twice = {row_id: tests for row_id, tests in proofs.items() if len(tests) > 1}
    assert not unknown, f"tests name rows docs/semantics.md does not have: {unknown}"
    assert not missing, f"rows of docs/semantics.md that no test proves: {missing}"
    assert not twice, f"rows proved by more than one test: {twice}"
    for row_id, target in ELSEWHERE.items():
        assert documented_errno(row_id) is None, f"{row_id}: errno rows are checked here"
        module, name = target.split("::")
        functions = _test_functions(TESTS / module)
        assert name in functions, f"{row_id}: {target} does not exist"
        assert not any("known_defect" in d or "skip" in d for d in functions[name]), (
            f"{row_id}: {target} is skipped, so it proves nothing")


# -- one mount for the POSIX rows ----------------------------------------------------------------


class Shared:
    def __init__(self, mount, client, bucket: str):
        self.mount, self.client, self.bucket = mount, client, bucket
        self.path = mount.path

    def directory(self) -> Path:
        """A fresh directory of the test's own, under private/."""
        path = self.path / "private" / uuid.uuid4().hex[:8]
        path.mkdir()
        return path

    def key(self, path: Path) -> str:
        return "pve/" + str(path.relative_to(self.path))

    def on_s3(self, path: Path) -> bool:
        return self.key(path) in keys(self.client, self.bucket, self.key(path))

    def body(self, path: Path) -> bytes:
        return object_bytes(self.client, self.bucket, self.key(path))

    def metadata(self, path: Path, marker: bool = False) -> dict[str, str]:
        """The user metadata of a file's object, or of a directory's marker."""
        key = self.key(path) + ("/" if marker else "")
        return self.client.head_object(Bucket=self.bucket, Key=key)["Metadata"]

    def sync(self, path: Path | None = None) -> None:
        result = self.mount.cli("sync", "--timeout", "60", path or self.path)
        assert result.returncode == 0, result.stderr

    def refresh(self) -> None:
        result = self.mount.cli("refresh", self.path)
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def fs(moto_server, tmp_path_factory):
    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"semantics-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    factory = MountFactory(tmp_path_factory.mktemp("semantics"), moto_server.endpoint_url,
                           bucket)
    try:
        # --attr-ttl 0: every stat asks the mount, not the kernel's attribute cache.
        yield Shared(factory("--attr-ttl", "0"), client, bucket)
    finally:
        factory.stop_all()


_libc = ctypes.CDLL(None, use_errno=True)


def _libc_call(name: str, *args) -> int:
    result = getattr(_libc, name)(*args)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def renameat2(old: Path, new: Path, flags: int) -> None:
    AT_FDCWD = -100
    _libc_call("renameat2", AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), ctypes.c_uint(flags))


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _libc_call("fallocate", fd, mode, ctypes.c_long(offset), ctypes.c_long(length))


# -- opening and creating ------------------------------------------------------------------------


@semantics("create-new", "create-excl-exists", "create-rdonly", "open-missing",
           "open-dir-for-writing", "open-through-file")
def test_open_and_create(fs):
    d = fs.directory()
    old_umask = os.umask(0o027)
    try:
        fd = os.open(d / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    finally:
        os.umask(old_umask)
    os.close(fd)
    info = os.stat(d / "new")
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o640
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
    assert "new" in os.listdir(d)
    expect_errno("create-excl-exists", os.open, d / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.close(os.open(d / "x.protected", os.O_RDONLY | os.O_CREAT, 0o644))
    fs.sync(d)
    assert fs.body(d / "new") == b"" and fs.body(d / "x.protected") == b""  # empty objects
    expect_errno("open-missing", os.open, d / "missing", os.O_RDONLY)
    expect_errno("open-dir-for-writing", os.open, d, os.O_WRONLY)
    expect_errno("open-through-file", os.open, d / "new" / "x", os.O_RDONLY)


@semantics("open-append", "open-direct", "open-tmpfile")
def test_open_flags(fs):
    d = fs.directory()
    (d / "log").write_bytes(b"one\n")
    fd = os.open(d / "log", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"two\n")
    os.pwrite(fd, b"three\n", 0)  # the offset is ignored
    os.close(fd)
    assert (d / "log").read_bytes() == b"one\ntwo\nthree\n"

    fd = os.open(d / "direct", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    aligned = mmap.mmap(-1, 4096)
    aligned.write(b"d" * 4096)
    assert os.pwritev(fd, [aligned], 0) == 4096
    assert os.pwrite(fd, b"abc", 1) == 3  # unaligned: accepted
    assert os.pread(fd, 5, 0) == b"dabcd"
    os.close(fd)
    assert (d / "direct").read_bytes() == b"dabc" + b"d" * 4092
    expect_errno("open-tmpfile", os.open, d, os.O_TMPFILE | os.O_RDWR, 0o600)


# -- reading, writing, truncating -----------------------------------------------------------------


@semantics("read-eof", "write-beyond-eof", "write-sparse", "write-efbig",
           "write-readonly-handle", "truncate-shrink", "truncate-grow", "truncate-efbig",
           "truncate-dir")
def test_reads_writes_and_truncates(fs):
    d = fs.directory()
    path = d / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pread(fd, 10, 10) == b"" and os.pread(fd, 10, 1000) == b""
        os.pwrite(fd, b"end", 20)
        assert os.pread(fd, 100, 0) == b"0123456789" + bytes(10) + b"end"
        far = 10 * MiB
        os.pwrite(fd, b"far", far)
        info = os.fstat(fd)
        assert info.st_size == far + 3 and info.st_blocks == -(-(far + 3) // 512)
        assert os.pread(fd, 4096, 4 * MiB) == bytes(4096)
        assert os.lseek(fd, 0, os.SEEK_HOLE) == far + 3
        assert os.lseek(fd, 5 * MiB, os.SEEK_DATA) == 5 * MiB
        expect_errno("write-efbig", os.pwrite, fd, b"x", TIB5)
        os.ftruncate(fd, 5)
        assert os.fstat(fd).st_size == 5 and os.pread(fd, 100, 0) == b"01234"
        os.ftruncate(fd, 8)
        assert os.pread(fd, 100, 0) == b"01234" + bytes(3)
        expect_errno("truncate-efbig", os.ftruncate, fd, TIB5 + 1)
        assert os.fstat(fd).st_size == 8
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        expect_errno("write-readonly-handle", os.write, fd, b"x")
    finally:
        os.close(fd)
    expect_errno("truncate-dir", os.truncate, d, 0)
    fs.sync(path)
    assert fs.body(path) == b"01234" + bytes(3)


@semantics("truncate-same")
def test_truncate_to_the_same_size_uploads_nothing(fs):
    d = fs.directory()
    path = d / "same"
    path.write_bytes(b"same size")
    fs.sync(path)
    before = os.stat(path)
    puts = fs.mount.status()["requests"]
    time.sleep(0.01)
    os.truncate(path, len(b"same size"))
    after = os.stat(path)
    assert after.st_mtime_ns == before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns
    status = fs.mount.status()
    assert status["dirty_files"] == 0
    for operation in ("PutObject", "CopyObject", "CreateMultipartUpload"):
        assert status["requests"].get(operation, 0) == puts.get(operation, 0), operation


@semantics("read-object-changed")
def test_a_read_of_an_object_replaced_on_s3_is_estale(fs):
    d = fs.directory()
    key = fs.key(d / "changed")
    fs.client.put_object(Bucket=fs.bucket, Key=key, Body=b"a" * (3 * MiB))
    fs.refresh()
    fd = os.open(d / "changed", os.O_RDONLY | os.O_DIRECT)
    try:
        buffer = mmap.mmap(-1, 4096)
        os.preadv(fd, [buffer], 0)
        assert buffer[:4] == b"aaaa"
        fs.client.put_object(Bucket=fs.bucket, Key=key, Body=b"b" * (3 * MiB))
        expect_errno("read-object-changed", os.preadv, fd, [buffer], 2 * MiB)
    finally:
        os.close(fd)
    fs.refresh()
    data = (d / "changed").read_bytes()
    assert data == b"b" * (3 * MiB)


# -- renaming ------------------------------------------------------------------------------------


@semantics("rename-file", "rename-across-dirs", "rename-over-file")
def test_renames_of_files(fs):
    d, other = fs.directory(), fs.directory()
    (d / "a").write_bytes(b"a data")
    fs.sync(d / "a")
    inode = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")  # on S3: a copy, then the old key deleted
    assert os.listdir(d) == ["b"] and os.stat(d / "b").st_ino == inode
    assert fs.body(d / "b") == b"a data" and not fs.on_s3(d / "a")
    os.rename(d / "b", other / "c")
    assert os.listdir(d) == [] and (other / "c").read_bytes() == b"a data"
    assert fs.body(other / "c") == b"a data" and not fs.on_s3(d / "b")
    (other / "target").write_bytes(b"old target")
    fs.sync(other)
    os.rename(other / "c", other / "target")
    assert sorted(os.listdir(other)) == ["target"]
    assert (other / "target").read_bytes() == b"a data"
    fs.sync(other)
    assert fs.body(other / "target") == b"a data" and not fs.on_s3(other / "c")


@semantics("rename-over-open-file", "rename-open-file")
def test_renames_of_open_files(fs):
    d = fs.directory()
    (d / "new").write_bytes(b"new")
    (d / "old").write_bytes(b"old data")
    fs.sync(d)
    reader = os.open(d / "old", os.O_RDONLY)
    try:
        os.rename(d / "new", d / "old")
        assert os.fstat(reader).st_nlink == 0
        assert os.pread(reader, 100, 0) == b"old data"
        assert (d / "old").read_bytes() == b"new"
    finally:
        os.close(reader)
    writer = os.open(d / "moving", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(writer, b"before ")
        os.rename(d / "moving", d / "moved")
        os.write(writer, b"after")
    finally:
        os.close(writer)
    assert (d / "moved").read_bytes() == b"before after"
    fs.sync(d)
    assert fs.body(d / "moved") == b"before after" and not fs.on_s3(d / "moving")
    assert fs.body(d / "old") == b"new"


@semantics("rename-dir", "rename-dir-over-empty-dir", "rename-dir-over-nonempty",
           "rename-file-over-dir", "rename-dir-over-file", "rename-into-itself",
           "rename-missing", "rename-noreplace", "rename-exchange")
def test_renames_of_directories_and_errors(fs):
    d = fs.directory()
    (d / "tree" / "sub").mkdir(parents=True)
    (d / "tree" / "sub" / "k").write_bytes(b"k data")
    fs.sync(d)
    reader = os.open(d / "tree" / "sub" / "k", os.O_RDONLY)
    try:
        os.rename(d / "tree", d / "moved")
        assert os.pread(reader, 100, 0) == b"k data"
    finally:
        os.close(reader)
    assert (d / "moved" / "sub" / "k").read_bytes() == b"k data"
    assert keys(fs.client, fs.bucket, fs.key(d) + "/") == {
        fs.key(d) + "/", fs.key(d / "moved") + "/", fs.key(d / "moved" / "sub") + "/",
        fs.key(d / "moved" / "sub" / "k")}
    (d / "empty").mkdir()
    (d / "other").mkdir()
    os.rename(d / "other", d / "empty")
    assert sorted(os.listdir(d)) == ["empty", "moved"]
    (d / "file").write_bytes(b"f")
    (d / "dir").mkdir()
    expect_errno("rename-dir-over-nonempty", os.rename, d / "dir", d / "moved")
    expect_errno("rename-file-over-dir", os.rename, d / "file", d / "dir")
    expect_errno("rename-dir-over-file", os.rename, d / "dir", d / "file")
    expect_errno("rename-into-itself", os.rename, d / "moved", d / "moved" / "sub" / "x")
    expect_errno("rename-missing", os.rename, d / "missing", d / "x")
    (d / "file2").write_bytes(b"g")
    expect_errno("rename-noreplace", renameat2, d / "file", d / "file2", 1)
    expect_errno("rename-exchange", renameat2, d / "file", d / "file2", 2)
    assert (d / "file").read_bytes() == b"f" and (d / "file2").read_bytes() == b"g"


# -- deleting and directories --------------------------------------------------------------------


@semantics("unlink-file", "unlink-open", "unlink-dir", "unlink-missing")
def test_unlink(fs):
    d = fs.directory()
    (d / "gone").write_bytes(b"x")
    fs.sync(d)
    assert fs.on_s3(d / "gone")
    os.unlink(d / "gone")
    assert not fs.on_s3(d / "gone") and os.listdir(d) == []
    (d / "open").write_bytes(b"0123456789")
    fd = os.open(d / "open", os.O_RDWR)
    try:
        os.unlink(d / "open")
        assert os.listdir(d) == [] and os.fstat(fd).st_nlink == 0
        (d / "open").write_bytes(b"a new file")  # the name is free at once
        assert os.pwrite(fd, b"W", 0) == 1 and os.pread(fd, 100, 0) == b"W123456789"
    finally:
        os.close(fd)
    assert (d / "open").read_bytes() == b"a new file"
    expect_errno("unlink-dir", os.unlink, d)
    expect_errno("unlink-missing", os.unlink, d / "missing")


@semantics("mkdir-new", "mkdir-exists", "mkdir-no-parent", "rmdir-empty", "rmdir-nonempty",
           "rmdir-file", "fsyncdir")
def test_directories(fs):
    d = fs.directory()
    os.mkdir(d / "new", 0o750)  # on S3 before mkdir returns
    assert fs.metadata(d / "new", marker=True) == {
        "mode": str(stat.S_IFDIR | 0o750), "uid": str(os.getuid()), "gid": str(os.getgid())}
    (d / "file").write_bytes(b"x")
    expect_errno("mkdir-exists", os.mkdir, d / "new")
    expect_errno("mkdir-exists", os.mkdir, d / "file")
    expect_errno("mkdir-no-parent", os.mkdir, d / "missing" / "sub")
    os.rmdir(d / "new")
    assert fs.key(d / "new") + "/" not in keys(fs.client, fs.bucket, fs.key(d))
    os.mkdir(d / "full")
    (d / "full" / "f").write_bytes(b"x")
    expect_errno("rmdir-nonempty", os.rmdir, d / "full")
    os.mkdir(d / "remote")
    fs.client.put_object(Bucket=fs.bucket, Key=fs.key(d / "remote" / "elsewhere"), Body=b"x")
    expect_errno("rmdir-nonempty", os.rmdir, d / "remote")  # this mount never listed it
    expect_errno("rmdir-file", os.rmdir, d / "file")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@semantics("readdir-entries", "readdir-skipped-keys")
def test_readdir(fs):
    d = fs.directory()
    (d / "mine").write_bytes(b"x")
    os.mkdir(d / "sub")
    prefix = fs.key(d) + "/"
    for key in ("foreign", "implicit/child", "a//b", "both", "both/child", "n" * 256,
                ".s3pvefs-attrs.other-host"):
        fs.client.put_object(Bucket=fs.bucket, Key=prefix + key, Body=b"z")
    assert sorted(os.listdir(d)) == ["mine", "sub"]  # listed before: until dir_ttl or refresh
    fs.refresh()
    assert sorted(os.listdir(d)) == ["a", "both", "foreign", "implicit", "mine", "sub"]
    assert (d / "implicit").is_dir() and (d / "both").is_dir() and (d / "a").is_dir()
    assert os.listdir(d / "a") == [] and os.listdir(d / "both") == ["child"]
    assert (d / "foreign").read_bytes() == b"z"
    log = fs.mount.log()
    assert f"skipping S3 key {prefix + 'n' * 256!r}" in log
    assert f"skipping S3 key {prefix + 'a//'!r}" in log  # the common prefix of a//b


# -- attributes ----------------------------------------------------------------------------------


@semantics("stat-size", "stat-blocks", "stat-owner-mode", "chmod", "chown")
def test_stat_fields_and_where_they_are_stored(fs):
    d = fs.directory()
    (d / "f").write_bytes(b"x" * 1000)
    os.symlink("f", d / "link")
    assert os.stat(d / "f").st_size == 1000 and os.stat(d).st_size == 0
    assert os.lstat(d / "link").st_size == 1
    info = os.stat(d / "f")
    assert info.st_blocks == 2 and info.st_blksize == 131072
    os.chmod(d / "f", 0o4755)
    os.chown(d / "f", 1234, 5678)
    info = os.stat(d / "f")
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 5678, 0o755)
    os.chmod(d / "f", 0o2640)
    fs.sync(d)
    assert fs.metadata(d / "f") == {"mode": str(stat.S_IFREG | 0o2640), "uid": "1234",
                                    "gid": "5678",  # and the content's checksum (its PUT's)
                                    "s3pvefs-crc64nvme": crc64nvme(b"x" * 1000)}
    os.chmod(d, 0o700)  # a directory's marker is rewritten at once
    assert fs.metadata(d, marker=True)["mode"] == str(stat.S_IFDIR | 0o700)
    fs.client.put_object(Bucket=fs.bucket, Key=fs.key(d / "plain"), Body=b"p")
    fs.client.put_object(Bucket=fs.bucket, Key=fs.key(d / "pdir") + "/", Body=b"")
    fs.refresh()
    info, dir_info = os.stat(d / "plain"), os.stat(d / "pdir")
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o644, 0, 0)
    assert stat.S_IMODE(dir_info.st_mode) == 0o755  # the configured defaults


@semantics("stat-mtime", "stat-atime", "stat-ctime", "utimens")
def test_times_and_where_they_are_stored(mount_s3pvefs, s3_client, bucket, tmp_path):
    first = mount_s3pvefs("--attr-ttl", "0")
    d = first.path / "snippets"
    (d / "plain").write_bytes(b"p")
    (d / "timed").write_bytes(b"t")
    atime, mtime = 1_600_000_000_123_456_789, OLD_NS + 500_000_000
    os.utime(d / "timed", ns=(atime, mtime))
    info = os.stat(d / "timed")
    assert (info.st_atime_ns, info.st_mtime_ns) == (atime, mtime)
    assert abs(info.st_ctime_ns - time.time_ns()) < 60 * 10**9
    assert first.unmount() == 0
    meta = s3_client.head_object(Bucket=bucket, Key="pve/snippets/timed")["Metadata"]
    assert meta["mtime"] == "1500000000.500000000" and "atime" not in meta and "ctime" not in meta
    modified = s3_client.head_object(Bucket=bucket, Key="pve/snippets/plain")["LastModified"]

    second = mount_s3pvefs("--attr-ttl", "0")
    d = second.path / "snippets"
    info = os.stat(d / "timed")
    assert info.st_mtime_ns == mtime
    assert info.st_atime_ns == mtime and info.st_ctime_ns == mtime  # both were in memory only
    plain = os.stat(d / "plain")
    assert plain.st_mtime_ns == int(modified.timestamp()) * 10**9
    assert second.unmount() == 0


# -- other calls ---------------------------------------------------------------------------------


@semantics("symlink", "readlink-not-link", "link", "mknod")
def test_links_and_special_files(fs):
    d = fs.directory()
    (d / "f").write_bytes(b"x")
    os.symlink("/absolute/dangling", d / "link")  # on S3 before the call returns
    assert fs.body(d / "link") == b"/absolute/dangling"
    info = os.lstat(d / "link")
    assert stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o777
    assert os.readlink(d / "link") == "/absolute/dangling"
    expect_errno("readlink-not-link", os.readlink, d / "f")
    expect_errno("link", os.link, d / "f", d / "hard")
    expect_errno("mknod", os.mkfifo, d / "fifo")
    expect_errno("mknod", os.mknod, d / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))


@semantics("setxattr", "getxattr", "listxattr", "removexattr", "ioctl-flags", "fallocate")
def test_unsupported_calls(fs):
    d = fs.directory()
    path = d / "f"
    path.write_bytes(b"x")
    expect_errno("setxattr", os.setxattr, path, "user.test", b"v")
    expect_errno("getxattr", os.getxattr, path, "user.test")
    expect_errno("getxattr", os.getxattr, path, "system.posix_acl_access")
    assert os.listxattr(path) == []
    expect_errno("removexattr", os.removexattr, path, "user.test")
    fd = os.open(path, os.O_RDWR)
    try:
        expect_errno("ioctl-flags", fcntl.ioctl, fd, 0x80086601, bytes(8))  # FS_IOC_GETFLAGS
        expect_errno("ioctl-flags", fcntl.ioctl, fd, 0x40086602, bytes(8))  # FS_IOC_SETFLAGS
        expect_errno("fallocate", fallocate, fd, 0, 0, 4096)
        expect_errno("fallocate", fallocate, fd, 3, 0, 1)  # PUNCH_HOLE | KEEP_SIZE
        os.posix_fallocate(fd, 0, 4096)  # glibc writes instead
        assert os.fstat(fd).st_size == 4096
    finally:
        os.close(fd)


@semantics("mmap", "locks", "statfs")
def test_mmap_locks_and_statfs(fs):
    d = fs.directory()
    path = d / "mapped"
    path.write_bytes(b"hello world")
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, 11) as mapped:
            assert mapped[:5] == b"hello"
            mapped[:5] = b"HELLO"
            mapped.flush()
    finally:
        os.close(fd)
    assert path.read_bytes() == b"HELLO world"
    fs.sync(path)
    assert fs.body(path) == b"HELLO world"

    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        expect_errno("locks", fcntl.flock, second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(first, fcntl.LOCK_UN)
        fcntl.lockf(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # POSIX locks belong to the process: another process must be refused.
        child = os.fork()
        if child == 0:
            try:
                fcntl.lockf(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
                code = 0
            except OSError as exc:
                code = 1 if exc.errno in (errno.EAGAIN, errno.EACCES) else 2
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 1
    finally:
        os.close(first)
        os.close(second)

    info = os.statvfs(fs.path)
    capacity = 1024**5  # the default --capacity
    assert info.f_bsize == info.f_frsize == 4096 and info.f_blocks == capacity // 4096
    assert 0 < info.f_blocks - info.f_bfree <= info.f_blocks // 10**6
    assert info.f_bavail == info.f_bfree and info.f_ffree == 1_000_000
    assert info.f_namemax == 255
    before = info.f_bfree
    (d / "big").write_bytes(bytes(1 * MiB))
    assert os.statvfs(fs.path).f_bfree == before - MiB // 4096


# -- names ---------------------------------------------------------------------------------------


@semantics("name-any-utf8", "name-255", "name-too-long", "name-key-too-long", "name-not-utf8",
           "name-reserved")
def test_names(fs):
    d = fs.directory()
    odd = "a b\\c?*:#%&+~ ünï"
    (d / odd).write_bytes(b"odd")
    (d / ("x" * 255)).write_bytes(b"long")
    fs.sync(d)
    assert fs.body(d / odd) == b"odd" and fs.body(d / ("x" * 255)) == b"long"
    expect_errno("name-too-long", os.open, d / ("x" * 256), os.O_WRONLY | os.O_CREAT)
    deep = d
    for index in range(3):
        deep = deep / (str(index) * 255)
        deep.mkdir()
    expect_errno("name-key-too-long", os.open, deep / ("y" * 250), os.O_WRONLY | os.O_CREAT)
    expect_errno("name-key-too-long", os.mkdir, deep / ("y" * 250))
    (deep / "f").write_bytes(b"f")
    expect_errno("name-key-too-long", os.rename, deep / "f", deep / ("y" * 250))
    expect_errno("name-not-utf8", os.open, bytes(d) + b"/\xff\xfe", os.O_WRONLY | os.O_CREAT)
    expect_errno("name-reserved", os.open, d / ".s3pvefs-attrs.x", os.O_WRONLY | os.O_CREAT)
    expect_errno("name-reserved", os.mkdir, d / ".s3pvefs-unlinked.x")


# -- durability: its own mounts, on moto and on the Ceph RGW -------------------------------------


@pytest.mark.real_server
@semantics("dur-write", "dur-close", "dur-kill")
def test_close_survives_kill_9(mount_s3pvefs, s3_client, bucket, tmp_path):
    cache = tmp_path / "kill-cache"
    mount = mount_s3pvefs(cache_dir=cache)
    # A temporary name waits 5 s for its rename before uploading: still local at the kill.
    path = mount.path / "dump" / "notes.tmp.4242"
    with open(path, "wb") as f:
        f.write(b"written")
        f.flush()
        assert "pve/dump/notes.tmp.4242" not in keys(s3_client, bucket)  # dur-write
    assert list((cache / "journal").glob("*.json"))  # dur-close: journaled
    mount.kill()
    assert "pve/dump/notes.tmp.4242" not in keys(s3_client, bucket)
    mount = mount_s3pvefs(cache_dir=cache)
    assert (mount.path / "dump" / "notes.tmp.4242").read_bytes() == b"written"
    result = mount.cli("sync", "--timeout", "60", mount.path)
    assert result.returncode == 0, result.stderr
    assert object_bytes(s3_client, bucket, "pve/dump/notes.tmp.4242") == b"written"
    assert mount.unmount() == 0


@pytest.mark.real_server
@semantics("dur-fsync-s3")
def test_fsync_with_durability_s3_waits_for_s3(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs("--durability", "s3")
    fd = os.open(mount.path / "images" / "disk.raw", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first")
        os.fsync(fd)
        assert object_bytes(s3_client, bucket, "pve/images/disk.raw") == b"first"
        os.write(fd, b" second")
        os.fdatasync(fd)
        assert object_bytes(s3_client, bucket, "pve/images/disk.raw") == b"first second"
    finally:
        os.close(fd)
    assert mount.unmount() == 0


@pytest.mark.real_server
@semantics("dur-sync", "dur-unmount")
def test_sync_and_unmount_put_everything_on_s3(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    with open(dump / "open.log", "wb", buffering=0) as f:
        f.write(b"still open")
        (dump / "closed.tmp.1").write_bytes(b"renamed")
        os.rename(dump / "closed.tmp.1", dump / "closed")
        result = mount.cli("sync", "--timeout", "60", dump)
        assert result.returncode == 0, result.stderr
        assert object_bytes(s3_client, bucket, "pve/dump/open.log") == b"still open"
        assert object_bytes(s3_client, bucket, "pve/dump/closed") == b"renamed"
        assert "pve/dump/closed.tmp.1" not in keys(s3_client, bucket)
        f.write(b", more")
    data = os.urandom(6 * MiB)  # above the multipart threshold
    (dump / "late.raw").write_bytes(data)
    (mount.path / "snippets" / "late.txt").write_bytes(b"late")
    assert mount.unmount() == 0
    assert object_bytes(s3_client, bucket, "pve/dump/open.log") == b"still open, more"
    assert object_bytes(s3_client, bucket, "pve/dump/late.raw") == data
    assert object_bytes(s3_client, bucket, "pve/snippets/late.txt") == b"late"
