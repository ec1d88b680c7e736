"""Immutable backups: S3 Object Lock retention of new objects per content directory, a prune
through the mount that leaves the locked version, a direct delete of that version with the
host's credentials that the server refuses, and `s3pvefs versions` / `undelete` bringing the
backup back (through the mount, and on the bucket directly).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers import needs_fuse
from mounting import run_cli

from s3pvefs.service.mountproc import MountProcessError

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]
ARCHIVE = "dump/vzdump-qemu-100-2026_12_01-01_00_00.vma.zst"
NOTES = "dump/vzdump-qemu-100-2026_12_01-01_00_00.vma.zst.notes"

pytestmark = [needs_fuse, pytest.mark.real_server]


@pytest.fixture
def locked_bucket(s3_client) -> str:
    name = f"locked-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def versions_of(s3_client, bucket: str, key: str) -> tuple[list[dict], list[dict]]:
    answer = s3_client.list_object_versions(Bucket=bucket, Prefix=key)
    return ([v for v in answer.get("Versions", []) if v["Key"] == key],
            [m for m in answer.get("DeleteMarkers", []) if m["Key"] == key])


def synced(mount) -> None:
    done = run_cli("sync", "--timeout", "120", str(mount.path))
    assert done.returncode == 0, (done.stderr, mount.log()[-4000:])


def test_a_pruned_backup_survives_under_retention_and_comes_back(
        mount_s3pvefs, s3_server, s3_client, locked_bucket):
    mount = mount_s3pvefs("--bucket", locked_bucket, "--retention-by-dir", "dump=1d")
    archive, notes = os.urandom(12 * MiB), b"nightly backup of vm 100\n"
    (mount.path / ARCHIVE).write_bytes(archive)
    (mount.path / NOTES).write_bytes(notes)
    (mount.path / "images").joinpath("not-retained.raw").write_bytes(b"x" * 1000)
    synced(mount)

    # created with the configured retention (and only under dump/)
    for key in (ARCHIVE, NOTES):
        head = s3_client.head_object(Bucket=locked_bucket, Key="pve/" + key)
        assert head["ObjectLockMode"] == "GOVERNANCE", key
        left = head["ObjectLockRetainUntilDate"] - dt.datetime.now(dt.timezone.utc)
        assert dt.timedelta(hours=23) < left <= dt.timedelta(days=1), (key, left)
    plain = s3_client.head_object(Bucket=locked_bucket, Key="pve/images/not-retained.raw")
    assert "ObjectLockMode" not in plain

    # a Proxmox prune: the names go, the locked versions stay behind a delete marker
    (mount.path / ARCHIVE).unlink()
    (mount.path / NOTES).unlink()
    synced(mount)
    assert not (mount.path / ARCHIVE).exists()
    versions, markers = versions_of(s3_client, locked_bucket, "pve/" + ARCHIVE)
    assert len(versions) == 1 and len(markers) == 1

    # the host's credentials cannot destroy the locked version
    with pytest.raises(ClientError) as refused:
        s3_client.delete_object(Bucket=locked_bucket, Key="pve/" + ARCHIVE,
                                VersionId=versions[0]["VersionId"])
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "InvalidRequest")
    assert len(versions_of(s3_client, locked_bucket, "pve/" + ARCHIVE)[0]) == 1

    # versions and undelete through the mount: the file shows again at once
    listed = run_cli("versions", "--json", str(mount.path / "dump"))
    assert listed.returncode == 0, listed.stderr
    assert ARCHIVE in listed.stdout and NOTES in listed.stdout
    done = run_cli("undelete", str(mount.path / ARCHIVE))
    assert done.returncode == 0, (done.stderr, mount.log()[-3000:])
    assert hashlib.sha256((mount.path / ARCHIVE).read_bytes()).digest() == \
        hashlib.sha256(archive).digest()
    # and on the bucket directly, without the mount
    done = run_cli("undelete", "--endpoint-url", s3_server.endpoint_url, "--bucket",
                   locked_bucket, "--prefix", "pve/", NOTES)
    assert done.returncode == 0, done.stderr
    assert s3_client.get_object(Bucket=locked_bucket, Key="pve/" + NOTES)["Body"].read() == notes
    again = run_cli("undelete", str(mount.path / ARCHIVE))
    assert again.returncode == 1 and "not deleted" in again.stderr
    # what came back is what was backed up, by its recorded checksum
    checked = run_cli("verify", "--endpoint-url", s3_server.endpoint_url, "--bucket",
                      locked_bucket, "--prefix", "pve/", "--json", "dump")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {e["path"]: e["status"] for e in json.loads(checked.stdout)["objects"]} == \
        {ARCHIVE: "ok", NOTES: "ok"}
    # and it is locked again, from the undelete on
    assert s3_client.head_object(Bucket=locked_bucket, Key="pve/" + ARCHIVE)["ObjectLockMode"] \
        == "GOVERNANCE"


def test_retention_on_a_bucket_without_object_lock_refuses_to_mount(mount_s3pvefs, bucket):
    with pytest.raises(MountProcessError) as failed:
        mount_s3pvefs("--retention-by-dir", "dump=7d")
    assert "exited with 2" in str(failed.value) and "Object Lock" in str(failed.value)


def host_policy(bucket: str, host_arn: str) -> dict:
    """docs/integrity.md's least-privilege policy of a Proxmox host, as a bucket policy."""
    doc = (REPO / "docs" / "integrity.md").read_text()
    policy = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0]
                        .replace("BUCKET", bucket))
    for statement in policy["Statement"]:
        statement["Principal"] = {"AWS": [host_arn]}
    return policy


