"""Unit tests of the configuration (config, configfile, configcheck, configvalues): TOML + flags,
conversions, validation messages."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from s3pvefs.config.file import load_config
from s3pvefs.config.settings import Config
from s3pvefs.config.values import GiB, KiB, MiB, PiB, TiB, parse_mode, parse_size
from s3pvefs.errors import ConfigError
from s3pvefs.logsetup import setup_logging


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "s3pvefs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


def error_of(config_file: Path | None = None, **overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config_file, overrides)
    return str(info.value)


# ---- defaults, file, overrides ----------------------------------------------------------------


def test_defaults_without_file():
    c = load_config(None, {})
    assert c == Config()
    assert c.prefix == "" and c.endpoint_url is None and c.bucket is None


def test_full_toml_file(tmp_path):
    path = write(
        tmp_path,
        """
[s3]
endpoint_url = "https://s3.example.com:9000/"
region = "eu-central-1"
bucket = "pve-backups"
prefix = "/cluster1/pve"
addressing_style = "Path"
create_bucket = true
verify_tls = false
connect_timeout = 3
read_timeout = 30.5
max_attempts = 8
retry_mode = "adaptive"
max_connections = 32

[credentials]
access_key_id = "AKIAEXAMPLE12345"
secret_access_key = "verysecretkey/with+chars"

[cache]
dir = "/srv/cache"
size = "20GiB"
block_size = "2M"

[upload]
part_size = "32MiB"
multipart_threshold = "64MiB"
concurrency = 8

[mount]
allow_other = true
uid = 1000
gid = 1000
file_mode = "0640"
dir_mode = 0o750
capacity = "100T"
dir_ttl = 30
attr_ttl = 0

