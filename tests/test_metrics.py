"""Metrics: the families of a sample (unit), and through a real mount (moto, behind the fault
proxy) what `s3pvefs status --prometheus` and the `[metrics] listen` endpoint show while the
server retries, answers, and then is gone: every figure is parsed back with prometheus_client's
own parser, as a Prometheus server would read it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import needs_fuse, object_bytes
from prometheus_client.parser import text_string_to_metric_families

from s3pvefs.config.values import parse_listen
from s3pvefs.errors import ConfigError, StoreKind
from s3pvefs.service.embedded import free_port
from s3pvefs.service.metrics import MetricsSample, families, render
from s3pvefs.service.mountproc import MountProcessError
from s3pvefs.store.objectstore import StoreStats

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "metrics.md"


def parsed(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def a_sample(stats: StoreStats, **figures) -> MetricsSample:
    base = {"dirty_files": 0, "dirty_bytes": 0, "oldest_dirty_age": 0.0,
            "uploaded_bytes": 0, "cache_used_bytes": 0, "cache_limit_bytes": 0,
            "uploads_in_flight": 0, "files_failing": 0, "known_nodes": 1, "bytes_sent": 0,
            "bytes_received": 0, "bytes_read": 0, "retries": 0, "endpoint_up": True,
            "last_object_written": None}
    base.update(figures)
    return MetricsSample(**base, outcomes=dict(stats.outcomes),
                         latency=list(stats.seconds.collect()))


# -- unit -----------------------------------------------------------------------------------


def test_a_sample_renders_as_prometheus_reads_it():
    stats = StoreStats()
    stats.finished("PutObject", 0.02, None)
    stats.finished("UploadPart", 0.3, StoreKind.ACCESS_DENIED)
    stats.finished("GetObject", 0.004, None)
    assert stats.endpoint_up
    stats.finished("PutObject", 3.0, StoreKind.UNAVAILABLE)
    assert not stats.endpoint_up  # the last request got no answer
    stats.finished("GetObject", 0.004, StoreKind.NOT_FOUND)
    assert stats.endpoint_up  # an error answer is an answer
    metrics = parsed(render(a_sample(stats, dirty_bytes=5 * MiB, oldest_dirty_age=12.5)))
    assert value(metrics, "s3pvefs_dirty_bytes") == 5 * MiB
    assert value(metrics, "s3pvefs_oldest_dirty_age_seconds") == 12.5
    assert value(metrics, "s3pvefs_requests_total", operation="PutObject", outcome="ok") == 1
    assert value(metrics, "s3pvefs_requests_total", operation="PutObject",
                 outcome="unavailable") == 1
    assert value(metrics, "s3pvefs_requests_total", operation="GetObject",
                 outcome="not_found") == 1
    # Failed requests that carried data are upload errors; a failed GET is not.
    assert value(metrics, "s3pvefs_upload_errors_total", operation="PutObject") == 1
    assert value(metrics, "s3pvefs_upload_errors_total", operation="UploadPart") == 1
    assert ("s3pvefs_upload_errors_total", (("operation", "GetObject"),)) not in metrics
    buckets = {le: count for (name, labels), count in metrics.items()
               if name == "s3pvefs_request_duration_seconds_bucket"
               and dict(labels)["operation"] == "PutObject" for le in [dict(labels)["le"]]}
    assert buckets["0.025"] == 1 and buckets["2.5"] == 1 and buckets["5.0"] == 2
    assert value(metrics, "s3pvefs_request_duration_seconds_count", operation="GetObject") == 2


def test_docs_list_every_metric_and_only_those():
    """docs/metrics.md names each family (by its exposed name) in a table row of its own."""
    stats = StoreStats()
    stats.finished("PutObject", 0.1, None)
    exposed = set()
    for family in families(a_sample(stats)):
        suffix = "_total" if family.type == "counter" else ""
        exposed.add(family.name + suffix)
    documented = {line.split("`")[1] for line in DOCS.read_text().splitlines()
                  if line.startswith("| `s3pvefs_")}
    assert documented == exposed


@pytest.mark.parametrize("example", ["examples/prometheus-alerts.yml",
                                     "examples/grafana-dashboard.json"])
def test_the_examples_name_only_metrics_the_mount_exposes(example):
    stats = StoreStats()
    stats.finished("PutObject", 0.1, None)
    stats.finished("UploadPart", 0.1, StoreKind.QUOTA)
    exposed = set()
    for family in families(a_sample(stats)):
        for sample in family.samples:
            exposed.add(sample.name)
    named = set(re.findall(r"\bs3pvefs_[a-z0-9_]+", (REPO / example).read_text()))
    assert named and named <= exposed, named - exposed
    if example.endswith(".json"):
        dashboard = json.loads((REPO / example).read_text())
        assert all(target["expr"] for panel in dashboard["panels"]
                   for target in panel["targets"])


@pytest.mark.parametrize("text, expected", [
    ("9598", ("127.0.0.1", 9598)),
    ("127.0.0.1:9598", ("127.0.0.1", 9598)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9598", ("::1", 9598)),
    (":9598", ("127.0.0.1", 9598)),
    ("off", None),
    ("", None),
])
def test_listen_addresses(text, expected):
    assert parse_listen(text, "[metrics] listen") == expected


@pytest.mark.parametrize("text", ["localhost", "1.2.3.4:", "1.2.3.4:0", "h:70000", "h:x",
                                  "[::1:9598", "a b:80"])
def test_bad_listen_addresses(text):
    with pytest.raises(ConfigError, match=r"\[metrics\] listen: expected HOST:PORT"):
        parse_listen(text, "[metrics] listen")


# -- through a mount --------------------------------------------------------------------------


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        assert answer.status == 200
        return parsed(answer.read().decode())


def wait_for(what, predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        seen = what()
        if predicate(seen):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"not seen within {timeout} s: {seen}")
        time.sleep(0.2)


@needs_fuse
def test_metrics_follow_uploads_retries_and_an_endpoint_that_goes(faulty_mount, proxy,
                                                                  s3_client, bucket):
    port = free_port()
    started = time.time()
    mount = faulty_mount("--metrics-listen", f"127.0.0.1:{port}")
    proxy.error503(n=2, methods="PUT")  # botocore tries both again (--max-attempts 3)
    data = os.urandom(3 * MiB)
    (mount.path / "dump" / "first.raw").write_bytes(data)
    assert mount.cli("sync", mount.path).returncode == 0
    stored = object_bytes(s3_client, bucket, "pve/dump/first.raw")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()

    served = scrape(port)
    text = mount.cli("status", "--prometheus", mount.path)
    assert text.returncode == 0, text.stderr
    printed = parsed(text.stdout)
    for metrics in (served, printed):
        assert value(metrics, "s3pvefs_dirty_bytes") == 0
        assert value(metrics, "s3pvefs_oldest_dirty_age_seconds") == 0
        assert value(metrics, "s3pvefs_sent_bytes_total") >= len(data)
        assert value(metrics, "s3pvefs_request_retries_total") >= 2
        assert value(metrics, "s3pvefs_requests_total", operation="PutObject",
                     outcome="ok") >= 1
        assert value(metrics, "s3pvefs_endpoint_up") == 1
        assert value(metrics, "s3pvefs_last_object_written_timestamp_seconds") >= started
        assert value(metrics, "s3pvefs_cache_limit_bytes") == 64 * MiB
        assert value(metrics, "s3pvefs_request_duration_seconds_count",
                     operation="PutObject") >= 1

    proxy.stop()  # the endpoint is gone: the next file stays in the cache, and it shows
    written = time.time()
    (mount.path / "dump" / "second.raw").write_bytes(os.urandom(1 * MiB))
    down = wait_for(lambda: scrape(port),
                    lambda m: value(m, "s3pvefs_endpoint_up") == 0
                    and value(m, "s3pvefs_oldest_dirty_age_seconds") >= 1)
    assert value(down, "s3pvefs_dirty_bytes") == 1 * MiB
    assert value(down, "s3pvefs_dirty_files") == 1
    assert value(down, "s3pvefs_oldest_dirty_age_seconds") <= time.time() - written + 1
    assert value(down, "s3pvefs_upload_errors_total", operation="PutObject") >= 1
    assert value(down, "s3pvefs_requests_total", operation="PutObject",
                 outcome="unavailable") >= 1

    proxy.start()
    assert mount.cli("sync", mount.path).returncode == 0
    assert object_bytes(s3_client, bucket, "pve/dump/second.raw") == \
        (mount.path / "dump" / "second.raw").read_bytes()
    back = scrape(port)
    assert value(back, "s3pvefs_endpoint_up") == 1 and value(back, "s3pvefs_dirty_bytes") == 0
    assert mount.unmount() == 0
    with pytest.raises(OSError):  # the server stopped with the mount
        scrape(port)


@needs_fuse
def test_a_metrics_port_in_use_fails_the_mount_clearly(mount_s3pvefs):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MountProcessError) as failed:
            mount_s3pvefs("--metrics-listen", f"127.0.0.1:{port}")
    assert "exited with 2" in str(failed.value)  # a configuration error
    assert f"[metrics] listen = 127.0.0.1:{port}: cannot serve the metrics there" in str(
        failed.value)


def unit_command(mountpoint: Path) -> str:
    """The shell command of systemd/s3pvefs-metrics@.service, as systemd would run it for a
    mount on ``mountpoint`` (its specifiers and dollar signs unescaped), with this checkout's
    s3pvefs."""
    unit = (REPO / "systemd" / "s3pvefs-metrics@.service").read_text()
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    command = line.removeprefix("ExecStart=/bin/sh -c '").removesuffix("'")
    command = command.replace("/mnt/pve/%i", str(mountpoint))
    command = command.replace("/opt/s3pvefs/.venv/bin/s3pvefs", f"{sys.executable} -m s3pvefs")
    return command.replace("$$", "$").replace("%%", "%")


@needs_fuse
def test_the_textfile_unit_writes_the_metrics_and_removes_them_when_the_mount_is_gone(
        mount_s3pvefs, tmp_path):
    mount = mount_s3pvefs()
    (mount.path / "dump" / "a.log").write_text("backup log\n")
    out = tmp_path / "node-exporter" / "s3pvefs-backup.prom"
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": str(REPO)}
    run = subprocess.run(["/bin/sh", "-c", unit_command(mount.path)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    metrics = parsed(out.read_text())
    assert value(metrics, "s3pvefs_endpoint_up") == 1
    assert value(metrics, "s3pvefs_cache_limit_bytes") == 64 * MiB
    assert not out.with_name(out.name + ".tmp").exists()
    assert mount.unmount() == 0
    run = subprocess.run(["/bin/sh", "-c", unit_command(mount.path)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "s3pvefs" in run.stderr, run
    assert not out.exists()  # absent(s3pvefs_endpoint_up) fires
