"""The admin channel: mountinfo parsing, the JSON protocol on a stub core, and the `sync` and
`status` commands against a real mount."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest
import trio
from helpers import needs_fuse
from mounting import run_cli

from s3pvefs.errors import FsError, FsKind
from s3pvefs.service import control
from s3pvefs.service.control import (
    ControlError,
    control_socket_path,
    find_mountpoint,
    serve_control,
)

MiB = 1024 * 1024

MOUNTINFO = "\n".join([
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
    "60 22 0:50 / /mnt/pve/backup rw,nosuid,nodev,relatime shared:30 - fuse.s3pvefs "
    "s3pvefs:bucket/pve/ rw,user_id=0,group_id=0,default_permissions",
    "61 22 0:51 / /mnt/pve/backup2 rw,relatime shared:31 - fuse.s3pvefs s3pvefs:b/ rw",
    "62 60 0:52 / /mnt/pve/backup/images/nfs rw,relatime shared:32 - nfs4 srv:/x rw",
    r"63 22 0:53 / /mnt/with\040space\134odd rw,relatime - fuse.s3pvefs s3pvefs:c/ rw",
    "64 22 0:54 / /srv/stacked rw,relatime - fuse.s3pvefs s3pvefs:d/ rw",
    "65 64 0:55 / /srv/stacked rw,relatime - tmpfs tmpfs rw",
    "66 22 0:56 / /srv/under rw,relatime - tmpfs tmpfs rw",
    "67 66 0:57 / /srv/under rw,relatime - fuse.s3pvefs s3pvefs:e/ rw",
    "garbage line",
]) + "\n"


# -- which mount a path is on ---------------------------------------------------------------


@pytest.mark.parametrize("path, mountpoint, relative", [
    ("/mnt/pve/backup", "/mnt/pve/backup", ""),
    ("/mnt/pve/backup/", "/mnt/pve/backup", ""),
    ("/mnt/pve/backup/dump/vzdump-qemu-100.vma.zst", "/mnt/pve/backup",
     "dump/vzdump-qemu-100.vma.zst"),
    ("/mnt/pve/backup/template/iso/../cache", "/mnt/pve/backup", "template/cache"),
    ("/mnt/pve/backup2/x", "/mnt/pve/backup2", "x"),
    ("/mnt/with space\\odd/snippets/a b", "/mnt/with space\\odd", "snippets/a b"),
    ("/srv/under/dump", "/srv/under", "dump"),  # s3pvefs mounted on top of a tmpfs
])
def test_find_mountpoint(path, mountpoint, relative):
    assert find_mountpoint(Path(path), MOUNTINFO) == (Path(mountpoint), relative)


@pytest.mark.parametrize("path, fragment", [
    ("/etc/passwd", "ext4 mounted at /"),
    ("/mnt/pve/backupX/file", "ext4 mounted at /"),  # a name that only starts like the mount
    ("/mnt/pve/backup/images/nfs/disk.raw", "nfs4 mounted at /mnt/pve/backup/images/nfs"),
    ("/srv/stacked/file", "tmpfs mounted at /srv/stacked"),  # a tmpfs hides the s3pvefs mount
])
def test_find_mountpoint_refuses_other_filesystems(path, fragment):
    with pytest.raises(ControlError) as excinfo:
        find_mountpoint(Path(path), MOUNTINFO)
    assert "is not on an s3pvefs mount" in str(excinfo.value)
    assert fragment in str(excinfo.value)


def test_find_mountpoint_without_any_mount():
    with pytest.raises(ControlError, match="not on an s3pvefs mount"):
        find_mountpoint(Path("/x"), "")


def test_control_socket_path():
    first = control_socket_path(Path("/mnt/pve/backup"))
    assert first.parent == Path("/run/s3pvefs") and first.suffix == ".sock"
    assert len(first.stem) == 16 and all(c in "0123456789abcdef" for c in first.stem)
    assert first == control_socket_path(Path("/mnt/pve/backup"))
    assert first != control_socket_path(Path("/mnt/pve/backup2"))


# -- the protocol, on a stub core -----------------------------------------------------------


class _Node:
    def __init__(self, path: str):
        self._path = path

    def path(self) -> str:
        return self._path


class StubCore:
    """What serve_control uses of LiveAdmin: status(), sync_path(), dirty_nodes()."""

    def __init__(self) -> None:
        self.synced: list[str] = []
        self.failures: dict[str, str] = {}
        self.dirty = ["dump/a", "dump/b", "images/c"]
        self.release = trio.Event()
        self.block = False
        self.finished = 0
        self.raises: Exception | None = None

    def status(self) -> dict:
        return {"dirty_files": len(self.dirty), "cache_limit_bytes": 64 * MiB, "errors": []}

    def dirty_nodes(self) -> list[_Node]:
        return [_Node(path) for path in self.dirty]

    async def sync_path(self, path: str) -> dict[str, str]:
        self.synced.append(path)
        if self.raises is not None:
            raise self.raises
        if self.block:
            await self.release.wait()
        self.finished += 1
        return dict(self.failures)


@pytest.fixture
def socket_path():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be too deep.
    directory = Path(tempfile.mkdtemp(prefix="s3c", dir="/tmp"))
    yield directory / "run" / "m.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def served(socket_path):
    core = StubCore()
    async with trio.open_nursery() as nursery:
        started = await nursery.start(
            lambda task_status: serve_control(core, Path("/mnt/x"), socket_path=socket_path,
                                              task_status=task_status))
        assert started == socket_path
        yield core
        nursery.cancel_scope.cancel()
    assert not socket_path.exists(), "the socket is removed at exit"


async def ask(socket_path: Path, payload: dict, timeout: float | None = 10) -> dict:
    return await trio.to_thread.run_sync(
        lambda: control.request(Path("/mnt/x"), payload, timeout, socket_path=socket_path))


async def raw(socket_path: Path, data: bytes) -> bytes:
    def talk() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(socket_path))
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    return await trio.to_thread.run_sync(talk)


async def test_status(served, socket_path):
    assert await ask(socket_path, {"op": "status"}) == {"ok": True, "status": served.status()}


async def test_socket_is_private(served, socket_path):
    assert stat.S_ISSOCK(socket_path.lstat().st_mode)
    assert stat.S_IMODE(socket_path.lstat().st_mode) == 0o600
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    assert os.listdir(socket_path.parent) == [socket_path.name]


async def test_sync_success_and_failures(served, socket_path):
    served.dirty = []
    answer = await ask(socket_path, {"op": "sync", "path": "dump/x", "timeout": None})
    assert answer == {"ok": True, "failures": {}, "timed_out": False, "pending": 0}
    answer = await ask(socket_path, {"op": "sync", "path": "/dump/", "timeout": 5})
    assert answer["ok"] is True
    await ask(socket_path, {"op": "sync"})
    assert served.synced == ["dump/x", "dump", ""]

    served.failures = {"dump/a": "PutObject failed: NoSuchBucket"}
    served.dirty = ["dump/a"]
    answer = await ask(socket_path, {"op": "sync", "path": "dump", "timeout": 5})
    assert answer == {"ok": False, "failures": {"dump/a": "PutObject failed: NoSuchBucket"},
                      "timed_out": False, "pending": 1}


async def test_sync_timeout_stops_waiting_not_uploading(served, socket_path):
    served.block = True
    answer = await ask(socket_path, {"op": "sync", "path": "dump", "timeout": 0.2})
    assert answer == {"ok": False, "failures": {}, "timed_out": True, "pending": 2}
    answer = await ask(socket_path, {"op": "sync", "path": "", "timeout": 0})
    assert answer["timed_out"] is True and answer["pending"] == 3
    assert served.finished == 0
    served.release.set()
    with trio.fail_after(5):
        while served.finished < 2:
            await trio.sleep(0.01)  # the syncs went on after the clients stopped waiting


async def test_sync_of_unknown_path(served, socket_path):
    served.raises = FsError(FsKind.NOT_FOUND, "dump/nope: not found in this mount")
    answer = await ask(socket_path, {"op": "sync", "path": "dump/nope", "timeout": 5})
    assert answer == {"ok": False, "error": "dump/nope: not found in this mount"}
    served.raises = RuntimeError("boom")
    answer = await ask(socket_path, {"op": "sync", "path": "", "timeout": 5})
    assert answer["ok"] is False and "boom" in answer["error"]


@pytest.mark.parametrize("payload, fragment", [
    ({"op": "frobnicate"}, "unknown op 'frobnicate'"),
    ({}, "unknown op None"),
    ({"op": "sync", "path": 3}, "path must be a string"),
    ({"op": "sync", "timeout": -1}, "timeout must be"),
    ({"op": "sync", "timeout": "soon"}, "timeout must be"),
    ([1, 2], "expected a JSON object"),
])
async def test_bad_requests(served, socket_path, payload, fragment):
    answer = await ask(socket_path, payload)
    assert answer["ok"] is False and fragment in answer["error"]


async def test_malformed_lines(served, socket_path):
    answer = json.loads(await raw(socket_path, b"{not json\n"))
    assert answer["ok"] is False and "not JSON" in answer["error"]
    answer = json.loads(await raw(socket_path, b"\xff\xfe\n"))
    assert answer["ok"] is False
    answer = json.loads(await raw(socket_path, b"x" * (control.MAX_REQUEST + 10) + b"\n"))
    assert answer["ok"] is False and "longer than" in answer["error"]
    # No newline, then EOF: the line is complete.
    answer = json.loads(await raw(socket_path, b'{"op": "status"}'))
    assert answer["ok"] is True


async def test_clients_that_go_away_do_not_hurt(served, socket_path):
    served.block = True

    def hang_up(data: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(socket_path))
            if data:
                sock.sendall(data)

    await trio.to_thread.run_sync(hang_up, b"")
    await trio.to_thread.run_sync(hang_up, b'{"op": "sync", "path": "dump"')
    await trio.to_thread.run_sync(hang_up, b'{"op": "sync", "path": "dump"}\n')
    await trio.sleep(0.1)
    served.release.set()  # the abandoned sync finishes and its answer has nowhere to go
    with trio.fail_after(5):
        while served.finished < 1:
            await trio.sleep(0.01)
    await trio.sleep(0.1)
    assert (await ask(socket_path, {"op": "status"}))["ok"] is True


async def test_stale_socket_is_replaced(socket_path):
    socket_path.parent.mkdir(mode=0o755)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # what a crashed mount leaves behind
    with pytest.raises(ControlError, match="nothing listens"):
        await ask(socket_path, {"op": "status"})
    core = StubCore()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_control(
            core, Path("/mnt/x"), socket_path=socket_path, task_status=task_status))
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        assert (await ask(socket_path, {"op": "status"}))["ok"] is True
        nursery.cancel_scope.cancel()
    assert not socket_path.exists()


async def test_client_errors_name_the_socket(socket_path):
    with pytest.raises(ControlError) as excinfo:
        await ask(socket_path, {"op": "status"})
    assert str(socket_path) in str(excinfo.value) and "does not answer" in str(excinfo.value)


async def test_unusable_socket_directory_does_not_stop_the_mount(socket_path):
    socket_path.parent.write_text("not a directory")  # (permissions would not stop root)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(lambda task_status: serve_control(
            StubCore(), Path("/mnt/x"), socket_path=socket_path, task_status=task_status))
    assert started is None


# -- the commands ---------------------------------------------------------------------------


def test_commands_refuse_paths_off_s3pvefs(tmp_path):
    for args in (["sync", str(tmp_path)], ["status", str(tmp_path)], ["status", "--json", "/"]):
        result = run_cli(*args)
        assert result.returncode == 2, result
        assert "is not on an s3pvefs mount" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("sync", str(tmp_path / "absent"))
    assert result.returncode == 2 and "No such file" in result.stderr
    result = run_cli("sync", "--timeout", "soon", str(tmp_path))
    assert result.returncode == 2 and "--timeout" in result.stderr




def socket_of(mount) -> Path:
    return control_socket_path(Path(os.path.realpath(mount.path)))


@needs_fuse
def test_sync_uploads_a_file_still_open(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    sock = socket_of(mount)
    assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
    path = mount.path / "dump" / "vzdump-qemu-100.vma.dat"
    data = os.urandom(6 * MiB + 5)  # multipart at this mount's 5 MiB threshold
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        result = run_cli("sync", "--timeout", "60", str(path))
        assert result.returncode == 0, (result.stderr, mount.log())
        stored = s3_client.get_object(Bucket=bucket, Key="pve/dump/vzdump-qemu-100.vma.dat")
        assert stored["Body"].read() == data
        f.write(b"more")
    # The whole mount, from inside it (PATH defaults to the current directory).
    result = run_cli("sync", cwd=mount.path / "images")
    assert result.returncode == 0, result.stderr
    result = run_cli("sync", str(mount.path))
    assert result.returncode == 0, result.stderr
    stored = s3_client.get_object(Bucket=bucket, Key="pve/dump/vzdump-qemu-100.vma.dat")
    assert stored["Body"].read() == data + b"more"
    assert mount.unmount() == 0
    assert not sock.exists()


@needs_fuse
def test_status_reports_cache_and_dirty_data(mount_s3pvefs):
    mount = mount_s3pvefs()
    with open(mount.path / "snippets" / "open.txt", "wb") as f:
        f.write(b"x" * 1000)
        f.flush()
        result = run_cli("status", str(mount.path), "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["cache_limit_bytes"] == 64 * MiB
        assert status["dirty_files"] == 1 and status["errors"] == []
        result = run_cli("status", str(mount.path / "snippets"))
        assert result.returncode == 0, result.stderr
        assert "1 file(s)" in result.stdout and "of 64.0 MiB" in result.stdout
    assert mount.unmount() == 0
    result = run_cli("status", str(mount.path))
    assert result.returncode == 2 and "not on an s3pvefs mount" in result.stderr


@needs_fuse
def test_sync_reports_a_failed_upload(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    path = mount.path / "dump" / "doomed.log"
    with open(path, "wb") as f:
        f.write(b"data that cannot be uploaded")
        f.flush()
        # Make every upload fail: remove the bucket under the mount.
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3_client.delete_object(Bucket=bucket, Key=obj["Key"])
        s3_client.delete_bucket(Bucket=bucket)
        try:
            result = run_cli("sync", "--timeout", "20", str(path))
            assert result.returncode == 1, (result.stderr, mount.log())
            assert f"{path}: " in result.stderr and "NoSuchBucket" in result.stderr
            result = run_cli("status", str(mount.path))
            assert result.returncode == 1, result.stderr
            assert "upload errors:  1" in result.stdout and "dump/doomed.log" in result.stdout
        finally:
            s3_client.create_bucket(Bucket=bucket)
    assert mount.unmount() == 0  # the final upload succeeds now that the bucket is back
    stored = s3_client.get_object(Bucket=bucket, Key="pve/dump/doomed.log")
    assert stored["Body"].read() == b"data that cannot be uploaded"


def test_refresh_shows_another_hosts_files_at_once(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs("--dir-ttl", "3600", "--negative-ttl", "3600")
    dump = mount.path / "dump"
    assert os.listdir(dump) == []
    assert not (dump / "from-node-b.log").exists()  # the kernel may remember that for an hour
    s3_client.put_object(Bucket=bucket, Key="pve/dump/from-node-b.log", Body=b"hello")
    assert os.listdir(dump) == []  # the listing is trusted for an hour
    assert not (dump / "from-node-b.log").exists()
    result = mount.cli("refresh", mount.path, "dump")
    assert result.returncode == 0, result.stderr
    assert (dump / "from-node-b.log").read_bytes() == b"hello"  # the kernel forgot too
    assert os.listdir(dump) == ["from-node-b.log"]
    assert mount.unmount() == 0


def test_status_text_adds_up():
    from s3pvefs.cli.control import format_status

    status = {
        "dirty_files": 3, "dirty_bytes": 3 * MiB, "uploaded_bytes": 22 * MiB,
        "cache_used_bytes": 30 * MiB, "cache_limit_bytes": 64 * MiB,
        "uploads": [
            {"path": "dump/done.raw", "bytes_total": 12 * MiB, "bytes_done": 12 * MiB,
             "bytes_dirty": 0, "bytes_per_second": 2 * MiB},
            {"path": "dump/open.raw", "bytes_total": 11 * MiB, "bytes_done": 10 * MiB,
             "bytes_dirty": 1 * MiB, "bytes_per_second": MiB},
            {"path": "dump/almost.raw", "bytes_total": 10_000 * MiB,
             "bytes_done": 10_000 * MiB - 1, "bytes_dirty": 1, "bytes_per_second": 0}],
        "files": [{"path": "snippets/new.pl", "bytes_total": 2 * MiB, "bytes_done": 0,
                   "bytes_dirty": 2 * MiB - 1, "uploading": False,
                   "waiting": "open for writing"}],
        "errors": [],
    }
    text = format_status(Path("/mnt/pve/s3"), status)
    assert text.splitlines() == [
        "/mnt/pve/s3",
        "  not on S3 yet:  3 file(s), 3.0 MiB dirty in the cache, 22.0 MiB uploaded in parts "
        "not completed yet",
        "  cache:          30.0 MiB used of 64.0 MiB",
        "  uploading:      3 file(s)",
        "    dump/done.raw  100.0% uploaded (12.0 MiB of 12.0 MiB), 0 B dirty  2.0 MiB/s",
        "    dump/open.raw   90.9% uploaded (10.0 MiB of 11.0 MiB), 1.0 MiB dirty  1.0 MiB/s",
        "    dump/almost.raw   99.9% uploaded (9.8 GiB of 9.8 GiB), 1 B dirty  0.0 MiB/s",
        "  waiting:        1 file(s)",
        "    snippets/new.pl  2.0 MiB dirty of 2.0 MiB (open for writing)",
        "  upload errors:  0",
    ]


def _consistent(status: dict) -> None:
    """`s3pvefs status --json` is one picture: per file, dirty and uploaded bytes fit in its
    size; the totals are the sums of the files'; every upload is one of the files."""
    files = status["files"]
    for file in files:
        assert file["bytes_done"] + file["bytes_dirty"] <= file["bytes_total"], file
    assert status["dirty_bytes"] == sum(file["bytes_dirty"] for file in files)
    assert status["uploaded_bytes"] == sum(file["bytes_done"] for file in files)
    by_path = {file["path"]: file for file in files}
    for upload in status["uploads"]:
        file = by_path[upload["path"]]
        assert file["uploading"]
        for key in ("bytes_total", "bytes_done", "bytes_dirty"):
            assert upload[key] == file[key], (key, upload, file)


