"""Makes S3 match local state: uploads files (PUT or parallel multipart) and copies objects.

One sync of a node at a time (``node.file.sync_lock``). A background worker syncs files handed to
``schedule`` (on release) and retries failures with backoff for outages longer than botocore's own
retries; ``sync_now`` is for callers that must wait (fsync, shutdown).
"""

from __future__ import annotations

import contextlib
import logging
import math
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from s3pvefs.checksums import META_CRC64NVME, crc64nvme_text
from s3pvefs.config.settings import Config
from s3pvefs.errors import FsError, FsKind, RenamePending, StoreError, StreamAhead
from s3pvefs.names import check_key_length, is_temporary_name
from s3pvefs.state.attrindex import PENDING, AttributeIndex
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.lifecycle import ContentChecksum
from s3pvefs.state.nodes import InodeTable, Node
from s3pvefs.store.body import SliceBody
from s3pvefs.store.objectstore import RemoteObject
from s3pvefs.store.s3store import multipart_etag
from s3pvefs.transfer.leftkeys import LeftKeys
from s3pvefs.transfer.objectwriter import ObjectWriter, choose_part_size
from s3pvefs.transfer.partsource import PartSource
from s3pvefs.transfer.streaming import Streamer
from s3pvefs.transfer.wholesum import WholeFileChecksum

log = logging.getLogger(__name__)

RETRY_MIN, RETRY_MAX = 1.0, 300.0
DRAIN_ATTEMPTS = 3  # failures per file after which a shutdown stops waiting for it
DRAIN_RETRY_MAX = 2.0  # seconds between attempts while a shutdown waits (not minutes)
TEMPORARY_NAME_GRACE = 5.0  # seconds a closed temporary file waits for its rename
STREAM_AHEAD_WAIT = 0.5  # seconds between looks at another file's stream to this file's key


def retry_delay(failures: int, longest: float) -> float:
    """Seconds before the next attempt after ``failures`` in a row: doubling, capped."""
    return min(longest, RETRY_MIN * 2 ** min(failures - 1, 30))


