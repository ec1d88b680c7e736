"""Shared fixtures: a moto S3 server process, fresh buckets, and a store configured for them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

# Until the package is installed or pytest's `pythonpath` is set, import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s3pvefs.config import Config
from s3pvefs.store import S3Store, open_s3_store

MOTO_START_TIMEOUT = 30.0
REGION = "us-east-1"


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _wait_until_answering(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + MOTO_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # an HTTP answer of any kind means it is serving
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server did not answer within {MOTO_START_TIMEOUT} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def moto_server(
    aws_test_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MotoServer]:
    """A real moto S3 server process on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
    try:
        endpoint_url = f"http://127.0.0.1:{port}"
        _wait_until_answering(process, endpoint_url, log)
        yield MotoServer(endpoint_url, process)
    finally:
        _stop(process)


@pytest.fixture
def unreachable_endpoint_url() -> str:
    """A loopback URL where nothing listens (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def s3_client(moto_server: MotoServer):  # -> botocore S3 client
    """A plain boto3 client on the moto server, for setting up and checking state."""
    return boto3.client(
        "s3", endpoint_url=moto_server.endpoint_url, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3_client) -> str:
    """A fresh, uniquely named bucket."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store_config(moto_server: MotoServer, bucket: str) -> Config:
    return Config(
        endpoint_url=moto_server.endpoint_url,
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
def mount_s3pvefs(tmp_path: Path, moto_server: MotoServer, bucket: str):
    """Call it to mount the test bucket for real; every mount is unmounted and reaped after."""
    from mounting import MountFactory

    factory = MountFactory(tmp_path, moto_server.endpoint_url, bucket)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def proxy(moto_server: MotoServer):
    """A fault-injecting HTTP proxy in front of the moto server (see faultproxy.py)."""
    from faultproxy import FaultProxy

    proxy = FaultProxy(moto_server.endpoint_url).start()
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
