"""The workloads that move data or metadata through the mount: W1 vzdump stream, W2 restore,
W4 listing, W5 small files and W6 FUSE overhead (W3 is in showconfig.py). Each is a function of
the run (`runner.Bench`) that fills in a `report.WorkloadResult`."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from s3pvefs.config.values import human_size

from .measure import (
    BenchError,
    GiB,
    KiB,
    MiB,
    Progress,
    dd,
    delta,
    requests_of,
    run_dd,
    say,
    total_requests,
    transfer_timeout,
)
from .report import WorkloadResult
from .runner import ZSTD_MAGIC, Bench

VZDUMP_NAME = "vzdump-qemu-100-2026_01_01-00_00_00"
W4_BACKUPS, W4_NOTES = 300, 100
W5_FILES, W5_FILE_SIZE = 1000, 4 * KiB
W6_MAX = 256 * MiB
STATVFS_CALLS = 200


# -- W1 -------------------------------------------------------------------------------------------

def w1(bench: Bench, result: WorkloadResult) -> None:
    source = bench.make_source()
    size = bench.size
    gib = size / GiB

    # Baseline: a direct multipart upload of the same bytes.
    say(f"  baseline: direct multipart upload ({human_size(bench.part_size)} parts, "
        f"{bench.concurrency} in parallel)")
    base_key = bench.key("baseline/w1.vma.zst")
    before = bench.baseline_counters()
    sent = [0]
    cpu0 = time.process_time()
    started = time.perf_counter()
    with Progress("direct upload", size, lambda: sent[0]):
        bench.client.upload_file(source, base_key, bench.part_size, bench.concurrency,
                                on_part=lambda n: sent.__setitem__(0, sent[0] + n))
    base_seconds = time.perf_counter() - started
    base_cpu = time.process_time() - cpu0
    base = delta(bench.baseline_counters(), before)
    bench.client.delete_prefix(bench.key("baseline/"))

    # The mount: dd into X.vma.dat, rename to X.vma.zst, sync.
    mount = bench.mount("W1")
    try:
        dump = mount.path / "dump"
        dat, final = dump / f"{VZDUMP_NAME}.vma.dat", dump / f"{VZDUMP_NAME}.vma.zst"
        before = mount.counters()
        cpu0 = mount.cpu_seconds()
        started = time.perf_counter()
        dd_seconds = run_dd("mount: dd into .vma.dat", source, dat, size)
        os.rename(dat, final)
        with Progress("mount: sync (rest to S3)", size,
                      lambda: size - mount.dirty_bytes()):
            mount.sync(transfer_timeout(size))
        seconds = time.perf_counter() - started
        cpu = mount.cpu_seconds() - cpu0
        state = mount.status()
        counted = delta(mount.counters(), before)
    finally:
        bench.unmount(mount)
    bench.w1_key = bench.key(f"dump/{VZDUMP_NAME}.vma.zst")
    stored = bench.client.head_size(bench.w1_key)
    if stored != size:
        raise BenchError(f"W1: the object has {stored} bytes, the source {size}")

    copies = requests_of(counted, "CopyObject", "UploadPartCopy")
    result.add("seconds, first write until on S3", "s", seconds, base_seconds, "lower")
    result.add("throughput to S3", "MiB/s", size / MiB / seconds, size / MiB / base_seconds,
               "higher")
    result.add("bytes uploaded per source byte", "B/B", counted["bytes_sent"] / size,
               base["bytes_sent"] / size, "lower")
    result.add("S3 requests", "", total_requests(counted), total_requests(base), "lower")
    result.add("server-side copy requests (must be 0)", "", copies, 0, "lower")
    result.add("CPU seconds per GiB", "s/GiB", cpu / gib, base_cpu / gib, "lower",
               note="mount process vs the benchmark's own client")
    result.add("peak cache usage", "MiB", state.get("cache_peak_bytes", 0) / MiB, None,
               note=f"limit {human_size(bench.config.cache_size)}")
    result.details.update({
        "size_bytes": size, "dd_seconds": dd_seconds,
        "dd_MiB_per_s": size / MiB / dd_seconds,
        "mount_requests": counted, "baseline_requests": base,
        "cache_peak_bytes": state.get("cache_peak_bytes"),
        "cache_limit_bytes": state.get("cache_limit_bytes"),
    })

# -- W2 -------------------------------------------------------------------------------------------

def w2(bench: Bench, result: WorkloadResult) -> None:
    size = bench.size
    key = bench.w1_key
    if key is None:
        source = bench.make_source()
        say("  putting the backup into the bucket (direct multipart upload, not timed)")
        key = bench.key(f"dump/{VZDUMP_NAME}.vma.zst")
        sent = [0]
        with Progress("setup upload", size, lambda: sent[0]):
            bench.client.upload_file(source, key, bench.part_size, bench.concurrency,
                                    on_part=lambda n: sent.__setitem__(0, sent[0] + n))
        bench.w1_key = key
    if bench.server.get("local") and size >= 256 * MiB:
        say("  note: moto reads the whole object for every ranged GET, so reading a big "
            "object through the mount in small ranges is slow on moto and can take minutes"
            + (f"; the read stops after {bench.time_limit:.0f} s (--read-time-limit)"
               if bench.time_limit else ""))

    say(f"  baseline: direct parallel ranged download ({human_size(bench.part_size)} ranges, "
        f"{bench.concurrency} in parallel)")
    before = bench.baseline_counters()
    started = time.perf_counter()
    with Progress("direct download", size, lambda: bench.client.counters.bytes_received
                  - before["bytes_received"]):
        bench.client.download(key, size, bench.part_size, bench.concurrency)
    base_seconds = time.perf_counter() - started
    base = delta(bench.baseline_counters(), before)

    mount = bench.mount("W2")
    try:
        before = mount.counters()
        cpu0 = mount.cpu_seconds()
        seconds, done, complete = dd(
            "mount: cold dd read", mount.path / "dump" / f"{VZDUMP_NAME}.vma.zst",
            "/dev/null", size, bench.read_time_limit(size), partial_ok=True)
        cpu = mount.cpu_seconds() - cpu0
        counted = delta(mount.counters(), before)
    finally:
        bench.unmount(mount)
    bench.client.delete_prefix(bench.key("dump/"))
    bench.w1_key = None

    part = "" if complete else f" (first {done / MiB:.0f} MiB: time limit)"
    done = max(done, 1)
    result.add("cold sequential read" + part, "MiB/s", done / MiB / seconds,
               size / MiB / base_seconds, "higher")
    result.add("seconds per GiB", "s/GiB", seconds / (done / GiB),
               base_seconds / (size / GiB), "lower")
    result.add("GET requests per GiB", "", requests_of(counted, "GetObject") / (done / GiB),
               requests_of(base, "GetObject") / (size / GiB), "lower")
    result.add("bytes fetched per byte read", "B/B", counted["bytes_received"] / done,
               base["bytes_received"] / size, "lower")
    result.add("CPU seconds per GiB (mount)", "s/GiB", cpu / (done / GiB), None)
    result.details.update({"size_bytes": size, "bytes_read": done, "complete": complete,
                           "seconds": seconds, "baseline_seconds": base_seconds,
                           "time_limit_seconds": bench.read_time_limit(size),
                           "mount_requests": counted, "baseline_requests": base})

# -- W4 -------------------------------------------------------------------------------------------

def w4(bench: Bench, result: WorkloadResult) -> None:
    bench.clear_dump()
    items: list[tuple[str, bytes]] = []
    for i in range(W4_BACKUPS):
        name = f"vzdump-qemu-{1000 + i}-2026_01_01-00_00_00.vma.zst"
        items.append((bench.key(f"dump/{name}"), ZSTD_MAGIC + os.urandom(1020)))
        if i % (W4_BACKUPS // W4_NOTES) == 0:
            items.append((bench.key(f"dump/{name}.notes"), f"notes of backup {i}\n".encode()))
    say(f"  putting {W4_BACKUPS} backups and {W4_NOTES} notes into the bucket (not timed)")
    bench.client.put_many(items, bench.config.max_connections)

    say("  baseline: direct ListObjectsV2 of dump/ and a GET of each notes file")
    runs = {}
    for phase in ("cold", "warm"):
        before = bench.baseline_counters()
        started = time.perf_counter()
        bench.client.list_and_read(bench.key("dump/"), ".notes", bench.concurrency)
        runs[phase] = (time.perf_counter() - started, delta(bench.baseline_counters(), before))

    mount = bench.mount("W4")
    try:
        counted = {}
        for phase in ("cold", "warm"):
            before = mount.counters()
            started = time.perf_counter()
            found = _proxmox_listing(mount.path / "dump")
            counted[phase] = (time.perf_counter() - started,
                              delta(mount.counters(), before))
            if found != (W4_BACKUPS, W4_NOTES):
                raise BenchError(f"W4: listed {found} (backups, notes), expected "
                                 f"{(W4_BACKUPS, W4_NOTES)}")
        mount_statvfs = _latency(lambda: os.statvfs(mount.path))
        local_statvfs = _latency(lambda: os.statvfs(bench.local_dir))
    finally:
        bench.unmount(mount)
    bench.client.delete_prefix(bench.key("dump/"))

    for phase in ("cold", "warm"):
        m_seconds, m = counted[phase]
        b_seconds, b = runs[phase]
        result.add(f"{phase}: S3 requests", "", total_requests(m), total_requests(b), "lower")
        result.add(f"{phase}: seconds", "s", m_seconds, b_seconds, "lower")
    result.add("statvfs latency (median)", "ms", mount_statvfs["median_ms"],
               local_statvfs["median_ms"], "lower", note="vs the cache directory's disk")
    result.details.update({
        "backups": W4_BACKUPS, "notes": W4_NOTES,
        "mount_requests": {p: counted[p][1] for p in counted},
        "baseline_requests": {p: runs[p][1] for p in runs},
        "statvfs_mount": mount_statvfs, "statvfs_local": local_statvfs,
    })

# -- W5 -------------------------------------------------------------------------------------------

def w5(bench: Bench, result: WorkloadResult) -> None:
    local = bench.local_dir / "w5"
    local.mkdir()
    local_seconds = _small_files(local, "local disk")
    shutil.rmtree(local)

    mount = bench.mount("W5")
    try:
        target = mount.path / "snippets" / "w5"
        target.mkdir()
        before = mount.counters()
        seconds = _small_files(target, "mount")
        started = time.perf_counter()
        mount.sync(transfer_timeout(W5_FILES * W5_FILE_SIZE) + W5_FILES)
        sync_seconds = time.perf_counter() - started
        counted = delta(mount.counters(), before)
    finally:
        bench.unmount(mount)
    bench.client.delete_prefix(bench.key("snippets/"))

    result.add("create/write/close/rename", "ops/s", W5_FILES / seconds,
               W5_FILES / local_seconds, "higher", note="vs the cache directory's disk")
    result.add("seconds until all on S3 after the last rename", "s", sync_seconds, None)
    result.add("S3 requests per file", "", total_requests(counted) / W5_FILES, None)
    result.add("server-side copy requests", "", requests_of(counted, "CopyObject",
                                                            "UploadPartCopy"), None)
    result.details.update({"files": W5_FILES, "file_bytes": W5_FILE_SIZE,
                           "seconds": seconds, "local_seconds": local_seconds,
                           "mount_requests": counted})

# -- W6 -------------------------------------------------------------------------------------------

def w6(bench: Bench, result: WorkloadResult) -> None:
    size = min(bench.size, W6_MAX)
    source = bench.workdir / "w6.raw"
    with source.open("wb") as out:
        for offset in range(0, size, 8 * MiB):
            out.write(os.urandom(min(8 * MiB, size - offset)))
        out.flush()
        os.fsync(out.fileno())

    local = bench.local_dir / "w6.raw"
    local_write = run_dd("local disk: dd write", source, local, size)
    local_read = run_dd("local disk: dd read", local, "/dev/null", size)
    local.unlink()

    mount = bench.mount("W6")
    try:
        directory = mount.path / "images" / "100"
        directory.mkdir()
        target = directory / "vm-100-disk-0.raw"
        write_seconds = run_dd("mount: dd write", source, target, size)
        mount.sync(transfer_timeout(size))  # the read below runs without uploads
        _drop_page_cache(target)  # read through s3pvefs, not the kernel's copy
        before = mount.counters()
        read_seconds = run_dd("mount: dd read (cached)", target, "/dev/null", size)
        counted = delta(mount.counters(), before)
    finally:
        bench.unmount(mount)
    source.unlink()
    bench.client.delete_prefix(bench.key("images/"))

    result.add("write", "MiB/s", size / MiB / write_seconds, size / MiB / local_write,
               "higher", note="vs the cache directory's disk")
    result.add("read (file in the cache)", "MiB/s", size / MiB / read_seconds,
               size / MiB / local_read, "higher", note="vs the cache directory's disk")
    result.details.update({"size_bytes": size, "read_requests": counted})


def _drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _latency(call: Callable[[], Any], count: int = STATVFS_CALLS) -> dict[str, float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    times.sort()
    return {"calls": count, "median_ms": times[count // 2],
            "p99_ms": times[min(count - 1, int(count * 0.99))], "max_ms": times[-1]}


_ARCHIVE = re.compile(r"^vzdump-(?:qemu|lxc)-\d+-.+\.(?:vma|tar)(?:\.(?:zst|gz|lzo))?$")


def _proxmox_listing(dump: Path) -> tuple[int, int]:
    """What Proxmox does to list backups: readdir, stat each, probe .notes and .protected,
    read the first line of the notes. Returns (backups, notes read)."""
    names = os.listdir(dump)
    for name in names:
        os.stat(dump / name)
    backups = notes = 0
    for name in sorted(names):
        if not _ARCHIVE.match(name):
            continue
        backups += 1
        notes_path = dump / f"{name}.notes"
        if os.path.isfile(notes_path):
            with notes_path.open() as fh:
                fh.readline()
            notes += 1
        os.path.exists(dump / f"{name}.protected")
    return backups, notes


def _small_files(directory: Path, label: str) -> float:
    payload = os.urandom(W5_FILE_SIZE)
    pid = os.getpid()
    done = 0
    started = time.perf_counter()
    with Progress(f"{label}: small files", W5_FILES, lambda: done, unit=1, unit_name="files"):
        for i in range(W5_FILES):
            final = directory / f"bench-{i:04d}.conf"
            temporary = directory / f"bench-{i:04d}.conf.tmp.{pid}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
            os.rename(temporary, final)
            done += 1
    return time.perf_counter() - started
