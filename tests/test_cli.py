"""The command line refuses bad configurations before mounting: non-zero exit, readable stderr.

Every case here fails before `run_mount` is reached, so nothing is mounted and no S3 is needed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mounting import run_cli

from s3pvefs.errors import ConfigError
from s3pvefs.service import preflight


def mounted(path: Path) -> bool:
    return preflight.is_mounted(path.resolve())


@pytest.fixture
def mnt(tmp_path):
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    assert not mounted(path), "a failed start must not leave anything mounted"


S3 = ("--endpoint-url", "http://127.0.0.1:9", "--bucket", "test-bucket")


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("s3pvefs ")


def test_mount_help_lists_the_required_command_line():
    result = run_cli("mount", "--help")
    assert result.returncode == 0
    for flag in ("--endpoint-url", "--bucket", "--prefix", "--cache-dir", "--cache-size",
                 "--config", "--no-verify-tls", "--allow-other", "MOUNTPOINT"):
        assert flag in result.stdout


def test_invalid_option_value(mnt):
    result = run_cli("mount", *S3, "--cache-size", "lots", str(mnt))
    assert_refused(result, "s3pvefs: error: --cache-size: invalid size 'lots'")


def test_invalid_bucket_name(mnt):
    result = run_cli("mount", "--endpoint-url", "http://127.0.0.1:9", "--bucket", "Bad_Name", str(mnt))
    assert_refused(result, "--bucket: invalid bucket name 'Bad_Name'")


def test_unknown_flag(mnt):
    result = run_cli("mount", *S3, "--cache-sise", "1G", str(mnt))
    assert result.returncode == 2
    assert "unrecognized arguments: --cache-sise" in result.stderr


def test_missing_mountpoint_argument():
    result = run_cli("mount", *S3)
    assert result.returncode == 2 and "MOUNTPOINT" in result.stderr


def test_mountpoint_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli("mount", *S3, str(missing))
    assert_refused(result, f"mountpoint {missing} does not exist", "mkdir -p")
    assert not missing.exists()


def test_mountpoint_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    assert_refused(run_cli("mount", *S3, str(path)), "is not a directory")


def test_mountpoint_not_empty(mnt):
    (mnt / "something").write_text("x")
    result = run_cli("mount", *S3, "--prefix", "pve", "--cache-dir", str(mnt.parent / "cache"),
                     "--cache-size", "1G", str(mnt))
    assert_refused(result, "is not empty", "'something'")


def test_unknown_config_key(mnt, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[s3]\nendpoint_url = "http://127.0.0.1:9"\nbuckett = "b1b"\n')
    result = run_cli("mount", "--config", str(cfg), str(mnt))
    assert_refused(result, "unknown key 'buckett' in [s3]", "did you mean 'bucket'")


def test_world_readable_config_with_secret(mnt, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[s3]\nendpoint_url = "http://127.0.0.1:9"\nbucket = "b1b"\n'
        '[credentials]\naccess_key_id = "AKIAEXAMPLE"\nsecret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'
    )
    cfg.chmod(0o644)
    result = run_cli("mount", "--config", str(cfg), str(mnt))
    assert_refused(result, f"chmod 600 {cfg}")
    assert "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" not in result.stderr + result.stdout


def test_flag_overrides_bad_file_value(mnt, tmp_path):
    """A flag wins over the file: the file's bad value is replaced before validation."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[s3]\nendpoint_url = "http://127.0.0.1:9"\nbucket = "b1b"\nretry_mode = "legacy"\n')
    (mnt / "x").write_text("")  # stop at the mountpoint check, after the config passed
    result = run_cli("mount", "--config", str(cfg), "--retry-mode", "standard", str(mnt))
    assert_refused(result, "is not empty")


def test_cache_dir_inside_mountpoint(mnt):
    result = run_cli("mount", *S3, "--cache-dir", str(mnt / "cache"), str(mnt))
    assert_refused(result, "inside the mountpoint")


# ---- preflight units (no subprocess) -----------------------------------------------------------


