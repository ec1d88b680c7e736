"""`s3pvefs versions` and `s3pvefs undelete`: the versions S3 keeps of a file (on a bucket with
versioning, which Object Lock turns on), and bringing a deleted file back under its name.

A delete through the mount (a Proxmox prune) leaves a delete marker: the versions stay, locked
ones at least until their retain-until date. Undelete copies the chosen version (the newest
one by default) onto its own key on the server, which makes it the current version again. It
needs no right to delete versions or markers (the least-privilege policy of a Proxmox host has
none: docs/integrity.md): the delete marker stays in the history, under the restored version.
The copy carries the version's metadata (its attributes, and its recorded checksum, taken into
the metadata when an attribute index held it) and gets the retention configured for its
directory, counted from now.

Used by the commands directly on the bucket (``--config``), and by a mount over its admin
socket (``liveadmin.py``), which then shows the file again at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass

import trio

from s3pvefs.checksums import META_CRC64NVME, checksum_in_entry
from s3pvefs.errors import S3PveFsError, StoreError
from s3pvefs.names import INDEX_PREFIX, is_file_key
from s3pvefs.service.verify import Verifier
from s3pvefs.store.objectstore import ObjectVersion
from s3pvefs.store.s3store import S3Store

log = logging.getLogger(__name__)

MAX_COPY_SIZE = 5 * 1024**3  # CopyObject's limit; larger versions are copied in parts
COPY_PART = 512 * 1024**2
INDEX_VERSIONS_SEARCHED = 200  # older versions of a directory's attribute index objects


class VersionError(S3PveFsError):
    """The versions asked for are not there, or undelete has nothing to do."""


@dataclass(frozen=True)
class VersionEntry:
    path: str  # relative to the prefix
    version_id: str
    size: int
    modified: str  # ISO 8601, UTC
    latest: bool
    delete_marker: bool


def _entry(prefix: str, version: ObjectVersion) -> VersionEntry:
    modified = dt.datetime.fromtimestamp(version.mtime_ns / 1e9, dt.timezone.utc)
    return VersionEntry(version.key[len(prefix):], version.version_id, version.size,
                        modified.isoformat(timespec="seconds"), version.is_latest,
                        version.delete_marker)


async def list_versions(store: S3Store, prefix: str, path: str) -> list[dict]:
    """The versions of the file at ``path``, or, for a directory, those of every file in it
    (below it) whose current version is a delete marker: what can be undeleted there."""
    path = path.strip("/")
    versions = [v for v in await store.list_versions(prefix + path) if v.key == prefix + path]
    if not versions:
        below = await store.list_versions(prefix + path + "/" if path else prefix)
        deleted = {v.key for v in below if v.is_latest and v.delete_marker}
        versions = [v for v in below if v.key in deleted and is_file_key(v.key)]
    if not versions:
        raise VersionError(f"{path or '/'}: no versions on S3 (is versioning enabled on the "
                           "bucket? `s3pvefs check` tells)")
    return [asdict(_entry(prefix, v)) for v in versions]


async def undelete(store: S3Store, prefix: str, path: str,
                   version_id: str | None = None) -> dict:
    """Make a version of a deleted file (the newest, or ``version_id``) current again."""
    path = path.strip("/")
    key = prefix + path
    versions = [v for v in await store.list_versions(key) if v.key == key]
    current = next((v for v in versions if v.is_latest), None)
    if current is None:
        raise VersionError(f"{path}: no versions on S3")
    if not current.delete_marker:
        raise VersionError(f"{path}: it is not deleted (its current version is "
                           f"{current.version_id}); nothing to undelete")
    chosen = _chosen(versions, version_id, path)
    metadata = await _metadata_with_checksum(store, prefix, chosen)
    if chosen.size <= MAX_COPY_SIZE:
        await store.copy(key, key, metadata, if_match=chosen.etag or None,
                         src_version=chosen.version_id)
    else:
        await _copy_in_parts(store, chosen, metadata)
    log.info("undeleted %s: version %s (%d bytes) is current again", key,
             chosen.version_id, chosen.size)
    return asdict(_entry(prefix, chosen))


def _chosen(versions: list[ObjectVersion], version_id: str | None, path: str) -> ObjectVersion:
    candidates = [v for v in versions if not v.delete_marker]
    if version_id is not None:
        candidates = [v for v in candidates if v.version_id == version_id]
        if not candidates:
            raise VersionError(f"{path}: no version {version_id} (delete markers cannot be "
                               "restored; `s3pvefs versions` lists the versions)")
    if not candidates:
        raise VersionError(f"{path}: only delete markers are left; nothing to restore")
    return max(candidates, key=lambda v: v.mtime_ns)


async def _metadata_with_checksum(store: S3Store, prefix: str,
                                  version: ObjectVersion) -> dict[str, str]:
    """The version's metadata, with its recorded checksum in it: a copy of an object uploaded
    in parts gets another ETag, which no attribute index entry names."""
    info = await store.head(version.key, version.version_id)
    metadata = dict(info.metadata or {})
    recorded = await Verifier(store, prefix).recorded(info)
    value = recorded.value if recorded else await _checksum_in_index_history(store, info)
    if value is not None:
        metadata[META_CRC64NVME] = value
    return metadata


async def _checksum_in_index_history(store: S3Store, info) -> str | None:
    """The checksum an attribute index recorded for this ETag before the file was deleted
    (a delete drops its entry; the index object's older versions still hold it)."""
    dir_key, _, name = info.key.rpartition("/")
    history = await store.list_versions(f"{dir_key}/{INDEX_PREFIX}")
    for version in sorted(history, key=lambda v: -v.mtime_ns)[:INDEX_VERSIONS_SEARCHED]:
        if version.delete_marker:
            continue
        try:
            entries = json.loads(await store.get(version.key, version_id=version.version_id))
        except (StoreError, ValueError):
            continue
        entry = entries.get(name) if isinstance(entries, dict) else None
        if value := checksum_in_entry(entry, info.etag):
            return value
    return None


async def _copy_in_parts(store: S3Store, version: ObjectVersion,
                         metadata: dict[str, str]) -> None:
    """A version larger than CopyObject takes: a multipart upload of server-side part
    copies."""
    key = version.key
    upload_id = await store.create_multipart(key, metadata)
    try:
        parts = []
        for number, start in enumerate(range(0, version.size, COPY_PART), start=1):
            end = min(start + COPY_PART, version.size) - 1
            parts.append((number, await store.upload_part_copy(
                key, upload_id, number, key, start, end, src_version=version.version_id)))
        await store.complete_multipart(key, upload_id, parts, version.size)
    except BaseException:
        with trio.CancelScope(shield=True):
            try:
                await store.abort_multipart(key, upload_id)
            except StoreError as exc:
                log.warning("could not abort the copy of %s (%s); a lifecycle rule or "
                            "`s3pvefs check` cleans it up", key, exc)
        raise
