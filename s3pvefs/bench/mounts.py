"""A mount to measure: `s3pvefs mount` in a subprocess (optionally under a profiler) on a fresh
mountpoint and cache directory, whose counters, CPU time and sync go over its admin socket."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from s3pvefs.service.control import ControlError, request
from s3pvefs.service.mountproc import MountProcess

from .measure import BenchError, cpu_seconds, peak_rss, say
from .profiling import profiled, profiled_pid


class BenchMount(MountProcess):
    """One `s3pvefs mount` process labelled after its workload, under ``workdir``."""

    def __init__(self, label: str, options: list[str], workdir: Path, env: dict[str, str],
                 profile: tuple[str, Path] | None):
        self.label = label
        self.cache_dir = workdir / f"cache-{label}"
        super().__init__(workdir / f"mnt-{label}",
                         [*options, "--cache-dir", os.fspath(self.cache_dir)],
                         workdir / f"mount-{label}.log", env)
        self.profile = profile  # (tool, output file)
        self.pid = 0  # the python process that serves the mount

    def command(self) -> list[str]:
        if self.profile is None:
            return super().command()
        tool, output = self.profile
        return profiled(tool, output, super().command())

    def start(self) -> BenchMount:
        super().start()
        assert self.process is not None
        self.pid = self.process.pid
        if self.profile is not None:
            self.pid = profiled_pid(self.profile[0], self.process.pid)
        return self

    def kill(self) -> None:
        say(f"s3pvefs bench: the {self.label} mount did not exit; killing it")
        assert self.process is not None
        if self.pid and self.pid != self.process.pid:  # the mount under py-spy
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        super().kill()

    def status(self) -> dict[str, Any]:
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

    def dirty_bytes(self) -> int:
        """What is not on S3 yet (0 when the mount does not answer: for progress bars)."""
        try:
            return int(self.status().get("dirty_bytes", 0))
        except Exception:
            return 0

    def sync(self, timeout: float) -> None:
        """Everything on S3 (what `s3pvefs sync MOUNTPOINT` does)."""
        try:
            answer = request(self.path, {"op": "sync", "path": "", "timeout": timeout},
                             timeout + 30.0)
        except ControlError as exc:
            raise BenchError(str(exc)) from None
        if not answer.get("ok"):
            raise BenchError(f"sync of {self.path} failed: {answer}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss(self) -> int:
        return peak_rss(self.pid)