[log]
level = "debug"
file = "/var/log/s3pvefs.log"
""",
    )
    c = load_config(path, {})
    assert c.endpoint_url == "https://s3.example.com:9000"
    assert c.region == "eu-central-1"
    assert c.bucket == "pve-backups"
    assert c.prefix == "cluster1/pve/"
    assert c.addressing_style == "path"
    assert c.create_bucket is True and c.verify_tls is False
    assert c.connect_timeout == 3.0 and c.read_timeout == 30.5
    assert c.max_attempts == 8 and c.retry_mode == "adaptive" and c.max_connections == 32
    assert c.access_key_id == "AKIAEXAMPLE12345"
    assert c.secret_access_key == "verysecretkey/with+chars"
    assert c.cache_dir == Path("/srv/cache")
    assert c.cache_size == 20 * GiB and c.block_size == 2 * MiB
    assert c.part_size == 32 * MiB and c.multipart_threshold == 64 * MiB
    assert c.upload_concurrency == 8
    assert c.allow_other is True and (c.uid, c.gid) == (1000, 1000)
    assert c.file_mode == 0o640 and c.dir_mode == 0o750
    assert c.capacity == 100 * TiB
    assert c.dir_ttl == 30.0 and c.attr_ttl == 0.0
    assert c.log_level == "DEBUG" and c.log_file == Path("/var/log/s3pvefs.log")


def test_flags_win_over_file_and_none_does_not(tmp_path):
    path = write(
        tmp_path,
        '[s3]\nbucket = "from-file"\nregion = "eu-west-1"\n[cache]\nsize = "8G"\n',
        mode=0o644,
    )
    c = load_config(path, {"bucket": "from-flag", "region": None, "cache_size": "12GiB",
                           "verify_tls": False, "allow_other": None})
    assert c.bucket == "from-flag"
    assert c.region == "eu-west-1"  # None = flag not given: the file's value stands
    assert c.cache_size == 12 * GiB
    assert c.verify_tls is False
    assert c.allow_other is False


def test_flag_strings_are_converted():
    c = load_config(None, {"uid": "33", "file_mode": "600", "dir_mode": "0o700",
                           "connect_timeout": "2.5", "max_attempts": "3", "capacity": "1.5GiB",
                           "cache_dir": "/tmp/x/../cache"})
    assert c.uid == 33 and c.file_mode == 0o600 and c.dir_mode == 0o700
    assert c.connect_timeout == 2.5 and c.max_attempts == 3
    assert c.capacity == GiB + 512 * MiB
    assert c.cache_dir.is_absolute()


# ---- sizes and modes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("512k", 512 * KiB),
        ("512K", 512 * KiB),
        ("512KiB", 512 * KiB),
        ("512kb", 512 * KiB),
        ("16MiB", 16 * MiB),
        ("16m", 16 * MiB),
        ("10G", 10 * GiB),
        ("10 GiB", 10 * GiB),
        ("1.5GiB", 3 * GiB // 2),
        ("2T", 2 * TiB),
        ("1P", PiB),
        ("100B", 100),
        (" 1MB ", MiB),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "10X", "-1", "1.2.3", "i", "10 i", "MiB", True, [1], -5])
def test_parse_size_rejects(bad):
    with pytest.raises(ConfigError) as info:
        parse_size(bad, "--cache-size")
    assert "--cache-size" in str(info.value)


@pytest.mark.parametrize(
    "text,expected",
    [("0644", 0o644), ("644", 0o644), ("0o755", 0o755), ("1777", 0o1777), (0o640, 0o640), (0, 0)],
)
def test_parse_mode(text, expected):
    assert parse_mode(text) == expected


@pytest.mark.parametrize("bad", ["abc", "0899", "", "17777", 0o17777, True, 1.5])
def test_parse_mode_rejects(bad):
    with pytest.raises(ConfigError):
        parse_mode(bad, "--file-mode")


def test_decimal_mode_in_toml_is_explained(tmp_path):
    path = write(tmp_path, "[mount]\nfile_mode = 644\n")
    msg = error_of(path)
    assert "[mount] file_mode" in msg and '"0644"' in msg and "0o644" in msg


# ---- validation messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"bucket": "ab"}, "3 to 63 characters"),
        ({"bucket": "My_Bucket"}, "lowercase letters"),
        ({"bucket": "a..b"}, "'..'"),
        ({"bucket": "-abc"}, "begin and end"),
        ({"bucket": "192.168.1.1"}, "IP address"),
        ({"bucket": "xn--abc"}, "reserved"),
        ({"endpoint_url": "ftp://host", "bucket": "b1b"}, "http or https"),
        ({"endpoint_url": "host:9000", "bucket": "b1b"}, "http://host[:port]"),
        ({"endpoint_url": "http://host:9000/bucket", "bucket": "b1b"}, "path"),
        ({"endpoint_url": "http://host:99999", "bucket": "b1b"}, "--endpoint-url"),
        ({"endpoint_url": "http://u:p@host", "bucket": "b1b"}, "credentials"),
        ({"endpoint_url": "http://bad_host!", "bucket": "b1b"}, "host"),
        ({"endpoint_url": "http://host:9000"}, "no bucket"),
        ({"prefix": "a//b"}, "'//'"),
        ({"prefix": "a/../b"}, "'..'"),
        ({"addressing_style": "dns"}, "auto, path or virtual"),
        ({"retry_mode": "legacy"}, "standard or adaptive"),
        ({"connect_timeout": "0"}, "more than 0"),
        ({"read_timeout": -1}, "more than 0"),
        ({"max_attempts": "0"}, "at least 1"),
        ({"max_connections": "0"}, "at least 1"),
        ({"upload_concurrency": "0"}, "at least 1"),
        ({"cache_size": "0"}, "positive"),
        ({"capacity": "0"}, "positive"),
        ({"block_size": "100k"}, "power of two"),
        ({"block_size": "32k"}, "64 KiB to 64 MiB"),
        ({"block_size": "128MiB"}, "64 KiB to 64 MiB"),
        ({"part_size": "4MiB"}, "at least 5 MiB"),
        ({"part_size": "6MiB", "block_size": "4MiB"}, "multiple of the block size"),
        ({"part_size": "6GiB", "cache_size": "100G"}, "at most 5 GiB"),
        ({"multipart_threshold": "6GiB"}, "at most 5 GiB"),
        ({"cache_size": "16MiB"}, "at least 2 upload parts"),
        ({"uid": "-1"}, "from 0 to"),
        ({"uid": "abc"}, "expected an integer"),
        ({"dir_ttl": "-1"}, "0 or more"),
        ({"attr_ttl": "soon"}, "number"),
        ({"log_level": "chatty"}, "unknown log level"),
        ({"region": ""}, "invalid region"),
        ({"profile": " "}, "empty"),
        ({"access_key_id": "AKIA"}, "both access_key_id and secret_access_key"),
        ({"access_key_id": "AKIA", "secret_access_key": "s", "profile": "p"}, "use one of them"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "not a file"),
        ({"create_bucket": "maybe"}, "true or false"),
    ],
)
def test_validation_errors_are_readable(overrides, expected):
    msg = error_of(None, **overrides)
    assert expected in msg
    # The message names the flag (or the setting) that is wrong, never a Python repr of a class.
    assert "Traceback" not in msg and "<" not in msg


def test_cache_size_message_says_why():
    msg = error_of(None, cache_size="24MiB", part_size="16MiB")
    assert msg.startswith("--cache-size: 24 MiB is too small")
    assert "2 x part size 16 MiB = 32 MiB" in msg


def test_errors_in_file_name_the_section_and_file(tmp_path):
    path = write(tmp_path, '[upload]\npart_size = "1MiB"\n')
    msg = error_of(path)
    assert f"[upload] part_size in {path}" in msg and "5 MiB" in msg


def test_type_errors_in_file(tmp_path):
    path = write(tmp_path, "[s3]\nmax_attempts = \"many\"\n")
    assert "expected an integer" in error_of(path)
    path = write(tmp_path, "[s3]\nbucket = 5\n")
    assert "expected a string" in error_of(path)


def test_normalisation():
    c = load_config(None, {"prefix": "/pve", "endpoint_url": "HTTP://Minio:9000", "bucket": "b1b",
                           "log_level": "warn", "retry_mode": "Adaptive"})
    assert c.prefix == "pve/"
    assert c.endpoint_url == "http://Minio:9000"
    assert c.log_level == "WARNING" and c.retry_mode == "adaptive"
    assert load_config(None, {"prefix": "a/b/"}).prefix == "a/b/"
    assert load_config(None, {"prefix": "/"}).prefix == ""
    assert load_config(None, {"endpoint_url": "http://[::1]:9000", "bucket": "b1b"}).endpoint_url == "http://[::1]:9000"


def test_bucket_without_endpoint_means_aws():
    c = load_config(None, {"bucket": "my-pve-backups", "region": "eu-west-3"})
    assert c.endpoint_url is None and c.bucket == "my-pve-backups"


# ---- file problems --------------------------------------------------------------------------


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, '[s3]\nbukcet = "x"\n')
    msg = error_of(path)
    assert "unknown key 'bukcet' in [s3]" in msg and "did you mean 'bucket'" in msg


def test_unknown_section_is_named(tmp_path):
    path = write(tmp_path, '[cahce]\nsize = "1G"\n')
    msg = error_of(path)
    assert "unknown section [cahce]" in msg and "[cache]" in msg


def test_top_level_key_is_rejected(tmp_path):
    path = write(tmp_path, 'bucket = "x"\n')
    msg = error_of(path)
    assert "unknown key 'bucket' at the top" in msg


def test_bad_toml_and_missing_file(tmp_path):
    path = write(tmp_path, "[s3\nbucket = \n")
    assert "is not valid TOML" in error_of(path)
    assert "does not exist" in error_of(tmp_path / "nope.toml")
    assert "is a directory" in error_of(tmp_path)


# ---- the chmod 600 rule ----------------------------------------------------------------------

SECRET_TOML = '[s3]\nbucket = "b1b"\n[credentials]\naccess_key_id = "AKIAEXAMPLE"\nsecret_access_key = "s3cr3t-value"\n'


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666])
def test_secret_in_group_or_world_accessible_file_is_refused(tmp_path, mode):
    path = write(tmp_path, SECRET_TOML, mode=mode)
    msg = error_of(path)
    assert f"chmod 600 {path}" in msg
    assert "s3cr3t-value" not in msg


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_secret_in_private_file_is_accepted(tmp_path, mode):
    path = write(tmp_path, SECRET_TOML, mode=mode)
    c = load_config(path, {})
    assert c.secret_access_key == "s3cr3t-value"


def test_session_token_alone_triggers_the_rule(tmp_path):
    path = write(tmp_path, '[credentials]\nsession_token = "tok"\n', mode=0o644)
    assert "chmod 600" in error_of(path)


def test_file_without_secret_may_be_world_readable(tmp_path):
    path = write(tmp_path, '[s3]\nbucket = "b1b"\n[credentials]\naccess_key_id = "AKIA"\n', mode=0o644)
    # (keys are incomplete, which is its own error; but not the chmod rule)
    msg = error_of(path)
    assert "chmod" not in msg and "both access_key_id" in msg


# ---- secrets stay out of logs -----------------------------------------------------------------


# Realistic credentials: an AWS-style secret key (40 characters) and a session token.
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD"


def test_redacted_and_repr_hide_secrets():
    c = load_config(None, {"access_key_id": "AKIAEXAMPLE12345", "secret_access_key": SECRET_KEY,
                           "session_token": SESSION_TOKEN})
    red = c.redacted()
    assert red["secret_access_key"] == "***" and red["session_token"] == "***"
    assert red["access_key_id"] == "AKIA***"
    assert red["file_mode"] == "0644" and red["cache_dir"] == "/var/cache/s3pvefs"
    text = repr(c) + str(red)
    assert SECRET_KEY not in text and SESSION_TOKEN not in text and "AKIAEXAMPLE12345" not in text


def _logged(tmp_path, secret: str, *records: tuple) -> str:
    """The log file's text after logging ``records`` (format, args...) with ``secret`` as the
    configuration's secret key."""
    log_file = tmp_path / "log" / "s3pvefs.log"
    c = load_config(None, {"access_key_id": "AKIAEXAMPLE12345", "secret_access_key": secret,
                           "log_file": str(log_file), "log_level": "debug"})
    handler = setup_logging(c)
    try:
        for fmt, *args in records:
            logging.getLogger("s3pvefs.test").info(fmt, *args)
        logging.getLogger("botocore.test").debug("hidden at debug")
        handler.flush()
        return log_file.read_text()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_logging_masks_secrets(tmp_path):
    text = _logged(tmp_path, SECRET_KEY, ("signing with %s", SECRET_KEY),
                   ("inside a longer word: x%sy", SECRET_KEY))
    assert "signing with ***" in text and "inside a longer word: x***y" in text
    assert SECRET_KEY not in text
    assert "INFO s3pvefs.test:" in text
    assert "hidden at debug" not in text


