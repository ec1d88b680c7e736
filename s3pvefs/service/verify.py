"""`s3pvefs verify`: compare stored files with the checksum recorded when they were uploaded
(checksums.py: CRC64NVME). Runs without a mount and never changes an object.

Where the checksum is (see docs/integrity.md): a PUT's object carries it in its metadata
(``x-amz-meta-s3pvefs-crc64nvme``); a multipart upload's is in the attribute index object of
its directory (``<dir>/.s3pvefs-attrs.<host>``, the entry of its name whose ETag is the
object's). Where S3 itself keeps a whole-object CRC64NVME (AWS does for new objects), that is
compared without reading the object; otherwise, and always with ``download``, the object is
streamed back (ranged GETs that name its ETag, a few in flight, summed in order) and its
checksum computed again. An object with no recorded checksum is "unrecorded" unless
``download``: it is then read too, and checked against its ETag where that is an MD5 of the
content (a single PUT, no SSE-KMS or SSE-C).

Verdicts: ok, mismatch (the bytes are not what was uploaded), unrecorded, missing (a PATH named
that is not on S3), changed (the object was replaced while it was read: run again).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import trio

from s3pvefs.checksums import META_CRC64NVME, Crc64Nvme, checksum_in_entry
from s3pvefs.errors import StoreError, StoreKind, first_fs_error
from s3pvefs.names import INDEX_PREFIX, is_file_key
from s3pvefs.store.objectstore import ObjectInfo, is_md5
from s3pvefs.store.s3store import S3Store

log = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024  # bytes per ranged GET
GETS_IN_FLIGHT = 4  # per object: memory stays below GETS_IN_FLIGHT * CHUNK

OK, MISMATCH, UNRECORDED, MISSING, CHANGED = "ok", "mismatch", "unrecorded", "missing", "changed"
VERDICTS = (OK, MISMATCH, UNRECORDED, MISSING, CHANGED)


@dataclass
class Verdict:
    path: str  # relative to the prefix
    status: str
    size: int = 0
    # "crc64nvme (metadata)", "crc64nvme (index)", "... reported by S3", "md5 (etag)"
    checked_with: str | None = None
    detail: str = ""


@dataclass
class Report:
    verdicts: list[Verdict] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for v in self.verdicts if v.status == status)

    @property
    def objects(self) -> int:
        return sum(1 for v in self.verdicts if v.status != MISSING)

    @property
    def bytes(self) -> int:
        return sum(v.size for v in self.verdicts)

    @property
    def failed(self) -> bool:
        return any(v.status in (MISMATCH, MISSING, CHANGED) for v in self.verdicts)

    def summary(self) -> dict[str, int]:
        return {"objects": self.objects, "bytes": self.bytes,
                **{status: self.count(status) for status in VERDICTS}}

    def as_json(self) -> str:
        return json.dumps({"summary": self.summary(),
                           "objects": [asdict(v) for v in self.verdicts]}, indent=2) + "\n"


@dataclass(frozen=True)
class Recorded:
    value: str  # CRC64NVME, base64
    where: str  # "metadata" or "index"


class _Md5:
    """hashlib's MD5 with the interface of checksums.Crc64Nvme."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)

    def update(self, data: bytes) -> None:
        self._md5.update(data)

    def value(self) -> str:
        return self._md5.hexdigest()


