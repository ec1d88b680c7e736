"""Shared machinery of the stress, torture and crash-point tiers (tests/test_stress.py,
tests/test_torture.py, tests/test_crash_points.py): seeds, deterministic data, an op log with
timestamps, O_DIRECT reads, the expected-state checks against S3 and the failure report.

A tier builds a model of what the files must contain, drives the real mount, and at the end
compares every object under the mount's prefix with the model by SHA-256 (GetObject with boto3)
and checks that no multipart upload is left open. Every failure report carries the seed, the
last operations with their timestamps and the mount log lines that concern the failing files.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from helpers import ServerBucket, crc64nvme, keys, object_bytes, recorded_checksum

MiB = 1024 * 1024
KiB = 1024
PREFIX = "pve/"  # what tests/mounting.py mounts with unless told otherwise
INDEX_MARK = "/.s3pvefs-attrs."  # per-directory attribute index objects (docs/design.md)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DIRECT_ALIGN = 4096
SYNC_TIMEOUT = 180  # seconds `s3pvefs sync` may take before a test calls it a hang
MOUNT_GONE = (errno.ENOTCONN, errno.ECONNABORTED)  # what calls fail with once the mount died


# -- seeds ------------------------------------------------------------------------------------


def seeds(env_name: str, default: Iterable[int]) -> list[int]:
    """The seeds a tier runs: ``default`` in CI; ``$env_name=N`` runs seeds 1..N, and
    ``$env_name=7,12`` exactly those (to replay a failure)."""
    value = os.environ.get(env_name, "").strip()
    if not value:
        return list(default)
    if "," in value or value.startswith("="):
        return [int(part) for part in value.strip("=").split(",") if part.strip()]
    return list(range(1, int(value) + 1))


KNOWN_DEFECTS = os.environ.get("S3PVEFS_KNOWN_DEFECTS") == "1"


def known_defect(what: str):
    """A test that fails on a product defect not fixed yet (listed in docs/testing.md): kept,
    run with S3PVEFS_KNOWN_DEFECTS=1, left out of the default run until the fix lands."""
    import pytest

    return pytest.mark.skipif(not KNOWN_DEFECTS, reason=f"known defect: {what} "
                                                        "(S3PVEFS_KNOWN_DEFECTS=1 runs it)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def boundary_sizes(part: int, block: int = MiB) -> list[int]:
    """Sizes at and around the part size / multipart threshold and the cache block size."""
    return sorted({0, 1, 4095, 4096, block - 1, block, block + 1, part - 1, part, part + 1,
                   2 * part - 1, 2 * part, 2 * part + 1, 3 * part, 3 * part + 1, 4 * part,
                   5 * part, 6 * part - 1})


# -- data -------------------------------------------------------------------------------------


def payload(seed: int, size: int, head: bytes = b"") -> bytes:
    """``size`` deterministic random bytes (``head`` first): the same seed, the same bytes."""
    head = head[:size]
    return head + random.Random(seed).randbytes(size - len(head))


@dataclass
class Content:
    """One version of a file's content, regenerated from its seed when the bytes are needed."""

    seed: int
    size: int
    head: bytes = b""
    _sha: str | None = field(default=None, repr=False)

    def data(self) -> bytes:
        return payload(self.seed, self.size, self.head)

    @property
    def sha256(self) -> str:
        if self._sha is None:
            self._sha = hashlib.sha256(self.data()).hexdigest()
        return self._sha


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe_difference(got: bytes, want: bytes, part: int | None = None) -> str:
    """What is wrong with ``got``: sizes, prefix or not, first differing offset."""
    words = [f"size {len(got)} (expected {len(want)})"]
    if part and got and len(got) != len(want) and len(got) % part == 0:
        words.append(f"a multiple of the part size ({len(got) // part} x {part})")
    if len(got) < len(want) and want.startswith(got):
        words.append("a PREFIX of the expected content")
    elif len(got) > len(want) and got.startswith(want):
        words.append("the expected content plus extra bytes")
    else:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
        end = first
        limit = min(len(got), len(want))
        while end < limit and got[end] != want[end]:
            end += 1
        words.append(f"first difference at offset {first} (block {first // MiB}), "
                     f"differs for {end - first} bytes from there"
                     + (", the bytes there are zeros" if not any(got[first:end]) else ""))
    return "; ".join(words)


# -- the op log -------------------------------------------------------------------------------


