"""Runs `s3pvefs mount` for real in a subprocess and always unmounts and reaps it; runs the
admin commands (`s3pvefs sync`, `status`, ...) the way an admin does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parents[1]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment plus ``env``, importing s3pvefs from this checkout."""
    full = {**os.environ, **(env or {})}
    paths = full.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO) not in paths:
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), *paths]))
    return full


def run_cli(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = REPO,
            timeout: float = 150) -> subprocess.CompletedProcess[str]:
    """`python -m s3pvefs ARGS`, with its output as text (the timeout only stops a hang)."""
    return subprocess.run([sys.executable, "-m", "s3pvefs", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=cli_env(env),
                          cwd=cwd, stdin=subprocess.DEVNULL)


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)


class Mount:
    """One s3pvefs process serving one mountpoint."""

    def __init__(self, path: Path, args: list[str], log_path: Path, env: dict[str, str]):
        self.path = path
        self.args = args
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mount:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "s3pvefs", "mount", *self.args, str(self.path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.path):
            if self.process.poll() is not None:
                raise RuntimeError(f"s3pvefs exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"s3pvefs did not mount within {MOUNT_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def cli(self, *args: str | Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        """An admin command in this mount's environment."""
        return run_cli(*args, env=self.env, timeout=timeout)

    def status(self) -> dict:
        """`s3pvefs status --json` of this mount."""
        return json.loads(self.cli("status", "--json", self.path).stdout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def unmount(self) -> int:
        """Unmount like an admin (fusermount3 -u); returns the process's exit code."""
        subprocess.run(["fusermount3", "-u", str(self.path)], check=True)
        return self.wait()

    def terminate(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"s3pvefs did not exit:\n{self.log()}") from None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)

    def stop(self) -> None:
        """Teardown: never leave a mount or a process behind, whatever state the test left."""
        if self.process is None:
            return
        if self.process.poll() is None and is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], check=False,
                           stderr=subprocess.DEVNULL)
            try:
                self.process.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.kill()
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)


class MountFactory:
    def __init__(self, tmp_path: Path, endpoint_url: str, bucket: str):
        self.tmp_path = tmp_path
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.mounts: list[Mount] = []
        self.count = 0

    def options(self, cache_dir: Path, prefix: str = "pve/") -> list[str]:
        return [
            "--endpoint-url", self.endpoint_url, "--bucket", self.bucket, "--prefix", prefix,
            "--cache-dir", str(cache_dir), "--cache-size", "64MiB",
            "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--max-attempts", "2",
            "--log-level", "debug",
        ]

    def __call__(self, *extra: str, cache_dir: Path | None = None, prefix: str = "pve/",
                 mountpoint: Path | None = None, env: dict[str, str] | None = None) -> Mount:
        """Mount; each call gets a fresh, empty cache directory unless one is given."""
        self.count += 1
        cache_dir = cache_dir or self.tmp_path / f"cache{self.count}"
        mountpoint = mountpoint or self.tmp_path / f"mnt{self.count}"
        mount = Mount(mountpoint, [*self.options(cache_dir, prefix), *extra],
                      self.tmp_path / f"mount{self.count}.log", cli_env(env))
        self.mounts.append(mount)
        return mount.start()

    def stop_all(self) -> None:
        for mount in self.mounts:
            mount.stop()
