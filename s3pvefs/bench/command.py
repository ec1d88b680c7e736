"""`s3pvefs bench` itself: checks its arguments and the machine, starts a local moto server
when no endpoint is given, runs the chosen workloads one by one, and prints the report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

from s3pvefs import __version__
from s3pvefs.config.file import load_config
from s3pvefs.config.values import human_size, parse_size
from s3pvefs.errors import ConfigError, print_error
from s3pvefs.service.embedded import LOCAL_KEY, start_local_s3
from s3pvefs.service.mountproc import MountProcessError, child_env

from .measure import BenchError, MiB, say
from .profiling import profiler
from .report import (
    ALL_WORKLOADS,
    TITLES,
    WorkloadResult,
    commit,
    filesystem,
    format_header,
    format_profiles,
    format_table,
    machine,
)
from .runner import Bench
from .showconfig import w3
from .workloads import w1, w2, w4, w5, w6

WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6}
# moto reads a whole object for every ranged GET: reading 1 GiB in 1 MiB ranges takes it ~12 min.
LOCAL_READ_TIME_LIMIT = 180.0


def parse_workloads(text: str | None) -> list[str]:
    if text is None:
        return list(ALL_WORKLOADS)
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
    try:
        size = parse_size(args.size, "--size")
        if size < MiB:
            raise ConfigError("--size: at least 1 MiB")
        workloads = parse_workloads(args.workloads)
        _preflight(args.profile)
        config = load_config(args.config, {"endpoint_url": args.endpoint_url,
                                           "bucket": args.bucket, "region": args.region})
    except ConfigError as exc:
        print_error(str(exc))
        return 2
    if config.endpoint_url is not None and config.bucket is None:
        print_error("--endpoint-url needs --bucket")
        return 2

    started = time.perf_counter()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    host = machine()  # before the run: its load average shows what else was running
    env = child_env()
    local = None
    server: dict[str, Any] = {"local": False}
    workdir = Path(tempfile.mkdtemp(prefix="s3pvefs-bench-", dir=args.work_dir))
    report: dict[str, Any] = {}
    failed = False
    try:
        if config.endpoint_url is None and config.bucket is None:
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
            results = run_workloads(bench, workloads)
        failed = any(r.error for r in results.values())
        report = {
            "s3pvefs_version": __version__,
            "commit": commit(),
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
                "work_dir_filesystem": filesystem(workdir),
                "read_time_limit_seconds": bench.time_limit,
            },
            "workloads": {key: r.as_dict() for key, r in results.items()},
        }
        if bench.profiles:
            report["profiles"] = bench.profiles
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except (BenchError, ConfigError, OSError) as exc:
        print_error(str(exc))
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


def run_workloads(bench: Bench, workloads: list[str]) -> dict[str, WorkloadResult]:
    """Each workload in turn; one that fails is reported as failed and the next one runs."""
    results: dict[str, WorkloadResult] = {}
    baselines = {
        "W1": f"direct multipart upload, {human_size(bench.part_size)} parts, "
              f"{bench.concurrency} in parallel",
        "W2": f"direct ranged GETs of {human_size(bench.part_size)}, {bench.concurrency} in parallel",
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
            WORKLOADS[key](bench, result)
        except Exception as exc:  # one workload's failure (S3 errors included) ends it only
            result.error = str(exc) if isinstance(exc, (BenchError, MountProcessError, OSError, ConfigError)) \
                else f"{type(exc).__name__}: {exc}"
            say(f"  {key} FAILED: {exc}")
            for mount in list(bench.mounts):
                with contextlib.suppress(Exception):
                    bench.unmount(mount)
        result.seconds = time.perf_counter() - started
        if bench.peak_rss.get(key):
            result.add("mount peak RSS", "MiB", bench.peak_rss[key] / MiB, None,
                       note="VmHWM of the mount process over the workload")
        say(f"  {key} done in {result.seconds:.1f} s")
    return results
