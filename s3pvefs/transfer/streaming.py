"""Streaming multipart uploads: parts of a file upload while it is still being written.

A file being written from offset 0 with no remote object behind it (a new backup, an ISO being
downloaded) gets a multipart upload as soon as its first part is complete in the cache. A pump
task per stream launches each next part once the writer has filled it; part uploads run in
parallel under the object writer's part slots. Uploaded blocks become clean, so the cache can drop
them and a file many times larger than the cache streams through it.

The upload is started at the key the file is going to be renamed to when its name says so
(``names.predict_final_name``): vzdump's rename of `X.vma.dat` to `X.vma.zst` then costs nothing.
An incomplete multipart upload is invisible, so nothing appears under that name until the file
was really renamed to it and closed.
"""

from __future__ import annotations

import itertools
import logging
import math
from contextlib import contextmanager

import trio

from s3pvefs.config.settings import GiB
from s3pvefs.errors import FsError, FsKind, StoreError, StoreKind, first_fs_error
from s3pvefs.names import MAGIC_BYTES, predict_final_name
from s3pvefs.state.filejournal import FileJournal
from s3pvefs.state.journal import StreamRecord
from s3pvefs.state.nodes import Node
from s3pvefs.store.objectstore import ObjectStore, RemoteObject
from s3pvefs.transfer.objectwriter import ObjectWriter
from s3pvefs.transfer.partsource import PartSource
from s3pvefs.transfer.wholesum import WholeFileChecksum

log = logging.getLogger(__name__)

MAX_PART_SIZE = 5 * GiB
PART_GROWTH = 1000  # a part is at least 1/1000 of what precedes it: 10,000 parts pass 5 TiB
RETRY_MIN, RETRY_MAX = 1.0, 60.0
DRAIN_ATTEMPTS = 3  # failures of one request after which a shutdown stops waiting for it
DRAIN_RETRY_MAX = 2.0
# Failures of a streamed request worth waiting out (an outage; an answer that did not match
# what was sent; an unknown one). The upload gone, access denied, a refused size are not.
_RETRIED = frozenset({StoreKind.UNAVAILABLE, StoreKind.UNVERIFIED, StoreKind.BUCKET_MISSING,
                      StoreKind.OTHER})