class Uploader:
    def __init__(self, writer: ObjectWriter, streamer: Streamer, parts: PartSource,
                 config: Config, *, file_journal: FileJournal, inodes: InodeTable,
                 left_keys: LeftKeys, attr_index: AttributeIndex,
                 pressure: trio.MemoryReceiveChannel[None]):
        self.writer = writer
        self.streamer = streamer
        self.store = writer.store
        self.parts = parts  # the bytes of what is uploaded: cache file, else S3
        self.file_journal = file_journal
        self.inodes = inodes  # which files are dirty
        self.left_keys = left_keys
        self.attr_index = attr_index
        self.pressure = pressure  # the cache's: a writer waits for space (relieve_pressure)
        self.prefix = config.prefix
        self.file_slots = trio.Semaphore(max(2, config.upload_concurrency))
        self._queue: dict[int, Node] = {}
        self._not_before: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        # Failure counts when a drain gave up: a later drain (the one after the unmount) does
        # not wait for those files all over again.
        self._given_up_at: dict[int, int] | None = None
        self._running: set[int] = set()
        self._wakeup = trio.Event()
        self._in_flight: dict[int, _Progress] = {}

    # -- background worker ------------------------------------------------------------------

    def schedule(self, node: Node, delay: float = 0.0) -> None:
        self._queue[node.ino] = node
        if delay:
            self._not_before[node.ino] = trio.current_time() + delay
        else:
            self._not_before.pop(node.ino, None)
        self._wakeup.set()

    def after_change(self, node: Node) -> None:
        """Upload a closed file's change in the background; open files upload on release.

        A file with a temporary name is about to be renamed (Proxmox renames right after
        close, and the kernel may deliver the rename after the release): waiting briefly lets
        its upload go to the final key once instead of twice.
        """
        if node.write_handles == 0 and node.needs_upload:
            delay = TEMPORARY_NAME_GRACE if is_temporary_name(node.name) else 0.0
            self.schedule(node, delay)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._running

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._relieve_when_signalled)
            task_status.started()
            while True:
                node = self._next_ready()
                if node is None:
                    await self._sleep_until_work()
                    continue
                await self.file_slots.acquire()
                self._running.add(node.ino)
                nursery.start_soon(self._background_sync, node)

    def _next_ready(self) -> Node | None:
        now = trio.current_time()
        for ino, node in self._queue.items():
            if ino not in self._running and self._not_before.get(ino, 0) <= now:
                del self._queue[ino]
                self._not_before.pop(ino, None)
                return node
        return None

    async def _sleep_until_work(self) -> None:
        waits = [t for ino, t in self._not_before.items() if ino not in self._running]
        timeout = max(0.0, min(waits) - trio.current_time()) if waits else math.inf
        with trio.move_on_after(timeout):
            await self._wakeup.wait()
        self._wakeup = trio.Event()

    async def _background_sync(self, node: Node) -> None:
        try:
            await self.sync(node)
        except RenamePending as exc:
            log.info("%s", exc)  # a rename or unlink of the file schedules it again
        except StreamAhead as exc:
            log.info("%s", exc)
            self.schedule(node, STREAM_AHEAD_WAIT)
        except Exception as exc:  # whatever failed, the data stays dirty and is retried
            failures = self._failures.get(node.ino, 0) + 1
            self._failures[node.ino] = failures
            delay = retry_delay(failures, DRAIN_RETRY_MAX if self.writer.draining else RETRY_MAX)
            log.error("upload of %s failed (attempt %d), retrying in %.0f s: %s",
                      node.path(), failures, delay, exc)
            self.schedule(node, delay)
        else:
            self._failures.pop(node.ino, None)
            if node.needs_upload and node.write_handles == 0:
                self.schedule(node)  # written again while it uploaded
        finally:
            self._running.discard(node.ino)
            self.file_slots.release()
            self._wakeup.set()

    async def _relieve_when_signalled(self) -> None:
        async for _ in self.pressure:
            self.relieve_pressure()

    def relieve_pressure(self) -> None:
        """The cache is full of dirty data: upload files now, even those still open.

        Streaming files are left alone: their pumps upload full parts, and rewritten ones
        again (Streamer.under_pressure). So is a file being written that has not filled its
        first part yet: it streams once it has (an upload of what it holds so far would be
        replaced at once, and would keep it from ever streaming), and until then it holds no
        more than its allowance.
        """
        self.streamer.under_pressure()
        for node in self.inodes.needing_upload():
            if node.ino in self._running or node.ino in self._not_before:
                continue  # uploading, or waiting to retry or for its rename: not sooner
            if node.file.stream is None:
                self.streamer.after_write(node)  # holes count as written now
            stream = node.file.stream
            if stream is None:
                if not self.streamer.first_part_pending(node):
                    self.schedule(node)
            elif stream.failure is not None or stream.closing:
                self.schedule(node)

    async def drain(self, nodes: list[Node]) -> None:
        """Upload everything given and queued. Returns when the worker is idle, or when every
        file left has failed DRAIN_ATTEMPTS times since the drain began (they stay journaled
        for the next mount: a shutdown must not wait forever for an S3 that is gone)."""
        self.writer.draining = True
        for node in nodes:
            if node.needs_upload and node.file.waiting_for_rename is None:
                self.schedule(node)
        failures_at_start = (self._given_up_at if self._given_up_at is not None
                             else dict(self._failures))
        while not self.idle:
            if not self._running and all(
                    self._failures.get(ino, 0) >= failures_at_start.get(ino, 0) + DRAIN_ATTEMPTS
                    for ino in self._queue):
                log.error("giving up on %d file(s) that cannot be uploaded now",
                          len(self._queue))
                self._given_up_at = failures_at_start
                return
            await trio.sleep(0.05)
        self._given_up_at = None

    # -- one node ---------------------------------------------------------------------------

    async def sync_now(self, node: Node) -> None:
        """Return once the node's current state is on S3 (raises FsError or StoreError if it cannot be)."""
        while node.needs_upload:
            if node.file.holds:
                await trio.sleep(0.05)  # a rename or unlink is changing where it goes
                continue
            try:
                await self.sync(node)
            except StreamAhead:
                await trio.sleep(0.05)

    async def settled(self, node: Node) -> None:
        """Wait until no upload of the node is running (the one running may replace its
        object), and find out whether a failed one landed all the same: a PUT whose answer
        was lost replaced the object, and the file's reads must follow it now, not when the
        retry comes (they would answer ESTALE until then)."""
        async with node.file.sync_lock:
            if node.file.landing is None:
                return
            try:
                await self.settle_landing(node)
            except StoreError as exc:  # S3 away: the retry settles it before it uploads
                log.info("cannot tell yet whether the last upload of %s landed: %s",
                         node.path(), exc)

    @asynccontextmanager
    async def held(self, *nodes: Node):
        """Cancel the nodes' uploads in flight and keep new ones from starting meanwhile.

        Used while a rename or unlink changes where a node's object lives; uploads that were
        cancelled start again (at the new key) once the change is done.
        """
        nodes = sorted(set(nodes), key=lambda n: n.ino)
        for node in nodes:
            node.file.hold()  # uploads queued on the lock before us step aside (see sync)
        try:
            async with AsyncExitStack() as stack:
                for node in nodes:
                    node.file.cancel_upload()
                    await stack.enter_async_context(node.file.sync_lock)
                yield
        finally:
            for node in nodes:
                node.file.release_hold()

    async def sync(self, node: Node) -> None:
        async with node.file.sync_lock:
            if node.file.holds:
                return  # a rename or unlink waits for this lock; it schedules us again
            if not node.needs_upload:
                await self.left_keys.delete(node)  # also an unlinked file's: they are its
                return
            with trio.CancelScope() as scope, node.file.upload_attempt(scope):
                await self._upload(node)

    async def complete_stream_early(self, node: Node) -> None:
        """Make a streaming file's evicted parts readable again before a write lands in one:
        complete the multipart upload with the parts done so far, and let that object back
        the file from now on (the file stays dirty; its next upload is a whole one). Not for
        an archive streamed to the name vzdump will rename it to: it must never appear there
        half-written. Once renamed there, it may (its writer closed it, and the kernel's
        RELEASE may still be on its way). A file renamed elsewhere while it streamed is
        completed where it streamed, as a key it left (hidden, deleted after its upload)."""
        async with node.file.sync_lock:
            stream = node.file.stream
            if stream is None:
                return
            if stream.key != node.key(self.prefix):
                await self._leave_stream_key(node, stream)
            log.info("%s: written or read behind its streaming upload; completing the parts "
                     "uploaded so far so that evicted ones can be read back", node.path())
            await self.streamer.complete_prefix(node)  # node.file.base is that object now
            # a restart reads them from there too
            await self.file_journal.checkpoint(node, durable=True)

    async def _leave_stream_key(self, node: Node, stream) -> None:
        """The file streamed to a key it does not have: refused while it waits for the
        predicted rename there, or when another file has that key now; otherwise the key is
        left (journaled before the object appears: listings and a restart skip it)."""
        if stream.predicted and node.name == stream.origin_name:
            raise FsError(FsKind.IO, f"{node.path()}: parts of it were uploaded and left the "
                                      f"cache; they can be read back once it is renamed to "
                                      f"{stream.key}, where its upload goes")
        if self._has_object_of_another(stream.key, node):
            raise FsError(FsKind.IO, f"{node.path()}: parts of it were uploaded to "
                                      f"{stream.key} and left the cache, and another file is "
                                      "there now: they cannot be read back")
        self.left_keys.leave(node, stream.key)
        await self.file_journal.checkpoint(node, durable=True)

    def _has_object_of_another(self, key: str, node: Node) -> bool:
        """Another file is at ``key`` and S3 may hold its object there: a stream completed at
        ``key`` would replace that object."""
        owner = self.left_keys.owner(key)
        return owner not in (None, node) and (owner.file.remote_maybe
                                              or owner.file.base is not None)

    async def _upload(self, node: Node) -> None:
        key = node.key(self.prefix)
        other = self.streamer.streaming_to(key, other_than=node)
        if other is not None:  # its completion there would replace ours: it goes first
            raise StreamAhead(node.path(), other.node.path())
        if node.file.landing is not None:  # the last attempt's answer was lost: did it land?
            await self.settle_landing(node)
        key = node.key(self.prefix)
        check_key_length(key)
        size, data_gen, meta_gen = node.size, node.file.data_gen, node.file.meta_gen
        data = node.file.data
        snapshot = data.dirty_snapshot() if data is not None else {}
        metadata = node.object_metadata()
        if data is not None:
            data.low_water = size
        node.file.upload_started()
        if self.attr_index.attributes_entry(node) is not None:
            await self.attr_index.publish(node, PENDING)  # readers HEAD until it is final
        self._in_flight[node.ino] = _Progress(node, size, trio.current_time(), snapshot)
        try:
            if node.file.stream is not None:
                stream = node.file.stream
                etag = await self._finish_stream(node, key, size, metadata)
                if etag is None:  # the stream was dropped: upload in one go
                    etag, checksum = await self._upload_whole(node, key, size, metadata)
                else:  # its metadata is as old as the stream: newer attributes follow by copy
                    meta_gen = stream.meta_gen
                    checksum = _recorded_in_index(stream.checksum.value(size))
            elif self._attributes_only(node, key, snapshot):
                metadata = await self.writer.metadata_for_copy(node)
                etag = await self.writer.copy_object(node.file.base, key, metadata, landing_of=node)
                checksum = node.file.checksum  # the same content
            else:
                etag, checksum = await self._upload_whole(node, key, size, metadata)
        finally:
            self._in_flight.pop(node.ino, None)
        node.file.uploaded(RemoteObject(key, etag, size), data_gen, meta_gen, checksum)
        node.touch()  # a listing that started before this upload must not drop the file
        # The journal lists the blocks cleaned here as dirty until the checkpoint below: a
        # restart before it uploads them from the cache file again, so none may be evicted.
        with contextlib.nullcontext() if data is None else data.blocks_kept(snapshot):
            if data is not None:
                data.reset_base(min(size, data.low_water))
                data.mark_clean(snapshot)
            log.info("uploaded %s (%d bytes)", key, size)
            await self.attr_index.publish_uploaded(node, key, etag)
            await self.delete_stale_keys(node)
            await self.file_journal.checkpoint(node)  # clean now: the journal record goes

    async def _upload_whole(self, node: Node, key: str, size: int,
                            metadata: dict) -> tuple[str, ContentChecksum | None]:
        """Upload the file in one PUT or one multipart upload: the ETag, and the checksum of
        the content sent where it could be computed on the way."""
        if node.is_symlink:
            return await self.writer.put(key, node.symlink_target.encode(), metadata), None
        if size < self.writer.threshold:
            async def put(body: bytes | SliceBody, crc: int) -> str:
                checksum = {META_CRC64NVME: crc64nvme_text(crc)}  # of this body
                return await self.writer.put(key, body, {**metadata, **checksum}, node)

            etag, crc = await self.parts.send(node, 0, size, put)
            return etag, ContentChecksum(crc64nvme_text(crc), in_metadata=True)
        return await self._multipart(node, key, size, metadata)

    async def settle_landing(self, node: Node) -> None:
        """An announced upload may have landed without its answer reaching the journal. If
        S3 holds exactly the object announced (ETag and size), it replaces the base: the file's
        clean blocks hold there what they held in the old base (only dirty blocks differ, and
        they are uploaded again). Anything else at the key is not taken for ours: the base
        stays, and reads of it answer ESTALE if it changed."""
        landing = node.file.landing
        try:
            found = await self.store.head(landing.key)
        except StoreError as exc:
            if not exc.not_found:
                raise  # S3 away: the landing stays for the next attempt
            found = None
        landed = (found is not None and found.size == landing.size
                  and found.etag.lower() == landing.etag.lower())
        if landed:
            log.warning("%s: its upload to %s landed before a crash or a lost answer; the "
                        "file's clean data is read from that object", node.path(), landing.key)
        node.file.landing_settled(landed)

    async def _finish_stream(self, node: Node, key: str, size: int, metadata: dict) -> str | None:
        """Complete a file's streaming upload at ``key``; None when it had to be dropped.

        A stream whose key is not where the file ended up (a temporary name that was not
        renamed as predicted, or renamed elsewhere) is dropped when the cache still holds the
        whole file; otherwise it is completed where it is and copied to the right key.
        """
        stream, data = node.file.stream, node.file.data
        node.file.rename_not_awaited()
        await stream.settled.wait()
        broken = (stream.failure is not None or size < stream.next_offset
                  or not stream.created.is_set())
        if stream.key == key and not broken:
            try:
                return await self.streamer.finish(node, size, metadata)
            except (FsError, StoreError):
                if stream.restored:
                    found = await self._completed_before_crash(node, stream, size)
                    if found == "whole":
                        return node.file.base.etag
                    if found == "prefix":
                        return None  # the rest goes up in one upload, over that object
                if data.fully_local(size):  # start afresh next time; leave no upload behind
                    await self.streamer.abort(node)
                raise
        if data.fully_local(size):
            await self.streamer.abort(node)
            return None
        if broken:
            raise FsError(FsKind.IO, f"{node.path()}: its streaming upload failed after parts "
                                      "left the cache; the data cannot be recovered")
        if stream.predicted and node.name == stream.origin_name:
            node.file.rename_awaited(stream.key)
            raise RenamePending(node.path(), stream.key)
        streamed_at = stream.key
        if self._has_object_of_another(streamed_at, node):
            raise FsError(FsKind.BUSY, f"{node.path()}: its data was streamed to {streamed_at}, "
                                        "where another file is now; it stays in the cache")
        log.warning("%s ended up at %s, not where its upload was streamed (%s): completing "
                    "there and copying", node.path(), key, streamed_at)
        self.left_keys.leave(node, streamed_at)  # before the object appears: listings must skip it
        etag = await self.streamer.finish(node, size, metadata)
        # The complete object is this file's base from now on: should the copy fail, the next
        # attempt reads evicted blocks from it (never zeros from the cache file's holes).
        node.file.backed_by(RemoteObject(streamed_at, etag, size), valid_len=size)
        await self.file_journal.checkpoint(node, durable=True)
        return await self.writer.copy_object(node.file.base, key, metadata, landing_of=node)

    async def _completed_before_crash(self, node: Node, stream, size: int) -> str | None:
        """A journaled upload that fails to finish may have been completed just before the
        crash: "whole" when its object is there, multipart and of the file's size; "prefix"
        when it was completed early (complete_stream_early) with the parts the journal lists,
        which then back the file as its object. None otherwise."""
        try:
            info = await self.store.head(stream.key)
        except StoreError:
            return None
        if "-" not in info.etag:
            return None
        if info.size == size:
            found, valid_len = "whole", size
            log.info("%s was completed before the crash; nothing left to upload", stream.key)
        elif info.size == stream.contiguous_end and _is_completion_of(info.etag, stream):
            found, valid_len = "prefix", info.size
            log.info("%s was completed early before the crash; the rest of the file is "
                     "uploaded over it", stream.key)
        else:
            return None
        self.streamer.completed(node, stream, info.etag, info.size, valid_len)
        await self.writer.upload_ended(stream.upload_id)
        if found == "prefix":
            await self.file_journal.checkpoint(node, durable=True)
        return found

    async def delete_stale_keys(self, node: Node) -> None:
        """Remove the objects a file left at keys it no longer has, unless another file is
        there now. A failure is logged and retried in the background."""
        try:
            await self.left_keys.delete(node)
        except StoreError:
            self.schedule(node, RETRY_MIN)

    def in_flight(self, node: Node) -> _Progress | None:
        """The whole-file upload of ``node`` running now, if any."""
        return self._in_flight.get(node.ino)

    def progress(self) -> list[dict]:
        now = trio.current_time()
        # A streaming file's upload is reported by its stream (which counts its parts).
        return ([p.report(now) for p in self._in_flight.values() if p.node.file.stream is None]
                + self.streamer.progress(now))

    @staticmethod
    def _attributes_only(node: Node, key: str, dirty_snapshot: dict) -> bool:
        """Only attributes changed: a copy of the object onto itself publishes them."""
        return (
            not dirty_snapshot
            and node.file.data_gen == node.file.uploaded_data_gen
            and node.file.base is not None
            and node.file.base.key == key
            and node.file.base.size == node.size
        )

    async def _multipart(self, node: Node, key: str, size: int,
                         metadata: dict) -> tuple[str, ContentChecksum | None]:
        """Upload the file in parallel parts; a part nothing changed since the file's object
        was written is copied on the server instead of read back and sent again (an image
        larger than the cache, re-uploaded after a few blocks changed)."""
        part_size = choose_part_size(size, self.writer.min_part)
        progress = self._in_flight.get(node.ino)
        base, copied_from_base = node.file.base, []
        whole = WholeFileChecksum()

        async def send_part(upload_id: str, number: int, offset: int, length: int) -> str:
            etag = None
            if self._unchanged_in_base(node, offset, length):
                etag = await self.writer.copy_part_from_base(base, key, upload_id, number,
                                                             offset, length)
                if etag is not None:
                    copied_from_base.append(number)
                    whole.give_up(f"part {number} was copied on the server")
            if etag is None:
                etag, crc = await self.parts.send(
                    node, offset, length,
                    lambda body, _crc: self.store.upload_part(key, upload_id, number, body))
                whole.add(offset, length, crc)
            if progress is not None:
                progress.part_done(offset, length)
            return etag

        async def check_source() -> None:
            if copied_from_base:
                await self.writer.check_copy_source(base)

        etag = await self.writer.run_multipart(key, size, part_size, metadata, send_part,
                                               check_source, landing_of=node)
        return etag, _recorded_in_index(whole.value(size))

    def _unchanged_in_base(self, node: Node, offset: int, length: int) -> bool:
        """The object behind the file holds exactly these bytes (no block in the range was
        written since) and some are not cached: copying them on the server moves nothing
        through this host. Fully cached ranges are sent from the cache."""
        data, base = node.file.data, node.file.base
        if (base is None or data is None or self.writer.part_copy_unsupported or base.archived
                or offset + length > min(data.base_valid_len, base.size)):
            return False
        blocks = data.blocks(offset, length)
        return (not any(b in data.dirty for b in blocks)
                and any(data.needs_fetch(b) for b in blocks))


