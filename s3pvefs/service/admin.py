"""`s3pvefs check`, `info` and `lifecycle`: admin commands that talk to the bucket directly.

They need no mount: each opens its own store from the same configuration a mount would use, so
`check` tries exactly the requests (and the encryption and storage-class parameters) the mount
would send.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from s3pvefs.config.s3options import ARCHIVE_CLASSES, SSE_C, SSE_KMS, SSE_NONE, SSE_S3
from s3pvefs.config.settings import Config
from s3pvefs.config.values import human_size
from s3pvefs.errors import ConfigError, StoreError
from s3pvefs.names import INTERNAL_NAME_PREFIX, is_file_key
from s3pvefs.store.s3store import S3Store

log = logging.getLogger(__name__)

# ============================================================================================
# check

PROBE_SIZE = 64 * 1024
LATENCY_SAMPLES = 5
RANGE_START, RANGE_LENGTH = 1000, 2000


@dataclass
class CheckResult:
    name: str
    ok: bool | None  # None: skipped because an earlier check it needs failed
    detail: str
    seconds: float | None = None
    # The server lacks something s3pvefs works without (ok stays True): the detail says what
    # it costs.
    warning: bool = False

    @property
    def status(self) -> str:
        if self.ok and self.warning:
            return "WARN"
        return {True: "ok", False: "FAIL", None: "skip"}[self.ok]


class CheckFailed(Exception):
    """A check ran and the answer was wrong: the storage cannot be used (the message is its
    one-line reason)."""


class CheckWarning(Exception):
    """A check ran and the server lacks a capability s3pvefs works without; the message says
    what is missing and its consequence."""


# The checks in the order they run (after "credentials"), for the ones skipped after a failure.
CHECK_NAMES = ("bucket", "protection", "write", "read", "ranged GET", "encryption", "multipart",
               "Complete ETag", "UploadPartCopy", "copy-source-if-match", "latency", "delete")


_CREDENTIAL_SOURCES = {
    "explicit": "[credentials] of the configuration",
    "env": "environment (AWS_ACCESS_KEY_ID)",
    "shared-credentials-file": "shared credentials file (~/.aws/credentials)",
    "config-file": "AWS config file (~/.aws/config)",
    "custom-process": "credential_process",
    "assume-role": "assumed role",
    "assume-role-with-web-identity": "web identity role",
    "sso": "AWS SSO",
    "iam-role": "instance metadata (IAM role)",
    "container-role": "container credentials",
}


class _Checker:
    """Runs the checks in order; every probe object and upload is removed at the end."""

    def __init__(self, store: S3Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.results: list[CheckResult] = []
        self.payload = os.urandom(PROBE_SIZE)
        unique = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
        self.probe = f"{config.prefix}{INTERNAL_NAME_PREFIX}check.{unique}"
        self.created: set[str] = set()  # probe keys to delete
        self.uploads: dict[str, str] = {}  # upload id -> key, until completed or aborted

    async def run(self) -> list[CheckResult]:
        try:
            await self._run_all()
        finally:
            with trio.CancelScope(shield=True):
                await self._clean_up()
        return self.results

    async def _run_all(self) -> None:
        if not self._check_credentials():
            return self._skip_rest("credentials")
        if not await self._step("bucket", self._check_bucket):
            return self._skip_rest("bucket")
        await self._step("protection", self._check_protection)
        if not await self._step("write", self._check_write):
            return self._skip_rest("write")
        await self._step("read", self._check_read)
        await self._step("ranged GET", self._check_ranged_get)
        await self._step("encryption", self._check_encryption)
        for storage_class in sorted(self.store.options.configured_classes()):
            await self._step(f"class {storage_class}", self._check_storage_class, storage_class)
        await self._step("multipart", self._check_multipart)
        await self._step("Complete ETag", self._check_complete_etag)
        await self._step("UploadPartCopy", self._check_upload_part_copy)
        await self._step("copy-source-if-match", self._check_copy_source_if_match)
        await self._step("latency", self._check_latency)
        await self._step("delete", self._check_delete)

    def _skip_rest(self, needed: str) -> None:
        for name in CHECK_NAMES:
            if not any(result.name == name for result in self.results):
                self.results.append(CheckResult(name, None, f"needs {needed}"))

    async def _step(
        self, name: str, check: Callable[..., Awaitable[str]], *args: Any
    ) -> bool:
        started = time.monotonic()
        warning = False
        try:
            detail = await check(*args)
            ok = True
        except CheckWarning as exc:
            detail, ok, warning = str(exc), True, True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except StoreError as exc:
            detail, ok = _store_failure(exc), False
        self.results.append(CheckResult(name, ok, detail, time.monotonic() - started, warning))
        return ok

    # -- the checks --

    def _check_credentials(self) -> bool:
        info = self.store.credentials
        if info.method is None:
            self.results.append(CheckResult(
                "credentials", False,
                "no credentials found: set [credentials] in the config file, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile"))
            return False
        source = _CREDENTIAL_SOURCES.get(info.method, info.method)
        if self.config.profile and info.method != "explicit":
            source += f", profile {self.config.profile!r}"
        refresh = ", refreshed before they expire" if info.refreshable else ""
        self.results.append(CheckResult(
            "credentials", True, f"{info.access_key_hint or 'key'} from {source}{refresh}"))
        return True

    async def _check_bucket(self) -> str:
        where = f"s3://{self.config.bucket}/{self.config.prefix}"
        try:
            await self.store.list_page(self.config.prefix, "/", None, max_keys=1)
        except StoreError as exc:
            if exc.code not in ("NoSuchBucket", "NotFound", "404"):
                raise
            if not self.config.create_bucket:
                raise CheckFailed(f"bucket {self.config.bucket!r} does not exist (create it, or "
                                  "run check or mount once with --create-bucket)") from None
            # As a mount would: in the configured region (its LocationConstraint).
            await self.store.create_bucket()
            await self.store.list_page(self.config.prefix, "/", None, max_keys=1)
            return (f"bucket {self.config.bucket!r} did not exist: created it in region "
                    f"{self.config.region} (create_bucket); {where} can be listed")
        return f"{where} can be listed"

    async def _check_protection(self) -> str:
        """Versioning and Object Lock: what `undelete` and `[retention]` need."""
        try:
            found = await self.store.bucket_protection()
        except StoreError as exc:
            if self.config.retention_by_dir:
                raise
            raise CheckWarning(f"versioning and Object Lock cannot be read ({exc.code}): "
                               "undelete and retention cannot be relied on") from None
        lock = "Object Lock enabled" if found.object_lock else "no Object Lock"
        default = (f", default retention {found.default_mode} {found.default_period}"
                   if found.default_mode else "")
        summary = f"versioning {found.versioning}, {lock}{default}"
        if self.config.retention_by_dir and not found.object_lock:
            raise CheckFailed(f"{summary}: the configured retention needs a bucket with Object "
                              "Lock (every upload would be refused; a mount will not start)")
        if found.versioning != "Enabled":
            raise CheckWarning(f"{summary}: a deleted or overwritten backup cannot be brought "
                               "back (s3pvefs undelete needs versioning)")
        retained = ", ".join(f"{d.rstrip('/')} {s // 86400}d" if s % 86400 == 0
                             else f"{d.rstrip('/')} {s // 3600}h"
                             for d, s in sorted(self.config.retention_by_dir.items()))
        return summary + (f"; new objects retained ({self.config.retention_mode}): {retained}"
                          if retained else "")

    async def _check_write(self) -> str:
        await self._put_probe(self.probe, self.payload)
        return f"PUT of a {human_size(PROBE_SIZE)} probe object under the prefix"

    async def _check_read(self) -> str:
        if await self.store.get(self.probe) != self.payload:
            raise CheckFailed("GET returned other bytes than were written")
        return "GET returned the probe's bytes"

    async def _check_ranged_get(self) -> str:
        data, content_range = await self.store.get_range(self.probe, RANGE_START, RANGE_LENGTH)
        end = RANGE_START + RANGE_LENGTH - 1
        expected = f"bytes {RANGE_START}-{end}/{PROBE_SIZE}"
        if content_range is None:
            raise CheckFailed("the server ignored the Range header (no Content-Range, "
                              f"{len(data)} bytes): reads would fetch whole objects")
        if content_range != expected or data != self.payload[RANGE_START:end + 1]:
            raise CheckFailed(f"asked for bytes {RANGE_START}-{end}, got Content-Range "
                              f"{content_range!r} and {len(data)} bytes that do not match")
        return f"Content-Range {content_range} and the bytes match"

    async def _check_encryption(self) -> str:
        info = await self.store.head(self.probe)
        wanted = self.config.sse
        reported = info.encryption or "no encryption"
        if wanted == SSE_NONE:
            return f"none configured (the server reports {reported})"
        if info.encryption != wanted:
            raise CheckFailed(
                f"{wanted} was asked for but the server reports {reported}: it may ignore "
                f"the encryption headers, so data would be stored unencrypted")
        if wanted == SSE_KMS:
            return f"aws:kms confirmed, key {info.kms_key_id or '(AWS managed key aws/s3)'}"
        if wanted == SSE_C:
            return "SSE-C confirmed (the key is sent on every read, write and copy)"
        assert wanted == SSE_S3
        return "AES256 (SSE-S3) confirmed"

    async def _check_storage_class(self, storage_class: str) -> str:
        key = f"{self.probe}.class-{storage_class}"
        await self._put_probe(key, b"x", storage_class=storage_class)
        reported = (await self.store.head(key)).storage_class or "STANDARD"
        if reported != storage_class:
            raise CheckFailed(f"asked for {storage_class}, the server stored {reported}")
        note = (" (objects in it need a restore before the mount can read them)"
                if storage_class in ARCHIVE_CLASSES else "")
        return f"accepted and reported by HEAD{note}"

    async def _check_multipart(self) -> str:
        key = f"{self.probe}.multipart"
        upload_id = await self._start_upload(key)
        etag = await self.store.upload_part(key, upload_id, 1, self.payload)
        await self._complete(key, upload_id, [(1, etag)])
        return "create, UploadPart, complete: the object reads back"

    async def _check_complete_etag(self) -> str:
        """Whether the CompleteMultipartUpload answer carries the new object's ETag (Ceph RGW
        16.2 answers an empty <ETag></ETag>). Asked on the wire, below the store's
        complete_multipart, which makes up for a missing ETag."""
        key = f"{self.probe}.complete-etag"
        upload_id = await self._start_upload(key)
        etag = await self.store.upload_part(key, upload_id, 1, self.payload)
        self.created.add(key)
        response = await self.store._call(  # the raw answer, before the store verifies it
            "CompleteMultipartUpload", key, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": f'"{etag}"'}]},
            **self.store.options.sse_c)
        del self.uploads[upload_id]
        answered = (response.get("ETag") or "").strip('"')
        if not answered:
            raise CheckWarning("the server's CompleteMultipartUpload answer has no ETag (as "
                               "Ceph RGW 16.2): s3pvefs asks for it with a HEAD after every "
                               "multipart upload (one request more per large file)")
        return f"the answer names the new object's ETag ({answered})"

    async def _check_upload_part_copy(self) -> str:
        key = f"{self.probe}.part-copy"
        upload_id = await self._start_upload(key)
        try:
            etag = await self.store.upload_part_copy(
                key, upload_id, 1, self.probe, 0, PROBE_SIZE - 1)
        except StoreError as exc:
            if exc.not_implemented:
                raise CheckWarning("not supported by the server: renames of files over 5 GiB "
                                   "and partial rewrites of large files upload their data "
                                   "again instead of copying it on the server") from None
            raise
        await self._complete(key, upload_id, [(1, etag)])
        return "a part copied from the probe object reads back"

    async def _check_copy_source_if_match(self) -> str:
        """Renames copy an object on the server only if it is still the version this mount
        knows (x-amz-copy-source-if-match); Ceph RGW ignores the condition."""
        key = f"{self.probe}.copy"
        source = (await self.store.head(self.probe)).etag
        self.created.add(key)
        try:
            await self.store.copy(self.probe, key, None, if_match=source)
        except StoreError as exc:
            if exc.not_implemented:
                raise CheckWarning("CopyObject is not supported by the server: renames upload "
                                   "the data again instead of copying it on the server") from None
            raise
        if await self.store.get(key) != self.payload:
            raise CheckFailed("the copy of the probe object holds other bytes")
        other_version = "0" * 32
        try:
            await self.store.copy(self.probe, key, None, if_match=other_version)
        except StoreError as exc:
            return (f"a copy of the probe with the condition on another ETag was refused "
                    f"({exc.code or 'error'})")
        raise CheckWarning(
            "the server ignores x-amz-copy-source-if-match (as Ceph RGW): a rename of a file "
            "that another node replaced meanwhile copies that node's version instead of failing "
            "with ESTALE (parts copied for rewrites and large renames are checked with a HEAD); "
            "it matters only when two nodes write the same file, which is not supported anyway "
            "(docs/multi-node.md)")

    async def _check_latency(self) -> str:
        samples = []
        for _ in range(LATENCY_SAMPLES):
            started = time.monotonic()
            await self.store.head(self.probe)
            samples.append((time.monotonic() - started) * 1000)
        return (f"median {statistics.median(samples):.1f} ms (min {min(samples):.1f}, max "
                f"{max(samples):.1f}) over {LATENCY_SAMPLES} HEAD requests")

    async def _check_delete(self) -> str:
        keys = sorted(self.created)
        await self.store.delete_many(keys)
        self.created.clear()
        try:
            await self.store.head(self.probe)
        except StoreError as exc:
            if exc.not_found:
                return f"{len(keys)} probe object(s) deleted"
            raise
        raise CheckFailed("the probe object is still there after DeleteObjects")

    # -- probes and cleanup --

    async def _put_probe(self, key: str, data: bytes, storage_class: str | None = None) -> None:
        self.created.add(key)
        await self.store.put(key, data, {}, storage_class=storage_class)

    async def _start_upload(self, key: str) -> str:
        upload_id = await self.store.create_multipart(key, {})
        self.uploads[upload_id] = key
        return upload_id

    async def _complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        self.created.add(key)
        await self.store.complete_multipart(key, upload_id, parts, len(self.payload))
        del self.uploads[upload_id]
        if await self.store.get(key) != self.payload:
            raise CheckFailed("the completed object holds other bytes than were uploaded")

    async def _clean_up(self) -> None:
        """Remove whatever the checks left behind, even after failures; report what could not."""
        for upload_id, key in list(self.uploads.items()):
            try:
                await self.store.abort_multipart(key, upload_id)
            except StoreError as exc:
                log.warning("could not abort the probe upload of %s: %s", key, exc)
        if self.created:
            try:
                await self.store.delete_many(sorted(self.created))
            except StoreError as exc:
                log.warning("could not delete the probe objects %s: %s",
                            ", ".join(sorted(self.created)), exc)


def _store_failure(error: StoreError) -> str:
    return f"{error.operation} failed: {error.code or 'error'}: {error.detail}"


async def run_checks(store: S3Store, config: Config) -> list[CheckResult]:
    return await _Checker(store, config).run()


def format_checks(config: Config, results: list[CheckResult]) -> str:
    endpoint = config.endpoint_url or "AWS S3"
    lines = [f"s3pvefs check: s3://{config.bucket}/{config.prefix} at {endpoint} "
             f"(region {config.region})"]
    width = max(len(result.name) for result in results)
    for result in results:
        took = f"  [{result.seconds * 1000:.0f} ms]" if result.seconds is not None else ""
        lines.append(f"  {result.status:<5} {result.name:<{width}}  {result.detail}{took}")
    failed = [r for r in results if r.ok is False]
    warned = sum(1 for r in results if r.ok and r.warning)
    notes = (f", {warned} with a warning (s3pvefs works without it: see its consequence "
             "above)") if warned else ""
    if failed:
        lines.append(f"{len(failed)} of {len(results)} checks failed{notes}")
    else:
        lines.append(f"all {sum(r.ok is True for r in results)} checks passed{notes}")
    return "\n".join(lines) + "\n"


# ============================================================================================
# info

CONTENT_DIRS = ("dump", "images", "template/iso", "template/cache", "snippets", "private",
                "import")
OTHER = "other"


def content_dir(relative_key: str) -> str | None:
    """The Proxmox content directory of a key relative to the prefix ("other" outside them);
    None for s3pvefs's own objects (directory markers, attribute indexes, check probes)."""
    if not is_file_key(relative_key):
        return None
    for directory in CONTENT_DIRS:
        if relative_key.startswith(directory + "/"):
            return directory
    return OTHER


