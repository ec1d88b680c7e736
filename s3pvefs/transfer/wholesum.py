"""The checksum of a whole file (checksums.py: CRC64NVME), computed from the part bodies an
upload sends anyway.

Parts are read (and fed here) roughly in order, each by its own task; a body that arrives
before the ones below it waits here, by reference, until they are in. Nothing is read a
second time: the checksum exists only when every byte of the object went through this upload
in one pass. A part sent again (rewritten behind a stream, or after a failure), a part copied on
the server, a restart in the middle, or too many bodies waiting out of order: the upload goes
on and simply records no checksum (``s3pvefs verify`` then says so).
"""

from __future__ import annotations

import logging

import trio

from s3pvefs.checksums import Crc64Nvme, crc64nvme

log = logging.getLogger(__name__)

MAX_WAITING = 64  # bodies held out of order; they are also held by their own upload meanwhile
THREAD_THRESHOLD = 1024 * 1024  # larger bodies are summed in a worker thread


async def checksum_of(body: bytes) -> str:
    """The checksum of one body (a PUT's), off the trio thread when it is large."""
    if len(body) < THREAD_THRESHOLD:
        return crc64nvme(body)
    return await trio.to_thread.run_sync(crc64nvme, body)


class WholeFileChecksum:
    def __init__(self) -> None:
        self._sum = Crc64Nvme()
        self.summed_to = 0  # every byte below this offset is in the checksum
        self._waiting: dict[int, bytes] = {}  # offset -> body that arrived early
        self._lock = trio.Lock()
        self.given_up: str | None = None

    def give_up(self, why: str) -> None:
        if self.given_up is None:
            log.debug("no whole-file checksum: %s", why)
            self.given_up = why
            self._waiting.clear()

    async def feed(self, offset: int, body: bytes) -> None:
        """A part's body, as it is sent, at ``offset`` of the object."""
        if self.given_up:
            return
        if offset < self.summed_to or offset in self._waiting:
            self.give_up(f"bytes at {offset} were sent twice")
            return
        self._waiting[offset] = body
        if len(self._waiting) > MAX_WAITING:
            self.give_up("too many parts arrived out of order")
            return
        async with self._lock:  # one drain at a time keeps the checksum in order
            while not self.given_up and self.summed_to in self._waiting:
                ready = self._waiting.pop(self.summed_to)
                await self._update(ready)
                self.summed_to += len(ready)

    async def _update(self, body: bytes) -> None:
        if len(body) < THREAD_THRESHOLD:
            self._sum.update(body)
        else:
            await trio.to_thread.run_sync(self._sum.update, body)

    def value(self, size: int) -> str | None:
        """The checksum when exactly the bytes [0, size) were fed, each once; else None."""
        if self.given_up or self._waiting or self.summed_to != size:
            return None
        return self._sum.value()
