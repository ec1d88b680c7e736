"""The way to try s3pvefs out: `bash scripts/run [options] [MOUNTPOINT]` and the embedded local
S3 it falls back to without an endpoint."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import needs_fuse
from mounting import REPO, Mount

from s3pvefs.service.mountproc import child_env

RUN_SCRIPT = REPO / "scripts" / "run"


def mount_args(*args: str, tmp_path: Path) -> tuple[list[str], str, str]:
    """(the `s3pvefs mount` arguments, the mountpoint, stderr) that scripts/run computes for
    ``args``, sourced without installing anything."""
    # $0 must not be the script: sourced as `$0`, it would run (install and mount) itself.
    script = ('set -euo pipefail; source "$1"; shift; s3pvefs_mount_args "$@"; '
              'printf "%s\\n" "$S3PVEFS_MOUNTPOINT" "${S3PVEFS_MOUNT_ARGS[@]}"')
    env = {**os.environ, "S3PVEFS_DEFAULT_MOUNTPOINT": str(tmp_path / "default-mnt"),
           "S3PVEFS_DEFAULT_CONFIG": str(tmp_path / "absent.toml")}
    result = subprocess.run(["bash", "-c", script, "test_demo", str(RUN_SCRIPT), *args],
                            capture_output=True, text=True, env=env, check=True, timeout=60)
    mountpoint, *mount = result.stdout.splitlines()
    return mount, mountpoint, result.stderr


def test_run_script_creates_a_given_mountpoint(tmp_path):
    """`bash scripts/run /mnt/x` as the README shows it: /mnt/x is created like the default."""
    target = tmp_path / "mnt" / "x"
    args, mountpoint, stderr = mount_args("--log-level", "debug", str(target), tmp_path=tmp_path)
    assert target.is_dir() and mountpoint == str(target)
    assert args == ["--log-level", "debug", str(target)]
    assert f"creating the mountpoint {target}" in stderr
    # an existing one is used as is, the default is created, an option's value is no mountpoint
    args, _, stderr = mount_args(str(target), tmp_path=tmp_path)
    assert args == [str(target)] and "creating" not in stderr
    args, mountpoint, _ = mount_args("--bucket", "b1b", tmp_path=tmp_path)
    assert args == ["--bucket", "b1b", str(tmp_path / "default-mnt")]
    assert (tmp_path / "default-mnt").is_dir() and not (tmp_path / "b1b").exists()
    (tmp_path / "absent.toml").write_text("")
    args, _, _ = mount_args("--create-bucket", str(target), tmp_path=tmp_path)
    assert args == ["--config", str(tmp_path / "absent.toml"), "--create-bucket", str(target)]


@needs_fuse
@pytest.mark.parametrize("own_cache", [False, True], ids=["default-cache", "given-cache"])
def test_embedded_demo_keeps_its_blocks_out_of_the_production_cache(tmp_path, own_cache):
    """No endpoint and no bucket: the embedded S3's throw-away data gets a cache directory of
    its own, removed at exit, unless --cache-dir was given."""
    pytest.importorskip("moto")
    given = tmp_path / "given-cache"
    args = ["--log-level", "debug", *(["--cache-dir", str(given)] if own_cache else [])]
    env = child_env({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    mount = Mount(tmp_path / "mnt", args, tmp_path / "mount.log", env)
    try:
        mount.start()
        (mount.path / "snippets" / "demo.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        found = re.search(r"'cache_dir': '([^']+)'", mount.log())
        assert found, mount.log()
        cache_dir = Path(found[1])
        if own_cache:
            assert cache_dir == given
        else:
            assert cache_dir != Path("/var/cache/s3pvefs")
            assert cache_dir.parent == Path("/var/tmp")
            assert "s3pvefs-embedded-cache-" in cache_dir.name
        assert cache_dir.is_dir() and any(cache_dir.iterdir())
        assert mount.unmount() == 0
    finally:
        mount.stop()
    assert "EMBEDDED LOCAL S3" in mount.log()
    if own_cache:
        assert given.is_dir()  # the admin's directory: left alone
    else:
        deadline = time.monotonic() + 5
        while cache_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cache_dir.exists()
        assert f"its cache {cache_dir} is removed at exit" in mount.log()
