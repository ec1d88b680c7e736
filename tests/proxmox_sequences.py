"""What Proxmox VE does to a "dir" storage (../shared/proxmox-io.md), as reusable functions, and
the checks the conformance tests (tests/test_proxmox_*.py) need to see what landed on S3.

Every function performs the syscalls in the order Proxmox does (exact open flags through
``os.open``, real tools where Proxmox runs a tool) and raises on any unexpected outcome; the
tests assert on what they return, on the tree seen through the mount and on the objects
read back from moto with boto3.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import keys

MiB = 1024 * 1024
KiB = 1024
REPO = Path(__file__).resolve().parent.parent
PREFIX = "pve/"  # the prefix tests/mounting.py mounts with
CONTENT_DIRS = ["images", "private", "template/iso", "template/cache", "dump", "snippets",
                "import"]
INDEX_MARK = "/.s3pvefs-attrs."  # per-directory attribute index objects (docs/design.md)
WHEN = "2026_11_21-01_00_00"
TOOL_TIMEOUT = 120  # seconds: a tool that hangs on the mount fails the test instead of CI


def needs_tools(*tools: str):
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} installed")


# -- S3 state ---------------------------------------------------------------------------------


def data_keys(s3_client, bucket: str, prefix: str) -> set[str]:
    """Keys below ``prefix`` without directory markers and s3pvefs attribute indexes."""
    return {key for key in keys(s3_client, bucket, prefix)
            if not key.endswith("/") and INDEX_MARK not in "/" + key}


def object_sha256(s3_client, bucket: str, key: str) -> str:
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(4 * MiB), b""):
        digest.update(chunk)
    return digest.hexdigest()


# Routine debug lines that would fill the tail and hide what went wrong.
_ROUTINE = ("getxattr: no such attribute", "pyfuse3: pyfuse-")


def log_tail(mount, chars: int = 12000) -> str:
    """The end of the mount's log, without routine debug lines."""
    lines = [line for line in mount.log().splitlines()
             if not any(routine in line for routine in _ROUTINE)]
    return "\n--- mount log (tail, routine debug lines left out) ---\n" + \
        "\n".join(lines)[-chars:]


def sync(mount, path: Path | None = None, timeout: int = 90) -> None:
    """`s3pvefs sync`: everything below ``path`` (default: the whole mount) is on S3 now."""
    result = mount.cli("sync", "--timeout", str(timeout), path or mount.path,
                       timeout=timeout + 30)
    assert result.returncode == 0, (result.stdout, result.stderr, log_tail(mount))


# -- data and tools ---------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path | str, read_size: int = 4 * MiB) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(read_size):
            digest.update(chunk)
    return digest.hexdigest()


def mixed_data(size: int, seed: int) -> bytes:
    """Deterministic, compressible but random-looking: 64 KiB runs of random bytes, zeros,
    and a repeated random pattern (a disk image's mix), about 2:1 for zstd -1."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.random()
        if kind < 0.5:
            out += rng.randbytes(64 * KiB)
        elif kind < 0.75:
            out += bytes(64 * KiB)
        else:
            out += rng.randbytes(512) * 128
    return bytes(out[:size])


def run(cmd: list[str] | str, *, check: bool = True, timeout: float = TOOL_TIMEOUT,
        text: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run a tool; with ``check`` its exit status must be 0 (stderr in the message)."""
    result = subprocess.run(cmd, capture_output=True, timeout=timeout, text=text,
                            shell=isinstance(cmd, str), **kwargs)
    if check:
        assert result.returncode == 0, (cmd, result.returncode, result.stdout[-2000:],
                                        result.stderr[-2000:])
    return result


def zstd_compress(data: bytes, level: int = 1) -> bytes:
    return run(["zstd", "-q", f"-{level}", "-c"], input=data).stdout


def timed(fn, *args, **kwargs):
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


def write_sizes(total: int, seed: int) -> list[int]:
    """vzdump's write() sizes: 4 KiB to about 3.7 MiB, header first, no seek."""
    rng = random.Random(seed)
    choices = [4 * KiB, 64 * KiB, 128 * KiB, MiB, 2 * MiB + 4 * KiB, 3_700_000]
    sizes, done = [], 0
    while done < total:
        size = min(rng.choice(choices), total - done)
        sizes.append(size)
        done += size
    return sizes


