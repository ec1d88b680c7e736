"""--profile: each mount runs under py-spy (else pyinstrument), and a py-spy profile is summed
up as the hottest functions."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .measure import BenchError


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


def profiled(tool: str, output: Path, command: list[str]) -> list[str]:
    """``command`` (`python -m s3pvefs ...`) run under ``tool``, writing its profile to
    ``output``."""
    if tool == "py-spy":
        return [shutil.which("py-spy") or _beside_python("py-spy"), "record",
                "--output", os.fspath(output), "--format", "raw", "--rate", "100",
                "--nonblocking", "--", *command]
    python, dash_m, *module_and_args = command
    return [python, "-m", "pyinstrument", "--renderer", "text", "--outfile", os.fspath(output),
            dash_m, *module_and_args]


def profiled_pid(tool: str, pid: int) -> int:
    """The python process that runs the profiled command ``pid`` started (py-spy runs it as
    its child; pyinstrument runs in it)."""
    if tool != "py-spy":
        return pid
    for _ in range(100):
        children = _children(pid)
        if children:
            return children[0]
        time.sleep(0.05)
    raise BenchError("cannot find the mount process under py-spy")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(x) for x in fh.read().split())
    return found


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


