"""The S3 servers the tests run on (tests/conftest.py): every fixture follows ``s3_server``, and
both servers do the basic S3 operations the other tests build on."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.real_server


def test_fixtures_follow_the_server(s3_server, s3_client, bucket, store_config, proxy):
    assert s3_server.kind in ("moto", "rgw")
    assert s3_client.meta.endpoint_url == s3_server.endpoint_url
    assert store_config.endpoint_url == s3_server.endpoint_url
    assert store_config.bucket == bucket
    assert f"http://{proxy.upstream[0]}:{proxy.upstream[1]}" == s3_server.endpoint_url
    assert bucket in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}


def test_put_get_list_delete(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="pve/a", Body=b"hello", Metadata={"mtime": "1"})
    assert s3_client.get_object(Bucket=bucket, Key="pve/a", Range="bytes=1-3")["Body"].read() \
        == b"ell"
    assert s3_client.head_object(Bucket=bucket, Key="pve/a")["Metadata"] == {"mtime": "1"}
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="pve/", Delimiter="/")
    assert [obj["Key"] for obj in listed["Contents"]] == ["pve/a"]
    s3_client.delete_object(Bucket=bucket, Key="pve/a")
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
