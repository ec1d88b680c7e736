"""Shared fixtures: the S3 server (moto, or a real Ceph RGW), fresh buckets, a store and mounts
configured for them.

Two servers, one set of fixtures
--------------------------------
``s3_server`` is the S3 server a test talks to (``.kind`` is "moto" or "rgw", ``.endpoint_url``),
and ``s3_client``, ``bucket``, ``store_config``, ``store``, ``mount_s3pvefs``, ``proxy`` and
``faulty_mount`` all follow it. By default it is the moto server. A test (or a whole module,
``pytestmark = pytest.mark.real_server``) marked ``real_server`` runs twice, on moto and on a
single-node Ceph RGW (tests/cephrgw.py): ``pytest_generate_tests`` parametrizes ``s3_server``
with "moto" and "rgw", so the ids read ``test_x[moto]`` and ``test_x[rgw]``; unmarked tests
keep their ids. Rules for a marked test:

- use ``s3_server`` and the fixtures above, never ``moto_server`` (that is an error at
  collection: a marked test would otherwise check RGW's work on moto);
- anything moto-specific (``/moto-api/``, storage classes moto accepts and RGW does not, ...)
  stays in an unmarked test, with a comment saying why.

One set of tests, three stores
------------------------------
A test using ``contract_store`` runs three times: on a ``MemoryStore`` (s3pvefs/memstore.py)
and on an ``S3Store`` on a fresh bucket of moto and of the Ceph RGW (ids ``[memory]``,
``[moto]``, ``[rgw]``; ``contract_kind`` says which). tests/test_store_contract.py is that
suite: it keeps the in-memory store from drifting away from the real ones. Such a test brings
its own server, so it uses neither ``s3_server`` nor the ``real_server`` mark.

Both share the servers, session fixtures started at the first test that needs them and stopped
at the end of the session: ``moto_server`` and ``rgw_server``. ``s3_server`` and
``contract_store`` only look one up, so the order the tests run in never starts a server twice.
If the RGW cannot start (Ceph not installed, a daemon that dies, no answer within the timeout)
every ``[rgw]`` test fails with the reason and the daemons' log tails: CI never skips the
real-server tier silently. Developers turn it off with
``S3PVEFS_TEST_RGW=0`` (the ``[rgw]`` tests are then skipped, with that reason in the summary).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

# Until the package is installed or pytest's `pythonpath` is set, import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s3pvefs.config.settings import Config
from s3pvefs.service.embedded import LocalS3, free_port
from s3pvefs.store.memstore import MemoryStore
from s3pvefs.store.objectstore import ObjectStore
from s3pvefs.store.s3store import S3Store, open_s3_store

REGION = "us-east-1"
RGW_ENABLED = os.environ.get("S3PVEFS_TEST_RGW", "1") != "0"
RGW_TIMES: dict[str, float] = {}  # start and stop seconds of this session's RGW, for the summary
RGW_LOGS: list[Path] = []  # where the RGW's logs were kept (a test failed)


@dataclass(frozen=True)
class S3Server:
    kind: str  # "moto" or "rgw"
    endpoint_url: str


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_server: also run the test on a real Ceph RGW, not only on moto "
        "(see tests/conftest.py)")
    config.addinivalue_line(
        "markers", "on_s3_server(reason): a core-tier test (tests/core/) that runs on S3Store and moto, "
        "not on the MemoryStore (see docs/testing.md)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Marked tests that use the S3 server run once per server (see the module docstring);
    tests of ``contract_store`` once per store: memory, moto, rgw."""
    skip_rgw = pytest.mark.skip(reason="S3PVEFS_TEST_RGW=0: the Ceph RGW tier is off")
    rgw = pytest.param("rgw", id="rgw", marks=[] if RGW_ENABLED else [skip_rgw])
    if "contract_store" in metafunc.fixturenames:
        if "s3_server" in metafunc.fixturenames:
            raise ValueError(f"{metafunc.definition.nodeid} uses contract_store and s3_server: "
                             "contract_store brings its own server")
        metafunc.parametrize("contract_store", [
            pytest.param("memory", id="memory"), pytest.param("moto", id="moto"), rgw,
        ], indirect=True)
        return
    if ("s3_server" not in metafunc.fixturenames
            or metafunc.definition.get_closest_marker("real_server") is None):
        return
    if "moto_server" in metafunc.fixturenames:
        raise ValueError(f"{metafunc.definition.nodeid} is marked real_server but uses "
                         "moto_server: use s3_server (or leave the test unmarked)")
    metafunc.parametrize("s3_server", [pytest.param("moto", id="moto"), rgw], indirect=True)


def pytest_terminal_summary(terminalreporter) -> None:
    if RGW_TIMES:
        terminalreporter.write_line("Ceph RGW: " + ", ".join(
            f"{what} in {seconds:.1f} s" for what, seconds in RGW_TIMES.items()))
    for logs in RGW_LOGS:
        terminalreporter.write_line(f"Ceph RGW: a test failed, its daemons' logs are in {logs}")


