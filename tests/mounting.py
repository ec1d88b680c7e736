"""Runs `s3pvefs mount` for real in a subprocess and always unmounts and reaps it; runs the
admin commands (`s3pvefs sync`, `status`, ...) the way an admin does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from s3pvefs.service.mountproc import MountProcess, child_env

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = REPO,
            timeout: float = 150) -> subprocess.CompletedProcess[str]:
    """`python -m s3pvefs ARGS`, with its output as text (the timeout only stops a hang)."""
    return subprocess.run([sys.executable, "-m", "s3pvefs", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=child_env(env),
                          cwd=cwd, stdin=subprocess.DEVNULL)


class Mount(MountProcess):
    """One s3pvefs process serving one mountpoint (s3pvefs.service.mountproc starts and stops it),
    with what a test does to it as an admin would."""

    def __init__(self, path: Path, args: list[str], log_path: Path, env: dict[str, str]):
        super().__init__(path, args, log_path, env, MOUNT_TIMEOUT, EXIT_TIMEOUT)
        self.log_path = log_path

    def cli(self, *args: str | Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        """An admin command in this mount's environment."""
        return run_cli(*args, env=self.env, timeout=timeout)

    def status(self) -> dict:
        """`s3pvefs status --json` of this mount."""
        return json.loads(self.cli("status", "--json", self.path).stdout)

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
                      self.tmp_path / f"mount{self.count}.log", child_env(env))
        self.mounts.append(mount)
        return mount.start()

    def stop_all(self) -> None:
        for mount in self.mounts:
            mount.stop()