class OpLog:
    """Thread-safe log of operations with start time, duration and outcome."""

    def __init__(self, keep: int = 5000):
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.entries: deque[list] = deque(maxlen=keep)
        self.inflight: dict[int, list] = {}  # calls not returned, even once out of entries
        self.lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self, who: str, op: str, detail: str = "") -> list:
        entry = [self.now(), None, who, op, detail, "..."]
        with self.lock:
            self.entries.append(entry)
            self.inflight[id(entry)] = entry
        return entry

    def end(self, entry: list, outcome: str = "ok") -> None:
        entry[1] = self.now()
        entry[5] = outcome
        with self.lock:
            self.inflight.pop(id(entry), None)

    def note(self, who: str, text: str) -> None:
        self.end(self.start(who, "note", text), "")

    def call(self, who: str, op: str, detail: str, fn, *args, **kwargs):
        """Run ``fn`` as one logged operation; an OSError is logged with its errno and raised."""
        entry = self.start(who, op, detail)
        try:
            result = fn(*args, **kwargs)
        except OSError as exc:
            self.end(entry, f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}")
            raise
        except BaseException as exc:
            self.end(entry, f"{type(exc).__name__}: {exc}")
            raise
        self.end(entry, "ok" if result is None else f"-> {result}")
        return result

    def running(self) -> list[str]:
        """The operations that have not returned, as op-log lines."""
        with self.lock:
            return [self._line(entry) for entry in
                    sorted(self.inflight.values(), key=lambda entry: entry[0])]

    @staticmethod
    def _line(entry: list) -> str:
        started, ended, who, op, detail, outcome = entry
        took = f"+{ended - started:.3f}" if ended is not None else "+(running)"
        return f"{started:9.3f}{took:>11} {who:<5} {op:<9} {detail} {outcome}"

    def dump(self, last: int = 200, around: Iterable[float] = (), window: int = 30) -> str:
        """The last ``last`` operations; before them, ``window`` operations either side of
        each time in ``around`` (when a problem happened) that the tail does not show."""
        with self.lock:
            entries = sorted(self.entries, key=lambda entry: entry[0])
        wall = time.strftime("%H:%M:%S", time.localtime(self.wall0))
        lines = []
        tail_start = max(0, len(entries) - last)
        shown_until = -1
        for moment in sorted(set(around))[:5]:
            index = next((i for i, entry in enumerate(entries) if entry[0] > moment),
                         len(entries))
            first, stop = max(shown_until + 1, index - window), min(tail_start, index + window)
            if first >= stop:
                continue
            lines.append(f"--- operations around t={moment:.3f} ---")
            lines += [self._line(entry) for entry in entries[first:stop]]
            shown_until = stop - 1
        lines.append(f"--- last {len(entries) - tail_start} operations (t=0 at {wall}; "
                     "start+duration s) ---")
        lines += [self._line(entry) for entry in entries[tail_start:]]
        return "\n".join(lines)


# -- I/O through the mount ----------------------------------------------------------------------


class AlignedBuffer:
    """A page-aligned buffer (anonymous mmap) for O_DIRECT reads."""

    def __init__(self, size: int = MiB):
        self.size = size
        self.map = mmap.mmap(-1, size)

    def close(self) -> None:
        self.map.close()