def test_a_short_secret_is_masked_where_it_is_printed_not_in_other_words(tmp_path):
    """A test secret "test" must not turn "pjdfstest" into "pjdfs***"; where a secret is
    printed as one (a credentials repr, the headers botocore logs, an environment dump, a
    key = value line, a --flag) it is masked whatever its length."""
    headers = {"x-amz-security-token": b"test",
               "Authorization": b"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE12345/20240501/"
                                b"us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab12",
               "X-Amz-Server-Side-Encryption-Customer-Key": "test",
               "X-Amz-Server-Side-Encryption-Customer-Key-MD5": "digest"}
    text = _logged(
        tmp_path, "test",
        ("ran pjdfstest on /mnt/test: %d tests", 5),
        ("credentials: ReadOnlyCredentials(access_key='AKIA', secret_key='test', token='test')",),
        ("headers=%r", headers),
        ("environment: AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN=test",),
        ('config line: secret_access_key = "test"',),
        ("argv: s3pvefs mount --secret-access-key test --session-token=test /mnt",),
        ('process output: {"SecretAccessKey": "test", "SessionToken": "test"}',),
        ("listing with next_token=abc, ContinuationToken=abc",),
    )
    assert "ran pjdfstest on /mnt/test: 5 tests" in text
    assert "secret_key='***', token='***'" in text
    assert "'x-amz-security-token': b'***'" in text and "'Authorization': b'***'" in text
    assert "'X-Amz-Server-Side-Encryption-Customer-Key': '***'" in text
    assert "'X-Amz-Server-Side-Encryption-Customer-Key-MD5': 'digest'" in text
    assert "AWS_SECRET_ACCESS_KEY=*** AWS_SESSION_TOKEN=***" in text
    assert 'secret_access_key = "***"' in text
    assert "--secret-access-key *** --session-token=*** /mnt" in text
    assert '{"SecretAccessKey": "***", "SessionToken": "***"}' in text
    assert "Signature=ab12" not in text
    assert "next_token=abc, ContinuationToken=abc" in text


