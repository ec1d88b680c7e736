"""The core tier: FsCore on a MemoryStore, no server, no kernel, on virtual time.

Time is virtual (tests/helpers.py, ``run_on_virtual_time``): trio's MockClock jumps to the
next deadline whenever every task is blocked and no worker thread runs, so injected delays,
retry backoffs and ``fail_after`` cost no wall time and always expire in the same order. A
test waits for the core with ``settle()`` (nothing more happens until time passes), with
``drain`` (the uploader is idle) or with a ``trio.sleep`` that is meant as virtual time.

``S3PVEFS_CORE_STORE=moto`` runs every test here on S3Store and a moto server instead, on the
real clock; tests marked ``on_s3_server(reason)`` always do (so do ``real_server`` ones).
Fixtures here override tests/conftest.py's ``store`` for the tests of this directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
from corekit import BLOCK, GID, PART, PREFIX, UID, runs_on_server
from helpers import MemoryBucket, ServerBucket, run_on_real_time, run_on_virtual_time

from s3pvefs.config.settings import Config, MiB
from s3pvefs.fs.assembly import build_filesystem
from s3pvefs.fs.core import FsCore
from s3pvefs.state.blockcache import BlockCache
from s3pvefs.store.memstore import MemoryStore
from s3pvefs.store.s3store import open_s3_store

HERE = Path(__file__).parent


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The trio.run of each test here: virtual time on the MemoryStore; the real clock on a
    server (its requests wait for sockets, which an autojumping clock would take for
    idleness). pytest-trio's trio mode marks every async test with the default runner, and
    a function's own marks come first. (Collection hooks see every item of the session.)"""
    for item in items:
        if HERE in Path(item.path).parents and item.get_closest_marker("trio") is not None:
            run = run_on_real_time if runs_on_server(item) else run_on_virtual_time
            item.add_marker(pytest.mark.trio(run=run), append=False)


@pytest.fixture
def server_config(request: pytest.FixtureRequest) -> Config | None:
    """The S3 server's store configuration when the test runs on one, else None."""
    if runs_on_server(request.node):
        return request.getfixturevalue("store_config")
    return None


@pytest.fixture
async def store(server_config):
    """The bucket the cores share: a MemoryStore, or an S3Store on the test's server."""
    if server_config is None:
        memory = MemoryStore()
        yield memory
        await memory.aclose()
        return
    async with open_s3_store(server_config) as opened:
        yield opened


@pytest.fixture
async def s3(store, server_config):
    """The bucket seen from outside the mount (keys, bodies, metadata, open uploads), without
    counting a request of ``store``."""
    if server_config is None:
        return MemoryBucket(store)
    import boto3

    client = boto3.client("s3", endpoint_url=server_config.endpoint_url,
                          region_name=server_config.region, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    return ServerBucket(client, server_config.bucket)


@pytest.fixture
def core_config(server_config) -> Config:
    base = server_config or Config(bucket="memory", max_connections=8)
    return dataclasses.replace(
        base, prefix=PREFIX, block_size=BLOCK, part_size=PART,
        multipart_threshold=PART, dir_ttl=3600.0, cache_size=64 * MiB, upload_concurrency=4,
        # The defaults are what the tests create files with: no attribute index entries.
        uid=UID, gid=GID, file_mode=0o640, dir_mode=0o755,
        durability="s3",  # these tests look at uploads that fsync waits for
    )


@pytest.fixture
async def make_core(core_config, store, tmp_path):
    """``await make_core(backend=None, **config_changes)``: a started FsCore on the bucket.

    Every core gets its own empty cache directory and its own uploader worker (unless
    ``start_uploader=False``: the test runs it); the workers are cancelled and the caches closed
    at the end of the test.
    """
    caches: list[BlockCache] = []
    async with trio.open_nursery() as nursery:

        async def make(backend=None, *, start_uploader: bool = True, cache_dir=None,
                       **changes) -> FsCore:
            config = dataclasses.replace(core_config, **changes)
            cache = BlockCache(cache_dir or tmp_path / f"cache{len(caches)}", config.block_size,
                               config.cache_size)
            cache.open()
            caches.append(cache)
            core = build_filesystem(config, backend if backend is not None else store, cache)
            if start_uploader:
                await nursery.start(core.run)
            await core.create_proxmox_dirs()
            return core

        yield make
        nursery.cancel_scope.cancel()
    for cache in caches:
        cache.close()