def read_all(path: Path | str, *, direct: bool = False, buffer: AlignedBuffer | None = None,
             chunk: int = MiB) -> bytes:
    """The whole file, with O_DIRECT (aligned buffer, aligned offsets) or buffered reads."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    try:
        return read_range(fd, 0, None, direct=direct, buffer=buffer, chunk=chunk)
    finally:
        os.close(fd)


def read_range(fd: int, offset: int, size: int | None, *, direct: bool = False,
               buffer: AlignedBuffer | None = None, chunk: int = MiB) -> bytes:
    """Read up to ``size`` bytes (None: to EOF) from ``offset``; stops at EOF like pread.

    With ``direct`` the offset must be aligned; reads go through an aligned buffer."""
    out = bytearray()
    if direct:
        assert offset % DIRECT_ALIGN == 0, offset
        own = buffer is None
        buffer = buffer or AlignedBuffer(chunk)
        try:
            while size is None or len(out) < size:
                want = buffer.size if size is None else min(buffer.size, size - len(out))
                want = -(-want // DIRECT_ALIGN) * DIRECT_ALIGN
                view = memoryview(buffer.map)[:want]
                try:
                    got = os.preadv(fd, [view], offset + len(out))
                finally:
                    view.release()
                if got == 0:
                    break
                take = got if size is None else min(got, size - len(out))
                out += buffer.map[:take]
                if got < want:
                    break
        finally:
            if own:
                buffer.close()
        return bytes(out)
    while size is None or len(out) < size:
        want = chunk if size is None else min(chunk, size - len(out))
        got = os.pread(fd, want, offset + len(out))
        if not got:
            break
        out += got
    return bytes(out)


def write_all(fd: int, data: bytes | memoryview, chunk_sizes: Iterable[int] | None = None,
              offset: int | None = None) -> None:
    """Write all of ``data`` (at the file position, or with pwrite at ``offset``), in chunks."""
    view = memoryview(data)
    done = 0
    sizes = iter(chunk_sizes) if chunk_sizes is not None else None
    while done < len(view):
        size = next(sizes, MiB) if sizes is not None else MiB
        piece = view[done:done + max(1, size)]
        while piece:
            if offset is None:
                written = os.write(fd, piece)
            else:
                written = os.pwrite(fd, piece, offset + done)
            assert written > 0
            piece = piece[written:]
            done += written


def chunk_sizes(rng: random.Random) -> list[int]:
    """write() sizes a writer uses for one file: one style per file (cp, dd, vzdump, odd)."""
    style = rng.choice(["cp", "dd", "vzdump", "odd", "small"])
    if style == "cp":
        return [128 * KiB] * 100_000
    if style == "dd":
        return [MiB] * 100_000
    if style == "small":
        return [4 * KiB] * 3 + [64 * KiB] * 100_000
    choices = ([4 * KiB, 64 * KiB, 128 * KiB, MiB, 2 * MiB + 4 * KiB, 3_700_000] if style ==
               "vzdump" else [1, 4095, 65_537, MiB - 1, MiB + 1, 3 * MiB + 333])
    return [rng.choice(choices) for _ in range(100_000)]


# -- S3 state ---------------------------------------------------------------------------------


def data_keys(s3_client, bucket: str, prefix: str = PREFIX) -> set[str]:
    """Keys below ``prefix`` without directory markers and s3pvefs attribute indexes."""
    return {key for key in keys(s3_client, bucket, prefix)
            if not key.endswith("/") and INDEX_MARK not in "/" + key}


def open_uploads(s3_client, bucket: str, prefix: str = "") -> list[dict]:
    answer = s3_client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [{"Key": upload["Key"], "UploadId": upload["UploadId"]}
            for upload in answer.get("Uploads", [])]


@dataclass
class Expect:
    """What may be under one key. ``exact``: one of these contents, byte for byte. ``prefix``:
    a prefix of that content at least ``min_len`` long. ``may_be_absent``: no object is fine."""

    exact: list[bytes] = field(default_factory=list)
    prefix_of: bytes | None = None
    min_len: int = 0
    may_be_absent: bool = False
    why: str = ""
    # A rewrite in place cut short: ``old`` with each byte of the range either old or new.
    patched: tuple[bytes, bytes, int, int] | None = None  # (old, new, offset, length)

    def accepts(self, got: bytes | None) -> bool:
        if got is None:
            return self.may_be_absent
        if any(got == want for want in self.exact):
            return True
        if self.patched is not None:
            old, new, offset, length = self.patched
            end = offset + length
            if (len(got) == len(old) and got[:offset] == old[:offset]
                    and got[end:] == old[end:]):
                return all(g in (o, n) for g, o, n in zip(got[offset:end], old[offset:end],
                                                            new[offset:end]))
        return (self.prefix_of is not None and self.min_len <= len(got) <= len(self.prefix_of)
                and self.prefix_of.startswith(got))

    @property
    def required(self) -> bool:
        return not self.may_be_absent


def check_bucket(s3_client, bucket: str, expected: dict[str, bytes | Content | Expect],
                 prefix: str = PREFIX, part: int | None = None,
                 ignore: set[str] = frozenset()) -> list[str]:
    """Every data key under ``prefix`` is expected and holds what it should (by SHA-256); every
    required key exists; no multipart upload is open. Keys are relative to ``prefix``."""
    problems = []
    stored = {key[len(prefix):] for key in data_keys(s3_client, bucket, prefix)}
    for name in sorted(stored - set(expected) - set(ignore)):
        body = object_bytes(s3_client, bucket, prefix + name)
        problems.append(f"unexpected object {prefix + name} ({len(body)} bytes)")
    for name, want in sorted(expected.items()):
        key = prefix + name
        if name not in stored:
            if isinstance(want, Expect) and not want.required:
                continue
            problems.append(f"missing object {key}"
                            + (f" ({want.why})" if isinstance(want, Expect) and want.why else ""))
            continue
        answer = s3_client.get_object(Bucket=bucket, Key=key)
        body = answer["Body"].read()
        etag = answer.get("ETag", "")
        recorded = recorded_checksum(ServerBucket(s3_client, bucket), key, etag,
                                     answer.get("Metadata", {}))
        if recorded is not None and recorded != crc64nvme(body):
            problems.append(f"{key} (ETag {etag}): the checksum recorded for it ({recorded}) "
                            f"is not the CRC64NVME of what S3 holds")
        if isinstance(want, Expect):
            if not want.accepts(body):
                reference = want.exact[-1] if want.exact else (want.prefix_of or b"")
                problems.append(f"{key} (ETag {etag}): not an accepted content ({want.why}): "
                                + describe_difference(body, reference, part))
            continue
        if isinstance(want, Content):
            if sha256(body) != want.sha256:
                problems.append(f"{key} (ETag {etag}): sha256 differs: "
                                + describe_difference(body, want.data(), part))
            continue
        if sha256(body) != sha256(want):
            problems.append(f"{key} (ETag {etag}): sha256 differs: "
                            + describe_difference(body, bytes(want), part))
    for upload in open_uploads(s3_client, bucket):
        problems.append(f"multipart upload left open: {upload['Key']} {upload['UploadId']}")
    return problems


# -- the mount --------------------------------------------------------------------------------


def sync(mount, path: Path | None = None, timeout: int = SYNC_TIMEOUT) -> list[str]:
    """`s3pvefs sync`; the problems it shows (none when it exits 0)."""
    started = time.monotonic()
    result = mount.cli("sync", "--timeout", str(timeout), path or mount.path,
                       timeout=timeout + 60)
    if result.returncode != 0:
        return [(f"s3pvefs sync exited {result.returncode} after "
                 f"{time.monotonic() - started:.1f} s: {result.stdout.strip()} "
                 f"{result.stderr.strip()}")]
    return []


def status_problems(mount) -> list[str]:
    """`s3pvefs status` must show a clean mount: nothing dirty, no upload, no error."""
    try:
        state = mount.status()
    except Exception as exc:  # noqa: BLE001 - a status that cannot be read is a finding
        return [f"s3pvefs status failed: {exc!r}"]
    problems = []
    if state.get("dirty_files") or state.get("dirty_bytes"):
        problems.append(f"status not clean: {state.get('dirty_files')} dirty file(s), "
                        f"{state.get('dirty_bytes')} dirty bytes")
    if state.get("uploads"):
        problems.append(f"status shows uploads in flight: {state['uploads']}")
    if state.get("errors"):
        problems.append(f"status shows upload errors: {state['errors']}")
    return problems


def hang_evidence(mount) -> str:
    """`s3pvefs status --json` of a mount that seems stuck (uploads, cache, dirty files)."""
    try:
        result = mount.cli("status", "--json", mount.path, timeout=30)
        return f"status at the hang: {result.stdout.strip() or result.stderr.strip()}"
    except Exception as exc:  # noqa: BLE001
        return f"status at the hang: failed: {exc!r}"


class Watchdog:
    """Kills the mount if the block it guards runs longer than ``seconds`` (a call that never
    returns then fails with ENOTCONN); ``evidence`` is the mount's status at that moment."""

    def __init__(self, mount, seconds: float):
        self.mount = mount
        self.seconds = seconds
        self.evidence: str | None = None
        self.timer: threading.Timer | None = None

    def _fire(self) -> None:
        self.evidence = hang_evidence(self.mount)
        self.mount.kill()

    def __enter__(self):
        self.timer = threading.Timer(self.seconds, self._fire)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()

    @property
    def fired(self) -> bool:
        return self.evidence is not None