def test_unwritable_log_file_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = load_config(None, {"log_file": str(blocker / "sub" / "x.log")})
    with pytest.raises(ConfigError, match="cannot open log file"):
        setup_logging(c)


# ---- shipped examples ---------------------------------------------------------------------------

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(tmp_path, example):
    copy = write(tmp_path, example.read_text(), mode=0o600)
    c = load_config(copy, {})
    assert c.bucket


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"aws.toml", "minio.toml", "ceph-rgw.toml"}


def test_wrong_type_of_secret_is_not_echoed(tmp_path):
    path = write(tmp_path, "[credentials]\naccess_key_id = \"AKIA\"\nsecret_access_key = 123456789\n")
    msg = error_of(path)
    assert "secret_access_key" in msg and "123456789" not in msg


# ---- storage class and server-side encryption ------------------------------------------------


def test_storage_class_and_encryption_from_toml(tmp_path):
    path = write(tmp_path, """
[s3]
bucket = "b1b"
prefix = "pve"
storage_class = "standard_ia"

[s3.storage_class_by_dir]
dump = "STANDARD_IA"
"template/iso/" = "standard"
"/snippets" = "GLACIER_IR"

[encryption]
sse = "aws:kms"
kms_key_id = "alias/pve-backups"
""")
    c = load_config(path)
    assert c.storage_class == "STANDARD_IA"
    assert c.storage_class_by_dir == {"dump/": "STANDARD_IA", "template/iso/": "STANDARD",
                                      "snippets/": "GLACIER_IR"}
    assert (c.sse, c.kms_key_id, c.sse_customer_key) == ("aws:kms", "alias/pve-backups", None)