@dataclass
class Usage:
    by_dir_and_class: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    internal: list[int] = field(default_factory=lambda: [0, 0])  # objects, bytes
    incomplete_uploads: int | None = None  # None: could not be listed

    def add(self, directory: str | None, storage_class: str, size: int) -> None:
        counts = (self.internal if directory is None
                  else self.by_dir_and_class.setdefault((directory, storage_class), [0, 0]))
        counts[0] += 1
        counts[1] += size

    def rows(self) -> list[tuple[str, str, int, int]]:
        order = {name: index for index, name in enumerate((*CONTENT_DIRS, OTHER))}
        return [(d, c, n, b) for (d, c), (n, b) in
                sorted(self.by_dir_and_class.items(), key=lambda i: (order[i[0][0]], i[0][1]))]


async def collect_usage(store: S3Store, prefix: str) -> Usage:
    usage = Usage()
    token = None
    while True:
        page = await store.list_page(prefix, None, token)
        for info in page.objects:
            usage.add(content_dir(info.key[len(prefix):]), info.storage_class or "STANDARD",
                      info.size)
        if page.next_token is None:
            break
        token = page.next_token
    try:
        usage.incomplete_uploads = len(await store.list_multipart_uploads(prefix))
    except StoreError as exc:
        log.warning("cannot list the incomplete multipart uploads: %s", exc)
    return usage


