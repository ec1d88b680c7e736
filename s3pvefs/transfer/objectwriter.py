"""Every request that makes an object: PUT, multipart uploads and server-side copies.

Uploads of whole files, streams and renames all send their parts here, under one bound for the
whole mount (``part_slots``). A multipart upload
is listed in the journal from before its creation until it ends, so that a restart aborts what
a crash left; an object that replaces a file's is announced in that file's journal record
before the request that makes it (``landing_of``; FileJournal.announce_landing).

A rename or unlink cancels uploads. A request that makes an object (PUT,
CompleteMultipartUpload, CopyObject) is never cancelled once sent: S3 may apply it all the
same, after the rename deleted the key it left, or with an ETag nobody recorded (GETs then fail
with 412 on the mount's own write). The caller learns its outcome.
"""

from __future__ import annotations

import logging
import math

import trio

from s3pvefs.checksums import META_CRC64NVME
from s3pvefs.config.settings import Config, GiB, MiB
from s3pvefs.errors import FsError, FsKind, StoreError, StoreKind, first_fs_error
from s3pvefs.names import check_key_length
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.journal import Journal
from s3pvefs.state.nodes import Node
from s3pvefs.store.body import SliceBody
from s3pvefs.store.objectstore import RemoteObject
from s3pvefs.store.s3store import ObjectStore, body_etag, multipart_etag
from s3pvefs.transfer.reader import BlockReader

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * GiB  # S3's limit on one object
MAX_COPY_SIZE = 5 * GiB  # CopyObject's limit; beyond it UploadPartCopy


def choose_part_size(size: int, min_part: int) -> int:
    """The smallest MiB-multiple part size >= min_part that fits ``size`` in 10,000 parts."""
    needed = math.ceil(size / MAX_PARTS)
    part = max(min_part, math.ceil(needed / MiB) * MiB)
    return part


