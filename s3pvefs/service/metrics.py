"""A mount's metrics in the Prometheus text format.

`s3pvefs status --prometheus MOUNTPOINT` asks the mount for them over the admin socket (for
node_exporter's textfile collector, from a timer); with ``[metrics] listen`` the mount also
serves them at ``/metrics`` (prometheus_client's HTTP server, in a thread of its own). Either
way one ``MetricsSample``, taken in the trio thread so that its figures agree with each other,
becomes the families below; docs/metrics.md lists them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from s3pvefs.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "s3pvefs_"
# Requests that carry a file's data to S3: their failures are upload errors.
UPLOAD_OPERATIONS = frozenset({"PutObject", "UploadPart", "CreateMultipartUpload",
                               "CompleteMultipartUpload", "UploadPartCopy", "CopyObject"})


@dataclass
class MetricsSample:
    """What the mount's state and its store's counters say at one moment."""

    dirty_files: int
    dirty_bytes: int  # only in the cache: neither in an object nor in a confirmed part
    oldest_dirty_age: float  # seconds the oldest of those bytes has waited (0: none)
    uploaded_bytes: int  # in confirmed parts of uploads not completed yet
    cache_used_bytes: int
    cache_limit_bytes: int
    uploads_in_flight: int
    files_failing: int  # files whose last upload attempt failed
    known_nodes: int
    bytes_sent: int
    bytes_received: int
    bytes_read: int  # answered to FUSE reads
    retries: int
    endpoint_up: bool
    last_object_written: float | None  # wall-clock time
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    latency: list[Metric] = field(default_factory=list)  # the request-duration histogram


def families(sample: MetricsSample) -> list[Metric]:
    """The metric families of one sample."""
    out = [
        _gauge("dirty_files", "Files with data or attributes not on S3 yet", sample.dirty_files),
        _gauge("dirty_bytes", "Bytes only in the local cache (in no object and no confirmed "
               "part)", sample.dirty_bytes),
        _gauge("oldest_dirty_age_seconds", "Seconds the oldest byte only in the cache has "
               "waited (0 when there is none)", sample.oldest_dirty_age),
        _gauge("uploaded_unfinished_bytes", "Bytes in confirmed parts of uploads not completed "
               "yet", sample.uploaded_bytes),
        _gauge("cache_used_bytes", "Bytes the block cache uses", sample.cache_used_bytes),
        _gauge("cache_limit_bytes", "The block cache's size limit", sample.cache_limit_bytes),
        _gauge("uploads_in_flight", "Files uploading now", sample.uploads_in_flight),
        _gauge("files_failing", "Files whose last upload attempt failed", sample.files_failing),
        _gauge("known_nodes", "Files and directories the mount holds in memory",
               sample.known_nodes),
        _counter("sent_bytes", "Body bytes S3 accepted (PutObject, UploadPart)",
                 sample.bytes_sent),
        _counter("received_bytes", "Body bytes received from S3 (GetObject)",
                 sample.bytes_received),
        _counter("fuse_read_bytes", "Bytes answered to reads through the mount",
                 sample.bytes_read),
        _counter("request_retries", "Attempts botocore made again inside S3 requests",
                 sample.retries),
        _gauge("endpoint_up", "1 when the S3 endpoint answered the last request, 0 when it did "
               "not answer in time", int(sample.endpoint_up)),
        _gauge("last_object_written_timestamp_seconds", "When an object was last written to "
               "S3 (0: not since the mount started)", sample.last_object_written or 0),
    ]
    requests = CounterMetricFamily(PREFIX + "requests", "S3 requests by operation and outcome "
                                   "(ok, or what went wrong)", labels=["operation", "outcome"])
    errors = CounterMetricFamily(PREFIX + "upload_errors", "Failed S3 requests that carried "
                                 "file data, by operation", labels=["operation"])
    failed: dict[str, int] = {}
    for (operation, outcome), count in sorted(sample.outcomes.items()):
        requests.add_metric([operation, outcome], count)
        if operation in UPLOAD_OPERATIONS and outcome != "ok":
            failed[operation] = failed.get(operation, 0) + count
    for operation, count in failed.items():
        errors.add_metric([operation], count)
    return out + [requests, errors, *sample.latency]


def render(sample: MetricsSample) -> str:
    """The Prometheus text format of one sample."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(lambda: families(sample)))
    return generate_latest(registry).decode()


@asynccontextmanager
async def serving_metrics(sample: Callable[[], MetricsSample],
                          listen: tuple[str, int] | None) -> AsyncIterator[None]:
    """Serve ``/metrics`` on ``listen`` (host, port) while the block runs; None: not at all.

    The HTTP server runs in a thread; each scrape takes its sample in the trio thread.
    """
    if listen is None:
        yield
        return
    token = trio.lowlevel.current_trio_token()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(
        lambda: families(trio.from_thread.run_sync(sample, trio_token=token))))
    host, port = listen
    try:
        server, thread = await trio.to_thread.run_sync(
            lambda: start_http_server(port, addr=host, registry=registry))
    except OSError as exc:
        raise ConfigError(f"[metrics] listen = {format_listen(listen)}: cannot serve the "
                          f"metrics there: {exc.strerror or exc}") from None
    log.info("serving metrics at http://%s/metrics", format_listen(listen))
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.shutdown)
            server.server_close()
            await trio.to_thread.run_sync(thread.join)


def format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Families(Collector):
    def __init__(self, make: Callable[[], Iterable[Metric]]):
        self._make = make

    def collect(self) -> Iterable[Metric]:
        return self._make()


def _gauge(name: str, documentation: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _counter(name: str, documentation: str, value: Any) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)
