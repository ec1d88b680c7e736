"""`s3pvefs bench`: a small real run (local moto, real mounts) and the report's pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3pvefs.bench import command, measure, profiling, report
from s3pvefs.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 240  # seconds; the run below usually takes about 15


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0,
                    reason="needs /dev/fuse and root")
def test_small_run_reports_mount_baseline_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "s3pvefs", "bench", "--size", "32MiB", "--json", str(out),
         "--workloads", "W1,W3,W5", "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("workload"))
    assert "ratio" in header

    figures = json.loads(out.read_text())
    assert set(figures["workloads"]) == {"W1", "W3", "W5"}
    for key, workload in figures["workloads"].items():
        assert "error" not in workload, (key, workload)
        complete = [m for m in workload["metrics"]
                    if m["mount"] is not None and m["baseline"] is not None
                    and m["ratio"] is not None]
        assert complete, (key, workload["metrics"])
    assert figures["server"]["local"] is True and figures["server"]["moto_version"]
    assert {"nproc", "memory_bytes", "kernel", "python"} <= set(figures["machine"])
    assert figures["settings"]["size_bytes"] == 32 * 1024 * 1024

    w1 = {m["name"]: m for m in figures["workloads"]["W1"]["metrics"]}
    assert w1["bytes uploaded per source byte"]["mount"] > 0  # counted, not estimated
    assert w1["server-side copy requests (must be 0)"]["mount"] == 0
    # Only its own mountpoints and cache directories were used, and they are gone.
    assert not any(p.name.startswith("s3pvefs-bench-") for p in tmp_path.iterdir())


def test_table_has_mount_baseline_and_ratio_columns() -> None:
    result = report.WorkloadResult("W2", "direct ranged GETs")
    result.add("cold sequential read", "MiB/s", 50.0, 100.0, "higher")
    result.add("CPU seconds per GiB (mount)", "s/GiB", 3.0, None)
    lines = report.format_table({"workloads": {"W2": result.as_dict()}}).splitlines()
    assert lines[0].split() == ["workload", "figure", "unit", "mount", "baseline", "ratio",
                                "better"]
    row = next(line for line in lines if "cold sequential read" in line)
    assert row.split()[-2:] == ["0.50", "higher"]
    row = next(line for line in lines if "CPU seconds" in line)
    assert row.split()[-2:] == ["-", "-"]


def test_counter_deltas_leave_out_what_came_before() -> None:
    before = {"requests": {"PutObject": 7, "ListObjectsV2": 2}, "bytes_sent": 100,
              "bytes_received": 5}
    after = {"requests": {"PutObject": 7, "ListObjectsV2": 3, "GetObject": 2},
             "bytes_sent": 100, "bytes_received": 2053}
    d = measure.delta(after, before)
    assert d == {"requests": {"GetObject": 2, "ListObjectsV2": 1}, "bytes_sent": 0,
                 "bytes_received": 2048}
    assert measure.total_requests(d) == 3
    assert measure.requests_of(d, "CopyObject", "UploadPartCopy") == 0


def test_profile_summary_counts_work_not_waits(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "<module> (s3pvefs/__main__.py:7);_pwrite (/x/s3pvefs/blockcache.py:90) 30\n"
        "<module> (s3pvefs/__main__.py:7);get_events (/x/trio/_core/_io_epoll.py:1) 500\n"
        "<module> (s3pvefs/__main__.py:7);read (/x/s3pvefs/core.py:10);"
        "_pread (/x/s3pvefs/blockcache.py:80) 10\n"
    )
    summary = profiling.summarize_profile(raw)
    assert summary["samples"] == 40
    assert summary["self"][0] == ["_pwrite (s3pvefs/blockcache.py)", 30]
    assert ["read (s3pvefs/core.py)", 10] in summary["s3pvefs_inclusive"]
    assert all("__main__" not in name for name, _ in summary["s3pvefs_inclusive"])


def test_workload_list_is_checked() -> None:
    assert command.parse_workloads("w3, W1,W3") == ["W1", "W3"]
    with pytest.raises(ConfigError):
        command.parse_workloads("W7")
