"""What the workloads share in one run: the configuration and the run's prefix, the work
directory, the direct client, the mounts (each unmounted and reaped), and the source data."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .baseline import DirectClient
from .measure import MiB, Progress, say, transfer_timeout
from .mounts import BenchMount
from .profiling import profiler, summarize_profile

if TYPE_CHECKING:
    from s3pvefs.config.settings import Config

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DIRECT_PART_SIZE = 16 * MiB
DIRECT_CONCURRENCY = 8


class Bench:
    """One run's shared state; the workloads (workloads.py, showconfig.py) take it."""

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
        # The direct client as its users run it (boto3's transfers, `aws s3 cp`): its usual
        # part size and parallelism, whatever the mount is configured with.
        self.part_size = DIRECT_PART_SIZE
        self.concurrency = DIRECT_CONCURRENCY
        self.peak_rss: dict[str, int] = {}  # mount label -> its peak resident set, bytes
        self.client = DirectClient(config)
        self.mounts: list[BenchMount] = []
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

    def mount(self, label: str) -> BenchMount:
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
        mount = BenchMount(label, options, self.workdir, self.env, profile)
        self.mounts.append(mount)
        say(f"  mounting ({label}, empty cache{', under ' + profile[0] if profile else ''})")
        return mount.start()

    def unmount(self, mount: BenchMount) -> None:
        self.peak_rss[mount.label] = mount.peak_rss()
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

    def clear_dump(self) -> None:
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

    def read_time_limit(self, size: int) -> float:
        return self.time_limit if self.time_limit is not None else transfer_timeout(size)