def write_all(fd: int, data: bytes, sizes: list[int]) -> None:
    offset = 0
    for size in sizes:
        view = memoryview(data)[offset:offset + size]
        while view:  # O_NONBLOCK: a short write must not lose bytes
            written = os.write(fd, view)
            assert written > 0
            view = view[written:]
        offset += size
    assert offset == len(data)


# -- vzdump -----------------------------------------------------------------------------------


ARCHIVE_SUFFIXES = tuple(f".{kind}{compression}" for kind in ("vma", "tar")
                         for compression in ("", ".zst", ".gz", ".lzo"))


def backup_basename(kind: str, vmid: int, when: str = WHEN) -> str:
    return f"vzdump-{kind}-{vmid}-{when}"


def dat_name(archive: str) -> str:
    """vzdump's temporary name: the last extension replaced by .dat."""
    return archive.rsplit(".", 1)[0] + ".dat"


def unlink_errno(path: Path) -> int:
    """unlink(2); returns 0 or the errno it failed with."""
    try:
        os.unlink(path)
    except OSError as exc:
        return exc.errno
    return 0


def perl_rmtree(path: Path) -> subprocess.CompletedProcess:
    """File::Path::rmtree as vzdump runs it: lstat, chdir, stat("."), readdir, unlink, rmdir.
    Fails (exit 1, the errors on stderr) if any step does, e.g. when inode numbers change."""
    script = ("use File::Path qw(remove_tree); remove_tree($ARGV[0], {error => \\my $err});"
              "for my $e (@$err) { my ($f, $m) = %$e; print STDERR \"$f: $m\\n\" }"
              "exit(@$err ? 1 : 0);")
    return run(["perl", "-e", script, str(path)], check=False, text=True)


