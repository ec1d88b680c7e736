"""`s3pvefs check`, `info` and `lifecycle` against a moto server process; S3 options through a
real mount; secrets kept out of logs, output and process titles."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path

import pytest
from helpers import needs_fuse, open_uploads
from mounting import run_cli

from s3pvefs.config.check import validate_config
from s3pvefs.config.settings import Config
from s3pvefs.config.values import MiB
from s3pvefs.errors import ConfigError, StoreError
from s3pvefs.service import admin
from s3pvefs.store.s3store import S3Store, open_s3_store


def s3_args(moto_server, bucket: str, prefix: str = "pve/") -> list[str]:
    return ["--endpoint-url", moto_server.endpoint_url, "--bucket", bucket, "--prefix", prefix,
            "--max-attempts", "1"]


def all_keys(s3_client, bucket: str) -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def validated(config: Config, **changes) -> Config:
    config = dataclasses.replace(config, **changes)
    validate_config(config)
    return config


def by_name(results: list[admin.CheckResult]) -> dict[str, admin.CheckResult]:
    return {result.name: result for result in results}


# ---- check ------------------------------------------------------------------------------------


async def test_check_passes_and_leaves_nothing_behind(store_config, s3_client, bucket) -> None:
    config = validated(store_config, prefix="pve", sse="AES256", storage_class="STANDARD_IA",
                       storage_class_by_dir={"template": "STANDARD"})
    async with open_s3_store(config) as store:
        results = await admin.run_checks(store, config)
    named = by_name(results)
    assert all(result.ok for result in results), admin.format_checks(config, results)
    assert list(named) == ["credentials", "bucket", "protection", "write", "read",
                           "ranged GET", "encryption", "class STANDARD", "class STANDARD_IA",
                           "multipart", "Complete ETag", "UploadPartCopy",
                           "copy-source-if-match", "latency", "delete"]
    # moto, like Ceph RGW, ignores x-amz-copy-source-if-match: a warning, not a failure; the
    # bucket has no versioning: nothing deleted can be undeleted
    assert [r.name for r in results if r.warning] == ["protection", "copy-source-if-match"]
    assert "versioning Disabled, no Object Lock" in named["protection"].detail
    assert named["copy-source-if-match"].status == "WARN"
    assert "ESTALE" in named["copy-source-if-match"].detail
    assert named["Complete ETag"].detail.startswith("the answer names the new object's ETag")
    assert "AES256" in named["encryption"].detail
    assert "Content-Range bytes 1000-2999/65536" in named["ranged GET"].detail
    assert "median" in named["latency"].detail and "over 5 HEAD requests" in named["latency"].detail
    assert all_keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []


async def test_check_reports_object_lock_and_refuses_retention_without_it(
        store_config, s3_client, bucket) -> None:
    config = validated(store_config, prefix="pve", retention_by_dir={"dump": "30d"})
    async with open_s3_store(config) as store:
        named = by_name(await admin.run_checks(store, config))
    assert named["protection"].ok is False
    assert "needs a bucket with Object Lock" in named["protection"].detail
    locked = f"{bucket}-locked"
    s3_client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    config = validated(store_config, bucket=locked, prefix="pve",
                       retention_by_dir={"dump": "30d", "template/iso": "12h"})
    async with open_s3_store(config) as store:
        named = by_name(await admin.run_checks(store, config))
    assert named["protection"].ok and not named["protection"].warning
    assert named["protection"].detail == (
        "versioning Enabled, Object Lock enabled; new objects retained (GOVERNANCE): "
        "dump 30d, template/iso 12h")


async def test_check_reports_sse_c_the_server_does_not_confirm(store_config, s3_client, bucket):
    """moto ignores SSE-C: the check must say so instead of trusting the request went well."""
    config = validated(store_config, sse="SSE-C", sse_customer_key=os.urandom(32))
    async with open_s3_store(config) as store:
        named = by_name(await admin.run_checks(store, config))
    assert named["encryption"].ok is False
    assert "SSE-C was asked for but the server reports no encryption" in named["encryption"].detail
    assert named["read"].ok and named["UploadPartCopy"].ok
    assert all_keys(s3_client, bucket) == []


async def test_check_missing_bucket_skips_the_rest(store_config) -> None:
    config = validated(store_config, bucket="no-such-bucket-for-check")
    async with open_s3_store(config) as store:
        results = await admin.run_checks(store, config)
    named = by_name(results)
    assert named["credentials"].ok and named["bucket"].ok is False
    assert "does not exist" in named["bucket"].detail
    assert all(r.ok is None and r.detail == "needs bucket" for r in results[2:])


async def test_check_cleans_up_after_a_failure(store: S3Store, store_config, s3_client, bucket,
                                               monkeypatch) -> None:
    real_complete = store.complete_multipart

    async def complete_fails_for_the_part_copy(key, upload_id, parts, size):
        if key.endswith(".part-copy"):
            raise StoreError("CompleteMultipartUpload", key, "InternalError", "injected")
        return await real_complete(key, upload_id, parts, size)

    monkeypatch.setattr(store, "complete_multipart", complete_fails_for_the_part_copy)
    named = by_name(await admin.run_checks(store, store_config))
    assert named["UploadPartCopy"].ok is False
    assert named["UploadPartCopy"].detail == (
        "CompleteMultipartUpload failed: InternalError: injected")
    assert named["multipart"].ok and named["delete"].ok
    assert all_keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []


async def test_check_notices_a_server_that_ignores_ranges(store: S3Store, store_config,
                                                          monkeypatch) -> None:
    async def whole_object(key, start, length):
        return await store.get(key), None

    monkeypatch.setattr(store, "get_range", whole_object)
    named = by_name(await admin.run_checks(store, store_config))
    assert named["ranged GET"].ok is False
    assert "ignored the Range header" in named["ranged GET"].detail


async def test_check_notices_a_class_the_server_does_not_keep(store_config, monkeypatch):
    config = validated(store_config, storage_class="GLACIER_IR")
    async with open_s3_store(config) as store:
        real_put = store.put

        async def put_ignoring_class(key, data, metadata, *, storage_class=None):
            return await real_put(key, data, metadata)

        monkeypatch.setattr(store, "put", put_ignoring_class)
        named = by_name(await admin.run_checks(store, config))
    assert named["class GLACIER_IR"].ok is False
    assert named["class GLACIER_IR"].detail == "asked for GLACIER_IR, the server stored STANDARD"


async def test_check_warns_when_the_complete_answer_has_no_etag(store: S3Store, store_config,
                                                               s3_client, bucket, monkeypatch):
    """Ceph RGW 16.2 answers CompleteMultipartUpload with an empty <ETag></ETag>."""
    real_call = store._call

    async def empty_etag(operation, key, **params):
        response = await real_call(operation, key, **params)
        return {**response, "ETag": ""} if operation == "CompleteMultipartUpload" else response

    monkeypatch.setattr(store, "_call", empty_etag)
    results = await admin.run_checks(store, store_config)
    named = by_name(results)
    assert named["Complete ETag"].ok is True and named["Complete ETag"].status == "WARN"
    assert "has no ETag (as Ceph RGW 16.2)" in named["Complete ETag"].detail
    assert "HEAD" in named["Complete ETag"].detail
    assert not any(r.ok is False for r in results)
    assert all_keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []


async def test_check_warns_without_upload_part_copy(store: S3Store, store_config, s3_client,
                                                    bucket, monkeypatch):
    async def not_implemented(key, upload_id, *args, **kwargs):
        raise StoreError("UploadPartCopy", key, "NotImplemented", "not here")

    monkeypatch.setattr(store, "upload_part_copy", not_implemented)
    results = await admin.run_checks(store, store_config)
    named = by_name(results)
    assert named["UploadPartCopy"].ok is True and named["UploadPartCopy"].warning
    assert "upload their data again" in named["UploadPartCopy"].detail
    assert not any(r.ok is False for r in results)
    text = admin.format_checks(store_config, results)
    assert "  WARN  UploadPartCopy" in text and "checks passed, 3 with a warning" in text
    assert all_keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []


async def test_check_accepts_a_server_that_enforces_copy_source_if_match(
        store: S3Store, store_config, monkeypatch):
    real_copy = store.copy

    async def enforcing(src_key, dst_key, metadata=None, if_match=None):
        if if_match is not None and if_match != (await store.head(src_key)).etag:
            raise StoreError("CopyObject", src_key, "PreconditionFailed", "At least one of the "
                             "pre-conditions you specified did not hold")
        return await real_copy(src_key, dst_key, metadata, if_match)

    monkeypatch.setattr(store, "copy", enforcing)
    named = by_name(await admin.run_checks(store, store_config))
    assert named["copy-source-if-match"].status == "ok"
    assert "refused (PreconditionFailed)" in named["copy-source-if-match"].detail


def test_check_create_bucket_creates_a_missing_bucket(moto_server, s3_client, tmp_path):
    """`check --create-bucket` (and create_bucket = true) creates the bucket in the region,
    like a mount; without it a missing bucket fails the check."""
    name = "made-by-check-" + os.urandom(4).hex()
    args = ["--endpoint-url", moto_server.endpoint_url, "--bucket", name, "--max-attempts", "1",
            "--region", "eu-central-1"]
    assert run_cli("check", *args).returncode == 1
    result = run_cli("check", *args, "--create-bucket")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"bucket '{name}' did not exist: created it in region eu-central-1" in result.stdout
    assert s3_client.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-central-1"
    assert all_keys(s3_client, name) == []

    other = "made-by-config-" + os.urandom(4).hex()
    config = tmp_path / "check.toml"
    config.write_text(f'[s3]\nendpoint_url = "{moto_server.endpoint_url}"\nbucket = "{other}"\n'
                      'create_bucket = true\nmax_attempts = 1\n')
    result = run_cli("check", "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert s3_client.head_bucket(Bucket=other)


def test_check_command_exit_status_and_table(moto_server, bucket, s3_client) -> None:
    result = run_cli("check", *s3_args(moto_server, bucket), "--sse", "AES256")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"s3pvefs check: s3://{bucket}/pve/ at ")
    assert "all 13 checks passed, 2 with a warning" in result.stdout
    assert "  WARN  copy-source-if-match" in result.stdout
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("s3pvefs: check warning: protection: versioning Disabled")
    assert warnings[1].startswith("s3pvefs: check warning: copy-source-if-match: the server "
                                  "ignores x-amz-copy-source-if-match")
    failed = run_cli("check", *s3_args(moto_server, "missing-bucket-x"))
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "s3pvefs: check failed: bucket: bucket 'missing-bucket-x' does not exist (create it, "
        "or run check or mount once with --create-bucket)"]
    assert all_keys(s3_client, bucket) == []


def test_check_command_configuration_errors(tmp_path) -> None:
    assert run_cli("check").returncode == 2
    assert "no bucket configured" in run_cli("check").stderr
    bad = run_cli("check", "--bucket", "b1b", "--storage-class", "GLACIER_FLEX")
    assert bad.returncode == 2 and "--storage-class: unknown storage class" in bad.stderr


def test_check_command_unreachable_endpoint(unreachable_endpoint_url) -> None:
    result = run_cli("check", "--endpoint-url", unreachable_endpoint_url, "--bucket", "b1b",
                     "--max-attempts", "1", "--connect-timeout", "2")
    assert result.returncode == 1
    assert "s3pvefs: check failed: bucket: ListObjectsV2 failed: EndpointConnectionError" in \
        result.stderr


# ---- info -------------------------------------------------------------------------------------


def fill_bucket(s3_client, bucket: str) -> None:
    put = s3_client.put_object
    put(Bucket=bucket, Key="pve/dump/vzdump-qemu-100.vma.zst", Body=b"v" * 3000,
        StorageClass="STANDARD_IA")
    put(Bucket=bucket, Key="pve/dump/vzdump-qemu-101.vma.zst", Body=b"v" * 1000,
        StorageClass="STANDARD_IA")
    put(Bucket=bucket, Key="pve/dump/vzdump-qemu-100.vma.zst.notes", Body=b"n")
    put(Bucket=bucket, Key="pve/template/iso/debian.iso", Body=b"i" * 500)
    put(Bucket=bucket, Key="pve/template/cache/ct.tar.zst", Body=b"c" * 50,
        StorageClass="GLACIER_IR")
    put(Bucket=bucket, Key="pve/images/100/vm-100-disk-0.qcow2", Body=b"q" * 70)
    put(Bucket=bucket, Key="pve/random.txt", Body=b"r")
    put(Bucket=bucket, Key="pve/template/other", Body=b"o")
    put(Bucket=bucket, Key="pve/dump/", Body=b"")  # directory marker
    put(Bucket=bucket, Key="pve/dump/.s3pvefs-attrs.host-1a2b", Body=b"{}")
    put(Bucket=bucket, Key="elsewhere/dump/x", Body=b"not ours")
    s3_client.create_multipart_upload(Bucket=bucket, Key="pve/dump/unfinished")


EXPECTED_ROWS = [
    ("dump", "STANDARD", 1, 1),
    ("dump", "STANDARD_IA", 2, 4000),
    ("images", "STANDARD", 1, 70),
    ("template/iso", "STANDARD", 1, 500),
    ("template/cache", "GLACIER_IR", 1, 50),
    ("other", "STANDARD", 2, 2),
]


async def test_info_groups_by_content_dir_and_class(store: S3Store, s3_client, bucket,
                                                    monkeypatch) -> None:
    fill_bucket(s3_client, bucket)
    real_list_page = store.list_page
    pages = []

    async def small_pages(prefix, delimiter="/", token=None, max_keys=1000):
        pages.append(token)
        return await real_list_page(prefix, delimiter, token, max_keys=3)

    monkeypatch.setattr(store, "list_page", small_pages)
    usage = await admin.collect_usage(store, "pve/")
    assert len(pages) == 4  # 10 keys under the prefix, 3 per page
    assert usage.rows() == EXPECTED_ROWS
    assert usage.internal == [2, 2] and usage.incomplete_uploads == 1


@pytest.mark.parametrize("key, expected", [
    ("dump/a.vma.zst", "dump"), ("template/iso/x.iso", "template/iso"),
    ("template/cache/y.tar.gz", "template/cache"), ("template/z", "other"),
    ("snippets/s.yaml", "snippets"), ("private/100/f", "private"), ("import/i.ova", "import"),
    ("images/100/d.raw", "images"), ("dumpster/x", "other"), ("top", "other"),
    ("dump/", None), ("dump/.s3pvefs-attrs.h-1", None), (".s3pvefs-check.h.1.ab", None),
])
def test_content_dir(key, expected) -> None:
    assert admin.content_dir(key) == expected


def test_info_command_text_and_json(moto_server, bucket, s3_client) -> None:
    fill_bucket(s3_client, bucket)
    text = run_cli("info", *s3_args(moto_server, bucket))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"s3://{bucket}/pve/ at {moto_server.endpoint_url}"
    assert lines[2].split() == ["dump", "STANDARD", "1", "1", "B"]
    assert lines[3].split() == ["dump", "STANDARD_IA", "2", "3.9", "KiB"]
    assert "incomplete multipart uploads: 1" in text.stdout
    as_json = run_cli("info", *s3_args(moto_server, bucket), "--json")
    figures = json.loads(as_json.stdout)
    assert [(d["directory"], d["storage_class"], d["objects"], d["bytes"])
            for d in figures["directories"]] == EXPECTED_ROWS
    assert figures["total"] == {"objects": 8, "bytes": 4623}
    assert figures["s3pvefs_internal"] == {"objects": 2, "bytes": 2}
    missing = run_cli("info", *s3_args(moto_server, "missing-bucket-x"))
    assert missing.returncode == 1 and "NoSuchBucket" in missing.stderr


# ---- lifecycle --------------------------------------------------------------------------------

OTHER_RULE = {"ID": "logs-expire", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
              "Expiration": {"Days": 90}}


def lifecycle_rules(s3_client, bucket: str) -> list[dict]:
    return s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]


async def test_lifecycle_merges_with_existing_rules(store: S3Store, s3_client, bucket) -> None:
    s3_client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [OTHER_RULE]})
    plan = admin.LifecyclePlan(transition_days=30, glacier_days=90, abort_incomplete_days=3)
    result = await admin.apply_lifecycle(store, "pve/", plan, dry_run=False)
    # Small objects (attribute indexes, notes) stay readable: only bigger ones move.
    transitions = {"ID": "s3pvefs-pve", "Status": "Enabled",
                   "Filter": {"And": {"Prefix": "pve/", "ObjectSizeGreaterThan": 128 * 1024}},
                   "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"},
                                   {"Days": 90, "StorageClass": "GLACIER"}]}
    uploads = {"ID": "s3pvefs-pve-uploads", "Status": "Enabled", "Filter": {"Prefix": "pve/"},
               "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}}
    assert result["Rules"] == [OTHER_RULE, transitions, uploads]
    stored = lifecycle_rules(s3_client, bucket)  # moto keeps no ObjectSizeGreaterThan
    assert [stored[0], stored[2]] == [OTHER_RULE, uploads]
    assert stored[1]["Transitions"] == transitions["Transitions"]
    # Again with other values: our rules are replaced, not added twice.
    again = admin.LifecyclePlan(glacier_days=180)
    await admin.apply_lifecycle(store, "pve/", again, dry_run=False)
    rules = lifecycle_rules(s3_client, bucket)
    assert [rule["ID"] for rule in rules] == ["logs-expire", "s3pvefs-pve", "s3pvefs-pve-uploads"]
    assert rules[1]["Transitions"] == [{"Days": 180, "StorageClass": "GLACIER"}]
    assert rules[2]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    # Another prefix's rules live next to ours; without transitions only the uploads rule.
    await admin.apply_lifecycle(store, "other/", admin.LifecyclePlan(), dry_run=False)
    assert [r["ID"] for r in lifecycle_rules(s3_client, bucket)] == [
        "logs-expire", "s3pvefs-pve", "s3pvefs-pve-uploads", "s3pvefs-other-uploads"]
    await admin.apply_lifecycle(store, "pve/", admin.LifecyclePlan(remove=True), dry_run=False)
    assert [r["ID"] for r in lifecycle_rules(s3_client, bucket)] == [
        "logs-expire", "s3pvefs-other-uploads"]


async def test_lifecycle_on_a_bucket_without_one_and_dry_run(store: S3Store, s3_client,
                                                             bucket) -> None:
    assert (await store.get_lifecycle())["Rules"] == []
    plan = admin.LifecyclePlan(transition_days=45)
    result = await admin.apply_lifecycle(store, "", plan, dry_run=True)
    assert [rule["ID"] for rule in result["Rules"]] == ["s3pvefs", "s3pvefs-uploads"]
    assert result["Rules"][0]["Filter"] == {"ObjectSizeGreaterThan": 128 * 1024}
    assert result["Rules"][1]["Filter"] == {"Prefix": ""}
    assert (await store.get_lifecycle())["Rules"] == []  # a dry run writes nothing
    await admin.apply_lifecycle(store, "", plan, dry_run=False)
    await admin.apply_lifecycle(store, "", admin.LifecyclePlan(remove=True), dry_run=False)
    assert (await store.get_lifecycle())["Rules"] == []  # no rule left: configuration deleted


@pytest.mark.parametrize("plan, message", [
    (admin.LifecyclePlan(transition_days=29), "--transition-days: S3 moves objects to "
                                              "STANDARD_IA after 30 days at the earliest"),
    (admin.LifecyclePlan(transition_days=30, glacier_days=59),
     "--glacier-days: must be at least --transition-days + 30 (60)"),
    (admin.LifecyclePlan(glacier_days=0), "--glacier-days: must be at least 1"),
    (admin.LifecyclePlan(abort_incomplete_days=0), "--abort-incomplete-days: must be at least 1"),
    (admin.LifecyclePlan(noncurrent_days=0), "--noncurrent-days: must be at least 1"),
])
def test_lifecycle_validation(plan, message) -> None:
    with pytest.raises(ConfigError) as failure:
        plan.validate()
    assert message in str(failure.value)


def test_rule_id_is_bounded() -> None:
    assert admin.rule_id("a/b/") == "s3pvefs-a/b"
    long_id = admin.rule_id("x" * 400 + "/")
    assert long_id.startswith("s3pvefs-") and len(long_id + "-uploads") <= 255
    assert long_id == admin.rule_id("x" * 400 + "/")


def test_lifecycle_command(moto_server, bucket, s3_client) -> None:
    args = [*s3_args(moto_server, bucket), "--transition-days", "30", "--glacier-days", "90"]
    dry = run_cli("lifecycle", *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["Rules"][0]["ID"] == "s3pvefs-pve"
    assert "dry run" in dry.stderr
    with pytest.raises(s3_client.exceptions.ClientError):
        lifecycle_rules(s3_client, bucket)
    written = run_cli("lifecycle", *args)
    assert written.returncode == 0 and json.loads(written.stdout) == json.loads(dry.stdout)
    assert lifecycle_rules(s3_client, bucket)[0]["Transitions"][1]["StorageClass"] == "GLACIER"
    refused = run_cli("lifecycle", *s3_args(moto_server, bucket), "--transition-days", "7")
    assert refused.returncode == 2 and "at the earliest" in refused.stderr
    # versions that stopped being current expire (the uploads rule, scoped to the prefix)
    versions = run_cli("lifecycle", *s3_args(moto_server, bucket), "--noncurrent-days", "45")
    assert versions.returncode == 0, versions.stderr
    rule = [r for r in lifecycle_rules(s3_client, bucket) if r["ID"] == "s3pvefs-pve-uploads"]
    assert rule[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 45}
    assert rule[0]["Filter"] == {"Prefix": "pve/"}


def test_cli_and_admin_agree_on_the_abort_default() -> None:
    from s3pvefs.cli import admin as cliadmin

    assert cliadmin.DEFAULT_ABORT_DAYS == admin.DEFAULT_ABORT_DAYS


# ---- secrets stay out of output, logs and process titles ---------------------------------------

SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYDISTINCTSECRET"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEDISTINCTSESSIONTOKEN0123456789"
SSE_C_KEY = bytes(range(200, 232))
SSE_C_KEY_TEXT = base64.b64encode(SSE_C_KEY).decode()


def secret_config(tmp_path: Path, endpoint: str, bucket: str,
                  log_file: Path | None = None) -> Path:
    """A config file with keys, a session token and an SSE-C key file (all chmod 600)."""
    key_file = tmp_path / "sse-c.key"
    key_file.write_bytes(SSE_C_KEY)
    key_file.chmod(0o600)
    text = (
        f'[s3]\nendpoint_url = "{endpoint}"\nbucket = "{bucket}"\nmax_attempts = 1\n'
        f'connect_timeout = 2\n'
        f'[credentials]\naccess_key_id = "AKIADISTINCTKEYID01"\n'
        f'secret_access_key = "{SECRET_KEY}"\nsession_token = "{SESSION_TOKEN}"\n'
        f'[encryption]\nsse = "SSE-C"\nsse_customer_key_file = "{key_file}"\n'
    )
    if log_file is not None:
        text += f'[log]\nlevel = "debug"\nfile = "{log_file}"\n'
    path = tmp_path / "s3pvefs.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (SECRET_KEY, SESSION_TOKEN, SSE_C_KEY_TEXT):
            assert secret not in text


def test_no_secret_in_output_or_log_of_a_failing_check(tmp_path, unreachable_endpoint_url):
    log_file = tmp_path / "check.log"
    config = secret_config(tmp_path, unreachable_endpoint_url, "b1b", log_file)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    log_text = log_file.read_text()
    assert "configuration: {" in log_text  # the debug dump that must be redacted
    assert "'secret_access_key': '***'" in log_text and "'sse_customer_key': '***'" in log_text
    assert_no_secret(result.stdout, result.stderr, log_text)


def test_no_secret_from_the_environment_in_a_failing_check(tmp_path, unreachable_endpoint_url):
    log_file = tmp_path / "check.log"
    env = {"AWS_ACCESS_KEY_ID": "AKIADISTINCTKEYID01", "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN}
    result = run_cli("check", "--endpoint-url", unreachable_endpoint_url, "--bucket", "b1b",
                     "--max-attempts", "1", "--log-level", "debug", "--log-file", str(log_file),
                     env=env)
    assert result.returncode == 1 and "from environment" in result.stdout
    assert_no_secret(result.stdout, result.stderr, log_file.read_text())


def test_a_short_secret_does_not_mask_other_words_in_the_log(tmp_path, unreachable_endpoint_url):
    """The secret "test" of a test setup: the log still says "pjdfstest", and the secret is
    masked where it is printed as one."""
    log_file = tmp_path / "check.log"
    env = {"AWS_ACCESS_KEY_ID": "AKIADISTINCTKEYID01", "AWS_SECRET_ACCESS_KEY": "test"}
    result = run_cli("check", "--endpoint-url", unreachable_endpoint_url, "--bucket", "b1b",
                     "--prefix", "pjdfstest", "--max-attempts", "1", "--log-level", "debug",
                     "--log-file", str(log_file), env=env)
    assert result.returncode == 1
    log_text = log_file.read_text()
    assert "'prefix': 'pjdfstest/'" in log_text
    assert "pjdfs***" not in log_text + result.stdout + result.stderr


@pytest.mark.parametrize("flag", ["--secret-access-key", "--session-token", "--sse-customer-key"])
def test_secret_flags_are_refused_without_echo(flag) -> None:
    result = run_cli("mount", flag, SECRET_KEY, "--bucket", "b1b", "/mnt")
    assert result.returncode == 2 and f"{flag} is not accepted" in result.stderr
    assert SECRET_KEY not in result.stderr + result.stdout
    result = run_cli("check", f"{flag}={SECRET_KEY}")
    assert result.returncode == 2 and SECRET_KEY not in result.stderr + result.stdout




@needs_fuse
def test_no_secret_in_the_title_environment_or_log_of_a_running_mount(
    mount_s3pvefs, moto_server, bucket, tmp_path
) -> None:
    config = secret_config(tmp_path, moto_server.endpoint_url, bucket)
    mount = mount_s3pvefs("--config", str(config))
    (mount.path / "snippets" / "hook.pl").write_bytes(b"#!/usr/bin/perl\n")
    pid = mount.process.pid
    title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "--config" in title
    assert_no_secret(title, Path(f"/proc/{pid}/comm").read_text())
    assert mount.unmount() == 0
    log_text = mount.log()
    assert "configuration: {" in log_text  # the mount logs at debug level
    assert_no_secret(log_text)


# ---- storage class and encryption through a real mount -----------------------------------------


@needs_fuse
def test_mount_writes_with_classes_per_directory_and_sse(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs("--storage-class", "STANDARD_IA", "--storage-class-by-dir",
                          "template=STANDARD,dump=GLACIER_IR", "--sse", "AES256")
    big = os.urandom(6 * MiB)  # above the multipart threshold of the test mounts
    (mount.path / "dump" / "vzdump-qemu-100.vma.zst").write_bytes(big)
    (mount.path / "dump" / "vzdump-qemu-100.log").write_bytes(b"log")
    (mount.path / "template" / "iso" / "small.iso").write_bytes(b"iso")
    (mount.path / "snippets" / "hook.pl").write_bytes(b"hook")
    os.chmod(mount.path / "snippets" / "hook.pl", 0o755)  # a copy onto itself
    os.rename(mount.path / "snippets" / "hook.pl", mount.path / "template" / "hook.pl")
    assert mount.unmount() == 0
    expected = {"pve/dump/vzdump-qemu-100.vma.zst": "GLACIER_IR",
                "pve/dump/vzdump-qemu-100.log": "GLACIER_IR",
                "pve/template/iso/small.iso": "STANDARD",
                "pve/template/hook.pl": "STANDARD",
                "pve/dump/": "STANDARD"}  # markers keep the server's default
    for key, storage_class in expected.items():
        head = s3_client.head_object(Bucket=bucket, Key=key)
        assert head.get("StorageClass", "STANDARD") == storage_class, key
        assert head["ServerSideEncryption"] == "AES256", key
    body = s3_client.get_object(Bucket=bucket, Key="pve/dump/vzdump-qemu-100.vma.zst")["Body"]
    assert body.read() == big


@needs_fuse
def test_mount_reads_and_writes_with_sse_c(mount_s3pvefs, tmp_path):
    key_file = tmp_path / "sse-c.key"
    key_file.write_text(SSE_C_KEY_TEXT + "\n")
    key_file.chmod(0o600)
    args = ("--sse", "SSE-C", "--sse-customer-key-file", str(key_file))
    first = mount_s3pvefs(*args)
    data = os.urandom(6 * MiB + 5)
    (first.path / "dump" / "backup.vma.zst").write_bytes(data)
    assert first.unmount() == 0
    second = mount_s3pvefs(*args)
    assert (second.path / "dump" / "backup.vma.zst").read_bytes() == data
    assert second.unmount() == 0
    assert "SSE-C over plain http" in second.log()
