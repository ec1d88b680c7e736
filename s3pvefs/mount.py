"""Assembles the layers and runs one mount: checks, root nursery, signals, ordered teardown."""

from __future__ import annotations

import errno
import logging
import signal
from pathlib import Path

import pyfuse3
import trio

from .blockcache import BlockCache
from .config import Config
from .control import serve_control
from .core import FsCore
from .errors import ConfigError, S3PveFsError, StoreError
from .fuse_adapter import FuseOperations
from .recovery import recover
from .store import ObjectStore, open_s3_store

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def run_mount(config: Config, mountpoint: Path) -> int:
    """Mount in the foreground until unmounted or signalled; returns the exit code."""
    try:
        return trio.run(_mount, config, mountpoint)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except S3PveFsError as exc:
        log.error("%s", exc)
        return EXIT_FAILED


async def _mount(config: Config, mountpoint: Path) -> int:
    cache = BlockCache(config.cache_dir, config.block_size, config.cache_size)
    cache.open()
    try:
        async with open_s3_store(config) as store:
            await check_bucket(store, config)
            core = FsCore(config, store, cache)
            await core.create_proxmox_dirs()
            await recover(core)
            try:
                return await _serve(core, config, mountpoint)
            finally:
                core.keep_clean_data()
    finally:
        cache.close()


async def check_bucket(store: ObjectStore, config: Config) -> None:
    """Fail before mounting, with a message that says what to fix.

    A one-key listing of the prefix checks the endpoint, the credentials, the bucket and the
    permission to list in one request, and its error body names the cause.
    """
    where = f"bucket {config.bucket!r} at {config.endpoint_url or 'AWS S3'}"
    try:
        await store.list_page(config.prefix, "/", None, max_keys=1)
        return
    except StoreError as exc:
        failure = exc
    if failure.code in ("NoSuchBucket", "NotFound", "404"):
        if not config.create_bucket:
            raise ConfigError(f"{where} does not exist: create it, or mount with "
                              "--create-bucket") from None
        await store.create_bucket()
        log.info("created %s", where)
        return
    if failure.errno == errno.EACCES:
        raise ConfigError(f"access to {where} denied: {failure.code}: {failure.detail} "
                          "(check the credentials and the bucket policy)") from None
    raise ConfigError(f"cannot reach {where}: {failure}") from None


def _fuse_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)
    options.add(f"fsname=s3pvefs:{config.bucket}/{config.prefix}")
    options.add("subtype=s3pvefs")
    if config.allow_other:
        options.add("allow_other")
    return options


async def _serve(core: FsCore, config: Config, mountpoint: Path) -> int:
    operations = FuseOperations(core)
    try:
        pyfuse3.init(operations, str(mountpoint), _fuse_options(config))
    except RuntimeError as exc:
        raise ConfigError(f"cannot mount on {mountpoint}: {exc}") from None
    log.info("mounted %s on %s", config.bucket + "/" + config.prefix, mountpoint)
    unmounted = False
    stop = _Stop()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(core.run)
            await nursery.start(serve_control, core, mountpoint)
            nursery.start_soon(_watch_signals, core, stop, nursery)
            await pyfuse3.main()
            stop.serving = False
            # No more requests: the kernel unmounted us or a signal ended the loop.
            pyfuse3.close(unmount=True)
            unmounted = True
            log.info("unmounted %s; uploading what is left", mountpoint)
            await _final_uploads(core, stop)
            nursery.cancel_scope.cancel()
    finally:
        if not unmounted:
            pyfuse3.close(unmount=True)
    left = core.dirty_nodes()
    if left:
        log.error("%d file(s) are not on S3 yet: %s. Their data stays in the cache journal "
                  "(%s) and is uploaded when this cache directory is mounted again.", len(left),
                  "; ".join(n.last_error or n.path() for n in left[:20]), config.cache_dir)
        return EXIT_FAILED
    return EXIT_OK


class _Stop:
    def __init__(self) -> None:
        self.requested = False  # a signal asked us to stop
        self.serving = True  # pyfuse3.main() still runs
        self.forced = trio.Event()


async def _watch_signals(core: FsCore, stop: _Stop, nursery: trio.Nursery) -> None:
    """First signal: upload, then unmount. A second one: stop without waiting for uploads
    (what is not on S3 stays journaled). Signals keep being received while uploads run."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.requested or not stop.serving:
                log.warning("second signal: stopping without waiting for uploads")
                stop.forced.set()
                if stop.serving:
                    pyfuse3.terminate()
                continue
            stop.requested = True
            log.info("%s: uploading pending data, then unmounting", signal.Signals(signum).name)
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