@needs_fuse
def test_status_is_one_consistent_picture(faulty_mount, proxy):
    """A closed file whose parts are all on S3 and whose completion fails: 100% uploaded and
    nothing dirty (the cache still holds its blocks until the upload completes); a file
    written behind its upload: its new data is dirty, and it is not shown at 100%."""
    mount = faulty_mount()
    proxy.error503(methods="POST", match="uploadId=")  # every CompleteMultipartUpload
    done_path = mount.path / "dump" / "done.raw"
    done_path.write_bytes(os.urandom(12 * MiB))
    open_path = mount.path / "dump" / "open.raw"
    with open(open_path, "wb") as f:
        f.write(os.urandom(11 * MiB))
        f.flush()
        status = None
        for _ in range(300):
            status = mount.status()
            uploads = {upload["path"]: upload for upload in status["uploads"]}
            if (uploads.get("dump/done.raw", {}).get("bytes_done") == 12 * MiB
                    and uploads.get("dump/open.raw", {}).get("bytes_done") == 10 * MiB):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the parts were not all uploaded: {status}\n{mount.log()[-4000:]}")
        # 12 + 10 MiB uploaded of 23 MiB written: 1 MiB at most can be dirty
        assert status["dirty_bytes"] == 1 * MiB, status
        _consistent(status)
        files = {file["path"]: file for file in status["files"]}
        assert files["dump/done.raw"]["bytes_dirty"] == 0
        assert files["dump/done.raw"]["uploading"] and not files["dump/done.raw"]["waiting"]
        assert files["dump/open.raw"]["bytes_dirty"] == 1 * MiB  # the tail, not a part yet
        assert files["dump/open.raw"]["waiting"] == "open for writing"
        assert status["uploaded_bytes"] == 22 * MiB
        # (done.raw's upload fails and starts over meanwhile; open.raw stays as it is)
        text = mount.cli("status", mount.path).stdout
        assert "dump/open.raw   90.9% uploaded (10.0 MiB of 11.0 MiB), 1.0 MiB dirty" in text
        # Rewriting uploaded parts makes them dirty again: no longer counted as uploaded.
        f.seek(0)
        f.write(os.urandom(1 * MiB))
        f.flush()
        status = mount.status()
        _consistent(status)
        files = {file["path"]: file for file in status["files"]}
        assert files["dump/open.raw"]["bytes_dirty"] >= 2 * MiB
        assert files["dump/open.raw"]["bytes_done"] <= 6 * MiB
        for _ in range(20):  # done.raw, whatever its upload is doing: all of it is accounted
            status = mount.status()
            _consistent(status)
            done = {file["path"]: file for file in status["files"]}["dump/done.raw"]
            assert done["bytes_done"] + done["bytes_dirty"] == 12 * MiB, done
            time.sleep(0.1)
        proxy.passthrough()
    assert mount.cli("sync", mount.path).returncode == 0
    status = mount.status()
    assert status["files"] == [] and status["dirty_bytes"] == status["uploaded_bytes"] == 0
    assert mount.unmount() == 0