def test_mountinfo_parsing(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "50 22 0:45 / /mnt/with\\040space rw,nosuid - fuse.s3pvefs s3pvefs rw\n"
        "51 22 0:46 / /mnt/pve/s3 rw master:2 - fuse.s3pvefs s3pvefs rw\n"
    )
    points = preflight.mount_points(info)
    assert points["/"] == "ext4"
    assert points["/mnt/with space"] == "fuse.s3pvefs"
    assert preflight.is_mounted(Path("/mnt/pve/s3"), info)
    assert not preflight.is_mounted(Path("/mnt/pve"), info)


def test_check_mountpoint_refuses_a_mount_point(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    info = tmp_path / "mountinfo"
    info.write_text(f"51 22 0:46 / {target.resolve()} rw - fuse.s3pvefs s3pvefs rw\n")
    with pytest.raises(ConfigError, match="already a mount point"):
        preflight.check_mountpoint(target, info)
    assert preflight.check_mountpoint(target) == target.resolve()


def test_check_fuse_here():
    if not Path("/dev/fuse").exists():
        with pytest.raises(ConfigError, match="/dev/fuse"):
            preflight.check_fuse()
    else:
        try:
            preflight.check_fuse()
        except ConfigError as exc:  # e.g. fusermount3 missing: the message must say what to do
            assert "fuse" in str(exc)


# ---- embedded local S3 ----------------------------------------------------------------------------


def test_embedded_without_moto_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    from s3pvefs.service import embedded

    real = importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec",
                        lambda name, *a: None if name == "moto" else real(name, *a))
    with pytest.raises(ConfigError, match=r"install the 'local' extra"):
        embedded.start_local_s3(tmp_path / "state")


def test_embedded_local_s3_starts_configures_and_stops(tmp_path):
    pytest.importorskip("moto")
    import urllib.request

    from s3pvefs.config.settings import Config
    from s3pvefs.service.embedded import LOCAL_BUCKET, start_local_s3

    with start_local_s3(tmp_path / "state") as local:
        config = local.configure(Config(prefix="pve/"))
        assert config.endpoint_url == local.endpoint_url.rstrip("/")
        assert config.bucket == LOCAL_BUCKET and config.prefix == "pve/"
        assert config.access_key_id == "local" and config.secret_access_key == "local"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{config.endpoint_url}/{LOCAL_BUCKET}?list-type=2") as resp:
            assert resp.status == 200  # the bucket exists
        proc = local.process
    assert proc.poll() is not None  # terminated and reaped
    assert (tmp_path / "state" / "moto-server.log").exists()


# ---- S3 options and the admin commands' command lines ---------------------------------------------


@pytest.mark.parametrize("command", ["mount", "check", "info", "lifecycle"])
def test_s3_option_flags_everywhere(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    for flag in ("--config", "--endpoint-url", "--bucket", "--prefix", "--profile",
                 "--storage-class", "--storage-class-by-dir", "--sse", "--kms-key-id",
                 "--sse-customer-key-file", "--create-bucket", "--log-file"):
        assert flag in result.stdout, (command, flag)
    assert "--secret-access-key" not in result.stdout  # refused, so not advertised


def test_admin_command_specific_flags():
    assert "--json" in run_cli("info", "--help").stdout
    lifecycle = run_cli("lifecycle", "--help").stdout
    for flag in ("--transition-days", "--glacier-days", "--abort-incomplete-days", "--dry-run",
                 "--remove"):
        assert flag in lifecycle


def test_lifecycle_days_must_be_whole_numbers():
    result = run_cli("lifecycle", *S3, "--glacier-days", "ninety")
    assert result.returncode == 2 and "expected a whole number of days, got 'ninety'" in result.stderr


def test_mount_refuses_a_world_readable_sse_c_key(mnt, tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    result = run_cli("mount", *S3, "--sse", "SSE-C", "--sse-customer-key-file", str(key), str(mnt))
    assert_refused(result, f"run: chmod 600 {key}")
    assert "k" * 32 not in result.stderr