def usage_as_json(config: Config, usage: Usage) -> str:
    rows = usage.rows()
    return json.dumps({
        "bucket": config.bucket,
        "prefix": config.prefix,
        "directories": [{"directory": d, "storage_class": c, "objects": n, "bytes": b}
                        for d, c, n, b in rows],
        "total": {"objects": sum(r[2] for r in rows), "bytes": sum(r[3] for r in rows)},
        "s3pvefs_internal": {"objects": usage.internal[0], "bytes": usage.internal[1]},
        "incomplete_uploads": usage.incomplete_uploads,
    }, indent=2) + "\n"


def format_usage(config: Config, usage: Usage) -> str:
    rows = usage.rows()
    lines = [f"s3://{config.bucket}/{config.prefix} at {config.endpoint_url or 'AWS S3'}",
             f"  {'directory':<16} {'storage class':<20} {'objects':>9} {'size':>12}"]
    for directory, storage_class, count, size in rows:
        lines.append(f"  {directory:<16} {storage_class:<20} {count:>9} {human_size(size):>12}")
    total_count, total_size = sum(r[2] for r in rows), sum(r[3] for r in rows)
    lines.append(f"  {'total':<16} {'':<20} {total_count:>9} {human_size(total_size):>12}")
    lines.append(f"  s3pvefs's own objects (directory markers, attribute indexes): "
                 f"{usage.internal[0]}, {human_size(usage.internal[1])}")
    uploads = "unknown" if usage.incomplete_uploads is None else usage.incomplete_uploads
    lines.append(f"  incomplete multipart uploads: {uploads}")
    return "\n".join(lines) + "\n"