def test_storage_class_flags():
    c = load_config(None, {"storage_class": "onezone_ia", "sse": "sse-s3",
                           "storage_class_by_dir": "dump=DEEP_ARCHIVE, template/cache=STANDARD"})
    assert c.storage_class == "ONEZONE_IA" and c.sse == "AES256"
    assert c.storage_class_by_dir == {"dump/": "DEEP_ARCHIVE", "template/cache/": "STANDARD"}


def test_defaults_send_no_storage_class_and_no_encryption():
    c = load_config(None, {})
    assert c.storage_class is None and c.storage_class_by_dir == {} and c.sse == "none"


@pytest.mark.parametrize("overrides, expected", [
    ({"storage_class": "STANDARD-IA"},
     "--storage-class: unknown storage class 'STANDARD-IA' (did you mean 'STANDARD_IA'?)"),
    ({"storage_class": "glacier-deep"}, "--storage-class: unknown storage class 'glacier-deep'"),
    ({"storage_class_by_dir": "dump:STANDARD_IA"},
     "--storage-class-by-dir: expected DIR=CLASS[,DIR=CLASS...]"),
    ({"storage_class_by_dir": "../x=STANDARD"}, "invalid directory '../x'"),
    ({"storage_class_by_dir": "=STANDARD"}, "invalid directory ''"),
    ({"storage_class_by_dir": "dump=COLD"},
     "--storage-class-by-dir entry 'dump': unknown storage class 'COLD'"),
    ({"sse": "aes-256"}, "--sse: unknown encryption 'aes-256' (did you mean 'aes256'?)"),
    ({"kms_key_id": "alias/x"}, "--kms-key-id: a KMS key is only used with sse = \"aws:kms\""),
    ({"sse": "aws:kms", "kms_key_id": " "}, "--kms-key-id: empty value"),
    ({"sse": "SSE-C"}, "--sse is SSE-C but no customer key is set: give --sse-customer-key-file"),
])
def test_object_option_errors(overrides, expected):
    assert expected in error_of(**overrides)


def test_storage_class_error_in_file_names_the_key(tmp_path):
    path = write(tmp_path, '[s3.storage_class_by_dir]\ndump = "Standard IA"\n')
    msg = error_of(path)
    assert f"[s3] storage_class_by_dir in {path} entry 'dump'" in msg
    assert "did you mean 'STANDARD_IA'" in msg


def test_unknown_encryption_key_is_named(tmp_path):
    path = write(tmp_path, '[encryption]\nsse = "AES256"\nkms_key = "x"\n')
    msg = error_of(path)
    assert "unknown key 'kms_key' in [encryption]" in msg and "did you mean 'kms_key_id'" in msg


SSE_C_KEY = bytes(range(100, 132))


def key_file(tmp_path, content: bytes, mode: int = 0o600):
    path = tmp_path / "sse-c.key"
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("content", [
    SSE_C_KEY,  # openssl rand 32 > FILE
    base64.b64encode(SSE_C_KEY) + b"\n",  # openssl rand -base64 32 > FILE
    base64.b64encode(SSE_C_KEY),
])
def test_sse_c_key_file_raw_or_base64(tmp_path, content):
    c = load_config(None, {"sse": "sse-c",
                           "sse_customer_key_file": str(key_file(tmp_path, content))})
    assert c.sse == "SSE-C" and c.sse_customer_key == SSE_C_KEY


