"""W3 show config: what Proxmox runs to show a backup's configuration (`tar -xpOf ...
pct.conf`, `zstd -dc | head`) on a tar.zst and a vma.zst made for it, through the mount and as
one direct ranged GET of the shortest prefix each command needs."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from .measure import (
    COMMAND_TIMEOUT,
    BenchError,
    KiB,
    MiB,
    delta,
    requests_of,
    run_command,
    say,
)
from .report import WorkloadResult
from .runner import Bench

W3_MEMBER_MAX = 64 * MiB


# -- W3 -------------------------------------------------------------------------------------------

def w3(bench: Bench, result: WorkloadResult) -> None:
    for tool in ("tar", "zstd", "head", "sh"):
        if shutil.which(tool) is None:
            raise BenchError(f"W3 needs {tool!r} on PATH")
    bench.clear_dump()
    member = min(max(bench.size // 16, 8 * MiB), W3_MEMBER_MAX)
    tar_path = bench.workdir / "w3.tar.zst"
    vma_path = bench.workdir / "w3.vma.zst"
    _make_tar_zst(tar_path, member)
    _make_vma_zst(vma_path, member)
    tar_name = "vzdump-lxc-101-2026_01_01-00_00_00.tar.zst"
    vma_name = "vzdump-qemu-102-2026_01_01-00_00_00.vma.zst"
    say("  putting a tar.zst and a vma.zst into the bucket (not timed)")
    bench.client.put(bench.key(f"dump/{tar_name}"), tar_path.read_bytes())
    bench.client.put(bench.key(f"dump/{vma_name}"), vma_path.read_bytes())

    tar_argv = ["tar", "-xpOf", "{}", "./etc/vzdump/pct.conf", "--occurrence"]
    vma_shell = 'zstd -dc "$0" | head -c 65536 > /dev/null'
    expected = _pct_conf()

    # Baseline: the least a direct client must fetch: one ranged GET of the shortest
    # prefix of the archive with which the command gives its whole answer (found by
    # bisection on the local copy), piped into the command to check it.
    say("  baseline: a direct ranged GET of the shortest prefix each command needs")
    tar_stdin = ["tar", "--zstd", "-xpOf", "-", "./etc/vzdump/pct.conf", "--occurrence"]
    vma_stdin = ["sh", "-c", "zstd -dc 2>/dev/null | head -c 65536"]
    vma_expected = _command_output(vma_stdin, vma_path.read_bytes())
    if len(vma_expected) != 65536:
        raise BenchError("W3: zstd -dc of the local vma.zst gave "
                         f"{len(vma_expected)} bytes")
    base_tar = _fetch_prefix(bench, bench.key(f"dump/{tar_name}"), tar_path, tar_stdin,
                             expected)
    base_vma = _fetch_prefix(bench, bench.key(f"dump/{vma_name}"), vma_path, vma_stdin,
                             vma_expected)

    mount = bench.mount("W3")
    try:
        dump = mount.path / "dump"
        before = mount.counters()
        started = time.perf_counter()
        done = run_command([a.replace("{}", os.fspath(dump / tar_name)) for a in tar_argv],
                           "tar -xpOf ... pct.conf")
        tar_seconds = time.perf_counter() - started
        if done.returncode != 0 or done.stdout != expected:
            raise BenchError(f"W3: tar failed ({done.returncode}): "
                             f"{done.stderr.decode(errors='replace').strip()}")
        mount_tar = delta(mount.counters(), before)
        before = mount.counters()
        started = time.perf_counter()
        done = run_command(["sh", "-c", vma_shell, os.fspath(dump / vma_name)],
                           "zstd -dc | head")
        vma_seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"W3: zstd -dc | head failed ({done.returncode}): "
                             f"{done.stderr.decode(errors='replace').strip()}")
        mount_vma = delta(mount.counters(), before)
    finally:
        bench.unmount(mount)
    bench.client.delete_prefix(bench.key("dump/"))

    result.add("tar.zst: bytes fetched", "KiB", mount_tar["bytes_received"] / KiB,
               base_tar["bytes_received"] / KiB, "lower")
    result.add("tar.zst: GET requests", "", requests_of(mount_tar, "GetObject"),
               requests_of(base_tar, "GetObject"), "lower")
    result.add("vma.zst: bytes fetched", "KiB", mount_vma["bytes_received"] / KiB,
               base_vma["bytes_received"] / KiB, "lower")
    result.add("vma.zst: GET requests", "", requests_of(mount_vma, "GetObject"),
               requests_of(base_vma, "GetObject"), "lower")
    result.details.update({
        "archive_bytes": {"tar.zst": tar_path.stat().st_size,
                          "vma.zst": vma_path.stat().st_size},
        "seconds": {"tar.zst": tar_seconds, "vma.zst": vma_seconds},
        "mount_requests": {"tar.zst": mount_tar, "vma.zst": mount_vma},
        "baseline_requests": {"tar.zst": base_tar, "vma.zst": base_vma},
    })
    tar_path.unlink()
    vma_path.unlink()


def _fetch_prefix(bench: Bench, key: str, local: Path, argv: list[str],
                  expected: bytes) -> dict:
    data = local.read_bytes()
    if _command_output(argv, data) != expected:
        raise BenchError(f"W3: {' '.join(argv)} does not give the expected answer")
    low, high = 0, len(data)  # the answer is incomplete with `low` bytes, whole with `high`
    while high - low > 1024:
        middle = (low + high) // 2
        if _command_output(argv, data[:middle]) == expected:
            high = middle
        else:
            low = middle
    before = bench.baseline_counters()
    parts: list[bytes] = []
    bench.client.run(bench.client.get_bytes(key, 0, high,
                                            sink=lambda chunk: parts.append(chunk) or True))
    if _command_output(argv, b"".join(parts)) != expected:
        raise BenchError(f"W3: the first {high} bytes of {key} do not answer "
                         f"{' '.join(argv)}")
    return delta(bench.baseline_counters(), before)


def _command_output(argv: list[str], data: bytes) -> bytes:
    """What ``argv`` writes to stdout when ``data`` is its input (it may stop reading early)."""
    return run_command(argv, " ".join(argv), input=data, stdin=None).stdout


def _pct_conf() -> bytes:
    return (b"arch: amd64\ncores: 2\nhostname: bench\nmemory: 2048\n"
            b"net0: name=eth0,bridge=vmbr0,ip=dhcp,type=veth\nostype: debian\n"
            b"rootfs: local:101/vm-101-disk-0.raw,size=8G\nswap: 512\n")


class _RandomReader(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left, 4 * MiB)
        buffer[:n] = os.urandom(n)
        self.left -= n
        return n


def _zstd_into(path: Path, write: Callable[[Any], None]) -> None:
    with path.open("wb") as out:
        process = subprocess.Popen(["zstd", "-1", "-q", "-c"], stdin=subprocess.PIPE, stdout=out)
        assert process.stdin is not None
        try:
            write(process.stdin)
        finally:
            process.stdin.close()
            if process.wait(COMMAND_TIMEOUT) != 0:
                raise BenchError(f"zstd failed with {process.returncode}")


def _make_tar_zst(path: Path, member: int) -> None:
    """Like vzdump's LXC archive: ./etc/vzdump/pct.conf first, then a large member."""
    def write(stream: Any) -> None:
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for name in ("./etc/", "./etc/vzdump/"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            conf = _pct_conf()
            info = tarfile.TarInfo("./etc/vzdump/pct.conf")
            info.size, info.mode = len(conf), 0o644
            tar.addfile(info, io.BytesIO(conf))
            info = tarfile.TarInfo("./var/lib/big.img")
            info.size, info.mode = member, 0o644
            tar.addfile(info, io.BufferedReader(_RandomReader(member)))

    _zstd_into(path, write)


def _make_vma_zst(path: Path, payload: int) -> None:
    """A zstd stream whose content starts like a VMA archive (magic, header with the config)."""
    def write(stream: Any) -> None:
        config = b"# qemu-server.conf\nboot: order=scsi0\ncores: 2\nmemory: 2048\n"
        header = b"VMA\x00" + (1).to_bytes(4, "big") + uuid.uuid4().bytes + config
        stream.write(header + b"\x00" * (12 * KiB - len(header)))
        reader = _RandomReader(payload)
        while True:
            chunk = reader.read(4 * MiB)
            if not chunk:
                break
            stream.write(chunk)

    _zstd_into(path, write)