# ============================================================================================
# lifecycle

IA_MIN_DAYS = 30  # S3 refuses transitions to STANDARD_IA before 30 days
IA_STAY_DAYS = 30  # objects stay 30 days in STANDARD_IA before a transition to GLACIER
DEFAULT_ABORT_DAYS = 7
MAX_RULE_ID = 255
UPLOADS_RULE_SUFFIX = "-uploads"
# Objects this small never change class: s3pvefs's attribute indexes and the notes files that
# Proxmox reads at every listing must stay readable (an archived one fails every GET), and S3
# bills small objects in STANDARD_IA as 128 KiB anyway.
SMALL_OBJECT_LIMIT = 128 * 1024


@dataclass(frozen=True)
class LifecyclePlan:
    transition_days: int | None = None  # to STANDARD_IA
    glacier_days: int | None = None  # to GLACIER
    abort_incomplete_days: int = DEFAULT_ABORT_DAYS
    remove: bool = False  # drop our rule instead of writing it
    # On a versioned bucket: versions that stopped being current go after this many days
    # (locked ones not before their retain-until date: S3 keeps them until then)
    noncurrent_days: int | None = None

    def validate(self) -> None:
        """S3's own constraints, checked before anything is sent; ConfigError names the flag."""
        n, m, k = self.transition_days, self.glacier_days, self.abort_incomplete_days
        if n is not None and n < IA_MIN_DAYS:
            raise ConfigError(f"--transition-days: S3 moves objects to STANDARD_IA after "
                              f"{IA_MIN_DAYS} days at the earliest, not {n}")
        if m is not None and m < 1:
            raise ConfigError(f"--glacier-days: must be at least 1, not {m}")
        if n is not None and m is not None and m < n + IA_STAY_DAYS:
            raise ConfigError(
                f"--glacier-days: must be at least --transition-days + {IA_STAY_DAYS} "
                f"({n + IA_STAY_DAYS}): S3 keeps objects {IA_STAY_DAYS} days in STANDARD_IA "
                f"before it moves them on, not {m}")
        if k < 1:
            raise ConfigError(f"--abort-incomplete-days: must be at least 1, not {k}")
        if self.noncurrent_days is not None and self.noncurrent_days < 1:
            raise ConfigError(f"--noncurrent-days: must be at least 1, not "
                              f"{self.noncurrent_days}")


