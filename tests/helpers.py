"""What many test modules need: the FUSE skip mark and a look at the bucket with a plain boto3
client (the ``s3_client`` fixture)."""

from __future__ import annotations

import os

import pytest

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def keys(s3_client, bucket: str, prefix: str = "") -> set[str]:
    """Every key in ``bucket`` under ``prefix``."""
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def object_bytes(s3_client, bucket: str, key: str) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


def open_uploads(s3_client, bucket: str) -> list:
    """The bucket's multipart uploads not completed or aborted yet."""
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
