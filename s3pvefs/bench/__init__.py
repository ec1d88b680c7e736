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

This package's face is only the subcommand's flags (`add_parser`), which every CLI start
builds; the harness behind them is imported when `s3pvefs bench` runs:

  command     the subcommand: arguments, the local S3, the run, the printed report
  runner      what the workloads share: the work directory, the mounts, the direct client
  workloads   W1, W2, W4, W5, W6          showconfig  W3 and the archives it reads
  baseline    the direct S3 client        mounts      a mount process to measure
  measure     dd, progress, CPU and request counts
  profiling   --profile                   report      results, the table and the header
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


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
    bench.add_argument("--workloads", metavar="W1,W2,...", default=None,
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
    bench.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from .command import cmd_bench

    return cmd_bench(args)