def file_set_contents(path: Path, data: bytes, mode: int = 0o644) -> None:
    """PVE::Tools::file_set_contents: write "<path>.tmp.<pid>", then rename over ``path``."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def qemu_config_tmpdir(dump: Path, basename: str, conf: bytes, fw: bytes) -> Path:
    """The QEMU backup's `<basename>.tmp/`: rmtree first, mkdir, qemu-server.conf written by
    one process, qemu-server.fw through a temporary file and rename."""
    tmpdir = dump / f"{basename}.tmp"
    removed = perl_rmtree(tmpdir)  # nothing there yet: rmtree of a missing path is fine
    assert removed.returncode == 0, removed.stderr
    os.mkdir(tmpdir)
    run(["sh", "-c", 'cat > "$1"', "sh", str(tmpdir / "qemu-server.conf")], input=conf)
    file_set_contents(tmpdir / "qemu-server.fw", fw)
    return tmpdir


def write_dat_through_shared_fd(dat: Path, child_raw: bytes, parent_stream: bytes,
                                seed: int = 1) -> int:
    """The archive's `.dat`: open O_WRONLY|O_CREAT|O_TRUNC, set O_NONBLOCK, then two
    processes write through the same open file: a child `zstd -1 -c` (stdout = this fd)
    compresses ``child_raw`` (the header and a first stretch), then this process continues
    with ``parent_stream`` in vzdump's write sizes. Both close (several FLUSHes, one RELEASE).
    Returns the file offset the child left (= the length of its zstd frame)."""
    fd = os.open(dat, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        child = subprocess.Popen(["zstd", "-q", "-1", "-c"], stdin=subprocess.PIPE, stdout=fd,
                                 stderr=subprocess.PIPE)
        _, child_err = child.communicate(child_raw, timeout=TOOL_TIMEOUT)
        assert child.returncode == 0, child_err
        child_end = os.lseek(fd, 0, os.SEEK_CUR)  # the offset is shared with the child
        write_all(fd, parent_stream, write_sizes(len(parent_stream), seed))
    finally:
        os.close(fd)
    return child_end


def write_notes(archive: Path, text: str) -> None:
    """vzdump / the GUI: `<archive>.notes.tmp.<pid>` O_WRONLY|O_CREAT|O_EXCL 0644, rename over
    `<archive>.notes`; empty notes unlink it."""
    notes = archive.with_name(archive.name + ".notes")
    if not text:
        os.unlink(notes)
        return
    file_set_contents(notes, text.encode())


def set_protected(archive: Path) -> None:
    """`open(<archive>.protected, O_RDONLY|O_CREAT, 0644)`: a zero-length file."""
    os.close(os.open(archive.with_name(archive.name + ".protected"),
                     os.O_RDONLY | os.O_CREAT, 0o644))


def proxmox_listing(dump: Path) -> dict[str, dict]:
    """The backup listing: readdir, stat of every entry, `-f <archive>.notes` (first line read
    when present) and `-e <archive>.protected` for every archive."""
    found: dict[str, dict] = {}
    for name in sorted(os.listdir(dump)):
        info = os.stat(dump / name)
        found[name] = {"size": info.st_size, "mode": info.st_mode}
    for name in list(found):
        if name.startswith("vzdump-") and name.endswith(ARCHIVE_SUFFIXES):
            notes = dump / f"{name}.notes"
            first_line = None
            if os.path.isfile(notes):
                with open(notes) as f:
                    first_line = f.readline().rstrip("\n")
            found[name]["notes"] = first_line
            found[name]["protected"] = os.path.exists(dump / f"{name}.protected")
    return found


def show_config_vma(archive: Path, length: int = 64 * KiB) -> tuple[subprocess.CompletedProcess,
                                                                    float]:
    """`zstd -dc <archive> | vma config -`: the reader stops after the header and the
    decompressor dies with EPIPE part-way (head stands in for vma)."""
    return timed(run, f"zstd -dc '{archive}' | head -c {length}", check=False)


def show_config_tar(archive: Path) -> tuple[subprocess.CompletedProcess, float]:
    """extract_vzdump_config for containers."""
    return timed(run, ["tar", "-xpOf", str(archive), "./etc/vzdump/pct.conf", "--occurrence"],
                 check=False)


def kill_reader_part_way(cmd: list[str], read_first: int = 256 * KiB) -> int:
    """Start a reader, take ``read_first`` bytes of its output, SIGKILL it while it still
    reads (its reads on the mount are outstanding). Returns how much it had produced."""
    reader = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        got = 0
        while got < read_first:
            chunk = reader.stdout.read(min(64 * KiB, read_first - got))
            if not chunk:
                break
            got += len(chunk)
    finally:
        reader.kill()
        reader.stdout.close()
        reader.wait(timeout=30)
    return got


# -- activation -------------------------------------------------------------------------------

# Run in a child process, like pvestatd's forked check with its 2 s timeout: each step timed.
ACTIVATION_PROBE = r"""
import json, os, sys, time
root, dirs = sys.argv[1], json.loads(sys.argv[2])
out = []
def step(what, fn):
    started = time.monotonic()
    try:
        value = fn()
        error = None
    except OSError as exc:
        value, error = None, exc.errno
    out.append({"step": what, "seconds": time.monotonic() - started, "value": value,
                "errno": error})
step("-d " + root, lambda: os.path.isdir(root))
step("stat " + root, lambda: os.stat(root).st_mode)
step("statvfs " + root, lambda: list(os.statvfs(root)))
for d in dirs:
    path = os.path.join(root, d)
    step("mkpath " + d, lambda: os.makedirs(path, exist_ok=True))
    step("stat " + d, lambda: os.stat(path).st_mode)
    step("realpath " + d, lambda: os.path.realpath(path))
step("statvfs again " + root, lambda: list(os.statvfs(root)))
print(json.dumps(out))
"""


def activation_probe(root: Path, dirs: list[str] = CONTENT_DIRS,
                     timeout: float = 60) -> list[dict]:
    """Run ACTIVATION_PROBE on ``root``; returns its steps with their durations and errnos."""
    result = subprocess.run([sys.executable, "-c", ACTIVATION_PROBE, str(root), json.dumps(dirs)],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