def _recorded_in_index(value: str | None) -> ContentChecksum | None:
    """A multipart upload's checksum, known only at its end: the attribute index keeps it."""
    return ContentChecksum(value, in_metadata=False) if value else None


class _Progress:
    """One upload in flight, for `s3pvefs status`."""

    def __init__(self, node: Node, total: int, started: float, snapshot: dict[int, int]):
        self.node = node
        self.total = total
        self.done = 0
        self.started = started
        self.snapshot = snapshot  # the dirty blocks' generations the parts were read at
        self.parts: list[tuple[int, int]] = []  # (offset, length) of the parts S3 confirmed

    def part_done(self, offset: int, length: int) -> None:
        self.parts.append((offset, length))
        self.done += length

    def report(self, now: float) -> dict:
        elapsed = max(now - self.started, 1e-6)
        return {"path": self.node.path(), "ino": self.node.ino, "bytes_total": self.total,
                "bytes_done": self.done, "seconds": round(elapsed, 3),
                "bytes_per_second": int(self.done / elapsed)}


def _is_completion_of(etag: str, stream) -> bool:
    """Whether a multipart ETag is that of the stream's contiguous parts (when part ETags are
    not MD5s, as with SSE-KMS or SSE-C, only the count can be compared)."""
    parts = [part_etag for _, part_etag in stream.contiguous_parts()]
    expected = multipart_etag(parts)
    if expected is None:
        return etag.strip('"').partition("-")[2] == str(len(parts))
    return etag.strip('"').lower() == expected
