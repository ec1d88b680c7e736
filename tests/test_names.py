"""Names, keys and attribute metadata (names.py), and the part size rule (uploader.py)."""

from __future__ import annotations

import stat

import pytest

from s3pvefs.config.values import GiB, MiB, TiB
from s3pvefs.errors import FsError, FsKind
from s3pvefs.names import (
    KEY_MAX,
    NAME_MAX,
    Attributes,
    check_key_length,
    decode_attributes,
    encode_attributes,
    listing_name,
    name_from_kernel,
)
from s3pvefs.transfer.objectwriter import MAX_OBJECT_SIZE, MAX_PARTS, choose_part_size

DEFAULT_FILE = Attributes(stat.S_IFREG | 0o644, 0, 0, 1_600_000_000_000_000_000)
DEFAULT_DIR = Attributes(stat.S_IFDIR | 0o755, 0, 0, 1_600_000_000_000_000_000)


# -- name_from_kernel ------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    (b"vm-100-disk-0.qcow2", "vm-100-disk-0.qcow2"),
    ("vzdump-qemu-100-ä€😀.vma.zst".encode(), "vzdump-qemu-100-ä€😀.vma.zst"),
    (b"...", "..."),
    (b".hidden", ".hidden"),
    (b" spaces and\ttabs ", " spaces and\ttabs "),
    (b"x" * NAME_MAX, "x" * NAME_MAX),
])
def test_name_from_kernel_accepts(raw: bytes, expected: str) -> None:
    assert name_from_kernel(raw) == expected


def test_name_limit_counts_utf8_bytes_not_characters() -> None:
    assert name_from_kernel("é".encode() * 127) == "é" * 127  # 254 bytes
    assert name_from_kernel("é".encode() * 127 + b"x") == "é" * 127 + "x"  # 255 bytes
    with pytest.raises(FsError) as info:
        name_from_kernel("é".encode() * 128)  # 128 characters, 256 bytes
    assert info.value.kind is FsKind.NAME_TOO_LONG


def test_name_of_256_bytes_is_too_long() -> None:
    with pytest.raises(FsError) as info:
        name_from_kernel(b"x" * (NAME_MAX + 1))
    assert info.value.kind is FsKind.NAME_TOO_LONG


@pytest.mark.parametrize("raw", [
    b"", b".", b"..", b"a/b", b"/", b"a\0b", b"\0",
    b"\xff\xfe",  # not UTF-8
    b"caf\xe9",  # Latin-1
    b"\xed\xa0\x80",  # an encoded surrogate is not valid UTF-8
])
def test_name_from_kernel_rejects(raw: bytes) -> None:
    with pytest.raises(FsError) as info:
        name_from_kernel(raw)
    assert info.value.kind is FsKind.INVALID_NAME


# -- listing_name ----------------------------------------------------------------------------


@pytest.mark.parametrize("dir_key, key, expected", [
    ("pve/", "pve/file", "file"),
    ("pve/", "pve/dir/", "dir"),  # a common prefix
    ("pve/images/", "pve/images/100/", "100"),
    ("", "top", "top"),  # no prefix: the bucket root
    ("", "topdir/", "topdir"),
    ("pve/", "pve/.hidden", ".hidden"),
    ("pve/", "pve/" + "n" * NAME_MAX, "n" * NAME_MAX),
    ("pve/", "pve/" + "€" * 85, "€" * 85),  # 255 bytes
])
def test_listing_name_shows(dir_key: str, key: str, expected: str) -> None:
    assert listing_name(dir_key, key) == expected


@pytest.mark.parametrize("dir_key, key", [
    ("pve/", "pve/"),  # the directory's own marker
    ("pve/a/", "pve/a//"),  # from the key "pve/a//b"
    ("pve/", "pve//"),
    ("pve/", "pve/./"),
    ("pve/", "pve/../"),
    ("pve/", "pve/."),
    ("pve/", "pve/.."),
    ("pve/", "pve/a/b"),  # not a direct child
    ("pve/", "pve/a\0b"),
    ("pve/", "pve/" + "n" * (NAME_MAX + 1)),
    ("pve/", "pve/" + "n" * (NAME_MAX + 1) + "/"),
    ("pve/", "pve/" + "€" * 86),  # 86 characters, 258 bytes
])
def test_listing_name_skips(dir_key: str, key: str) -> None:
    assert listing_name(dir_key, key) is None


# -- check_key_length ------------------------------------------------------------------------