def test_the_documented_host_policy_mounts_and_cannot_destroy_a_locked_backup(
        request, mount_s3pvefs, s3_server, s3_client, locked_bucket):
    """On the real server (moto does not enforce bucket policies): a second user with exactly
    the policy of docs/integrity.md mounts, backs up, prunes and undeletes, and cannot remove
    the locked version, bypass governance, or switch versioning off."""
    import boto3

    if s3_server.kind != "rgw":
        pytest.skip("moto does not enforce bucket policies: the real-server run checks this")

    request.getfixturevalue("rgw_server").add_user("pve-host", "pvehost", "pvehostsecret")
    s3_client.put_bucket_policy(Bucket=locked_bucket, Policy=json.dumps(
        host_policy(locked_bucket, "arn:aws:iam:::user/pve-host")))
    host_env = {"AWS_ACCESS_KEY_ID": "pvehost", "AWS_SECRET_ACCESS_KEY": "pvehostsecret"}
    host = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="pvehost", aws_secret_access_key="pvehostsecret")
    mount = mount_s3pvefs("--bucket", locked_bucket, "--retention-by-dir", "dump=1d",
                          env=host_env)
    archive = os.urandom(12 * MiB)
    (mount.path / ARCHIVE).write_bytes(archive)
    synced(mount)
    (mount.path / ARCHIVE).unlink()
    synced(mount)
    version = versions_of(s3_client, locked_bucket, "pve/" + ARCHIVE)[0][0]["VersionId"]
    attacks = {
        "delete the version": lambda: host.delete_object(
            Bucket=locked_bucket, Key="pve/" + ARCHIVE, VersionId=version),
        "bypass governance": lambda: host.delete_object(
            Bucket=locked_bucket, Key="pve/" + ARCHIVE, VersionId=version,
            BypassGovernanceRetention=True),
        "suspend versioning": lambda: host.put_bucket_versioning(
            Bucket=locked_bucket, VersioningConfiguration={"Status": "Suspended"}),
        "drop the policy": lambda: host.delete_bucket_policy(Bucket=locked_bucket),
    }
    for what, attack in attacks.items():
        with pytest.raises(ClientError) as refused:
            attack()
        assert refused.value.response["Error"]["Code"] in ("AccessDenied", "InvalidRequest"), what
    assert len(versions_of(s3_client, locked_bucket, "pve/" + ARCHIVE)[0]) == 1
    done = run_cli("undelete", str(mount.path / ARCHIVE))
    assert done.returncode == 0, (done.stderr, mount.log()[-3000:])
    assert hashlib.sha256((mount.path / ARCHIVE).read_bytes()).digest() == \
        hashlib.sha256(archive).digest()
    # the owner, bypassing governance, could: what stopped the host was the policy
    s3_client.delete_object(Bucket=locked_bucket, Key="pve/" + ARCHIVE, VersionId=version,
                            BypassGovernanceRetention=True)


async def test_undelete_of_a_version_too_large_for_one_copy_copies_it_in_parts(
        monkeypatch, store, s3_client, bucket):
    """Versions above CopyObject's 5 GiB are copied part by part (UploadPartCopy of the
    version); the limits are made small here, the path is the same."""
    from s3pvefs.service import versions

    s3_client.put_bucket_versioning(Bucket=bucket,
                                    VersioningConfiguration={"Status": "Enabled"})
    body = os.urandom(12 * MiB)
    key = "pve/" + ARCHIVE
    s3_client.put_object(Bucket=bucket, Key=key, Body=body,
                         Metadata={"s3pvefs-crc64nvme": "recorded", "mode": "33188"})
    s3_client.delete_object(Bucket=bucket, Key=key)
    monkeypatch.setattr(versions, "MAX_COPY_SIZE", 5 * MiB)
    monkeypatch.setattr(versions, "COPY_PART", 5 * MiB)
    restored = await versions.undelete(store, "pve/", ARCHIVE)
    assert restored["size"] == len(body)
    answer = s3_client.get_object(Bucket=bucket, Key=key)
    assert hashlib.sha256(answer["Body"].read()).digest() == hashlib.sha256(body).digest()
    assert answer["Metadata"] == {"s3pvefs-crc64nvme": "recorded", "mode": "33188"}
    assert answer["ETag"].strip('"').endswith("-3")  # three parts, copied on the server
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