def unmount_problems(mount) -> list[str]:
    try:
        code = mount.unmount()
    except Exception as exc:  # noqa: BLE001
        return [f"unmount failed: {exc!r}"]
    return [] if code == 0 else [f"s3pvefs exited {code} at unmount"]


LOG_INTERESTING = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|ESTALE|EIO|rror")


def log_lines(mount, needles: Iterable[str] = (), limit: int = 120, tail: int = 40) -> str:
    """Mount log lines that mention one of ``needles`` or are warnings/errors (the last
    ``limit`` of them), then the log's last ``tail`` lines. pyfuse3's chatter is left out."""
    try:
        lines = mount.log().splitlines()
    except OSError as exc:
        return f"(mount log unreadable: {exc})"
    needles = [needle for needle in needles if needle]
    lines = [line for line in lines if " DEBUG pyfuse3:" not in line
             and "getxattr: ENODATA" not in line]
    picked = [line for line in lines
              if LOG_INTERESTING.search(line) or any(needle in line for needle in needles)]
    title = (f"--- mount log {mount.log_path}: lines about {', '.join(needles[:12]) or '-'} "
             f"and warnings/errors (last {limit} of {len(picked)}) ---")
    out = [title, *picked[-limit:], f"--- mount log tail ({tail} lines) ---", *lines[-tail:]]
    return "\n".join(out)