class ObjectWriter:
    def __init__(self, store: ObjectStore, reader: BlockReader, config: Config, *,
                 journal: Journal, file_journal: FileJournal):
        self.store = store
        self.reader = reader  # copies re-uploaded where the server cannot copy
        self.journal = journal  # multipart uploads in flight are listed there
        self.file_journal = file_journal
        self.threshold = config.multipart_threshold
        self.min_part = config.part_size
        # Parts in flight across all files.
        self.part_slots = trio.Semaphore(config.upload_concurrency)
        self.part_copy_unsupported = False  # the server answered UploadPartCopy NotImplemented
        self.draining = False  # a shutdown waits for the uploads: retry soon, give up soon

    async def put(self, key: str, body: bytes | SliceBody, metadata: dict,
                   landing_of: Node | None = None) -> str:
        if landing_of is not None and self.store.etags_are_md5:
            etag = body.md5.hex() if isinstance(body, SliceBody) else await body_etag(body)
            landing = RemoteObject(key, etag, len(body))
            await self.file_journal.announce_landing(landing_of, landing)
        with trio.CancelScope(shield=True):
            return await self.store.put(key, body, metadata)

    async def check_copy_source(self, source: RemoteObject) -> None:
        """Parts were copied from ``source`` on the server. They asked for its ETag, but
        some servers (Ceph RGW) ignore that condition: a HEAD after the copies shows that
        they all read the version this file is based on, or the upload fails."""
        found = (await self.store.head(source.key)).etag
        if found.lower() != source.etag.lower():
            raise FsError(FsKind.STALE, f"{source.key} changed on S3 while parts were copied "
                                         f"from it (ETag {found}, expected {source.etag})")

    async def copy_part_from_base(self, base: RemoteObject, key: str, upload_id: str,
                                   number: int, offset: int, length: int) -> str | None:
        try:
            return await self.store.upload_part_copy(key, upload_id, number, base.key, offset,
                                                     offset + length - 1, if_match=base.etag)
        except StoreError as exc:
            if not exc.not_implemented:
                raise
            log.info("server cannot copy parts (%s); sending them instead", exc.code)
            self.part_copy_unsupported = True
            return None

    async def _multipart_upload(self, key, size, part_size, metadata, part_body,
                                landing_of: Node | None = None) -> str:
        async def send_part(upload_id: str, number: int, offset: int, length: int) -> str:
            body = await part_body(offset, length)
            return await self.store.upload_part(key, upload_id, number, body)

        return await self.run_multipart(key, size, part_size, metadata, send_part,
                                         landing_of=landing_of)

    async def run_multipart(self, key, size, part_size, metadata, send_part,
                             before_complete=None, landing_of: Node | None = None) -> str:
        """One multipart upload, parts in parallel under ``part_slots``; aborted on failure
        (also when ``before_complete`` raises: the parts are not what they must be). With
        ``landing_of``, the object is announced in that file's journal record first."""
        if size > MAX_OBJECT_SIZE:
            raise FsError(FsKind.FILE_TOO_LARGE, f"{key}: larger than S3's 5 TiB object limit")
        upload_id = await self.start_multipart(key, metadata)
        etags: dict[int, str] = {}

        async def one_part(number: int, offset: int, length: int) -> None:
            try:
                etags[number] = await send_part(upload_id, number, offset, length)
            finally:
                self.part_slots.release()

        try:
            with first_fs_error():
                async with trio.open_nursery() as nursery:
                    for number, offset in enumerate(range(0, size, part_size), start=1):
                        await self.part_slots.acquire()
                        nursery.start_soon(one_part, number, offset, min(part_size, size - offset))
            if before_complete is not None:
                await before_complete()
            parts = sorted(etags.items())
            expected = multipart_etag([etag for _, etag in parts])
            if landing_of is not None and expected is not None and self.store.etags_are_md5:
                await self.file_journal.announce_landing(landing_of,
                                                         RemoteObject(key, expected, size))
            with trio.CancelScope(shield=True):  # see put
                etag = await self.store.complete_multipart(key, upload_id, parts, size)
                await self.upload_ended(upload_id)
            return etag
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await self.abort_quietly(key, upload_id)
            raise

    async def start_multipart(self, key: str, metadata: dict) -> str:
        """Create a multipart upload and list it, shielded from cancellation (a rename or
        unlink cancels uploads): an upload S3 created that nobody knows of is never
        aborted."""
        with trio.CancelScope(shield=True):
            intent = await trio.to_thread.run_sync(self.journal.upload_intended, key)
            try:
                upload_id = await self.store.create_multipart(key, metadata)
            except BaseException:  # S3 answered: no upload was created
                await trio.to_thread.run_sync(self.journal.intent_done, intent)
                raise
            await self.upload_started(key, upload_id, intent)
        return upload_id

    async def upload_started(self, key: str, upload_id: str, intent: str | None = None) -> None:
        """List a multipart upload so that a restart after a crash can abort it."""
        await trio.to_thread.run_sync(self.journal.upload_started, key, upload_id, intent)

    async def upload_ended(self, upload_id: str) -> None:
        await trio.to_thread.run_sync(self.journal.upload_ended, upload_id)

    async def abort_quietly(self, key: str, upload_id: str) -> None:
        try:
            await self.store.abort_multipart(key, upload_id)
            await self.upload_ended(upload_id)
        except StoreError as exc:
            if exc.kind in (StoreKind.NO_SUCH_UPLOAD, StoreKind.NOT_FOUND):  # already gone
                await self.upload_ended(upload_id)
                return
            log.warning("could not abort multipart upload of %s (%s); "
                        "a lifecycle rule or the next mount cleans it up", key, exc)

    # -- server-side copies -----------------------------------------------------------------

    async def copy_object(self, source: RemoteObject, dest_key: str, metadata: dict | None,
                          landing_of: Node | None = None) -> str:
        """Copy an object on the server; re-upload it when the server cannot copy. With
        ``landing_of`` (a file whose object this copy replaces), the new object is announced
        in its journal record where its ETag can be known beforehand; a CopyObject of a
        multipart object gets an ETag nobody can predict (see docs/design.md)."""
        check_key_length(dest_key)
        try:
            if source.size <= MAX_COPY_SIZE:
                with trio.CancelScope(shield=True):  # see put
                    return await self.store.copy(source.key, dest_key, metadata,
                                                 if_match=source.etag)
            return await self._multipart_copy(source, dest_key, metadata, landing_of)
        except StoreError as exc:
            if not exc.not_implemented:
                raise
            log.info("server cannot copy %s (%s); re-uploading it", source.key, exc.code)
        return await self._copy_by_reupload(source, dest_key, metadata, landing_of)

    async def metadata_for_copy(self, node: Node) -> dict:
        """The metadata a server-side copy of a file's object gets: its attributes now, and the
        content checksum its object's metadata carries (asked with a HEAD when unknown here)."""
        metadata = node.object_metadata()
        checksum = node.file.checksum
        if checksum is not None:
            if checksum.in_metadata:
                metadata[META_CRC64NVME] = checksum.value
            return metadata
        found = (await self.store.head(node.file.base.key)).metadata or {}
        recorded = found.get(META_CRC64NVME)
        return {**metadata, META_CRC64NVME: recorded} if recorded else metadata

    async def _metadata_of(self, source: RemoteObject, metadata: dict | None) -> dict:
        if metadata is not None:
            return metadata
        return (await self.store.head(source.key)).metadata or {}

    async def _multipart_copy(self, source, dest_key, metadata, landing_of) -> str:
        metadata = await self._metadata_of(source, metadata)
        part_size = choose_part_size(source.size, max(self.min_part, 512 * MiB))

        async def copy_part(upload_id: str, number: int, offset: int, length: int) -> str:
            return await self.store.upload_part_copy(
                dest_key, upload_id, number, source.key, offset, offset + length - 1,
                if_match=source.etag)

        return await self.run_multipart(dest_key, source.size, part_size, metadata, copy_part,
                                         lambda: self.check_copy_source(source), landing_of)

    async def _copy_by_reupload(self, source: RemoteObject, dest_key: str, metadata,
                                landing_of: Node | None) -> str:
        metadata = await self._metadata_of(source, metadata)
        if source.size < self.threshold:
            body = await self.reader.read_range(source, 0, source.size) if source.size else b""
            return await self.put(dest_key, body, metadata, landing_of)

        async def part_body(offset: int, length: int) -> bytes:
            return await self.reader.read_range(source, offset, length)

        part_size = choose_part_size(source.size, self.min_part)
        return await self._multipart_upload(dest_key, source.size, part_size, metadata, part_body,
                                            landing_of)
