"""Integrity on the way to S3, through a real mount behind the fault proxy: every request that
carries data carries a checksum the server checks, and a body corrupted in transit never
becomes the object (the server refuses it, or the mount sees the wrong ETag and sends again).

What is on S3 is checked with boto3 directly, never through the proxy.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from helpers import needs_fuse, object_bytes
from mounting import run_cli

MiB = 1024 * 1024

pytestmark = [needs_fuse, pytest.mark.real_server]


def synced(mount, proxy, path) -> None:
    result = run_cli("sync", "--timeout", "120", str(path))
    assert result.returncode == 0, (result.stderr, proxy.describe(), mount.log()[-6000:])


def body_requests(proxy) -> list[tuple[str, str, int, bool, int]]:
    """Forwarded requests that carried a body (PutObject, UploadPart)."""
    return [a for a in proxy.answers if a[0] == "PUT" and a[2] > 0]


def assert_refused_or_resent(proxy, s3_server, match: str) -> None:
    corrupted = [a for a in body_requests(proxy) if match in a[1]]
    assert len(corrupted) >= 2, proxy.describe()  # the corrupt one, then a good one
    if s3_server.kind == "rgw":  # a real server checks Content-MD5 and refuses the body
        assert corrupted[0][4] == 400, corrupted
    # moto does not check Content-MD5: the mount saw the wrong ETag and sent the body again


def test_every_body_sent_carries_content_md5(faulty_mount, proxy, s3_client, bucket):
    mount = faulty_mount()
    (mount.path / "dump" / "small.log").write_bytes(b"a log\n" * 100)
    (mount.path / "dump" / "big.raw").write_bytes(os.urandom(12 * MiB))
    synced(mount, proxy, mount.path)
    sent = body_requests(proxy)
    assert any("partNumber=" in a[1] for a in sent) and any("partNumber=" not in a[1]
                                                             for a in sent), sent
    assert all(a[3] for a in sent), [a for a in sent if not a[3]]


def test_a_part_corrupted_in_transit_never_reaches_the_object(faulty_mount, proxy, s3_server,
                                                             s3_client, bucket):
    mount = faulty_mount()
    proxy.corrupt(n=1, methods="PUT", match="partNumber=2")
    data = os.urandom(12 * MiB)
    (mount.path / "dump" / "vzdump-qemu-100.vma").write_bytes(data)
    synced(mount, proxy, mount.path)
    assert proxy.faults["corrupt"] == 1, proxy.describe()
    assert_refused_or_resent(proxy, s3_server, "partNumber=2")
    stored = object_bytes(s3_client, bucket, "pve/dump/vzdump-qemu-100.vma")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


def test_a_put_corrupted_in_transit_is_sent_again(faulty_mount, proxy, s3_server, s3_client,
                                                  bucket):
    mount = faulty_mount()
    proxy.corrupt(n=1, methods="PUT", match="/dump/note.txt")
    data = os.urandom(64 * 1024)
    (mount.path / "dump" / "note.txt").write_bytes(data)
    synced(mount, proxy, mount.path)
    assert proxy.faults["corrupt"] == 1, proxy.describe()
    assert_refused_or_resent(proxy, s3_server, "/dump/note.txt")
    assert object_bytes(s3_client, bucket, "pve/dump/note.txt") == data