def report(title: str, seed: int | None, problems: list[str], oplog: OpLog | None,
           mounts: Iterable = (), needles: Iterable[str] = (), ops: int = 200) -> str:
    """The failure message of a tier: seed, problems, op log, mount logs."""
    needles = list(needles)
    parts = [f"{title}: {len(problems)} problem(s)"
             + (f" with seed {seed} (replay: the tier's SEEDS variable ={seed})"
                if seed is not None else ""),
             *[f"  - {problem}" for problem in problems[:60]]]
    if len(problems) > 60:
        parts.append(f"  ... and {len(problems) - 60} more")
    if oplog is not None:
        moments = [float(match[1]) for problem in problems
                   if (match := re.match(r"t=([0-9.]+) ", problem))]
        parts.append(oplog.dump(ops, around=moments))
    for mount in mounts:
        parts.append(log_lines(mount, needles))
    return "\n".join(parts)


def names_in(problems: Iterable[str]) -> list[str]:
    """Base names of the files the problems are about (to pick their mount log lines)."""
    found = []
    for problem in problems:
        for word in re.findall(r"(?:dump|images|template|snippets|private|import)/[\w.\-/]+"
                               r"|vzdump-[\w.\-]+", problem):
            base = word.rstrip(":,").rsplit("/", 1)[-1]
            if base and base not in found:
                found.append(base)
    return found


# -- the Proxmox-like parallel workload (stress and crash-point tiers) ----------------------------


def pick_size(rng: random.Random, part: int) -> int:
    """Mostly whole parts and sizes next to part boundaries: files that end exactly at a part
    boundary were the ones that went missing."""
    roll = rng.random()
    if roll < 0.35:
        return rng.choice([part, 2 * part, 3 * part, 2 * part, 3 * part])
    if roll < 0.8:
        return rng.choice(boundary_sizes(part))
    return rng.randrange(0, 4 * part)


@dataclass(eq=False)
class File:
    """A file one writer owns. ``data`` is what it must hold once its writer let go of it; the
    other fields say what of it the file system has acknowledged (for the crash-point tier)."""

    owner: int
    name: str  # relative to the mountpoint; changes when a rename returned
    data: bytes
    temporary: str | None = None  # the final name a temporary name (.dat, .tmp.N) goes to
    lock: threading.Lock = field(default_factory=threading.Lock)
    gone: bool = False  # unlink returned
    uncertain: bool = False  # an operation failed outside a crash: the content is unknown
    stable: bytes | None = None  # content as of the last close() that returned
    writing: bool = False  # open for a rewrite that has not been closed
    acked: int = 0  # bytes of ``data`` acknowledged by write() since the open
    patch: tuple[int, int] | None = None  # (offset, length) a rewrite in place changes
    pending: str = ""  # the call in progress: open, write, close, cp, rename:<new>, unlink


class Run:
    """Shared state of one seed's run of the workload against one mount."""

    def __init__(self, seed: int, root: Path, tmp_path: Path, *, part: int, jobs: int,
                 oplog: OpLog | None = None):
        self.seed = seed
        self.root = root
        self.tmp_path = tmp_path
        self.part = part
        self.jobs = jobs
        self.oplog = oplog or OpLog()
        self.lock = threading.Lock()
        self.published: list[File] = []  # closed files readers may read
        self.recent: deque[File] = deque(maxlen=8)  # just closed: the mount uploads them now
        self.problems: list[str] = []
        self.stop = threading.Event()  # readers stop
        self.killed = threading.Event()  # the mount is being killed: errors are expected
        self.reads = 0
        self.bytes_written = 0
        self.writers: list[Writer] = []
        self.on_step = None  # called with (writer, op, file) after each call that returned

    def fail(self, text: str) -> None:
        with self.lock:
            self.problems.append(f"t={self.oplog.now():.3f} {text}")

    def publish(self, file: File) -> None:
        with self.lock:
            if file not in self.published:
                self.published.append(file)
            self.recent.append(file)

    def path(self, name: str) -> Path:
        return self.root / name

    def files(self) -> list[File]:
        return [file for writer in self.writers for file in writer.owned]

    def expected(self) -> tuple[dict[str, bytes], set[str]]:
        """name -> content of every file after a run without crash; names of unknown ones."""
        expected, unknown = {}, set()
        for file in self.files():
            if file.gone:
                continue
            if file.uncertain:
                unknown.add(file.name)
            else:
                expected[file.name] = file.data
        return expected, unknown

    def start(self, writers: int, readers: int) -> list[threading.Thread]:
        self.writers = [Writer(self, number) for number in range(writers)]
        # Daemon threads: an interrupted test run must not wait for them forever.
        threads = [threading.Thread(target=writer, name=writer.who, daemon=True)
                   for writer in self.writers]
        threads += [threading.Thread(target=reader, args=(self, n), name=f"r{n}", daemon=True)
                    for n in range(readers)]
        for thread in threads:
            thread.start()
        return threads

    def wait(self, threads: list[threading.Thread], deadline: float | None = None,
             on_hang=None) -> bool:
        """Wait for the writers, then stop the readers. If the writers are not done within
        ``deadline`` seconds: a HANG problem listing the calls that never returned, then
        ``on_hang()`` (which kills the mount, so that every call returns) and the wait goes on.
        Returns False after a hang."""
        writers = [thread for thread in threads if thread.name.startswith("w")]
        end = None if deadline is None else time.monotonic() + deadline
        for thread in writers:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        hung = any(thread.is_alive() for thread in writers)
        if hung:
            stuck = self.oplog.running()
            self.fail(f"HANG: the writers were not done after {deadline:.0f} s; "
                      f"{len(stuck)} call(s) never returned:\n      "
                      + "\n      ".join(stuck))
            if on_hang is not None:
                on_hang()
            for thread in writers:
                thread.join(60)
        self.stop.set()
        for thread in threads:
            thread.join(60)
        return not hung