class Verifier:
    def __init__(self, store: S3Store, prefix: str, *, download: bool = False,
                 progress: Callable[[int], None] = lambda done: None):
        self.store = store
        self.prefix = prefix
        self.download = download  # read every object back, also where S3 reports a checksum
        self.progress = progress  # called with the bytes read since the last call
        self._indexes: dict[str, dict[str, list[dict]]] = {}  # dir key -> name -> entries

    # -- what to verify --------------------------------------------------------------------

    async def targets(self, paths: list[str]) -> tuple[list[ObjectInfo], list[str]]:
        """The objects under ``paths`` (relative to the prefix; none: all of it), and the
        paths that name nothing on S3."""
        found: dict[str, ObjectInfo] = {}
        missing = []
        for path in paths or [""]:
            path = path.strip("/")
            objects = await self._object_or_tree(path)
            if not objects and path:
                missing.append(path)
            found.update((info.key, info) for info in objects)
        return [found[key] for key in sorted(found)], missing

    async def _object_or_tree(self, path: str) -> list[ObjectInfo]:
        key = self.prefix + path
        objects = [info for info in await self._list(key + "/" if path else key)
                   if is_file_key(info.key)]
        if path:
            try:
                objects.append(await self.store.head(key))
            except StoreError as exc:
                if not exc.not_found:
                    raise
        return objects

    async def _list(self, prefix: str) -> list[ObjectInfo]:
        objects, token = [], None
        while True:
            page = await self.store.list_page(prefix, None, token)
            objects += page.objects
            if page.next_token is None:
                return objects
            token = page.next_token

    # -- where the checksum is -------------------------------------------------------------

    async def recorded(self, info: ObjectInfo) -> Recorded | None:
        """The checksum recorded for this object (``info`` from a HEAD: with its metadata)."""
        dir_key, _, name = info.key.rpartition("/")
        for entry in (await self._index_of(dir_key + "/")).get(name, []):
            if value := checksum_in_entry(entry, info.etag):
                return Recorded(value, "index")
        if value := (info.metadata or {}).get(META_CRC64NVME):
            return Recorded(value, "metadata")
        return None

    async def _index_of(self, dir_key: str) -> dict[str, list[dict]]:
        """Every host's attribute index entries of a directory, by name."""
        if dir_key not in self._indexes:
            merged: dict[str, list[dict]] = {}
            for index in await self._list(dir_key + INDEX_PREFIX):
                try:
                    entries = json.loads(await self.store.get(index.key))
                except (StoreError, ValueError) as exc:
                    log.warning("attribute index %s unreadable: %s", index.key, exc)
                    continue
                for name, entry in entries.items() if isinstance(entries, dict) else ():
                    if isinstance(entry, dict):
                        merged.setdefault(name, []).append(entry)
            self._indexes[dir_key] = merged
        return self._indexes[dir_key]

    # -- checking one object ---------------------------------------------------------------

    async def check(self, listed: ObjectInfo) -> Verdict:
        path = listed.key[len(self.prefix):]
        try:
            info = await self.store.head(listed.key, with_checksum=True)
        except StoreError as exc:
            if not exc.not_found:
                raise
            return Verdict(path, CHANGED, listed.size, detail="deleted on S3 while verifying")
        recorded = await self.recorded(info)
        if recorded is not None and info.crc64nvme and not self.download:
            how = f"crc64nvme ({recorded.where}) against S3's own, not read"
            return self._compare(path, info, recorded.value, info.crc64nvme, how, "crc64nvme")
        if recorded is not None:
            expected, how, algorithm = recorded.value, f"crc64nvme ({recorded.where})", "crc64nvme"
        elif self.download and is_md5(info.etag.lower()):
            expected, how, algorithm = info.etag.lower(), "md5 (etag)", "md5"
        else:
            return Verdict(path, UNRECORDED, info.size,
                           detail="no checksum was recorded when it was uploaded")
        try:
            actual = await self._digest(info, algorithm)
        except StoreError as exc:
            if exc.kind in (StoreKind.PRECONDITION_FAILED, StoreKind.NOT_FOUND):
                return Verdict(path, CHANGED, info.size, how,
                               f"replaced or deleted on S3 while it was read ({exc.code})")
            raise
        return self._compare(path, info, expected, actual, how, algorithm)

    @staticmethod
    def _compare(path: str, info: ObjectInfo, expected: str, actual: str, how: str,
                 algorithm: str) -> Verdict:
        if actual != expected:
            return Verdict(path, MISMATCH, info.size, how,
                           f"{algorithm} of the stored bytes is {actual}, recorded {expected}")
        return Verdict(path, OK, info.size, how)

    async def _digest(self, info: ObjectInfo, algorithm: str) -> str:
        """Stream the object back in ranged GETs (each names the ETag: a replaced object is
        never mixed in), a few in flight, summed in order in a worker thread."""
        digest = Crc64Nvme() if algorithm == "crc64nvme" else _Md5()
        chunks = range(0, info.size, CHUNK)
        send, receive = trio.open_memory_channel[tuple[int, trio.Event, list[bytes]]](
            GETS_IN_FLIGHT - 1)

        async def fetch(start: int, done: trio.Event, body: list[bytes]) -> None:
            length = min(CHUNK, info.size - start)
            body.append(await self.store.get(info.key, start, length, if_match=info.etag))
            done.set()

        async def launch(nursery: trio.Nursery) -> None:
            async with send:
                for start in chunks:
                    done, body = trio.Event(), []
                    await send.send((start, done, body))  # waits while enough are in flight
                    nursery.start_soon(fetch, start, done, body)

        with first_fs_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(launch, nursery)
                await self._sum_in_order(receive, digest, info)
        return digest.value()

    async def _sum_in_order(self, receive, digest, info: ObjectInfo) -> None:
        async with receive:
            async for start, done, body in receive:
                await done.wait()
                data = body.pop()
                if len(data) != min(CHUNK, info.size - start):
                    raise StoreError("GetObject", info.key, "IncompleteBody",
                                     f"{len(data)} bytes at {start}")
                await trio.to_thread.run_sync(digest.update, data)
                self.progress(len(data))


async def verify(store: S3Store, prefix: str, paths: list[str], *,
                 download: bool = False,
                 on_total: Callable[[int], None] = lambda total: None,
                 progress: Callable[[int], None] = lambda done: None) -> Report:
    """Check every object under ``paths``; ``on_total`` learns the bytes to read first."""
    verifier = Verifier(store, prefix, download=download, progress=progress)
    objects, missing = await verifier.targets(paths)
    on_total(sum(info.size for info in objects))
    report = Report([Verdict(path, MISSING, detail="no object at this path")
                     for path in missing])
    for info in objects:
        verdict = await verifier.check(info)
        if verdict.status != OK:
            log.debug("%s: %s %s", verdict.path, verdict.status, verdict.detail)
        report.verdicts.append(verdict)
    return report