@pytest.mark.parametrize("mode", [0o400, 0o600])
def test_sse_c_key_file_private_modes_are_accepted(tmp_path, mode):
    path = key_file(tmp_path, SSE_C_KEY, mode)
    assert load_config(None, {"sse": "SSE-C", "sse_customer_key_file": str(path)}).sse_customer_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_sse_c_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = key_file(tmp_path, SSE_C_KEY, mode)
    msg = error_of(None, sse="SSE-C", sse_customer_key_file=str(path))
    assert f"run: chmod 600 {path}" in msg and f"mode {mode:04o}" in msg


@pytest.mark.parametrize("content", [b"short", b"x" * 31, b"x" * 33,
                                     base64.b64encode(b"y" * 16) + b"\n", b"not base64 at all!!"])
def test_sse_c_key_file_of_the_wrong_size_is_refused_without_quoting_it(tmp_path, content):
    path = key_file(tmp_path, content)
    msg = error_of(None, sse="SSE-C", sse_customer_key_file=str(path))
    assert "exactly 32 raw bytes or their base64 encoding" in msg
    assert content.decode(errors="replace").strip() not in msg


def test_sse_c_key_file_must_be_a_regular_file(tmp_path):
    (tmp_path / "dir").mkdir(mode=0o700)
    assert "is not a regular file" in error_of(None, sse="SSE-C",
                                               sse_customer_key_file=str(tmp_path / "dir"))
    assert "does not exist" in error_of(None, sse="SSE-C",
                                        sse_customer_key_file=str(tmp_path / "none"))


def test_sse_c_key_file_needs_sse_c(tmp_path):
    path = key_file(tmp_path, SSE_C_KEY)
    msg = error_of(None, sse="AES256", sse_customer_key_file=str(path))
    assert "a customer key is only used with sse = \"SSE-C\"" in msg


def test_sse_c_key_is_a_secret(tmp_path):
    path = key_file(tmp_path, SSE_C_KEY)
    c = load_config(None, {"sse": "SSE-C", "sse_customer_key_file": str(path)})
    key_b64 = base64.b64encode(SSE_C_KEY).decode()
    assert key_b64 in c.secrets()  # the form the headers carry, masked in every log
    red = c.redacted()
    assert red["sse_customer_key"] == "***" and red["sse_customer_key_file"] == str(path)
    assert key_b64 not in repr(c) + str(red) and repr(SSE_C_KEY) not in repr(c) + str(red)


# ---- retention (S3 Object Lock) --------------------------------------------------------------


def test_retention_from_toml_one_key_per_directory(tmp_path):
    path = write(tmp_path, """
[s3]
bucket = "b1b"

[retention]
mode = "compliance"
dump = "30d"
"template/iso" = "2w"
"/snippets/" = "12h"
""")
    c = load_config(path)
    assert c.retention_mode == "COMPLIANCE"
    assert c.retention_by_dir == {"dump/": 30 * 86400, "template/iso/": 14 * 86400,
                                  "snippets/": 12 * 3600}


def test_retention_flags_and_defaults():
    c = load_config(None, {"retention_by_dir": "dump=1y, images=7d"})
    assert c.retention_mode == "GOVERNANCE"
    assert c.retention_by_dir == {"dump/": 365 * 86400, "images/": 7 * 86400}
    assert load_config(None, {}).retention_by_dir == {}


@pytest.mark.parametrize("overrides, expected", [
    ({"retention_by_dir": "dump=30"}, "--retention-by-dir entry 'dump': expected a duration such as"),
    ({"retention_by_dir": "dump=0d"}, "--retention-by-dir entry 'dump': '0d' is out of range"),
    ({"retention_by_dir": "dump:30d"}, "--retention-by-dir: expected DIR=DURATION"),
    ({"retention_by_dir": "../x=30d"}, "invalid directory '../x'"),
    ({"retention_mode": "legal-hold"}, "--retention-mode: expected \"governance\" or"),
])
def test_retention_errors_name_the_setting(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)


def test_retention_error_in_the_file_names_the_section(tmp_path):
    path = write(tmp_path, '[s3]\nbucket = "b1b"\n[retention]\ndump = "a month"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"[retention] in {path} entry 'dump': expected a duration" in str(info.value)