class Killed(Exception):
    """The mount was killed under this writer: it stops."""


class Writer:
    """One writer thread: a job list drawn from the seed, on files only it changes."""

    JOBS: ClassVar[list[tuple[str, int]]] = [
        ("vzdump", 5), ("archive", 3), ("image", 3), ("iso", 1), ("notes", 1), ("overwrite", 2),
        ("patch", 2), ("rename", 1), ("unlink", 1)]

    def __init__(self, run: Run, number: int):
        self.run = run
        self.number = number
        self.who = f"w{number}"
        self.rng = random.Random(run.seed * 7919 + number)
        self.part = run.part
        self.owned: list[File] = []
        self.current: File | None = None  # what the job in progress changes
        self.serial = 0

    def step(self, file: File | None, op: str, detail: str, fn, *args):
        """One call, in the op log; ``file.pending`` says it runs until it returned."""
        if self.run.killed.is_set() and op != "close":
            raise Killed(op)
        if file is not None:
            file.pending = op
        result = self.run.oplog.call(self.who, op.split(":")[0], detail, fn, *args)
        if file is not None:
            file.pending = ""
        if self.run.on_step is not None:
            self.run.on_step(self, op, file)
        return result

    def data(self, size: int, head: bytes = b"") -> bytes:
        self.serial += 1
        return payload(self.run.seed * 1_000_003 + self.number * 10_007 + self.serial, size, head)

    def write_file(self, file: File, data: bytes, flags: int = os.O_CREAT | os.O_TRUNC) -> None:
        """open / write in chunks / close, each call in the op log and tracked on ``file``."""
        name = file.name
        sizes = chunk_sizes(self.rng)
        fd = self.step(file, "open", f"{name} flags={flags:#o}", os.open, self.run.path(name),
                       os.O_WRONLY | flags, 0o644)
        file.writing, file.acked, file.data = True, 0, data
        # One op-log entry for all the write() calls of the file (the tail stays readable);
        # file.acked follows every call that returned.
        entry = self.run.oplog.start(self.who, "write", f"{name} [0, +{len(data)}) in write()s "
                                     f"of ~{sizes[1]} bytes")
        try:
            view = memoryview(data)
            pieces = iter(sizes)
            while file.acked < len(data):
                if self.run.killed.is_set():
                    raise Killed("write")
                file.pending = "write"
                written = os.write(fd, view[file.acked:file.acked + next(pieces)])
                file.pending = ""
                file.acked += written
                self.run.bytes_written += written
                if self.run.on_step is not None:
                    self.run.on_step(self, "write", file)
        except BaseException as exc:
            what = (errno.errorcode.get(exc.errno, exc.errno) if isinstance(exc, OSError)
                    else type(exc).__name__)
            self.run.oplog.end(entry, f"{what} after {file.acked} bytes acknowledged")
            raise
        else:
            self.run.oplog.end(entry, f"{file.acked} bytes ok")
        finally:
            self.step(file, "close", name, os.close, fd)
        file.writing, file.stable = False, data

    def cp_file(self, file: File, data: bytes) -> None:
        """`cp` from a local file (its own open/copy/close): acknowledged only when it exits."""
        source = self.run.tmp_path / f"src-{self.who}-{self.serial}"
        source.write_bytes(data)
        file.writing, file.acked, file.data = True, 0, data

        def cp():
            result = subprocess.run(["cp", str(source), str(self.run.path(file.name))],
                                    check=False, capture_output=True, text=True, timeout=300)
            if result.returncode:
                raise OSError(errno.EIO, f"cp exited {result.returncode}: "
                                         f"{result.stderr.strip()}")

        try:
            self.step(file, "cp", f"{file.name} {len(data)} bytes", cp)
        finally:
            source.unlink()
        file.writing, file.acked, file.stable = False, len(data), data
        self.run.bytes_written += len(data)

    def rename(self, file: File, new: str) -> None:
        self.step(file, f"rename:{new}", f"{file.name} -> {new}", os.rename,
                  self.run.path(file.name), self.run.path(new))
        file.name = new
        file.temporary = None

    def new_file(self, name: str, data: bytes, final: str | None = None) -> File:
        # Being written from now on: a kill before its first open returned leaves nothing
        # that must exist.
        file = File(self.number, name, data, temporary=final, writing=True)
        self.owned.append(file)
        self.current = file
        return file

    # -- jobs ---------------------------------------------------------------------------------

    def job_vzdump(self, j: int) -> None:
        """vzdump: X.vma.dat with a zstd header, closed, renamed to X.vma.zst."""
        base = (f"dump/vzdump-qemu-{1000 + self.number * 100 + j}-"
                f"2026_11_21-10_{self.number:02d}_{j:02d}")
        data = self.data(pick_size(self.rng, self.part), ZSTD_MAGIC)
        file = self.new_file(f"{base}.vma.dat", data, final=f"{base}.vma.zst")
        with file.lock:
            self.write_file(file, data)
            self.rename(file, f"{base}.vma.zst")
        self.run.publish(file)

    def job_archive(self, j: int) -> None:
        """An archive written under its final name (no temporary name)."""
        name = f"dump/vzdump-lxc-{2000 + self.number * 100 + j}-2026_11_21-11_00_00.tar.zst"
        data = self.data(pick_size(self.rng, self.part), ZSTD_MAGIC)
        file = self.new_file(name, data)
        with file.lock:
            self.write_file(file, data)
        self.run.publish(file)

    def job_image(self, j: int) -> None:
        vmid = 3000 + self.number * 100 + j
        self.step(None, "mkdir", f"images/{vmid}", os.makedirs, self.run.path(f"images/{vmid}"),
                  0o755, True)
        data = self.data(pick_size(self.rng, self.part))
        file = self.new_file(f"images/{vmid}/vm-{vmid}-disk-0.raw", data)
        with file.lock:
            if self.rng.random() < 0.5:
                self.cp_file(file, data)
            else:
                self.write_file(file, data)
        self.run.publish(file)

    def job_iso(self, j: int) -> None:
        """A download: `<name>.tmp_dwnl.<pid>`, renamed when complete."""
        name = f"template/iso/w{self.number}-{j}.iso"
        data = self.data(pick_size(self.rng, self.part))
        file = self.new_file(f"{name}.tmp_dwnl.{40000 + self.number * 100 + j}", data, final=name)
        with file.lock:
            self.write_file(file, data, os.O_CREAT | os.O_EXCL)
            self.rename(file, name)
        self.run.publish(file)

    def job_notes(self, j: int) -> None:
        """Notes: `<name>.tmp.<pid>`, renamed over the final name."""
        name = f"dump/vzdump-qemu-{1000 + self.number * 100 + j}-notes-{j}.vma.zst.notes"
        data = self.data(self.rng.choice([0, 1, 17, 300, 4096]))
        file = self.new_file(f"{name}.tmp.{50000 + self.number * 100 + j}", data, final=name)
        with file.lock:
            self.write_file(file, data, os.O_CREAT | os.O_EXCL)
            self.rename(file, name)
        self.run.publish(file)

    def pick_owned(self) -> File | None:
        alive = [file for file in self.owned if not file.gone and not file.uncertain]
        self.current = self.rng.choice(alive) if alive else None
        return self.current

    def job_overwrite(self, j: int) -> None:
        """O_TRUNC and a new content of another size."""
        file = self.pick_owned()
        if file is None:
            return self.job_archive(j)
        data = self.data(pick_size(self.rng, self.part), file.data[:4])
        with file.lock:
            self.write_file(file, data)
        self.run.publish(file)

    def job_patch(self, j: int) -> None:
        """Rewrite a range across a part boundary of a closed file (O_RDWR, no truncation)."""
        file = self.pick_owned()
        if file is None or len(file.data) < 2:
            return self.job_image(j)
        size, part = len(file.data), self.part
        boundary = self.rng.choice([b for b in (part, 2 * part, 3 * part) if b < size]
                                   or [size // 2])
        offset = max(0, boundary - self.rng.choice([1, 4096, MiB]))
        length = min(size - offset, self.rng.choice([2, 8192, MiB + 3, 2 * MiB]))
        new = self.data(length)
        changed = file.data[:offset] + new + file.data[offset + length:]
        with file.lock:
            fd = self.step(file, "open", f"{file.name} O_RDWR", os.open,
                           self.run.path(file.name), os.O_RDWR)
            file.writing, file.patch, file.data = True, (offset, length), changed
            try:
                self.step(file, "write", f"{file.name} pwrite [{offset}, +{length})",
                          write_all, fd, new, None, offset)
            finally:
                self.step(file, "close", file.name, os.close, fd)
            file.writing, file.patch, file.stable = False, None, changed
        self.run.publish(file)

    def job_rename(self, j: int) -> None:
        file = self.pick_owned()
        if file is None:
            return self.job_vzdump(j)
        with file.lock:
            directory, _, base = file.name.rpartition("/")
            self.rename(file, f"{directory}/r{j}-{base}" if directory else f"r{j}-{base}")
        self.run.publish(file)

    def job_unlink(self, j: int) -> None:
        file = self.pick_owned()
        if file is None:
            return self.job_notes(j)
        with file.lock:
            self.step(file, "unlink", file.name, os.unlink, self.run.path(file.name))
            file.gone = True

    def __call__(self) -> None:
        kinds, weights = zip(*self.JOBS)
        for j in range(self.run.jobs):
            kind = self.rng.choices(kinds, weights)[0]
            self.current = None
            try:
                getattr(self, f"job_{kind}")(j)
            except Killed:
                return
            except Exception as exc:  # noqa: BLE001 - reported; the run goes on
                if self.run.killed.is_set():
                    self.run.oplog.note(self.who, f"stopped by the kill: {exc!r}")
                    return
                what = (f"{errno.errorcode.get(exc.errno, exc.errno)} {exc}"
                        if isinstance(exc, OSError) else repr(exc))
                self.run.fail(f"{self.who} job {j} ({kind}) on "
                              f"{self.current.name if self.current else '?'}: {what}")
                if self.current is not None:
                    self.current.uncertain = True  # its content is unknown now
                if isinstance(exc, OSError) and exc.errno in MOUNT_GONE:
                    return


def reader(run: Run, number: int) -> None:
    """Re-read closed files (mostly ones just closed) and compare them with the model."""
    rng = random.Random(run.seed * 104_729 + 500 + number)
    who = f"r{number}"
    buffer = AlignedBuffer(MiB)
    try:
        while not run.stop.is_set() and not run.killed.is_set():
            with run.lock:
                pool = (list(run.recent) if run.recent and rng.random() < 0.7
                        else list(run.published))
            pool = [file for file in pool if not file.gone and not file.uncertain]
            if not pool:
                time.sleep(0.01)
                continue
            file = rng.choice(pool)
            if not file.lock.acquire(blocking=False):
                time.sleep(0.002)
                continue
            try:
                if not (file.gone or file.uncertain or file.writing):
                    read_one(run, who, rng, file, buffer)
            except OSError:  # the mount is gone (MOUNT_GONE): nothing left to read
                return
            finally:
                file.lock.release()
    finally:
        buffer.close()


def read_one(run: Run, who: str, rng: random.Random, file: File, buffer: AlignedBuffer) -> None:
    """One whole or ranged read, O_DIRECT (aligned) or buffered, checked against the model."""
    direct = rng.random() < 0.75
    want = file.data
    how = "O_DIRECT" if direct else "buffered"
    offset, length = 0, None
    if want and rng.random() < 0.35:
        offset = rng.randrange(0, len(want))
        if direct:
            offset -= offset % DIRECT_ALIGN
        length = rng.choice([1, 4096, MiB, 3 * MiB + 5, run.part])
    what = (f"{file.name} [{offset}, +{length})" if length is not None
            else f"{file.name} whole ({len(want)} bytes)")
    entry = run.oplog.start(who, "read", f"{what} {how}")
    try:
        fd = os.open(run.path(file.name), os.O_RDONLY | (os.O_DIRECT if direct else 0))
        try:
            got = read_range(fd, offset, length, direct=direct, buffer=buffer)
        finally:
            os.close(fd)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        run.oplog.end(entry, code)
        if not run.killed.is_set():
            run.fail(f"{who}: {how} read of {what} of a closed file failed: {code} "
                     f"{exc.strerror}")
        if exc.errno in MOUNT_GONE:
            raise
        return
    expected = want[offset:] if length is None else want[offset:offset + length]
    run.reads += 1
    if got == expected:
        run.oplog.end(entry, f"{len(got)} bytes ok")
        return
    run.oplog.end(entry, f"MISMATCH {len(got)} bytes")
    if not run.killed.is_set():
        run.fail(f"{who}: {how} read of {what} returned wrong data: "
                 + describe_difference(got, expected, run.part))