def test_check_key_length() -> None:
    check_key_length("k" * KEY_MAX)
    check_key_length("€" * (KEY_MAX // 3))  # 1023 bytes
    with pytest.raises(FsError) as info:
        check_key_length("k" * (KEY_MAX + 1))
    assert info.value.kind is FsKind.NAME_TOO_LONG
    with pytest.raises(FsError) as info:
        check_key_length("€" * (KEY_MAX // 3 + 1))  # 342 characters, 1026 bytes
    assert info.value.kind is FsKind.NAME_TOO_LONG


# -- attribute metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("attrs", [
    Attributes(stat.S_IFREG | 0o640, 1000, 1001, 1_700_000_000_123_456_789),
    Attributes(stat.S_IFREG | 0o644, 0, 0, 1_700_000_000_000_000_000),  # whole seconds
    Attributes(stat.S_IFREG | 0o644, 0, 0, 1_700_000_000_000_000_001),  # one nanosecond
    Attributes(stat.S_IFREG | 0o644, 0, 0, 1_700_000_000_999_999_999),
    Attributes(stat.S_IFDIR | 0o1777, 65534, 65534, 5),
    Attributes(stat.S_IFLNK | 0o777, 33, 33, 0),
    Attributes(stat.S_IFREG | 0o6755, 4_294_967_294, 4_294_967_294, 2**62),
])
def test_attributes_round_trip(attrs: Attributes) -> None:
    metadata = encode_attributes(attrs)
    assert set(metadata) == {"mode", "uid", "gid", "mtime"}
    assert all(isinstance(value, str) and value.isascii() for value in metadata.values())
    assert decode_attributes(metadata, DEFAULT_FILE) == attrs


def test_encoded_values_are_s3fs_compatible() -> None:
    attrs = Attributes(stat.S_IFREG | 0o644, 1000, 100, 1_700_000_000_500_000_000)
    assert encode_attributes(attrs) == {
        "mode": str(stat.S_IFREG | 0o644),  # decimal st_mode, as s3fs writes it
        "uid": "1000",
        "gid": "100",
        "mtime": "1700000000.500000000",
    }
    assert encode_attributes(Attributes(stat.S_IFREG | 0o644, 0, 0, 1_700_000_000 * 10**9))[
        "mtime"] == "1700000000"


def test_s3fs_integer_mtime_is_read() -> None:
    attrs = decode_attributes({"mode": "33261", "uid": "0", "gid": "0", "mtime": "1700000000"},
                              DEFAULT_FILE)
    assert attrs == Attributes(0o100755, 0, 0, 1_700_000_000 * 10**9)


def test_negative_mtime_round_trips() -> None:
    attrs = Attributes(stat.S_IFREG | 0o644, 0, 0, -1_000_000_001)  # 1969-12-31T23:59:58.999999999
    assert decode_attributes(encode_attributes(attrs), DEFAULT_FILE) == attrs


def test_no_metadata_gives_defaults() -> None:
    assert decode_attributes(None, DEFAULT_FILE) == DEFAULT_FILE
    assert decode_attributes({}, DEFAULT_DIR) == DEFAULT_DIR


def test_partial_metadata_fills_in_defaults() -> None:
    attrs = decode_attributes({"uid": "1000"}, DEFAULT_FILE)
    assert attrs == Attributes(DEFAULT_FILE.mode, 1000, DEFAULT_FILE.gid, DEFAULT_FILE.mtime_ns)


@pytest.mark.parametrize("metadata", [
    {"mode": "rw-r--r--", "uid": "root", "gid": "", "mtime": "yesterday"},
    {"mode": "0x1a4", "uid": "-1", "gid": "-5", "mtime": "NaN"},
    {"mode": "-33188", "uid": "1.5", "gid": "1e3", "mtime": ""},
    {"mode": "", "uid": " ", "gid": "\u0661\u0662x", "mtime": "12:00"},
    {"mtime": "sNaN"},
])
def test_garbage_metadata_gives_defaults(metadata: dict[str, str]) -> None:
    assert decode_attributes(metadata, DEFAULT_FILE) == DEFAULT_FILE


@pytest.mark.parametrize("field, value", [
    ("mtime", "Infinity"),
    ("mtime", "-inf"),
    ("mtime", "1e30"),
    ("mode", str(2**70 | 0o100644)),
    ("mode", str(2**40 | 0o100644)),
    ("uid", str(2**32)),
    ("gid", str(2**40)),
])
def test_unrepresentable_metadata_gives_defaults(field: str, value: str) -> None:
    assert decode_attributes({field: value}, DEFAULT_FILE) == DEFAULT_FILE


def test_mode_without_type_bits_takes_the_default_type() -> None:
    assert decode_attributes({"mode": str(0o640)}, DEFAULT_FILE).mode == stat.S_IFREG | 0o640
    assert decode_attributes({"mode": str(0o700)}, DEFAULT_DIR).mode == stat.S_IFDIR | 0o700


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_special_file_mode_gives_default(kind: int) -> None:
    assert decode_attributes({"mode": str(kind | 0o666), "uid": "7"}, DEFAULT_FILE) == \
        Attributes(DEFAULT_FILE.mode, 7, DEFAULT_FILE.gid, DEFAULT_FILE.mtime_ns)


def test_file_types_we_serve_are_kept() -> None:
    for kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        assert decode_attributes({"mode": str(kind | 0o600)}, DEFAULT_FILE).mode == kind | 0o600


# -- part sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("min_part", [5 * MiB, 8 * MiB, 16 * MiB, 64 * MiB, 512 * MiB])
@pytest.mark.parametrize("size", [
    0, 1, 5 * MiB, 16 * MiB + 1, 50 * GiB, 80 * GiB + 7, 160 * GiB, 1 * TiB, 3 * TiB + 12345,
    MAX_OBJECT_SIZE - 1, MAX_OBJECT_SIZE,
])
def test_choose_part_size(size: int, min_part: int) -> None:
    part = choose_part_size(size, min_part)
    assert part >= min_part  # never below the configured (and S3's) minimum
    assert part % MiB == 0
    assert -(-size // part) <= MAX_PARTS  # the object fits in 10,000 parts
    assert part <= 5 * GiB  # S3's largest part
    # the smallest such size: one MiB less would be below the minimum or need too many parts
    smaller = part - MiB
    assert smaller < min_part or -(-size // smaller) > MAX_PARTS


def test_part_size_stays_at_minimum_while_it_fits() -> None:
    assert choose_part_size(MAX_PARTS * 16 * MiB, 16 * MiB) == 16 * MiB
    assert choose_part_size(MAX_PARTS * 16 * MiB + 1, 16 * MiB) == 17 * MiB


def test_ten_thousand_parts_reach_5_tib() -> None:
    part = choose_part_size(MAX_OBJECT_SIZE, 5 * MiB)
    assert MAX_PARTS * part >= MAX_OBJECT_SIZE
    assert part == 525 * MiB  # 5 TiB / 10,000 = 524.3 MiB, rounded up to whole MiB