def stream_part_size(offset: int, min_part: int, block_size: int) -> int:
    """Size of the part that starts at ``offset``: grows with the file, in whole blocks."""
    size = max(min_part, math.ceil(offset / PART_GROWTH))
    size = -(-size // block_size) * block_size
    return min(size, MAX_PART_SIZE // block_size * block_size)


class Stream:
    """The multipart upload of one file being written."""

    def __init__(self, node: Node):
        self.node = node
        self.key: str | None = None
        self.upload_id: str | None = None
        self.created = trio.Event()  # the multipart upload exists
        self.settled = trio.Event()  # creating it succeeded or gave up
        self.parts: dict[int, tuple[int, int, str]] = {}  # number -> (offset, length, etag)
        self.part_snapshots: dict[int, dict[int, int]] = {}  # number -> dirty blocks' generations
        # when the part was read (for `s3pvefs status`: a block written since is not on S3)
        self.launched: dict[int, tuple[int, int]] = {}  # number -> (offset, length)
        self.reuploading: set[int] = set()  # uploaded parts being uploaded again (rewritten)
        self.next_offset = 0
        self.next_number = 1
        self.wakeup = trio.Event()
        self._scopes: set[trio.CancelScope] = set()  # of the pump and each part upload
        self.cancelled = False
        self.running = 0  # pump + part tasks alive
        self.finished = trio.Event()  # set when running drops to 0 after closing
        self.closing = False
        self.failure: str | None = None
        self.meta_gen = 0  # the node's attribute generation its upload's metadata carries
        self.predicted = False  # key is the predicted final name, not the file's own
        self.origin_name = node.name
        self.started = 0.0
        self.restored = False  # taken over from the journal after a crash
        self.checksum = WholeFileChecksum()  # of the parts' bodies as they are read to send

    @contextmanager
    def cancellable(self):
        """Run a task of this stream so that ``cancel`` stops it."""
        scope = trio.CancelScope()
        if self.cancelled:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._scopes.discard(scope)

    def cancel(self) -> None:
        self.cancelled = True
        for scope in self._scopes:
            scope.cancel()

    @property
    def contiguous_end(self) -> int:
        """End of the uploaded parts that follow each other from part 1."""
        numbers = [number for number, _ in self.contiguous_parts()]
        if not numbers:
            return 0
        offset, length, _ = self.parts[numbers[-1]]
        return offset + length

    def contiguous_parts(self) -> list[tuple[int, str]]:
        """(number, ETag) of the uploaded parts that follow each other from part 1."""
        numbers = itertools.takewhile(self.parts.__contains__, itertools.count(1))
        return [(number, self.parts[number][2]) for number in numbers]

    @property
    def uploaded_bytes(self) -> int:
        return sum(length for _, length, _ in self.parts.values())

    def record(self) -> StreamRecord | None:
        """Its sub-record of the file's journal record (see lifecycle.FileJournal)."""
        if not self.created.is_set():
            return None  # nothing on S3 yet: a restart uploads from the cache
        return StreamRecord(
            key=self.key, upload_id=self.upload_id, predicted=self.predicted,
            origin_name=self.origin_name, meta_current=self.meta_gen == self.node.file.meta_gen,
            parts=tuple((n, o, length, e) for n, (o, length, e) in sorted(self.parts.items())),
            launched=tuple((n, o, length) for n, (o, length) in sorted(self.launched.items())))


class Streamer:
    def __init__(self, writer: ObjectWriter, store: ObjectStore, parts: PartSource, prefix: str,
                 min_part: int, file_journal: FileJournal):
        self.writer = writer  # starts and ends the multipart uploads; its part_slots bound ours
        self.parts = parts  # sends a part from the cache file
        self.file_journal = file_journal
        self.store = store
        self.prefix = prefix
        self.min_part = min_part
        self.nursery: trio.Nursery | None = None  # its pumps and parts run there (run)
        self.pressure_until = 0.0  # a writer waited for cache space until about then
        self.streams: set[Stream] = set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the pumps and part uploads of every stream until cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- starting and feeding ---------------------------------------------------------------

    def after_write(self, node: Node) -> None:
        """Called after every write: start a stream, or let the pump look for a full part."""
        data = node.file.data
        if self.nursery is None or data is None or not node.is_file or node.unlinked:
            return
        stream = node.file.stream
        if stream is None:
            # Not while an upload of the whole file runs (under cache pressure): it may
            # make an object of what was written so far, and the stream would then upload
            # over it. Once that upload is done the file has an object and never streams.
            if (data.base_valid_len or node.file.syncing
                    or not self._filled(node, 0, self._part_size(0, data))):
                return
            stream = Stream(node)
            node.file.stream_started(stream, first_part=self._part_size(0, data))
            stream.origin_name = node.name
            stream.started = trio.current_time()
            self.streams.add(stream)
            stream.running = 1
            self.nursery.start_soon(self._pump, stream)
        stream.wakeup.set()

    def streaming_to(self, key: str, other_than: Node) -> Stream | None:
        """A stream of another file (renamed away since) that may still complete at ``key``."""
        return next((s for s in self.streams if s.key == key and s.node is not other_than),
                    None)

    def part_end(self, node: Node, offset: int) -> int | None:
        """The end of the next part to launch, when a write at ``offset`` fills it, for a
        file that streams or may start to (written from the start, nothing on S3 behind
        it); None otherwise."""
        data, stream = node.file.data, node.file.stream
        if data is None or (stream is None and data.base_valid_len):
            return None
        start = stream.next_offset if stream is not None else 0
        end = start + self._part_size(start, data)
        return end if start <= offset < end else None

    def first_part_pending(self, node: Node) -> bool:
        """A file being written from the start, with nothing on S3 behind it, that will
        stream once its first part is full: it holds less than that part so far."""
        data = node.file.data
        return (node.write_handles > 0 and node.file.stream is None and data is not None
                and not data.base_valid_len and data.dirty_bytes <= self.allowance(node))

    def under_pressure(self) -> None:
        """Writers wait for cache space: let pumps upload parts with holes (as zeros)."""
        self.pressure_until = trio.current_time() + 2.0
        for stream in self.streams:
            stream.wakeup.set()

    def allowance(self, node: Node) -> int:
        """What a file being written may hold past the cache limit besides its dirty
        blocks: its next part, less the uploaded blocks that cannot be evicted yet (their
        journal record is on its way to the disk, or an earlier part still uploads). Under
        load that wait grows; not counting those blocks broke the bound."""
        stream, data = node.file.stream, node.file.data
        if stream is None:
            return self._part_size(0, data)
        settling = data.blocks(data.streamed_len, stream.next_offset - data.streamed_len)
        waiting = sum(data.charges.get(b, 0) for b in settling if b not in data.dirty)
        return self._part_size(stream.next_offset, data) - waiting

    def _part_size(self, offset: int, data) -> int:
        return stream_part_size(offset, self.min_part, data.block_size)

    def _filled(self, node: Node, offset: int, length: int) -> bool:
        """The writer has written all of [offset, offset+length) — or, when the cache is full,
        the writer has gone past it: holes are zeros then (a sparse writer would wait
        forever otherwise; should it fill a hole later, the part is uploaded again)."""
        data = node.file.data
        if node.size < offset + length:
            return False
        if all(b in data.dirty for b in data.blocks(offset, length)):
            return True
        return trio.current_time() < self.pressure_until and all(
            b in data.dirty or b not in data.cached for b in data.blocks(offset, length))

    async def _pump(self, stream: Stream) -> None:
        try:
            with stream.cancellable():
                await self._create(stream)
                while not stream.closing:
                    await self._launch_ready_parts(stream)
                    await stream.wakeup.wait()
                    stream.wakeup = trio.Event()
        except Exception as exc:  # incl. local disk errors: never take the mount down
            stream.failure = str(exc)
            log.error("streaming upload of %s stopped: %s", stream.node.path(), exc)
        finally:
            stream.settled.set()
            self._task_done(stream)

    async def _create(self, stream: Stream) -> None:
        node = stream.node
        head = await node.file.data.read(0, MAGIC_BYTES)
        stream.key = self._target_key(node, head)
        stream.predicted = stream.key != node.key(self.prefix)
        metadata = node.object_metadata()
        stream.meta_gen = node.file.meta_gen  # attributes changed later need a copy afterwards
        # No checkpoint between the (shielded) creation and created.set(): abort() sees it.
        stream.upload_id = await self._retrying(
            lambda: self.writer.start_multipart(stream.key, metadata), stream, "start")
        stream.created.set()
        stream.settled.set()
        log.info("streaming %s to %s", node.path(), stream.key)

    def _target_key(self, node: Node, head: bytes) -> str:
        own_key = node.key(self.prefix)
        final_name = predict_final_name(node.name, head)
        if final_name is None or final_name in node.parent.children:
            return own_key  # nothing predicted, or a file of that name exists: no guessing
        return node.parent.key(self.prefix) + final_name

    async def _launch_ready_parts(self, stream: Stream) -> None:
        data = stream.node.file.data
        while not stream.closing:
            offset = stream.next_offset
            length = self._part_size(offset, data)
            if not self._filled(stream.node, offset, length):
                break
            await self.writer.part_slots.acquire()
            self._launch(stream, stream.next_number, offset, length)
            stream.next_number += 1
            stream.next_offset = offset + length
        if trio.current_time() < self.pressure_until:
            await self._relaunch_rewritten_parts(stream)

    async def _relaunch_rewritten_parts(self, stream: Stream) -> None:
        """Upload again the parts written to after their upload. Their blocks stay dirty
        (and count against the file's allowance) until then: left for ``finish``, they kept
        a writer waiting for room forever while it still had the file open."""
        for number in self._rewritten_parts(stream):
            await self.writer.part_slots.acquire()
            if stream.closing or number not in self._rewritten_parts(stream):
                self.writer.part_slots.release()  # changed while waiting for the slot
                continue
            stream.reuploading.add(number)
            self._launch(stream, number, *stream.launched[number])

    def _rewritten_parts(self, stream: Stream) -> list[int]:
        """Uploaded parts with dirty blocks, all of them cached, not being uploaded now."""
        data = stream.node.file.data
        numbers = []
        for number in sorted(stream.parts):
            blocks = data.blocks(*stream.launched[number])
            if (number not in stream.reuploading and any(b in data.dirty for b in blocks)
                    and all(b in data.cached for b in blocks)):
                numbers.append(number)
        return numbers

    def _launch(self, stream: Stream, number: int, offset: int, length: int) -> None:
        stream.launched[number] = (offset, length)
        stream.running += 1
        self.nursery.start_soon(self._upload_part, stream, number, offset, length)

    async def _upload_part(self, stream: Stream, number: int, offset: int, length: int) -> None:
        data = stream.node.file.data
        try:
            # Busy until the journal lists the part with this upload's ETag: an upload
            # again cleans blocks below streamed_len, which must not be evicted before that.
            with stream.cancellable(), data.in_use(offset, length):
                snapshot = data.dirty_snapshot(offset, length)
                etag, crc = await self._retrying(
                    lambda: self._send_part(stream, number, offset, length), stream,
                    f"part {number}")
                stream.checksum.add(offset, length, crc)
                stream.parts[number] = (offset, length, etag)
                stream.part_snapshots[number] = snapshot
                # Clean now, evictable once the journal lists the part (see record_parts).
                data.mark_clean(snapshot)
                await self.file_journal.record_parts(stream.node, stream.contiguous_end)
            data.cache.space_freed()  # evictable now: a writer may go on
        except Exception as exc:  # incl. local disk errors: never take the mount down
            stream.failure = str(exc)
            log.error("part %d of %s failed for good: %s", number, stream.node.path(), exc)
        finally:
            stream.reuploading.discard(number)
            self.writer.part_slots.release()
            self._task_done(stream)

    async def _send_part(self, stream: Stream, number: int, offset: int,
                         length: int) -> tuple[str, int]:
        """Send the part from the cache file; its ETag and the CRC of what S3 accepted."""
        return await self.parts.send(
            stream.node, offset, length,
            lambda body, _crc: self.store.upload_part(stream.key, stream.upload_id, number, body))

    async def _retrying(self, request, stream: Stream, what: str):
        """Retry beyond botocore's own attempts: an outage may last minutes. Gives up only on
        errors that retrying cannot fix (the upload is gone, access denied, ...)."""
        delay = RETRY_MIN
        failures = 0
        while True:
            try:
                return await request()
            except StoreError as exc:
                failures += 1
                # A shutdown waits a few attempts, not the outage: the journal keeps the parts
                # for the next mount.
                draining = self.writer.draining
                if exc.kind not in _RETRIED or (draining and failures >= DRAIN_ATTEMPTS):
                    raise
                if draining:
                    delay = min(delay, DRAIN_RETRY_MAX)
                log.warning("streaming %s of %s failed, retrying in %.0f s: %s",
                            what, stream.node.path(), delay, exc)
                stream.node.file.request_failed(exc)
            await trio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    def _task_done(self, stream: Stream) -> None:
        stream.running -= 1
        if stream.running == 0:
            stream.finished.set()

    # -- ending -----------------------------------------------------------------------------

    async def _stop(self, stream: Stream) -> None:
        """Stop launching parts and wait for those in flight."""
        stream.closing = True
        stream.wakeup.set()
        await stream.finished.wait()

    async def finish(self, node: Node, size: int, metadata: dict) -> str:
        """Upload what is left (tail and rewritten parts) and complete; returns the ETag."""
        stream = node.file.stream
        await self._stop(stream)
        if stream.failure or not stream.created.is_set():
            raise FsError(FsKind.IO, f"streaming upload failed: {stream.failure}")
        data = node.file.data
        stale = [n for n, (offset, length) in stream.launched.items()
                 if n not in stream.parts or any(b in data.dirty for b in data.blocks(offset, length))]
        for n in stale:
            offset, length = stream.launched[n]
            if any(data.unreadable(b) for b in data.blocks(offset, length)):
                raise FsError(FsKind.IO, f"{node.path()}: part {n} was rewritten after parts of "
                                          "it left the cache; it cannot be uploaded")
        uploads = [(n, *stream.launched[n]) for n in stale]
        offset, number = stream.next_offset, stream.next_number
        while offset < size or number == 1:
            length = min(self._part_size(offset, data), size - offset)
            uploads.append((number, offset, length))
            offset, number = offset + length, number + 1
        await self._upload_remaining(stream, uploads)
        parts = sorted((n, etag) for n, (_, _, etag) in stream.parts.items() if n < number)
        with trio.CancelScope(shield=True):  # once completed, the stream must be forgotten
            etag = await self.store.complete_multipart(stream.key, stream.upload_id, parts,
                                                       size)
            self.completed(node, stream, etag, size, min(size, data.low_water))
            await self.writer.upload_ended(stream.upload_id)
        return etag

    def completed(self, node: Node, stream: Stream, etag: str, size: int,
                   valid_len: int) -> None:
        """The multipart upload is an object now: it backs the evicted parts from this very
        moment (no await in between: a read or write must never find neither the stream nor
        the object behind them, and take the holes for data)."""
        node.file.stream_completed(stream, RemoteObject(stream.key, etag, size), valid_len)
        self.streams.discard(stream)

    def forget(self, node: Node, stream: Stream) -> None:
        node.file.stream_forgotten(stream)
        self.streams.discard(stream)

    async def _upload_remaining(self, stream: Stream, uploads) -> None:
        data = stream.node.file.data

        async def one(number: int, offset: int, length: int) -> None:
            try:
                snapshot = data.dirty_snapshot(offset, length)
                etag, crc = await self._send_part(stream, number, offset, length)
                stream.checksum.add(offset, length, crc)
                stream.parts[number] = (offset, length, etag)
                stream.part_snapshots[number] = snapshot
            finally:
                self.writer.part_slots.release()

        with first_fs_error():
            async with trio.open_nursery() as nursery:
                for number, offset, length in uploads:
                    await self.writer.part_slots.acquire()
                    nursery.start_soon(one, number, offset, length)

    async def abort(self, node: Node) -> None:
        """Drop the stream: no object, no multipart upload left behind."""
        stream = node.file.stream
        if stream is None:
            return
        stream.cancel()
        await self._stop(stream)
        self.forget(node, stream)
        if stream.created.is_set():
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await self.writer.abort_quietly(stream.key, stream.upload_id)

    def progress(self, now: float) -> list[dict]:
        return [
            {"path": s.node.path(), "ino": s.node.ino, "bytes_total": s.node.size,
             "bytes_done": s.uploaded_bytes,
             "seconds": round(now - s.started, 3),
             "bytes_per_second": int(s.uploaded_bytes / max(now - s.started, 1e-6)),
             "streaming_to": s.key}
            for s in self.streams
        ]

    # -- journal ----------------------------------------------------------------------------

    def restore(self, node: Node, record: StreamRecord) -> Stream:
        """A stream from the journal: its parts are on S3, the rest uploads at ``finish``."""
        stream = Stream(node)
        node.file.stream_started(stream)
        stream.restored = True
        stream.checksum.give_up("the stream was taken over after a restart")
        stream.key, stream.upload_id = record.key, record.upload_id
        stream.predicted, stream.origin_name = record.predicted, record.origin_name
        # The restored node counts attribute changes afresh (see recovery): 1 if any is pending.
        stream.meta_gen = node.file.meta_gen if record.meta_current else node.file.meta_gen - 1
        for number, offset, length, etag in record.parts:
            stream.parts[number] = (offset, length, etag)
        # Parts in flight at the crash are launched but not uploaded: finish() uploads them
        # again from the cache, where their blocks stayed dirty.
        for number, offset, length in record.launched:
            stream.launched[number] = (offset, length)
        stream.next_number = max(stream.launched, default=0) + 1
        stream.next_offset = max((o + l for o, l in stream.launched.values()), default=0)
        stream.created.set()
        stream.settled.set()
        stream.closing = True
        stream.finished.set()  # no pump: the writer is gone
        node.file.parts_on_record(stream.contiguous_end)  # the journal had them
        self.streams.add(stream)
        return stream

    def rewrites_evicted_part(self, node: Node, offset: int, length: int) -> bool:
        """True when a write would land in a part that was uploaded and left the cache
        (a restore writing clusters out of order into an image larger than the cache)."""
        data = node.file.data
        return any(any(data.unreadable(b) for b in data.blocks(part_offset, part_length))
                   for part_offset, part_length in _launched_parts_under(node, offset, length))

    async def complete_prefix(self, node: Node) -> tuple[str, int]:
        """Stop the stream and complete its multipart upload with the parts uploaded so far
        (those that follow each other from part 1); returns (ETag, length) of the object,
        which then backs the file's evicted blocks. The caller holds the node's sync_lock."""
        stream = node.file.stream
        await self._stop(stream)
        if stream.failure or not stream.created.is_set():
            raise FsError(FsKind.IO, f"streaming upload failed: {stream.failure}")
        parts = stream.contiguous_parts()
        length = stream.contiguous_end
        with trio.CancelScope(shield=True):  # once completed, the stream must be forgotten
            etag = await self.store.complete_multipart(stream.key, stream.upload_id, parts,
                                                       length)
            self.completed(node, stream, etag, length, length)
            await self.writer.upload_ended(stream.upload_id)
        return etag, length

    def before_write(self, node: Node, offset: int, length: int) -> None:
        """A write behind the start of the next part rewrites launched parts: they are
        uploaded again at the end, so all their blocks must stay (dirty) in the cache."""
        stream = node.file.stream
        if stream is None:
            return
        data = node.file.data
        if stream.failure is not None and not data.fully_local(node.size):
            raise FsError(FsKind.IO, f"{node.path()}: its streaming upload failed "
                                      f"({stream.failure}) after parts left the cache")
        # (A part that left the cache was dealt with first: see rewrites_evicted_part.)
        self.mark_rewritten(node, offset, length)

    def mark_rewritten(self, node: Node, offset: int, length: int) -> None:
        """Mark whole every launched part a write there rewrites: it stays in the cache,
        dirty, until it is uploaded again."""
        for part_offset, part_length in _launched_parts_under(node, offset, length):
            node.file.data.mark_written(part_offset, part_length)

    def rewrite_span(self, node: Node, offset: int, length: int) -> tuple[int, int]:
        """(offset, length) covering a write and the launched parts it rewrites: kept busy
        until the write is done, so that none of their blocks leaves the cache meanwhile."""
        spans = [(offset, length), *_launched_parts_under(node, offset, length)]
        start = min(span_offset for span_offset, _ in spans)
        end = max(span_offset + span_length for span_offset, span_length in spans)
        return start, end - start


def _launched_parts_under(node: Node, offset: int, length: int) -> list[tuple[int, int]]:
    """(offset, length) of the stream's launched parts that a write there rewrites."""
    stream = node.file.stream
    if stream is None or offset >= stream.next_offset:
        return []
    return [(part_offset, part_length) for part_offset, part_length in stream.launched.values()
            if part_offset < offset + length and offset < part_offset + part_length]

