"""What the workloads measure with: dd with a progress bar, commands, a process's CPU time and
I/O, and the difference of two request-counter snapshots."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from s3pvefs.errors import S3PveFsError

KiB, MiB, GiB = 1024, 1024**2, 1024**3
COMMAND_TIMEOUT = 300.0  # short commands (tar, zstd, ...)
SLOWEST_RATE = 1 * MiB  # bytes/s: a transfer slower than this is given up (bounds every dd)


class BenchError(S3PveFsError):
    """The benchmark cannot go on (a workload failed, a tool is missing, ...)."""


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


def peak_rss(pid: int) -> int:
    """The largest resident set a process has had (VmHWM), in bytes; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_dd(label: str, source: Path | str, target: Path | str, total: int) -> float:
    """dd bs=1M from ``source`` to ``target`` with a progress bar; seconds it took."""
    seconds, _done, _complete = dd(label, source, target, total, transfer_timeout(total))
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


def transfer_timeout(size: int) -> float:
    """How long moving ``size`` bytes may take before it counts as stuck."""
    return 120.0 + size / SLOWEST_RATE



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