@pytest.mark.parametrize("status, expected", [
    ({"dirty_files": 0, "uploads": [], "open_files": 0}, ("idle", "")),
    ({"dirty_files": 2, "dirty_bytes": 3 * MiB, "uploads": [{}], "open_files": 1},
     ("busy", "2 file(s) not on S3 yet (3.0 MiB only in the cache); 1 upload(s) in flight; "
              "1 open file(s)")),
    ({"dirty_files": 0, "uploads": [], "open_files": 4}, ("busy", "4 open file(s)")),
])
def test_mount_state(status, expected):
    from s3pvefs.cli.control import mount_state
    assert mount_state(status) == expected


def test_s3pvefs_mountpoints_reads_only_s3pvefs_lines():
    assert control.s3pvefs_mountpoints(MOUNTINFO) == [
        Path("/mnt/pve/backup"), Path("/mnt/pve/backup2"), Path("/mnt/with space\\odd"),
        Path("/srv/stacked"), Path("/srv/under")]


def listed_mounts() -> tuple[int, dict[str, tuple[str, str]]]:
    """`s3pvefs mounts`: its exit status, and mountpoint -> (state, details). Other mounts of
    this host may show too; the exit status must agree with all of them."""
    listed = run_cli("mounts")
    lines = dict((mountpoint, (state, details)) for mountpoint, state, details in
                 (line.split("\t") for line in listed.stdout.splitlines()))
    all_idle = all(state == "idle" for state, _ in lines.values())
    assert listed.returncode == (0 if all_idle else 1), listed
    return listed.returncode, lines


@needs_fuse
def test_mounts_tells_idle_from_busy(mount_s3pvefs):
    mount = mount_s3pvefs()
    where = str(mount.path)
    assert listed_mounts()[1][where] == ("idle", "")
    with open(mount.path / "dump" / "open.log", "w") as f:
        f.write("x")
        f.flush()
        code, lines = listed_mounts()
        assert code == 1 and lines[where][0] == "busy", lines
        assert "1 open file(s)" in lines[where][1]
        assert "1 file(s) not on S3 yet" in lines[where][1]
    assert mount.cli("sync", mount.path).returncode == 0
    assert listed_mounts()[1][where] == ("idle", "")
    assert mount.unmount() == 0
    assert where not in listed_mounts()[1]
