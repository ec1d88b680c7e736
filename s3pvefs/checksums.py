"""The whole-file checksum s3pvefs records for every file it uploads: CRC64NVME, the checksum
S3 itself keeps for whole objects (``x-amz-checksum-crc64nvme``, base64 of the 8-byte
big-endian value). Computed with awscrt (hardware CRC, several GB/s: a backup streams at the
speed it did without it; SHA-256 took a tenth of W1's time on the benchmark machine).

Where it is recorded (docs/integrity.md): a PUT's object metadata ``META_CRC64NVME``, or, for a
multipart upload, the field ``INDEX_FIELD`` of the object's entry in its directory's attribute
index.
"""

from __future__ import annotations

import base64

from awscrt import checksums as _crt

META_CRC64NVME = "s3pvefs-crc64nvme"  # x-amz-meta-s3pvefs-crc64nvme
INDEX_FIELD = "crc64nvme"


class Crc64Nvme:
    """A running CRC64NVME over bytes fed in order."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = _crt.crc64nvme(data, self._crc)

    def combine(self, crc: int, length: int) -> None:
        """Append bytes known by their own CRC (``length`` of them) without reading them."""
        self._crc = _crt.combine_crc64nvme(self._crc, crc, length)

    def value(self) -> str:
        """As S3 writes it: base64 of the 8 bytes, big-endian."""
        return crc64nvme_text(self._crc)


def checksum_in_entry(entry: object, etag: str) -> str | None:
    """The checksum an attribute index entry records for the object version ``etag``."""
    if (isinstance(entry, dict) and str(entry.get("etag", "")).lower() == etag.lower()
            and isinstance(entry.get(INDEX_FIELD), str)):
        return entry[INDEX_FIELD]
    return None


def crc64nvme_text(crc: int) -> str:
    """A raw CRC64NVME as S3 writes it: base64 of the 8 bytes, big-endian."""
    return base64.b64encode(crc.to_bytes(8, "big")).decode("ascii")


def crc64nvme_raw(data: bytes) -> int:
    return _crt.crc64nvme(data)


def crc64nvme(data: bytes) -> str:
    checksum = Crc64Nvme()
    checksum.update(data)
    return checksum.value()
