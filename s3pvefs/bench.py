"""`s3pvefs bench`: the mount's speed next to a direct S3 client's, on the same server, in one run.

Every workload runs through a real mount (`python -m s3pvefs mount` in a subprocess with a fresh
cache directory and mountpoint, always unmounted and reaped) and, for comparison, as the best a
plain client can do: a direct aiobotocore client built with the mount's own client settings (same
part size, same concurrency), or the cache directory's own disk for the purely local workloads.

Counting: the mount's requests and bytes come from its own object-store counters, read over the
admin socket (what `s3pvefs status --json` prints), as deltas around each workload (the startup's
directory markers are not counted). The baseline's are counted by the benchmark's client itself.
CPU time is read from /proc/<pid>/stat of the mount process (all its threads).

Workloads (issue 5):
  W1 vzdump stream    dd bs=1M into dump/<name>.vma.dat, rename to .vma.zst, sync
  W2 restore          cold sequential dd read through a fresh mount
  W3 show config      `tar -xpOf X.tar.zst ./etc/vzdump/pct.conf --occurrence`, `zstd -dc X | head`
  W4 listing          300 backups, 100 with notes, listed the way Proxmox does; statvfs latency
  W5 small files      create / write 4 KiB / close / rename, 1,000 times
  W6 FUSE overhead    write and read a file that is in the cache vs the cache directory's disk
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import __version__
from .config import human_size
from .errors import ConfigError, S3PveFsError

if TYPE_CHECKING:
    from .config import Config

KiB, MiB, GiB = 1024, 1024**2, 1024**3
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
TITLES = {
    "W1": "vzdump stream",
    "W2": "restore",
    "W3": "show config",
    "W4": "listing",
    "W5": "small files",
    "W6": "FUSE overhead",
}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
VZDUMP_NAME = "vzdump-qemu-100-2026_01_01-00_00_00"
MOUNT_TIMEOUT = 60.0  # seconds for a mount to show in /proc/self/mountinfo
UNMOUNT_TIMEOUT = 600.0  # a clean unmount uploads what is left first
COMMAND_TIMEOUT = 300.0  # short commands (tar, zstd, ...)
SLOWEST_RATE = 1 * MiB  # bytes/s: a transfer slower than this is given up (bounds every dd)
W3_MEMBER_MAX = 64 * MiB
W4_BACKUPS, W4_NOTES = 300, 100
W5_FILES, W5_FILE_SIZE = 1000, 4 * KiB
W6_MAX = 256 * MiB
STATVFS_CALLS = 200
# moto reads a whole object for every ranged GET: reading 1 GiB in 1 MiB ranges takes it ~12 min.
LOCAL_READ_TIME_LIMIT = 180.0


class BenchError(S3PveFsError):
    """The benchmark cannot go on (a workload failed, a tool is missing, ...)."""


# -- results ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Metric:
    name: str
    unit: str
    mount: float | None
    baseline: float | None
    better: str | None = None  # "lower", "higher" or None (informative)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.mount is None or self.baseline is None or self.baseline == 0:
            return None
        return self.mount / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "mount": self.mount,
                "baseline": self.baseline, "ratio": self.ratio, "better": self.better,
                "note": self.note}


@dataclasses.dataclass
class WorkloadResult:
    key: str
    baseline: str  # what the baseline is
    metrics: list[Metric] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.metrics.append(Metric(*args, **kwargs))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": TITLES[self.key], "baseline": self.baseline,
                               "seconds": round(self.seconds, 3),
                               "metrics": [m.as_dict() for m in self.metrics],
                               "details": self.details}
        if self.error:
            out["error"] = self.error
        return out


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr (redrawn in place on a terminal, a line every 10 s otherwise)."""

    def __init__(self, label: str, total: int, done: Callable[[], int], unit: int = MiB,
                 unit_name: str = "MiB"):
        self.label, self.total, self.done = label, total, done
        self.unit, self.unit_name = unit, unit_name
        self.tty = sys.stderr.isatty()
        self.interval = 0.5 if self.tty else 10.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0
        self._last = 0

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._show(final=True)

    def finished(self, done: int) -> None:
        """The work is over with ``done`` units (for counters that vanish at the end)."""
        self._last = max(self._last, done)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._show()

    def _show(self, final: bool = False) -> None:
        try:
            done = max(0, int(self.done()))
        except Exception:
            return
        done = self._last = max(done, self._last)  # a finished process reads as 0
        elapsed = max(time.monotonic() - self._started, 1e-9)
        fraction = min(1.0, done / self.total) if self.total else 1.0
        width = 24
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        rate = done / self.unit / elapsed
        text = (f"  {self.label:<26} [{bar}] {fraction * 100:5.1f}%  "
                f"{done / self.unit:.1f}/{self.total / self.unit:.1f} {self.unit_name}  "
                f"{rate:.1f} {self.unit_name}/s  {elapsed:.0f} s")
        if self.tty:
            sys.stderr.write("\r" + text + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def proc_io(pid: int, field: str) -> int:
    """rchar / wchar of a running process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name == field:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14 and 15 of stat(5)


def run_dd(label: str, source: Path | str, target: Path | str, total: int) -> float:
    """dd bs=1M from ``source`` to ``target`` with a progress bar; seconds it took."""
    seconds, _done, _complete = dd(label, source, target, total, 120.0 + total / SLOWEST_RATE)
    return seconds


def dd(label: str, source: Path | str, target: Path | str, total: int, timeout: float,
       partial_ok: bool = False) -> tuple[float, int, bool]:
    """(seconds, bytes, complete) of dd bs=1M, with a progress bar.

    At ``timeout`` dd is stopped: an error, or with ``partial_ok`` what it did until then.
    """
    field = "rchar" if str(target) == "/dev/null" else "wchar"
    started = time.perf_counter()
    process = subprocess.Popen(["dd", f"if={source}", f"of={target}", "bs=1M", "status=none"],
                               stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with Progress(label, total, lambda: proc_io(process.pid, field)) as bar:
            try:
                _out, err = process.communicate(timeout=timeout)
                if process.returncode == 0:
                    bar.finished(total)
            except subprocess.TimeoutExpired:
                done = proc_io(process.pid, field)
                seconds = time.perf_counter() - started
                process.kill()
                process.communicate()
                if not partial_ok:
                    raise BenchError(f"{label}: dd did not finish within {timeout:.0f} s") \
                        from None
                say(f"  {label}: stopped at the time limit ({timeout:.0f} s) after "
                    f"{done / MiB:.0f} MiB; the figures are for that part")
                return seconds, done, False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise BenchError(f"{label}: dd failed ({process.returncode}): "
                         f"{err.decode(errors='replace').strip()}")
    return seconds, total, True


def run_command(argv: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    try:
        result = subprocess.run(argv, capture_output=True, timeout=COMMAND_TIMEOUT, **kwargs)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish within {COMMAND_TIMEOUT:.0f} s") from None
    return result


# -- the direct client (baseline) ---------------------------------------------------------------


class Counters:
    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_sent = 0
        self.bytes_received = 0

    def snapshot(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received}


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Difference of two counter snapshots (requests per operation, bytes)."""
    requests = collections.Counter(after.get("requests") or {})
    requests.subtract(before.get("requests") or {})
    return {
        "requests": {op: n for op, n in sorted(requests.items()) if n},
        "bytes_sent": after.get("bytes_sent", 0) - before.get("bytes_sent", 0),
        "bytes_received": after.get("bytes_received", 0) - before.get("bytes_received", 0),
    }


def total_requests(d: dict[str, Any]) -> int:
    return sum(d["requests"].values())


def requests_of(d: dict[str, Any], *operations: str) -> int:
    return sum(d["requests"].get(op, 0) for op in operations)


class DirectClient:
    """An aiobotocore S3 client with the mount's own client settings, counting what it does.

    It lives on one asyncio loop (an ``asyncio.Runner``) in the calling thread; every method is
    blocking for the caller.
    """

    def __init__(self, config: Config):
        self.config = config
        self.bucket = config.bucket
        self.counters = Counters()
        import asyncio  # here, not at the top: `s3pvefs status` imports this module

        self._runner = asyncio.Runner()
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    def __enter__(self) -> DirectClient:
        from .store import _client_kwargs, _session  # the mount's own client settings

        async def open_client() -> None:
            self._stack = contextlib.AsyncExitStack()
            self._client = await self._stack.enter_async_context(
                _session(self.config).create_client("s3", **_client_kwargs(self.config)))

        self._runner.run(open_client())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            with contextlib.suppress(Exception):
                self._runner.run(self._stack.aclose())
        self._runner.close()

    def run(self, coroutine: Any) -> Any:
        return self._runner.run(coroutine)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        self.counters.requests[operation] += 1
        body = params.get("Body")
        if body is not None:
            self.counters.bytes_sent += len(body)
        method = getattr(self._client, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        return await method(Bucket=self.bucket, **params)

    async def get_bytes(self, key: str, start: int | None = None, length: int | None = None,
                        sink: Callable[[bytes], bool] | None = None,
                        chunk_size: int = 256 * KiB) -> int:
        """GET (a range of) an object; bytes received. ``sink`` may stop the transfer early."""
        params: dict[str, Any] = {"Key": key}
        if start is not None and length is not None:
            params["Range"] = f"bytes={start}-{start + length - 1}"
        response = await self.call("GetObject", **params)
        received = 0
        body = response["Body"]
        try:
            while True:
                chunk = await body.read(chunk_size)
                if not chunk:
                    break
                received += len(chunk)
                self.counters.bytes_received += len(chunk)
                if sink is not None and not sink(chunk):
                    break
        finally:
            body.close()
        return received

    # -- blocking helpers ---------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self.run(self.call("PutObject", Key=key, Body=data))

    def put_many(self, items: list[tuple[str, bytes]], concurrency: int) -> None:
        import asyncio

        async def all_of_them() -> None:
            limit = asyncio.Semaphore(concurrency)

            async def one(key: str, data: bytes) -> None:
                async with limit:
                    await self.call("PutObject", Key=key, Body=data)

            await asyncio.gather(*(one(k, d) for k, d in items))

        self.run(all_of_them())

    def head_size(self, key: str) -> int:
        return int(self.run(self.call("HeadObject", Key=key))["ContentLength"])

    def upload_file(self, path: Path, key: str, part_size: int, concurrency: int,
                    on_part: Callable[[int], None] | None = None) -> None:
        """Multipart upload of a file, ``concurrency`` parts at a time (one PUT if it is small)."""
        import asyncio

        size = path.stat().st_size

        async def upload() -> None:
            with path.open("rb") as source:
                if size < part_size:
                    await self.call("PutObject", Key=key, Body=source.read())
                    return
                created = await self.call("CreateMultipartUpload", Key=key)
                upload_id = created["UploadId"]
                limit = asyncio.Semaphore(concurrency)
                parts: dict[int, str] = {}

                async def one(number: int, offset: int) -> None:
                    async with limit:
                        source.seek(offset)  # no await between seek and read: safe
                        data = source.read(part_size)
                        answer = await self.call("UploadPart", Key=key, UploadId=upload_id,
                                                 PartNumber=number, Body=data)
                        parts[number] = answer["ETag"]
                        if on_part is not None:
                            on_part(len(data))

                try:
                    await asyncio.gather(*(one(n, off) for n, off in
                                           enumerate(range(0, size, part_size), start=1)))
                except BaseException:
                    with contextlib.suppress(Exception):
                        await self.call("AbortMultipartUpload", Key=key, UploadId=upload_id)
                    raise
                await self.call("CompleteMultipartUpload", Key=key, UploadId=upload_id,
                                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": parts[n]}
                                                           for n in sorted(parts)]})

        self.run(upload())

    def download(self, key: str, size: int, part_size: int, concurrency: int) -> int:
        """Parallel ranged GETs of a whole object into nothing; bytes received."""
        import asyncio

        async def download() -> int:
            limit = asyncio.Semaphore(concurrency)

            async def one(offset: int) -> int:
                async with limit:
                    return await self.get_bytes(key, offset, min(part_size, size - offset))

            return sum(await asyncio.gather(*(one(off) for off in range(0, size, part_size))))

        return self.run(download())

    def list_keys(self, prefix: str, delimiter: str | None = None) -> list[str]:
        async def listing() -> list[str]:
            keys: list[str] = []
            token = None
            while True:
                params: dict[str, Any] = {"Prefix": prefix}
                if delimiter:
                    params["Delimiter"] = delimiter
                if token:
                    params["ContinuationToken"] = token
                page = await self.call("ListObjectsV2", **params)
                keys.extend(item["Key"] for item in page.get("Contents", []))
                if not page.get("IsTruncated"):
                    return keys
                token = page["NextContinuationToken"]

        return self.run(listing())

    def list_and_read(self, prefix: str, suffix: str, concurrency: int) -> int:
        """List ``prefix`` (one level) and GET every key ending in ``suffix``; how many."""
        import asyncio

        keys = [k for k in self.list_keys(prefix, "/") if k.endswith(suffix)]
        async def read_all() -> None:
            limit = asyncio.Semaphore(concurrency)

            async def one(key: str) -> None:
                async with limit:
                    await self.get_bytes(key)

            await asyncio.gather(*(one(k) for k in keys))

        self.run(read_all())
        return len(keys)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` and abort its open multipart uploads."""
        keys = self.list_keys(prefix)

        async def delete() -> None:
            for start in range(0, len(keys), 1000):
                batch = keys[start:start + 1000]
                await self.call("DeleteObjects", Delete={
                    "Objects": [{"Key": k} for k in batch], "Quiet": True})
            uploads = await self.call("ListMultipartUploads", Prefix=prefix)
            for upload in uploads.get("Uploads", []):
                with contextlib.suppress(Exception):
                    await self.call("AbortMultipartUpload", Key=upload["Key"],
                                    UploadId=upload["UploadId"])

        self.run(delete())


# -- a mount in a subprocess --------------------------------------------------------------------


def is_mounted(path: Path) -> bool:
    target = os.fspath(path)
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)


class Mount:
    """One `s3pvefs mount` process (optionally under a profiler) on a fresh mountpoint."""

    def __init__(self, label: str, argv_options: list[str], workdir: Path, env: dict[str, str],
                 profile: tuple[str, Path] | None):
        self.label = label
        self.path = workdir / f"mnt-{label}"
        self.cache_dir = workdir / f"cache-{label}"
        self.log_path = workdir / f"mount-{label}.log"
        self.options = [*argv_options, "--cache-dir", os.fspath(self.cache_dir),
                        "--log-file", os.fspath(self.log_path)]
        self.env = env
        self.profile = profile  # (tool, output file)
        self.process: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the python process that serves the mount

    def start(self) -> Mount:
        self.path.mkdir(parents=True)
        command = [sys.executable, "-m", "s3pvefs", "mount", *self.options, os.fspath(self.path)]
        if self.profile is not None:
            tool, output = self.profile
            if tool == "py-spy":
                command = [shutil.which("py-spy") or _beside_python("py-spy"), "record",
                           "--output", os.fspath(output), "--format", "raw", "--rate", "100",
                           "--nonblocking", "--", *command]
            else:
                command = [sys.executable, "-m", "pyinstrument", "--renderer", "text",
                           "--outfile", os.fspath(output), "-m", "s3pvefs", "mount",
                           *self.options, os.fspath(self.path)]
        with open(self.log_path.with_suffix(".out"), "ab") as out:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.path):
            if self.process.poll() is not None:
                raise BenchError(f"s3pvefs mount exited with {self.process.returncode}:\n"
                                 f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"s3pvefs did not mount within {MOUNT_TIMEOUT:.0f} s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.05)
        self.pid = self._server_pid()
        return self

    def _server_pid(self) -> int:
        assert self.process is not None
        if self.profile is None or self.profile[0] != "py-spy":
            return self.process.pid
        # py-spy runs the mount as its child.
        for _ in range(100):
            children = _children(self.process.pid)
            if children:
                return children[0]
            time.sleep(0.05)
        raise BenchError("cannot find the mount process under py-spy")

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path.with_suffix(".out"), self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def status(self) -> dict[str, Any]:
        from .control import ControlError, request

        try:
            answer = request(self.path, {"op": "status"}, 30.0)
        except ControlError as exc:
            raise BenchError(str(exc)) from None
        if not answer.get("ok") or not isinstance(answer.get("status"), dict):
            raise BenchError(f"status of {self.path}: {answer.get('error', answer)}")
        return answer["status"]

    def counters(self) -> dict[str, Any]:
        state = self.status()
        return {"requests": state.get("requests") or {},
                "bytes_sent": state.get("bytes_sent", 0),
                "bytes_received": state.get("bytes_received", 0)}

    def sync(self, timeout: float) -> None:
        """Everything on S3 (what `s3pvefs sync MOUNTPOINT` does)."""
        from .control import ControlError, request

        try:
            answer = request(self.path, {"op": "sync", "path": "", "timeout": timeout},
                             timeout + 30.0)
        except ControlError as exc:
            raise BenchError(str(exc)) from None
        if not answer.get("ok"):
            raise BenchError(f"sync of {self.path} failed: {answer}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        """Unmount (uploading what is left) and reap; never leaves a mount or a process."""
        process = self.process
        if process is None:
            return
        if process.poll() is None and is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", os.fspath(self.path)], check=False,
                           stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=UNMOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"s3pvefs bench: the {self.label} mount did not exit; killing it")
            if self.pid and self.pid != process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            process.kill()
            process.wait()
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", os.fspath(self.path)], check=False,
                           stderr=subprocess.DEVNULL)
        self.process = None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(x) for x in fh.read().split())
    return found


def _beside_python(name: str) -> str:
    return os.fspath(Path(sys.executable).parent / name)


def profiler() -> str | None:
    """py-spy if installed, else pyinstrument, else None."""
    if shutil.which("py-spy") or os.access(_beside_python("py-spy"), os.X_OK):
        return "py-spy"
    import importlib.util

    if importlib.util.find_spec("pyinstrument") is not None:
        return "pyinstrument"
    return None


# Frames where a thread waits (epoll, locks, queues): py-spy cannot always tell them from work.
_WAITING = re.compile(r"^(?:\S*\.)?(?:get_events|select|wait|_wait_for_tstate_lock|acquire|"
                      r"_work|get|poll|sleep)\b")


# Entry and glue frames that contain everything: not informative in an inclusive ranking.
_PLUMBING = re.compile(r"^<module>|s3pvefs/(?:cli|mount|bridge|__main__)\.py")


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """The hottest functions of a py-spy raw (collapsed stacks) profile; waits left out."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    with contextlib.suppress(OSError), path.open(errors="replace") as fh:
        for line in fh:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame_name(f) for f in stack.split(";") if f]
            if not frames or _WAITING.match(frames[-1]):
                continue  # a thread waiting, not working
            samples += count
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    s3pvefs_total = collections.Counter({f: n for f, n in total.items() if "s3pvefs/" in f
                                         and not _PLUMBING.search(f)})
    return {
        "samples": samples,
        "self": [[f, n] for f, n in own.most_common(top)],
        "s3pvefs_inclusive": [[f, n] for f, n in s3pvefs_total.most_common(top)],
    }


def _frame_name(frame: str) -> str:
    """'fn (path/to/file.py:12)' -> 'fn (to/file.py)'."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


# -- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, config: Config, size: int, workdir: Path, env: dict[str, str],
                 server: dict[str, Any], profile_dir: Path | None):
        self.config = config
        self.size = size
        self.workdir = workdir
        self.env = env
        self.server = server
        self.profile_dir = profile_dir
        self.profile_tool = profiler() if profile_dir is not None else None
        self.profiles: dict[str, dict[str, Any]] = {}
        self.prefix = config.prefix  # the run's own prefix in the bucket
        self.part_size = config.part_size
        self.concurrency = config.upload_concurrency
        self.client = DirectClient(config)
        self.mounts: list[Mount] = []
        self.source: Path | None = None
        self.w1_key: str | None = None  # dump/<name>.vma.zst as the mount uploaded it
        self.local_dir = workdir / "local-disk"  # the cache directory's own disk
        self.config_file: Path | None = None  # --config, passed on to the mounts
        self.time_limit: float | None = None  # --read-time-limit

    def __enter__(self) -> Bench:
        self.client.__enter__()
        self.local_dir.mkdir()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for mount in self.mounts:
                mount.stop()
            with contextlib.suppress(Exception):
                self.client.delete_prefix(self.prefix)
        finally:
            self.client.__exit__(*exc)

    # -- helpers ----------------------------------------------------------------------------

    def mount(self, label: str) -> Mount:
        c = self.config
        options = ["--endpoint-url", c.endpoint_url or "", "--bucket", c.bucket or "",
                   "--region", c.region, "--addressing-style", c.addressing_style,
                   "--prefix", c.prefix, "--log-level", "info"]
        if not c.endpoint_url:
            options = options[2:]
        if self.config_file is not None:
            options = ["--config", os.fspath(self.config_file), *options]
        profile = None
        if self.profile_tool is not None and self.profile_dir is not None:
            profile = (self.profile_tool, self.profile_dir / f"profile-{label}.txt")
        mount = Mount(label, options, self.workdir, self.env, profile)
        self.mounts.append(mount)
        say(f"  mounting ({label}, empty cache{', under ' + profile[0] if profile else ''})")
        return mount.start()

    def unmount(self, mount: Mount) -> None:
        mount.stop()
        self.mounts.remove(mount)
        if mount.profile is not None:
            tool, output = mount.profile
            record: dict[str, Any] = {"tool": tool, "file": os.fspath(output)}
            if tool == "py-spy":
                record.update(summarize_profile(output))
            self.profiles[mount.label] = record
        shutil.rmtree(mount.cache_dir, ignore_errors=True)

    def key(self, path: str) -> str:
        return self.prefix + path

    def _clear_dump(self) -> None:
        """Remove what earlier workloads left in dump/ (W1's backup when W2 did not run)."""
        if self.w1_key is not None:
            self.client.delete_prefix(self.key("dump/"))
            self.w1_key = None

    def make_source(self) -> Path:
        """``size`` random bytes starting with the zstd magic, like a vzdump .vma.zst."""
        if self.source is None:
            path = self.workdir / "source.vma.zst"
            with path.open("wb") as out:
                written = 0
                with Progress("random source data", self.size, lambda: written):
                    while written < self.size:
                        chunk = os.urandom(min(8 * MiB, self.size - written))
                        if written == 0:
                            chunk = ZSTD_MAGIC + chunk[len(ZSTD_MAGIC):]
                        out.write(chunk)
                        written += len(chunk)
                out.flush()
                os.fsync(out.fileno())  # its write-back must not compete with what is measured
            self.source = path
        return self.source

    def baseline_counters(self) -> dict[str, Any]:
        return self.client.counters.snapshot()

    def transfer_timeout(self, size: int) -> float:
        return 120.0 + size / SLOWEST_RATE

    def read_time_limit(self, size: int) -> float:
        return self.time_limit if self.time_limit is not None else self.transfer_timeout(size)

    # -- W1 ---------------------------------------------------------------------------------

    def w1(self, result: WorkloadResult) -> None:
        source = self.make_source()
        size = self.size
        gib = size / GiB

        # Baseline: a direct multipart upload of the same bytes.
        say(f"  baseline: direct multipart upload ({human_size(self.part_size)} parts, "
            f"{self.concurrency} in parallel)")
        base_key = self.key("baseline/w1.vma.zst")
        before = self.baseline_counters()
        sent = [0]
        cpu0 = time.process_time()
        started = time.perf_counter()
        with Progress("direct upload", size, lambda: sent[0]):
            self.client.upload_file(source, base_key, self.part_size, self.concurrency,
                                    on_part=lambda n: sent.__setitem__(0, sent[0] + n))
        base_seconds = time.perf_counter() - started
        base_cpu = time.process_time() - cpu0
        base = delta(self.baseline_counters(), before)
        self.client.delete_prefix(self.key("baseline/"))

        # The mount: dd into X.vma.dat, rename to X.vma.zst, sync.
        mount = self.mount("W1")
        try:
            dump = mount.path / "dump"
            dat, final = dump / f"{VZDUMP_NAME}.vma.dat", dump / f"{VZDUMP_NAME}.vma.zst"
            before = mount.counters()
            cpu0 = mount.cpu_seconds()
            started = time.perf_counter()
            dd_seconds = run_dd("mount: dd into .vma.dat", source, dat, size)
            os.rename(dat, final)
            with Progress("mount: sync (rest to S3)", size,
                          lambda: size - _dirty_bytes(mount)):
                mount.sync(self.transfer_timeout(size))
            seconds = time.perf_counter() - started
            cpu = mount.cpu_seconds() - cpu0
            state = mount.status()
            counted = delta(mount.counters(), before)
        finally:
            self.unmount(mount)
        self.w1_key = self.key(f"dump/{VZDUMP_NAME}.vma.zst")
        stored = self.client.head_size(self.w1_key)
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
                   note=f"limit {human_size(self.config.cache_size)}")
        result.details.update({
            "size_bytes": size, "dd_seconds": dd_seconds,
            "dd_MiB_per_s": size / MiB / dd_seconds,
            "mount_requests": counted, "baseline_requests": base,
            "cache_peak_bytes": state.get("cache_peak_bytes"),
            "cache_limit_bytes": state.get("cache_limit_bytes"),
        })

    # -- W2 ---------------------------------------------------------------------------------

    def w2(self, result: WorkloadResult) -> None:
        size = self.size
        key = self.w1_key
        if key is None:
            source = self.make_source()
            say("  putting the backup into the bucket (direct multipart upload, not timed)")
            key = self.key(f"dump/{VZDUMP_NAME}.vma.zst")
            sent = [0]
            with Progress("setup upload", size, lambda: sent[0]):
                self.client.upload_file(source, key, self.part_size, self.concurrency,
                                        on_part=lambda n: sent.__setitem__(0, sent[0] + n))
            self.w1_key = key
        if self.server.get("local") and size >= 256 * MiB:
            say("  note: moto reads the whole object for every ranged GET, so reading a big "
                "object through the mount in small ranges is slow on moto and can take minutes"
                + (f"; the read stops after {self.time_limit:.0f} s (--read-time-limit)"
                   if self.time_limit else ""))

        say(f"  baseline: direct parallel ranged download ({human_size(self.part_size)} ranges, "
            f"{self.concurrency} in parallel)")
        before = self.baseline_counters()
        started = time.perf_counter()
        with Progress("direct download", size, lambda: self.client.counters.bytes_received
                      - before["bytes_received"]):
            self.client.download(key, size, self.part_size, self.concurrency)
        base_seconds = time.perf_counter() - started
        base = delta(self.baseline_counters(), before)

        mount = self.mount("W2")
        try:
            before = mount.counters()
            cpu0 = mount.cpu_seconds()
            seconds, done, complete = dd(
                "mount: cold dd read", mount.path / "dump" / f"{VZDUMP_NAME}.vma.zst",
                "/dev/null", size, self.read_time_limit(size), partial_ok=True)
            cpu = mount.cpu_seconds() - cpu0
            counted = delta(mount.counters(), before)
        finally:
            self.unmount(mount)
        self.client.delete_prefix(self.key("dump/"))
        self.w1_key = None

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
                               "time_limit_seconds": self.read_time_limit(size),
                               "mount_requests": counted, "baseline_requests": base})

    # -- W3 ---------------------------------------------------------------------------------

    def w3(self, result: WorkloadResult) -> None:
        for tool in ("tar", "zstd", "head", "sh"):
            if shutil.which(tool) is None:
                raise BenchError(f"W3 needs {tool!r} on PATH")
        self._clear_dump()
        member = min(max(self.size // 16, 8 * MiB), W3_MEMBER_MAX)
        tar_path = self.workdir / "w3.tar.zst"
        vma_path = self.workdir / "w3.vma.zst"
        _make_tar_zst(tar_path, member)
        _make_vma_zst(vma_path, member)
        tar_name = "vzdump-lxc-101-2026_01_01-00_00_00.tar.zst"
        vma_name = "vzdump-qemu-102-2026_01_01-00_00_00.vma.zst"
        say("  putting a tar.zst and a vma.zst into the bucket (not timed)")
        self.client.put(self.key(f"dump/{tar_name}"), tar_path.read_bytes())
        self.client.put(self.key(f"dump/{vma_name}"), vma_path.read_bytes())

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
        base_tar = self._fetch_prefix(self.key(f"dump/{tar_name}"), tar_path, tar_stdin,
                                      expected)
        base_vma = self._fetch_prefix(self.key(f"dump/{vma_name}"), vma_path, vma_stdin,
                                      vma_expected)

        mount = self.mount("W3")
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
            self.unmount(mount)
        self.client.delete_prefix(self.key("dump/"))

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

    def _fetch_prefix(self, key: str, local: Path, argv: list[str], expected: bytes) -> dict:
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
        before = self.baseline_counters()
        parts: list[bytes] = []
        self.client.run(self.client.get_bytes(key, 0, high,
                                              sink=lambda chunk: parts.append(chunk) or True))
        if _command_output(argv, b"".join(parts)) != expected:
            raise BenchError(f"W3: the first {high} bytes of {key} do not answer "
                             f"{' '.join(argv)}")
        return delta(self.baseline_counters(), before)

    # -- W4 ---------------------------------------------------------------------------------

    def w4(self, result: WorkloadResult) -> None:
        self._clear_dump()
        items: list[tuple[str, bytes]] = []
        for i in range(W4_BACKUPS):
            name = f"vzdump-qemu-{1000 + i}-2026_01_01-00_00_00.vma.zst"
            items.append((self.key(f"dump/{name}"), ZSTD_MAGIC + os.urandom(1020)))
            if i % (W4_BACKUPS // W4_NOTES) == 0:
                items.append((self.key(f"dump/{name}.notes"), f"notes of backup {i}\n".encode()))
        say(f"  putting {W4_BACKUPS} backups and {W4_NOTES} notes into the bucket (not timed)")
        self.client.put_many(items, self.config.max_connections)

        say("  baseline: direct ListObjectsV2 of dump/ and a GET of each notes file")
        runs = {}
        for phase in ("cold", "warm"):
            before = self.baseline_counters()
            started = time.perf_counter()
            self.client.list_and_read(self.key("dump/"), ".notes", self.concurrency)
            runs[phase] = (time.perf_counter() - started, delta(self.baseline_counters(), before))

        mount = self.mount("W4")
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
            local_statvfs = _latency(lambda: os.statvfs(self.local_dir))
        finally:
            self.unmount(mount)
        self.client.delete_prefix(self.key("dump/"))

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

    # -- W5 ---------------------------------------------------------------------------------

    def w5(self, result: WorkloadResult) -> None:
        local = self.local_dir / "w5"
        local.mkdir()
        local_seconds = _small_files(local, "local disk")
        shutil.rmtree(local)

        mount = self.mount("W5")
        try:
            target = mount.path / "snippets" / "w5"
            target.mkdir()
            before = mount.counters()
            seconds = _small_files(target, "mount")
            started = time.perf_counter()
            mount.sync(self.transfer_timeout(W5_FILES * W5_FILE_SIZE) + W5_FILES)
            sync_seconds = time.perf_counter() - started
            counted = delta(mount.counters(), before)
        finally:
            self.unmount(mount)
        self.client.delete_prefix(self.key("snippets/"))

        result.add("create/write/close/rename", "ops/s", W5_FILES / seconds,
                   W5_FILES / local_seconds, "higher", note="vs the cache directory's disk")
        result.add("seconds until all on S3 after the last rename", "s", sync_seconds, None)
        result.add("S3 requests per file", "", total_requests(counted) / W5_FILES, None)
        result.add("server-side copy requests", "", requests_of(counted, "CopyObject",
                                                                "UploadPartCopy"), None)
        result.details.update({"files": W5_FILES, "file_bytes": W5_FILE_SIZE,
                               "seconds": seconds, "local_seconds": local_seconds,
                               "mount_requests": counted})

    # -- W6 ---------------------------------------------------------------------------------

    def w6(self, result: WorkloadResult) -> None:
        size = min(self.size, W6_MAX)
        source = self.workdir / "w6.raw"
        with source.open("wb") as out:
            for offset in range(0, size, 8 * MiB):
                out.write(os.urandom(min(8 * MiB, size - offset)))
            out.flush()
            os.fsync(out.fileno())

        local = self.local_dir / "w6.raw"
        local_write = run_dd("local disk: dd write", source, local, size)
        local_read = run_dd("local disk: dd read", local, "/dev/null", size)
        local.unlink()

        mount = self.mount("W6")
        try:
            directory = mount.path / "images" / "100"
            directory.mkdir()
            target = directory / "vm-100-disk-0.raw"
            write_seconds = run_dd("mount: dd write", source, target, size)
            mount.sync(self.transfer_timeout(size))  # the read below runs without uploads
            _drop_page_cache(target)  # read through s3pvefs, not the kernel's copy
            before = mount.counters()
            read_seconds = run_dd("mount: dd read (cached)", target, "/dev/null", size)
            counted = delta(mount.counters(), before)
        finally:
            self.unmount(mount)
        source.unlink()
        self.client.delete_prefix(self.key("images/"))

        result.add("write", "MiB/s", size / MiB / write_seconds, size / MiB / local_write,
                   "higher", note="vs the cache directory's disk")
        result.add("read (file in the cache)", "MiB/s", size / MiB / read_seconds,
                   size / MiB / local_read, "higher", note="vs the cache directory's disk")
        result.details.update({"size_bytes": size, "read_requests": counted})

    # -- driver -----------------------------------------------------------------------------

    def run(self, workloads: list[str]) -> dict[str, WorkloadResult]:
        results: dict[str, WorkloadResult] = {}
        baselines = {
            "W1": f"direct multipart upload, {human_size(self.part_size)} parts, "
                  f"{self.concurrency} in parallel",
            "W2": f"direct ranged GETs of {human_size(self.part_size)}, {self.concurrency} in parallel",
            "W3": "one direct ranged GET of the shortest prefix the command needs",
            "W4": "direct ListObjectsV2 + GET of each notes file; statvfs of the cache disk",
            "W5": "the same operations on the cache directory's disk",
            "W6": "dd on the cache directory's disk (page cache warm on both sides)",
        }
        for key in workloads:
            result = results[key] = WorkloadResult(key, baselines[key])
            say(f"{key} {TITLES[key]}")
            started = time.perf_counter()
            try:
                getattr(self, key.lower())(result)
            except Exception as exc:  # one workload's failure (S3 errors included) ends it only
                result.error = str(exc) if isinstance(exc, (BenchError, OSError, ConfigError)) \
                    else f"{type(exc).__name__}: {exc}"
                say(f"  {key} FAILED: {exc}")
                for mount in list(self.mounts):
                    with contextlib.suppress(Exception):
                        self.unmount(mount)
            result.seconds = time.perf_counter() - started
            say(f"  {key} done in {result.seconds:.1f} s")
        return results


def _dirty_bytes(mount: Mount) -> int:
    try:
        return int(mount.status().get("dirty_bytes", 0))
    except Exception:
        return 0


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




# -- machine, table, json -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * KiB
    with contextlib.suppress(OSError, ValueError):
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
        info["loadavg_before_run"] = [float(x) for x in loadavg]
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def _commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", os.fspath(repo), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 10:
        return f"{int(value)}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(report: dict[str, Any]) -> str:
    rows = [("workload", "figure", "unit", "mount", "baseline", "ratio", "better")]
    for key, workload in report["workloads"].items():
        title = f"{key} {workload['title']}"
        if workload.get("error"):
            rows.append((title, f"FAILED: {workload['error'].splitlines()[0][:60]}",
                         "", "", "", "", ""))
            continue
        for i, metric in enumerate(workload["metrics"]):
            ratio = metric["ratio"]
            rows.append((title if i == 0 else "", metric["name"], metric["unit"],
                         _number(metric["mount"]), _number(metric["baseline"]),
                         "-" if ratio is None else f"{ratio:.2f}", metric["better"] or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {3, 4, 5}
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("ratio = mount / baseline; 'better' says which way is better. Baselines:")
    for key, workload in report["workloads"].items():
        lines.append(f"  {key}: {workload['baseline']}")
    return "\n".join(lines) + "\n"


def format_header(report: dict[str, Any]) -> str:
    m, s, settings = report["machine"], report["server"], report["settings"]
    server = s["endpoint"] + (f" (local moto {s.get('moto_version')})" if s.get("local") else "")
    memory = m.get("memory_bytes", 0) / GiB
    return (
        f"s3pvefs {report['s3pvefs_version']}"
        f"{' (' + report['commit'] + ')' if report.get('commit') else ''} bench, "
        f"size {human_size(settings['size_bytes'])}, part size {human_size(settings['part_size'])}, "
        f"upload concurrency {settings['upload_concurrency']}, "
        f"max connections {settings['max_connections']}, "
        f"cache {human_size(settings['cache_size'])}\n"
        f"machine: {m.get('nproc')} CPUs ({m.get('cpu', '?')}), {memory:.1f} GiB, "
        f"Linux {m.get('kernel')}, Python {m.get('python')}, load average before the run "
        f"{' '.join(str(x) for x in m.get('loadavg_before_run', []))}\n"
        f"server: {server}, bucket {s['bucket']}\n"
        f"run time: {report['seconds']:.0f} s\n"
    )


# -- command ------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """The `bench` subcommand (called from cli.build_parser)."""
    bench = sub.add_parser(
        "bench",
        help="measure the mount against a direct S3 client on the same server",
        description=(
            "Run the workloads W1-W6 through a real mount (in a subprocess, with fresh cache "
            "directories) and as a direct S3 client / local-disk baseline on the same server, "
            "and print a table of both and their ratio. Without --endpoint-url and --bucket a "
            "local moto server is started for the run. Needs root and FUSE. Objects go under a "
            "prefix of their own, deleted at the end."
        ),
    )
    bench.add_argument("--endpoint-url", metavar="URL", default=None,
                       help="S3 endpoint (default: a local moto server started for the run)")
    bench.add_argument("--bucket", metavar="NAME", default=None, help="bucket to use")
    bench.add_argument("--region", metavar="REGION", default=None, help="signing region")
    bench.add_argument("--config", metavar="FILE", type=Path, default=None,
                       help="s3pvefs TOML configuration (credentials, part size, concurrency ...)")
    bench.add_argument("--size", metavar="SIZE", default="1GiB",
                       help="size of the backup for W1/W2 (default 1GiB)")
    bench.add_argument("--workloads", metavar="W1,W2,...", default=",".join(ALL_WORKLOADS),
                       help="which workloads to run (default all: W1,W2,W3,W4,W5,W6)")
    bench.add_argument("--json", metavar="FILE", type=Path, default=None,
                       help="also write every figure, the machine and the server as JSON")
    bench.add_argument("--profile", metavar="DIR", type=Path, nargs="?", default=None,
                       const=Path("s3pvefs-bench-profile"),
                       help="run each mount under py-spy (else pyinstrument) and write the "
                            "profiles to DIR (default ./s3pvefs-bench-profile)")
    bench.add_argument("--read-time-limit", metavar="SECONDS", type=float, default=None,
                       help="stop W2's read through the mount after this long and report the "
                            "part read (default: 180 on the local moto server, which is slow "
                            "at ranged GETs of big objects; else none; 0: none)")
    bench.add_argument("--work-dir", metavar="DIR", type=Path, default=None,
                       help="where the cache directories and source files go "
                            "(default: the system temporary directory)")
    bench.set_defaults(handler=cmd_bench)


def _workloads(text: str) -> list[str]:
    chosen = []
    for item in text.split(","):
        key = item.strip().upper()
        if not key:
            continue
        if key not in ALL_WORKLOADS:
            raise ConfigError(f"--workloads: unknown workload {item.strip()!r} "
                              f"(choose from {','.join(ALL_WORKLOADS)})")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise ConfigError("--workloads: no workload given")
    return sorted(chosen, key=ALL_WORKLOADS.index)


def _preflight(profile: Path | None) -> None:
    if os.geteuid() != 0:
        raise ConfigError("s3pvefs bench mounts a file system and uses the admin socket "
                          "in /run/s3pvefs: run it as root")
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        raise ConfigError("s3pvefs bench needs FUSE: /dev/fuse and fusermount3")
    if shutil.which("dd") is None:
        raise ConfigError("s3pvefs bench needs dd (coreutils)")
    if profile is not None and profiler() is None:
        raise ConfigError("--profile needs py-spy or pyinstrument: "
                          "pip install 's3pvefs[bench]' (or pip install py-spy)")


def cmd_bench(args: argparse.Namespace) -> int:
    from .cli import _error
    from .config import load_config, parse_size

    try:
        size = parse_size(args.size, "--size")
        if size < MiB:
            raise ConfigError("--size: at least 1 MiB")
        workloads = _workloads(args.workloads)
        _preflight(args.profile)
        config = load_config(args.config, {"endpoint_url": args.endpoint_url,
                                           "bucket": args.bucket, "region": args.region})
    except ConfigError as exc:
        _error(str(exc))
        return 2
    if config.endpoint_url is not None and config.bucket is None:
        _error("--endpoint-url needs --bucket")
        return 2

    started = time.perf_counter()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    host = machine()  # before the run: its load average shows what else was running
    env = dict(os.environ)
    package_root = os.fspath(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    local = None
    server: dict[str, Any] = {"local": False}
    workdir = Path(tempfile.mkdtemp(prefix="s3pvefs-bench-", dir=args.work_dir))
    report: dict[str, Any] = {}
    failed = False
    try:
        if config.endpoint_url is None and config.bucket is None:
            from importlib.metadata import version

            from .embedded import LOCAL_KEY, start_local_s3

            say("starting a local moto server for the run")
            local = start_local_s3(workdir / "moto")
            config = local.configure(config)
            env.update({"AWS_ACCESS_KEY_ID": LOCAL_KEY, "AWS_SECRET_ACCESS_KEY": LOCAL_KEY})
            for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
                env.pop(name, None)
            server = {"local": True, "moto_version": version("moto")}
        run_prefix = f"{config.prefix}s3pvefs-bench-{stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}/"
        config = dataclasses.replace(config, prefix=run_prefix)
        server.update({"endpoint": config.endpoint_url or "AWS S3", "bucket": config.bucket,
                       "prefix": run_prefix, "region": config.region})
        profile_dir = None
        if args.profile is not None:
            profile_dir = args.profile.resolve()
            profile_dir.mkdir(parents=True, exist_ok=True)
        say(f"s3pvefs bench: {', '.join(workloads)}, size {human_size(size)}, "
            f"server {server['endpoint']}, work dir {workdir}")
        bench = Bench(config, size, workdir, env, server, profile_dir)
        bench.config_file = args.config.resolve() if args.config else None
        limit = args.read_time_limit
        if limit is None and local is not None:
            limit = LOCAL_READ_TIME_LIMIT
        bench.time_limit = limit or None
        with bench:
            results = bench.run(workloads)
        failed = any(r.error for r in results.values())
        report = {
            "s3pvefs_version": __version__,
            "commit": _commit(),
            "command": " ".join(["s3pvefs", "bench", *sys.argv[2:]])
            if len(sys.argv) > 1 and sys.argv[1] == "bench" else None,
            "started": stamp.isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - started,
            "machine": host,
            "server": server,
            "settings": {
                "size_bytes": size, "part_size": config.part_size,
                "upload_concurrency": config.upload_concurrency,
                "max_connections": config.max_connections, "block_size": config.block_size,
                "cache_size": config.cache_size, "multipart_threshold": config.multipart_threshold,
                "work_dir_filesystem": _filesystem(workdir),
                "read_time_limit_seconds": bench.time_limit,
            },
            "workloads": {key: r.as_dict() for key, r in results.items()},
        }
        if bench.profiles:
            report["profiles"] = bench.profiles
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except (BenchError, ConfigError, OSError) as exc:
        _error(str(exc))
        return 1
    finally:
        if local is not None:
            local.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(format_header(report))
    print(format_table(report), end="")
    if report.get("profiles"):
        print()
        print(format_profiles(report["profiles"]), end="")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say(f"figures written to {args.json}")
    return 1 if failed else 0


def format_profiles(profiles: dict[str, Any]) -> str:
    lines = []
    for label, record in profiles.items():
        lines.append(f"profile of the {label} mount ({record['tool']}): {record['file']}")
        if record.get("self"):
            samples = max(1, record.get("samples", 1))
            lines.append("  hottest functions (own samples):")
            for name, count in record["self"][:8]:
                lines.append(f"    {100 * count / samples:5.1f}%  {name}")
            lines.append("  s3pvefs functions (inclusive):")
            for name, count in record["s3pvefs_inclusive"][:6]:
                lines.append(f"    {100 * count / samples:5.1f}%  {name}")
    return "\n".join(lines) + "\n"


def _filesystem(path: Path) -> str | None:
    """fstype of the mount that holds ``path``."""
    target = os.path.realpath(path)
    best = ("", None)
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if "-" not in fields[6:]:
                continue
            point = fields[4]
            fstype = fields[fields.index("-", 6) + 1]
            if (target == point or target.startswith(point.rstrip("/") + "/")) \
                    and len(point) >= len(best[0]):
                best = (point, fstype)
    return best[1]

