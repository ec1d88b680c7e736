"""`s3pvefs verify`, as an admin runs it (no mount needed): files a mount uploaded read back
intact; a byte rotted at rest is reported, exactly that object; missing paths, objects without
a recorded checksum, and the exit statuses and JSON of each case.

On Ceph RGW the rot is real: one byte of the object's data is flipped in RADOS, behind the
gateway, so S3 still answers the object's old ETag. moto has no such back door: there the
object is written again with one byte flipped and the metadata (the recorded checksum) of the
original.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from helpers import needs_fuse
from mounting import run_cli

MiB = 1024 * 1024
BIG = "dump/vzdump-qemu-100-2026_12_01-01_00_00.vma"
SMALL = "dump/vzdump-qemu-100-2026_12_01-01_00_00.log"

pytestmark = pytest.mark.real_server


def verify(s3_server, bucket: str, *args: str) -> tuple[int, dict, str]:
    done = run_cli("verify", "--endpoint-url", s3_server.endpoint_url, "--bucket", bucket,
                   "--prefix", "pve/", "--json", *args)
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def statuses(report: dict) -> dict[str, str]:
    return {entry["path"]: entry["status"] for entry in report["objects"]}


def rot_at_rest(request, s3_server, s3_client, bucket: str, key: str) -> None:
    if s3_server.kind == "rgw":
        request.getfixturevalue("rgw_server").rot(bucket, key, offset=1000)
        return
    found = s3_client.get_object(Bucket=bucket, Key=key)
    body = bytearray(found["Body"].read())
    body[1000] ^= 0x01
    s3_client.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=found["Metadata"])


@pytest.fixture
def backup(mount_s3pvefs, s3_client, bucket):
    """A backup written through a mount: an archive uploaded in parts, and its log (one PUT)."""
    mount = mount_s3pvefs()
    (mount.path / BIG).write_bytes(os.urandom(12 * MiB))
    (mount.path / SMALL).write_bytes(b"INFO: backup finished\n" * 300)
    done = run_cli("sync", "--timeout", "120", str(mount.path))
    assert done.returncode == 0, (done.stderr, mount.log()[-4000:])
    assert mount.unmount() == 0
    return mount


@needs_fuse
def test_verify_reads_back_what_a_mount_uploaded_and_finds_a_byte_rotted_at_rest(
        request, backup, s3_server, s3_client, bucket):
    status, report, stderr = verify(s3_server, bucket)
    assert status == 0, stderr
    assert statuses(report) == {BIG: "ok", SMALL: "ok"}
    how = {entry["path"]: entry["checked_with"] for entry in report["objects"]}
    assert how == {BIG: "crc64nvme (index)", SMALL: "crc64nvme (metadata)"}
    assert report["summary"]["bytes"] == 12 * MiB + 22 * 300

    rotted = SMALL if s3_server.kind == "moto" else BIG
    rot_at_rest(request, s3_server, s3_client, bucket, "pve/" + rotted)
    status, report, stderr = verify(s3_server, bucket)
    assert status == 1, stderr
    assert statuses(report) == {BIG: "ok", SMALL: "ok", rotted: "mismatch"}
    assert f"{rotted}: mismatch" in stderr
    # a PATH narrows it down; one that names nothing is missing
    status, report, _ = verify(s3_server, bucket, "dump/nothing-here.vma", SMALL)
    assert status == 1
    expected_small = "mismatch" if rotted == SMALL else "ok"
    assert statuses(report) == {"dump/nothing-here.vma": "missing", SMALL: expected_small}


@needs_fuse
def test_verify_finds_a_rotted_byte_in_a_small_file_on_the_server(
        request, backup, s3_server, s3_client, bucket):
    rot_at_rest(request, s3_server, s3_client, bucket, "pve/" + SMALL)
    status, report, _ = verify(s3_server, bucket, "dump")
    assert status == 1
    assert statuses(report) == {BIG: "ok", SMALL: "mismatch"}


def test_objects_without_a_recorded_checksum(s3_server, s3_client, bucket):
    body = os.urandom(100_000)
    s3_client.put_object(Bucket=bucket, Key="pve/dump/foreign.vma", Body=body)
    status, report, stderr = verify(s3_server, bucket)
    assert status == 0, stderr  # nothing proves it damaged
    assert statuses(report) == {"dump/foreign.vma": "unrecorded"}
    # --download reads it and checks it against its ETag (the MD5 of a single PUT)
    status, report, _ = verify(s3_server, bucket, "--download")
    assert status == 0
    assert report["objects"][0]["checked_with"] == "md5 (etag)"
    assert report["objects"][0]["status"] == "ok"
    assert hashlib.md5(body).hexdigest() in s3_client.head_object(
        Bucket=bucket, Key="pve/dump/foreign.vma")["ETag"]


def test_verify_without_a_bucket_is_a_configuration_error():
    done = run_cli("verify", "--endpoint-url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "no bucket" in done.stderr
