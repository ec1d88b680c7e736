"""The request parameters a mount's configuration adds to S3 requests: the storage class and
Object Lock retention of new objects and the server-side encryption headers, per kind of
request (``ObjectOptions``).

The settings themselves (their spellings, validation, the SSE-C key file) are in
``s3options.py``; ``S3Store`` adds what ``ObjectOptions`` gives to each request it sends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from s3pvefs.config.retention import GOVERNANCE, retention_for
from s3pvefs.config.s3options import SSE_C, SSE_KMS, SSE_S3, storage_class_for
from s3pvefs.config.settings import Config
from s3pvefs.errors import ConfigError
from s3pvefs.names import is_file_key


@dataclass(frozen=True)
class ObjectOptions:
    """Request parameters the configuration adds, per kind of request.

    SSE-S3 and SSE-KMS are asked for only where an object is created (PutObject,
    CreateMultipartUpload, CopyObject): S3 rejects them on reads. SSE-C needs the key on every
    request that touches object data, and the source's key (the same one) on copies.
    """

    prefix: str = ""
    default_class: str | None = None
    class_by_dir: dict[str, str] = field(default_factory=dict)
    # PutObject, CreateMultipartUpload, CopyObject: SSE-S3, SSE-KMS or SSE-C
    on_create: dict[str, Any] = field(default_factory=dict, repr=False)
    # Every other request on object data (GET, HEAD, parts, completion): the SSE-C key
    sse_c: dict[str, Any] = field(default_factory=dict, repr=False)
    # CopyObject, UploadPartCopy: the SSE-C key of the source
    sse_c_source: dict[str, Any] = field(default_factory=dict, repr=False)
    # Object Lock of new objects: seconds per content directory, and the mode
    retention_by_dir: dict[str, int] = field(default_factory=dict)
    retention_mode: str = GOVERNANCE

    @classmethod
    def from_config(cls, config: Config) -> ObjectOptions:
        on_create: dict[str, Any] = {}
        sse_c: dict[str, Any] = {}
        sse_c_source: dict[str, Any] = {}
        if config.sse == SSE_S3:
            on_create = {"ServerSideEncryption": "AES256"}
        elif config.sse == SSE_KMS:
            on_create = {"ServerSideEncryption": "aws:kms"}
            if config.kms_key_id:
                on_create["SSEKMSKeyId"] = config.kms_key_id
        elif config.sse == SSE_C:
            if not config.sse_customer_key:
                raise ConfigError("SSE-C is configured without a customer key")
            # botocore adds the key's MD5 and base64-encodes both (handlers.sse_md5), in its
            # own copy of the parameters: these dicts are reused as they are.
            customer_key = config.sse_customer_key
            sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer_key}
            on_create = dict(sse_c)
            sse_c_source = {"CopySourceSSECustomerAlgorithm": "AES256",
                            "CopySourceSSECustomerKey": customer_key}
        return cls(config.prefix, config.storage_class, dict(config.storage_class_by_dir),
                   on_create, sse_c, sse_c_source, dict(config.retention_by_dir),
                   config.retention_mode)

    @property
    def etags_are_md5(self) -> bool:
        """Whether S3 makes a PUT's or a part's ETag the MD5 of its body (not under SSE-C or
        SSE-KMS)."""
        return not self.sse_c and self.on_create.get("ServerSideEncryption") != "aws:kms"

    def storage_class(self, key: str) -> str | None:
        """The class a new object at `key` gets (None: the server's default)."""
        relative = self._file_key(key)
        if relative is None:
            return None
        return storage_class_for(relative, self.default_class, self.class_by_dir)

    def retention(self, key: str) -> dict[str, Any]:
        """The Object Lock parameters of a new object at `key`: none, or the mode and a
        retain-until date counted from now."""
        relative = self._file_key(key)
        seconds = retention_for(relative, self.retention_by_dir) if relative else None
        if seconds is None:
            return {}
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
        return {"ObjectLockMode": self.retention_mode, "ObjectLockRetainUntilDate": until}

    def _file_key(self, key: str) -> str | None:
        """A file's key relative to the prefix; None for a directory marker or an object of
        s3pvefs's own (small, rewritten and read often: never a colder class, never locked)."""
        if not is_file_key(key):
            return None
        return key[len(self.prefix):] if key.startswith(self.prefix) else key

    def for_create(self, key: str, storage_class: str | None = None, *,
                   retention: bool = True) -> dict[str, Any]:
        """Parameters of a request that creates an object at ``key``; ``retention=False``
        leaves Object Lock out (a CopyObject: some servers refuse it there without a
        Content-MD5 a copy cannot have; the store sets it afterwards)."""
        chosen = storage_class or self.storage_class(key)
        return {**self.on_create, **({"StorageClass": chosen} if chosen else {}),
                **(self.retention(key) if retention else {})}

    def configured_classes(self) -> set[str]:
        return {c for c in (self.default_class, *self.class_by_dir.values()) if c}

