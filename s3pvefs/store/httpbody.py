"""How aiohttp sends a ``SliceReader`` (body.py): a payload type of its own, registered with
aiohttp's payload registry when the S3 store is imported. Kept out of body.py so that the
in-memory store needs no HTTP library.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import payload as aiohttp_payload

from s3pvefs.store.body import CHUNK, SliceReader


class SlicePayload(aiohttp_payload.Payload):
    """How aiohttp sends a ``SliceReader``: chunks read in the loop's executor, each let
    through the throttle before it goes to the socket (whose buffer aiohttp keeps small)."""

    def __init__(self, value: SliceReader, *args: Any, **kwargs: Any) -> None:
        super().__init__(value, *args, **kwargs)
        self._size = value.slice.length - value.tell()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file slice is bytes, not text")

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        reader: SliceReader = self._value
        loop = asyncio.get_running_loop()
        left = reader.slice.length - reader.tell()
        if content_length is not None:
            left = min(left, content_length)
        throttle = reader.throttle
        while left > 0:
            size = CHUNK if throttle is None else throttle.chunk(CHUNK)
            chunk = await loop.run_in_executor(None, reader.read, min(size, left))
            if not chunk:
                return
            if throttle is not None:
                await asyncio.sleep(throttle.reserve(len(chunk)))
            await writer.write(chunk)
            left -= len(chunk)


aiohttp_payload.PAYLOAD_REGISTRY.register(SlicePayload, SliceReader,
                                          order=aiohttp_payload.Order.try_first)