def rule_id(prefix: str) -> str:
    """Our transitions rule's ID: one per prefix, so that mounts of other prefixes keep
    theirs (the uploads rule adds UPLOADS_RULE_SUFFIX)."""
    candidate = "s3pvefs" + (f"-{prefix.rstrip('/')}" if prefix else "")
    if len(candidate.encode()) + len(UPLOADS_RULE_SUFFIX) <= MAX_RULE_ID:
        return candidate
    return "s3pvefs-" + hashlib.sha256(prefix.encode()).hexdigest()[:32]


def build_rules(prefix: str, plan: LifecyclePlan) -> list[dict[str, Any]]:
    """Two rules: S3 refuses AbortIncompleteMultipartUpload next to an object-size filter."""
    rules = []
    transitions = []
    if plan.transition_days is not None:
        transitions.append({"Days": plan.transition_days, "StorageClass": "STANDARD_IA"})
    if plan.glacier_days is not None:
        transitions.append({"Days": plan.glacier_days, "StorageClass": "GLACIER"})
    if transitions:
        size_filter = {"ObjectSizeGreaterThan": SMALL_OBJECT_LIMIT}
        rules.append({"ID": rule_id(prefix), "Status": "Enabled",
                      "Filter": {"And": {"Prefix": prefix, **size_filter}} if prefix
                      else size_filter,
                      "Transitions": transitions})
    # Uploads that a crash or a lost host left behind cost money and are invisible otherwise.
    uploads = {"ID": rule_id(prefix) + UPLOADS_RULE_SUFFIX, "Status": "Enabled",
               "Filter": {"Prefix": prefix},
               "AbortIncompleteMultipartUpload": {
                   "DaysAfterInitiation": plan.abort_incomplete_days}}
    if plan.noncurrent_days is not None:  # deleted and replaced versions do not pile up
        uploads["NoncurrentVersionExpiration"] = {"NoncurrentDays": plan.noncurrent_days}
    rules.append(uploads)
    return rules


def merged_configuration(
    current: dict[str, Any], prefix: str, plan: LifecyclePlan
) -> dict[str, Any]:
    """The bucket's configuration with our rules replaced (or removed); other rules kept as
    they are."""
    ours = {rule_id(prefix), rule_id(prefix) + UPLOADS_RULE_SUFFIX}
    rules = [rule for rule in current.get("Rules", []) if rule.get("ID") not in ours]
    if not plan.remove:
        rules.extend(build_rules(prefix, plan))
    merged = {key: value for key, value in current.items() if key != "Rules"}
    merged["Rules"] = rules
    return merged


async def apply_lifecycle(
    store: S3Store, prefix: str, plan: LifecyclePlan, dry_run: bool
) -> dict[str, Any]:
    current = await store.get_lifecycle()
    merged = merged_configuration(current, prefix, plan)
    if not dry_run:
        await store.put_lifecycle(merged)
    return merged


def lifecycle_as_json(configuration: dict[str, Any]) -> str:
    return json.dumps(configuration, indent=2, default=str) + "\n"