@pytest.fixture(scope="session", autouse=True)
def aws_test_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials for the whole session; the developer's own AWS files stay out of it."""
    missing = tmp_path_factory.mktemp("aws") / "absent"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", str(missing))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def moto_server(
    aws_test_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalS3]:
    """A real moto S3 server process on a free loopback port (``.endpoint_url``), the one the
    embedded local S3 starts, without its bucket."""
    with LocalS3(tmp_path_factory.mktemp("moto"), bucket=None) as server:
        yield server


@pytest.fixture(scope="session")
def rgw_server(request: pytest.FixtureRequest, aws_test_env: None,
               tmp_path_factory: pytest.TempPathFactory):  # -> CephRGW
    """A single-node Ceph cluster with a RADOS Gateway on a free loopback port (cephrgw.py),
    whose user has the keys testing / testing; removed with its directory at the end, but for
    the daemons' logs if a test failed (the summary says where)."""
    from cephrgw import CephRGW, RGWError

    rgw = CephRGW(tmp_path_factory.mktemp("rgw"))
    rgw.die_with_parent = True  # a killed pytest does not leave the daemons running
    began = time.monotonic()
    try:
        rgw.start()
    except RGWError as error:
        rgw.remove()
        pytest.fail(f"the Ceph RGW for the real-server tests did not start "
                    f"(S3PVEFS_TEST_RGW=0 skips them): {error}", pytrace=False)
    RGW_TIMES["started"] = time.monotonic() - began
    try:
        yield rgw
    finally:
        began = time.monotonic()
        keep_logs = request.session.testsfailed > 0
        rgw.remove(keep_logs=keep_logs)
        RGW_TIMES["stopped and removed"] = time.monotonic() - began
        if keep_logs:
            RGW_LOGS.append(rgw.root / "log")


@pytest.fixture
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """The S3 server of this test: moto, or the Ceph RGW for the ``[rgw]`` run of a test
    marked ``real_server``."""
    return _server(request, getattr(request, "param", "moto"))


def _server(request: pytest.FixtureRequest, kind: str) -> S3Server:
    if kind == "rgw":
        return S3Server("rgw", request.getfixturevalue("rgw_server").endpoint_url)
    return S3Server("moto", request.getfixturevalue("moto_server").endpoint_url)


@pytest.fixture
def unreachable_endpoint_url() -> str:
    """A loopback URL where nothing listens (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def s3_client(s3_server: S3Server):  # -> botocore S3 client
    """A plain boto3 client on the test's S3 server, for setting up and checking state."""
    return boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3_client) -> str:
    """A fresh, uniquely named bucket."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store_config(s3_server: S3Server, bucket: str) -> Config:
    return Config(
        endpoint_url=s3_server.endpoint_url,
        region=REGION,
        bucket=bucket,
        connect_timeout=2.0,
        read_timeout=10.0,
        max_attempts=2,
        max_connections=8,
    )


@pytest.fixture
async def store(store_config: Config) -> AsyncIterator[S3Store]:
    async with open_s3_store(store_config) as opened:
        yield opened


@pytest.fixture
async def contract_store(request: pytest.FixtureRequest) -> AsyncIterator[ObjectStore]:
    """The store of a contract test (tests/test_store_contract.py): a ``MemoryStore``, or an
    ``S3Store`` on a fresh bucket of moto or the Ceph RGW; ``contract_kind`` says which."""
    kind = request.param
    if kind == "memory":
        memory = MemoryStore()
        yield memory
        await memory.aclose()
        return
    server = _server(request, kind)
    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"contract-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    config = Config(endpoint_url=server.endpoint_url, region=REGION, bucket=name,
                    connect_timeout=2.0, read_timeout=10.0, max_attempts=2, max_connections=8)
    async with open_s3_store(config) as opened:
        yield opened


@pytest.fixture
def contract_kind(request: pytest.FixtureRequest, contract_store: ObjectStore) -> str:
    """"memory", "moto" or "rgw": which store ``contract_store`` is."""
    return str(request.node.callspec.params["contract_store"])


@pytest.fixture
def mount_s3pvefs(tmp_path: Path, s3_server: S3Server, bucket: str):
    """Call it to mount the test bucket for real; every mount is unmounted and reaped after."""
    from mounting import MountFactory

    factory = MountFactory(tmp_path, s3_server.endpoint_url, bucket)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def proxy(s3_server: S3Server):
    """A fault-injecting HTTP proxy in front of the test's S3 server (see faultproxy.py)."""
    from faultproxy import FaultProxy

    proxy = FaultProxy(s3_server.endpoint_url).start()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def faulty_mount(proxy, mount_s3pvefs):
    """Mount through the proxy (`--max-attempts 3` unless the call gives its own). At teardown
    the proxy passes again before the mounts stop (they upload what is left on the way out),
    and only then is the proxy closed."""

    def mount(*extra: str, **kwargs):
        return mount_s3pvefs("--endpoint-url", proxy.url, "--max-attempts", "3", *extra,
                             **kwargs)

    try:
        yield mount
    finally:
        proxy.passthrough()
        try:
            proxy.start()
        finally:
            mount_s3pvefs.stop_all()
