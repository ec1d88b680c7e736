"""A run's results and how they are shown: every figure with its baseline and their ratio, the
table and the header printed at the end, and what the JSON report says about the machine."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from s3pvefs.config.values import human_size
from s3pvefs.service.preflight import mount_points

from .measure import GiB, KiB

TITLES = {
    "W1": "vzdump stream",
    "W2": "restore",
    "W3": "show config",
    "W4": "listing",
    "W5": "small files",
    "W6": "FUSE overhead",
}
ALL_WORKLOADS = tuple(TITLES)


@dataclasses.dataclass
class Metric:
    name: str
    unit: str
    mount: float | None
    baseline: float | None
    better: str | None = None  # "lower", "higher" or None (informative)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.mount is None or self.baseline is None or self.baseline == 0:
            return None
        return self.mount / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "mount": self.mount,
                "baseline": self.baseline, "ratio": self.ratio, "better": self.better,
                "note": self.note}


@dataclasses.dataclass
class WorkloadResult:
    key: str
    baseline: str  # what the baseline is
    metrics: list[Metric] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.metrics.append(Metric(*args, **kwargs))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": TITLES[self.key], "baseline": self.baseline,
                               "seconds": round(self.seconds, 3),
                               "metrics": [m.as_dict() for m in self.metrics],
                               "details": self.details}
        if self.error:
            out["error"] = self.error
        return out


# -- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * KiB
    with contextlib.suppress(OSError, ValueError):
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
        info["loadavg_before_run"] = [float(x) for x in loadavg]
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", os.fspath(repo), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def filesystem(path: Path) -> str | None:
    """fstype of the mount that holds ``path``."""
    target = os.path.realpath(path)
    points = mount_points()
    holder = max((point for point in points
                  if target == point or target.startswith(point.rstrip("/") + "/")),
                 key=len, default=None)
    return None if holder is None else points[holder]


# -- the printed report -------------------------------------------------------------------------


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 10:
        return f"{int(value)}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(report: dict[str, Any]) -> str:
    rows = [("workload", "figure", "unit", "mount", "baseline", "ratio", "better")]
    for key, workload in report["workloads"].items():
        title = f"{key} {workload['title']}"
        if workload.get("error"):
            rows.append((title, f"FAILED: {workload['error'].splitlines()[0][:60]}",
                         "", "", "", "", ""))
            continue
        for i, metric in enumerate(workload["metrics"]):
            ratio = metric["ratio"]
            rows.append((title if i == 0 else "", metric["name"], metric["unit"],
                         _number(metric["mount"]), _number(metric["baseline"]),
                         "-" if ratio is None else f"{ratio:.2f}", metric["better"] or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {3, 4, 5}
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("ratio = mount / baseline; 'better' says which way is better. Baselines:")
    for key, workload in report["workloads"].items():
        lines.append(f"  {key}: {workload['baseline']}")
    return "\n".join(lines) + "\n"


def format_header(report: dict[str, Any]) -> str:
    m, s, settings = report["machine"], report["server"], report["settings"]
    server = s["endpoint"] + (f" (local moto {s.get('moto_version')})" if s.get("local") else "")
    memory = m.get("memory_bytes", 0) / GiB
    return (
        f"s3pvefs {report['s3pvefs_version']}"
        f"{' (' + report['commit'] + ')' if report.get('commit') else ''} bench, "
        f"size {human_size(settings['size_bytes'])}, part size {human_size(settings['part_size'])}, "
        f"upload concurrency {settings['upload_concurrency']}, "
        f"max connections {settings['max_connections']}, "
        f"cache {human_size(settings['cache_size'])}\n"
        f"machine: {m.get('nproc')} CPUs ({m.get('cpu', '?')}), {memory:.1f} GiB, "
        f"Linux {m.get('kernel')}, Python {m.get('python')}, load average before the run "
        f"{' '.join(str(x) for x in m.get('loadavg_before_run', []))}\n"
        f"server: {server}, bucket {s['bucket']}\n"
        f"run time: {report['seconds']:.0f} s\n"
    )


def format_profiles(profiles: dict[str, Any]) -> str:
    lines = []
    for label, record in profiles.items():
        lines.append(f"profile of the {label} mount ({record['tool']}): {record['file']}")
        if record.get("self"):
            samples = max(1, record.get("samples", 1))
            lines.append("  hottest functions (own samples):")
            for name, count in record["self"][:8]:
                lines.append(f"    {100 * count / samples:5.1f}%  {name}")
            lines.append("  s3pvefs functions (inclusive):")
            for name, count in record["s3pvefs_inclusive"][:6]:
                lines.append(f"    {100 * count / samples:5.1f}%  {name}")
    return "\n".join(lines) + "\n"
