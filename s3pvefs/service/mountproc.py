"""`s3pvefs mount` as a child process: started, waited for until its mountpoint shows, and
always unmounted and reaped. `s3pvefs bench` measures its mounts through it, and the test suite
(tests/mounting.py) mounts through it too, so both start and stop a mount the same way."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from s3pvefs.errors import S3PveFsError
from s3pvefs.service.control import control_socket_path
from s3pvefs.service.preflight import is_mounted

MOUNT_TIMEOUT = 60.0  # seconds for a mount to show in /proc/self/mountinfo
EXIT_TIMEOUT = 600.0  # a clean unmount uploads what is left first
# The folder that holds this s3pvefs package: a child imports the same code as its parent,
# from a checkout too.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]


class MountProcessError(S3PveFsError):
    """The mount process exited or did not mount in time; the message ends with its log."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with PACKAGE_PARENT first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    paths = env.get("PYTHONPATH", "").split(os.pathsep)
    if os.fspath(PACKAGE_PARENT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.fspath(PACKAGE_PARENT), *paths]))
    return env


class MountProcess:
    """One `python -m s3pvefs mount ARGS PATH` process, its output (stdout and stderr) appended
    to ``output``."""

    def __init__(self, path: Path, args: list[str], output: Path, env: dict[str, str],
                 mount_timeout: float = MOUNT_TIMEOUT, exit_timeout: float = EXIT_TIMEOUT):
        self.path = path
        self.args = args
        self.output = output
        self.env = env
        self.mount_timeout = mount_timeout
        self.exit_timeout = exit_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "s3pvefs", "mount", *self.args, os.fspath(self.path)]

    def start(self) -> MountProcess:
        """Start it and return once it serves (the mountpoint shows and its admin socket
        exists); MountProcessError (and nothing left running) if it exits or does not mount
        within ``mount_timeout``."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.mount_timeout
        while not self._serving():
            if self.process.poll() is not None:
                raise MountProcessError(f"s3pvefs mount exited with "
                                        f"{self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise MountProcessError(f"s3pvefs did not mount within "
                                        f"{self.mount_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def _serving(self) -> bool:
        """Mounted, and its admin socket made: the kernel mount appears before the socket
        does, and callers ask for status (or sync) right away."""
        return is_mounted(self.path) and control_socket_path(self.path).exists()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.output.read_text(errors="replace")
        return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL and reap it, and detach what is left of its mount."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._detach()

    def stop(self) -> None:
        """Unmount (the process uploads what is left, for up to ``exit_timeout``) and reap;
        kill it if it does not exit. Never leaves a mount or a process behind, whatever state
        it is in."""
        process = self.process
        if process is None:
            return
        if process.poll() is None and is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", os.fspath(self.path)], check=False,
                           stderr=subprocess.DEVNULL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.exit_timeout)
        if process.poll() is None:
            self.kill()
        self._detach()

    def _detach(self) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", os.fspath(self.path)], check=False,
                           stderr=subprocess.DEVNULL)
