"""Bandwidth and request-rate limits through a real mount: an upload limit holds within 10%
over a minute, a download limit likewise, `s3pvefs set` changes a limit on a running mount, a
request-rate cap spaces requests, and a storm of 503 SlowDown answers slows an upload down
without failing it.

The limits are the client's own (store/throttle.py): each test measures what went over the
wire as a user sees it (the time a known number of bytes took), then checks the objects in S3
directly by checksum. They run on moto only: the server's part in them is to take the bytes,
and the minute they last is better spent once (they passed on Ceph RGW as well when written).
"""

from __future__ import annotations

import hashlib
import os
import time

from helpers import needs_fuse, object_bytes
from mounting import run_cli

MiB = 1024 * 1024
TOLERANCE = 0.10

pytestmark = needs_fuse


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def synced(mount, timeout: float = 300) -> None:
    result = run_cli("sync", "--timeout", str(timeout), str(mount.path))
    assert result.returncode == 0, (result.stderr, mount.log()[-4000:])


def assert_rate(nbytes: int, seconds: float, limit: int) -> None:
    rate = nbytes / seconds
    assert abs(rate - limit) <= TOLERANCE * limit, (
        f"{rate / MiB:.3f} MiB/s over {seconds:.1f} s, limit {limit / MiB:.3f} MiB/s")


def test_an_upload_limit_holds_over_a_minute(mount_s3pvefs, s3_client, bucket):
    limit, size = 1 * MiB, 60 * MiB  # a minute at the limit
    mount = mount_s3pvefs("--upload-bwlimit", "1MiB", "--cache-size", "256MiB")
    data = os.urandom(size)
    started = time.monotonic()
    (mount.path / "dump" / "vzdump-qemu-100-2026_12_02-01_00_00.vma").write_bytes(data)
    synced(mount)
    assert_rate(size, time.monotonic() - started, limit)
    stored = object_bytes(s3_client, bucket, "pve/dump/vzdump-qemu-100-2026_12_02-01_00_00.vma")
    assert sha(stored) == sha(data)


def test_a_download_limit_holds(mount_s3pvefs, s3_client, bucket):
    limit, size = 4 * MiB, 32 * MiB
    data = os.urandom(size)
    s3_client.put_object(Bucket=bucket, Key="pve/template/iso/big.iso", Body=data)
    mount = mount_s3pvefs("--download-bwlimit", "4MiB", "--cache-size", "256MiB")
    started = time.monotonic()
    read = (mount.path / "template" / "iso" / "big.iso").read_bytes()
    assert_rate(size, time.monotonic() - started, limit)
    assert sha(read) == sha(data)


def test_set_changes_a_limit_on_a_running_mount(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs("--upload-bwlimit", "256KiB", "--cache-size", "256MiB")
    shown = run_cli("set", str(mount.path), "upload.bwlimit", "08:00,20MiB 19:00,512KiB")
    assert shown.returncode == 0, shown.stderr
    assert "upload.bwlimit = 08:00,20.0 MiB/s 19:00,512.0 KiB/s" in shown.stdout, shown.stdout
    assert mount.status()["limits"]["upload.bwlimit"] == "08:00,20.0 MiB/s 19:00,512.0 KiB/s"
    bad = run_cli("set", str(mount.path), "upload.bwlimit", "8am,20MiB")
    assert bad.returncode == 1 and "TIME,RATE" in bad.stderr, bad.stderr
    unknown = run_cli("set", str(mount.path), "bandwidth", "1MiB")
    assert unknown.returncode == 1 and "unknown setting" in unknown.stderr, unknown.stderr

    assert run_cli("set", str(mount.path), "bwlimit", "128KiB").returncode == 0
    data = os.urandom(16 * MiB)  # over two minutes at 128 KiB/s
    (mount.path / "dump" / "vzdump-lxc-101-2026_12_02-01_00_00.tar").write_bytes(data)
    time.sleep(2)
    assert mount.status()["dirty_bytes"] > 8 * MiB  # held back by the limit
    lifted = run_cli("set", str(mount.path), "bwlimit", "off")
    assert lifted.returncode == 0 and "upload.bwlimit = off" in lifted.stdout, lifted.stdout
    started = time.monotonic()
    synced(mount)
    assert time.monotonic() - started < 30  # no longer at 128 KiB/s
    stored = object_bytes(s3_client, bucket, "pve/dump/vzdump-lxc-101-2026_12_02-01_00_00.tar")
    assert sha(stored) == sha(data)


def test_a_503_storm_slows_an_upload_down_without_failing_it(faulty_mount, proxy, s3_client,
                                                             bucket):
    mount = faulty_mount()
    proxy.error503(methods="PUT")  # every body refused: SlowDown
    data = os.urandom(12 * MiB)
    (mount.path / "dump" / "vzdump-qemu-102-2026_12_02-01_00_00.vma").write_bytes(data)
    time.sleep(10)
    refused = proxy.faults["503"]
    status = mount.status()
    assert status["dirty_bytes"] >= 12 * MiB - 5 * MiB, status  # nothing lost, nothing done
    assert mount.process.poll() is None  # still serving
    # Backed off: a few attempts per second at most, not a request per millisecond.
    assert 1 <= refused <= 60, proxy.describe()
    proxy.passthrough()
    synced(mount)
    stored = object_bytes(s3_client, bucket, "pve/dump/vzdump-qemu-102-2026_12_02-01_00_00.vma")
    assert sha(stored) == sha(data)


def test_a_request_rate_cap_spaces_requests(faulty_mount, proxy, s3_client, bucket):
    rate = 5.0
    mount = faulty_mount("--max-request-rate", str(rate))
    started = len(proxy.history)
    files = {f"vzdump-qemu-{n}.log": os.urandom(100) for n in range(30)}
    for name, body in files.items():
        (mount.path / "dump" / name).write_bytes(body)
    synced(mount)
    times = [t for t, *_ in proxy.history[started:]]
    assert len(times) >= 30, proxy.describe()
    # Turns of 1/rate seconds, and a burst of a quarter second's worth at first.
    assert len(times) - 1 <= (times[-1] - times[0]) * rate * (1 + TOLERANCE) + 2, proxy.describe()
    for name, body in files.items():
        assert object_bytes(s3_client, bucket, f"pve/dump/{name}") == body
