"""Assembles the layers and runs one mount: checks, root nursery, signals, ordered teardown.

Under systemd (``Type=notify``, see ``systemd/s3pvefs@.service``) the mount reports through
``sdnotify``: ``STATUS=`` while it checks the bucket and recovers; ``READY=1`` once the kernel
mount exists and the admin socket answers; every ``NOTIFY_INTERVAL`` seconds a ``STATUS=`` with
the files and bytes not on S3 yet; ``STOPPING=1`` at the first SIGTERM/SIGINT (or when it was
unmounted by hand), then ``STATUS=`` with what is left to upload. While that final upload makes
progress, each tick also sends ``EXTEND_TIMEOUT_USEC`` (``EXTEND_WINDOW``): systemd then does
not kill a drain that is still moving once ``TimeoutStopSec`` has passed, but does kill one that
stalls (S3 unreachable) for ``EXTEND_WINDOW`` after it; what is not on S3 stays in the cache
journal for the next mount. With ``WatchdogSec=`` in the unit, ``WATCHDOG=1`` is sent from the
trio loop, so a hung event loop gets the process restarted.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pyfuse3
import trio

from s3pvefs.adapter.fuse_adapter import FuseOperations, KernelCaches
from s3pvefs.config.settings import Config
from s3pvefs.config.values import human_size
from s3pvefs.errors import ConfigError, S3PveFsError, StoreError, StoreKind
from s3pvefs.fs.assembly import build_filesystem, recover_journal
from s3pvefs.fs.core import FsCore
from s3pvefs.service.control import serve_control
from s3pvefs.service.liveadmin import LiveAdmin, build_admin
from s3pvefs.service.metrics import serving_metrics
from s3pvefs.service.sdnotify import Notifier
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.store.s3store import S3Store, open_s3_store
from s3pvefs.store.throttle import TrafficLimits

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

NOTIFY_INTERVAL = 5.0  # seconds between STATUS= updates to systemd
EXTEND_WINDOW = 300.0  # a final upload still making progress asks systemd for this much more


def run_mount(config: Config, mountpoint: Path) -> int:
    """Mount in the foreground until unmounted or signalled; returns the exit code."""
    notifier = Notifier.from_environment()
    try:
        return trio.run(_mount, config, mountpoint, notifier)
    except ConfigError as exc:
        log.error("%s", exc)
        notifier.status(f"failed: {exc}")
        return EXIT_CONFIG
    except S3PveFsError as exc:
        log.error("%s", exc)
        notifier.status(f"failed: {exc}")
        return EXIT_FAILED
    finally:
        notifier.close()


async def _mount(config: Config, mountpoint: Path, notifier: Notifier | None = None) -> int:
    notifier = notifier or Notifier(None)
    cache = BlockCache(config.cache_dir, config.block_size, config.cache_size)
    await cache.run_io(cache.open)
    try:
        limits = TrafficLimits.from_config(config)  # the store applies, `s3pvefs set` changes
        async with open_s3_store(config, limits) as store:
            notifier.status(f"checking {_where(config)}")
            await check_bucket(store, config)
            kernel = KernelCaches(config.negative_ttl)
            core = build_filesystem(config, store, cache)
            await core.create_proxmox_dirs()
            notifier.status(f"recovering journaled uploads from {config.cache_dir}")
            await recover_journal(core)
            try:
                admin = build_admin(core, config, kernel, limits)
                async with serving_metrics(admin.metrics_sample, config.metrics_listen):
                    return await _serve(core, admin, kernel, config, mountpoint, notifier)
            finally:
                with trio.CancelScope(shield=True):
                    await core.keep_clean_data()
    finally:
        await cache.aclose()


async def check_bucket(store: S3Store, config: Config) -> None:
    """Fail before mounting, with a message that says what to fix.

    A one-key listing of the prefix checks the endpoint, the credentials, the bucket and the
    permission to list in one request, and its error body names the cause. Retention needs a
    bucket with Object Lock: without it every upload would be refused.
    """
    where = f"bucket {config.bucket!r} at {config.endpoint_url or 'AWS S3'}"
    try:
        await store.list_page(config.prefix, "/", None, max_keys=1)
    except StoreError as exc:
        await _bucket_unusable(store, config, where, exc)
    if config.retention_by_dir:
        await _check_object_lock(store, where)


async def _bucket_unusable(store: S3Store, config: Config, where: str,
                           failure: StoreError) -> None:
    if failure.code in ("NoSuchBucket", "NotFound", "404"):
        if not config.create_bucket:
            raise ConfigError(f"{where} does not exist: create it, or mount with "
                              "--create-bucket") from None
        await store.create_bucket(object_lock=bool(config.retention_by_dir))
        log.info("created %s", where)
        return
    if failure.kind is StoreKind.ACCESS_DENIED:
        raise ConfigError(f"access to {where} denied: {failure.code}: {failure.detail} "
                          "(check the credentials and the bucket policy)") from None
    raise ConfigError(f"cannot reach {where}: {failure}") from None


async def _check_object_lock(store: S3Store, where: str) -> None:
    try:
        protection = await store.bucket_protection()
    except StoreError as exc:
        raise ConfigError(f"retention is configured, but the Object Lock configuration of "
                          f"{where} cannot be read: {exc}") from None
    if not protection.object_lock:
        raise ConfigError(
            f"retention is configured ([retention] or --retention-by-dir), but {where} does not "
            "have S3 Object Lock enabled: every upload would be refused. Use a bucket created with "
            "Object Lock (aws s3api create-bucket ... --object-lock-enabled-for-bucket), or "
            "remove the retention settings")


KERNEL_READAHEAD_KIB = 1024  # one FUSE request at most (256 pages)


def _fuse_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)
    options.add(f"fsname=s3pvefs:{config.bucket}/{config.prefix}")
    options.add("subtype=s3pvefs")
    if config.allow_other:
        options.add("allow_other")
    return options


async def _widen_kernel_readahead(mountpoint: Path) -> None:
    """Let the kernel read ahead up to a whole FUSE request (1 MiB, libfuse's max_pages) where
    it stops at 128 KiB by default: a sequential reader then has several requests in flight
    instead of waiting for each 128 KiB (5x the read throughput of a cached file). Set once
    the kernel's INIT is answered (INIT sets it back to 128 KiB), which the stat() waits for."""
    try:
        device = (await trio.to_thread.run_sync(os.stat, mountpoint,
                                                abandon_on_cancel=True)).st_dev
        setting = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
        await trio.to_thread.run_sync(setting.write_text, f"{KERNEL_READAHEAD_KIB}\n")
    except OSError as exc:  # not root, or no such device
        log.info("kernel readahead left at its default: %s", exc)


def _where(config: Config) -> str:
    return f"s3://{config.bucket}/{config.prefix}"


async def _serve(core: FsCore, admin: LiveAdmin, kernel: KernelCaches, config: Config,
                 mountpoint: Path, notifier: Notifier | None = None) -> int:
    operations = FuseOperations(core, kernel)
    try:
        pyfuse3.init(operations, str(mountpoint), _fuse_options(config))
    except RuntimeError as exc:
        raise ConfigError(f"cannot mount on {mountpoint}: {exc}") from None
    log.info("mounted %s on %s", config.bucket + "/" + config.prefix, mountpoint)
    unmounted = False
    reporter = _Reporter(notifier or Notifier(None), core, admin,
                         f"{_where(config)} on {mountpoint}")
    stop = _Stop(reporter)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(core.run)
            await nursery.start(serve_control, admin, mountpoint)
            nursery.start_soon(_watch_signals, core, stop, nursery)
            nursery.start_soon(_widen_kernel_readahead, mountpoint)
            if reporter.enabled:
                # READY=1 now: the kernel mount exists (pyfuse3.init mounted it), the admin
                # socket answers, and the kernel queues requests until pyfuse3.main() runs.
                await nursery.start(reporter.run)
            await pyfuse3.main()
            stop.serving = False
            reporter.stopping("unmounted")  # no-op if a signal already said so
            # No more requests: the kernel unmounted us or a signal ended the loop.
            pyfuse3.close(unmount=True)
            unmounted = True
            log.info("unmounted %s; uploading what is left", mountpoint)
            await _final_uploads(core, stop)
            await core.kept_aside.delete_all()  # of files deleted while still open
            nursery.cancel_scope.cancel()
    finally:
        if not unmounted:
            pyfuse3.close(unmount=True)
    left = core.dirty_nodes()
    reporter.finished(len(left))
    if left:
        log.error("%d file(s) are not on S3 yet: %s. Their data stays in the cache journal "
                  "(%s) and is uploaded when this cache directory is mounted again.", len(left),
                  "; ".join(_left_behind(n) for n in left[:20]), config.cache_dir)
        return EXIT_FAILED
    return EXIT_OK


def _left_behind(node) -> str:
    """A file not on S3 at the end, with its state and last error (why it was left)."""
    why = f"{node.state.value}, {node.write_handles} open for writing"
    if node.file.last_error:
        why += f": {node.file.last_error}"
    return f"{node.path()} ({why})"


class _Stop:
    def __init__(self, reporter: _Reporter) -> None:
        self.requested = False  # a signal asked us to stop
        self.serving = True  # pyfuse3.main() still runs
        self.forced = trio.Event()
        self.reporter = reporter


class _Reporter:
    """What systemd is told (see the module docstring); every call is a no-op without
    $NOTIFY_SOCKET."""

    def __init__(self, notifier: Notifier, core: FsCore, admin: LiveAdmin, where: str):
        self.notifier = notifier
        self.core = core
        self.admin = admin
        self.where = where
        self.why_stopping: str | None = None
        self.forced = False
        self._last_text: str | None = None
        self._progress: tuple[int, int, int] | None = None

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def text(self) -> str:
        """One line for `systemctl status`: where, and what is not on S3 yet."""
        status = self.admin.status()
        files, dirty = status["dirty_files"], status["dirty_bytes"]
        uploads, errors = len(status["uploads"]), len(status["errors"])
        if self.forced:
            return (f"Stopping without waiting for uploads: {files} file(s) stay in the cache "
                    "journal for the next mount")
        if self.why_stopping is not None:
            if not files:
                return f"Stopping ({self.why_stopping}): all data on S3"
            text = (f"Stopping ({self.why_stopping}): uploading {files} file(s), "
                    f"{human_size(dirty)} left")
        elif not files:
            text = f"Mounted {self.where}: all data on S3"
        else:
            text = (f"Mounted {self.where}: {files} file(s), {human_size(dirty)} not on S3 "
                    f"yet, {uploads} uploading")
        if errors:
            text += f"; {errors} upload error(s), see: s3pvefs status"
        return text

    def stopping(self, why: str) -> None:
        """STOPPING=1, once, whatever made the mount stop first."""
        if self.why_stopping is not None:
            return
        self.why_stopping = why
        if self.enabled:
            self._progress = self._measure()
            self._send_status(self.notifier.stopping)

    def finished(self, left: int) -> None:
        if left:
            self.notifier.status(f"Stopped: {left} file(s) not on S3 stay in the cache journal "
                                 "and are uploaded by the next mount")
        else:
            self.notifier.status("Stopped: all data on S3")

    def force(self) -> None:
        self.forced = True
        if self.enabled:
            self._send_status(self.notifier.status)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """READY=1, then a STATUS= whenever it changes (checked every NOTIFY_INTERVAL s), an
        EXTEND_TIMEOUT_USEC= per tick in which the final upload made progress, and WATCHDOG=1
        pings if the unit asked for them. Runs until cancelled."""
        self._send_status(self.notifier.ready)
        task_status.started()
        watchdog = self.notifier.watchdog_interval
        interval = NOTIFY_INTERVAL if watchdog is None else min(NOTIFY_INTERVAL, watchdog)
        while True:
            await trio.sleep(interval)
            if watchdog is not None:
                self.notifier.watchdog()
            self.tick()

    def tick(self) -> None:
        self._send_status(self.notifier.status, only_if_changed=True)
        if self.why_stopping is not None and not self.forced:
            now = self._measure()
            before = self._progress
            if before is not None and (now[0] > before[0] or now[1] < before[1]
                                       or now[2] < before[2]):
                self.notifier.extend_timeout(EXTEND_WINDOW)
            self._progress = now

    def _measure(self) -> tuple[int, int, int]:
        """(bytes sent to S3, dirty bytes, dirty files): the drain progresses when the first
        grows or one of the others shrinks."""
        return (self.core.store.stats.bytes_sent, self.core.cache.dirty_bytes,
                len(self.core.dirty_nodes()))

    def _send_status(self, send, only_if_changed: bool = False) -> None:
        try:
            text = self.text()
        except Exception:  # a report must never break the mount
            log.exception("cannot build the status for systemd")
            return
        if only_if_changed and text == self._last_text:
            return
        self._last_text = text
        send(text)


async def _watch_signals(core: FsCore, stop: _Stop, nursery: trio.Nursery) -> None:
    """First signal: upload, then unmount. A second one: stop without waiting for uploads
    (what is not on S3 stays journaled). Signals keep being received while uploads run."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.requested or not stop.serving:
                log.warning("second signal: stopping without waiting for uploads")
                stop.forced.set()
                stop.reporter.force()
                if stop.serving:
                    pyfuse3.terminate()
                continue
            stop.requested = True
            name = signal.Signals(signum).name
            log.info("%s: uploading pending data, then unmounting", name)
            stop.reporter.stopping(name)
            nursery.start_soon(_upload_then_unmount, core, stop)


async def _upload_then_unmount(core: FsCore, stop: _Stop) -> None:
    await _final_uploads(core, stop)
    if stop.serving:
        pyfuse3.terminate()


async def _final_uploads(core: FsCore, stop: _Stop) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_when_set, stop.forced, nursery.cancel_scope)
        nursery.start_soon(_report_progress, core)
        await core.shutdown()
        nursery.cancel_scope.cancel()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _report_progress(core: FsCore) -> None:
    while True:
        await trio.sleep(10)
        pending = core.dirty_nodes()
        log.info("still uploading %d file(s), %d dirty bytes in the cache",
                 len(pending), core.cache.dirty_bytes)
