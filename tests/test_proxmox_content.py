"""Proxmox conformance: ISO images (download from URL, GUI upload), container templates and
snippets (hook scripts), replayed through a real mount on moto and on a Ceph RGW."""

from __future__ import annotations

import errno
import functools
import http.server
import json
import os
import random
import stat
import threading

import pytest
from helpers import keys, needs_fuse, object_bytes, open_uploads
from proxmox_sequences import (
    PREFIX,
    MiB,
    data_keys,
    file_sha256,
    log_tail,
    mixed_data,
    needs_tools,
    object_sha256,
    run,
    sha256,
    sync,
    unlink_errno,
)

pytestmark = [needs_fuse, pytest.mark.real_server]

ISO = PREFIX + "template/iso/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(tmp_path):
    """A local web server for `download-url`; serves tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@needs_tools("wget", "qemu-img")
def test_iso_download_from_url_replaces_an_existing_iso(mount_s3pvefs, s3_client, bucket,
                                                        http_server):
    www, url = http_server
    data = mixed_data(13 * MiB + 7 * 2048, 11)  # ISOs are whole 2 KiB sectors
    (www / "debian-13.iso").write_bytes(data)
    mount = mount_s3pvefs()
    iso = mount.path / "template" / "iso"
    old = os.urandom(3 * MiB)
    (iso / "debian-13.iso").write_bytes(old)  # an older download of the same name
    sync(mount)

    pid = os.getpid()
    tmp = iso / f"debian-13.iso.tmp_dwnl.{pid}"
    run(["wget", "--no-verbose", "-O", str(tmp), f"{url}/debian-13.iso"])
    mtime = 1_765_000_000
    os.utime(tmp, (mtime, mtime))
    info = os.stat(tmp)
    assert info.st_size == len(data) and info.st_mtime == mtime
    assert file_sha256(tmp) == sha256(data), log_tail(mount)  # the checksum re-read
    probe = json.loads(run(["qemu-img", "info", "--output=json", str(tmp)], text=True).stdout)
    assert probe["format"] == "raw" and probe["virtual-size"] == len(data)
    os.rename(tmp, iso / "debian-13.iso")
    assert os.listdir(iso) == ["debian-13.iso"]
    assert (iso / "debian-13.iso").stat().st_mtime == mtime
    assert file_sha256(iso / "debian-13.iso") == sha256(data)

    # A failed download (404): download-url unlinks the temporary file.
    failed = iso / f"missing.iso.tmp_dwnl.{pid}"
    result = run(["wget", "--no-verbose", "-O", str(failed), f"{url}/missing.iso"], check=False)
    assert result.returncode == 8, result.stderr  # wget: server error response
    assert unlink_errno(failed) in (0, 2)
    assert os.listdir(iso) == ["debian-13.iso"]

    sync(mount)
    assert data_keys(s3_client, bucket, ISO) == {ISO + "debian-13.iso"}
    assert object_sha256(s3_client, bucket, ISO + "debian-13.iso") == sha256(data)
    assert not [k for k in keys(s3_client, bucket) if "tmp_dwnl" in k]
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)

    # Another node: QEMU reads the ISO at random offsets (buffered, read-only).
    other = mount_s3pvefs()
    path = other.path / "template" / "iso" / "debian-13.iso"
    assert path.stat().st_mtime == mtime and path.stat().st_size == len(data)
    rng = random.Random(3)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(40):
            offset, length = rng.randrange(len(data)), rng.choice([2048, 32768, 262144])
            assert os.pread(fd, length, offset) == data[offset:offset + length], offset
    finally:
        os.close(fd)
    assert other.unmount() == 0, log_tail(other)


def test_gui_upload_overwrites_with_cp(mount_s3pvefs, s3_client, bucket, tmp_path):
    """The upload lands in /var/tmp, then `cp` writes it over the final name (O_TRUNC): once
    shorter and once longer than what was there."""
    mount = mount_s3pvefs()
    target = mount.path / "template" / "iso" / "ubuntu.iso"
    target.write_bytes(os.urandom(6 * MiB))
    sync(mount)
    ino = target.stat().st_ino
    for size, seed in ((MiB + 123, 21), (11 * MiB + 7, 22)):
        upload = tmp_path / f"upload-{size}"
        body = mixed_data(size, seed)
        upload.write_bytes(body)
        run(["cp", str(upload), str(target)])
        assert target.stat().st_size == size
        assert target.stat().st_ino == ino  # the same file, truncated and rewritten
        assert file_sha256(target) == sha256(body), log_tail(mount)
        sync(mount)
        assert object_sha256(s3_client, bucket, ISO + "ubuntu.iso") == sha256(body)
    assert data_keys(s3_client, bucket, ISO) == {ISO + "ubuntu.iso"}
    assert open_uploads(s3_client, bucket) == []
    assert mount.unmount() == 0, log_tail(mount)


@needs_tools("zstd", "tar")
def test_container_template_upload_and_extract_elsewhere(mount_s3pvefs, s3_client, bucket,
                                                         tmp_path):
    rootfs = tmp_path / "rootfs"
    files = {"etc/os-release": b'PRETTY_NAME="Debian GNU/Linux 13"\n',
             "usr/bin/tool": os.urandom(7 * MiB), "etc/hostname": b"template\n"}
    for path, body in files.items():
        (rootfs / path).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / path).write_bytes(body)
    template = tmp_path / "debian-13-standard_13.1-2_amd64.tar.zst"
    run(f"tar -cpf - -C '{rootfs}' . | zstd -q -3 -o '{template}'")

    mount = mount_s3pvefs()
    cache = mount.path / "template" / "cache"
    run(["cp", str(template), str(cache / template.name)])
    assert file_sha256(cache / template.name) == file_sha256(template)
    sync(mount)
    key = f"{PREFIX}template/cache/{template.name}"
    assert data_keys(s3_client, bucket, f"{PREFIX}template/cache/") == {key}
    assert object_sha256(s3_client, bucket, key) == file_sha256(template)
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()  # `pct create` on another node extracts the template
    extracted = tmp_path / "ct"
    extracted.mkdir()
    run(["tar", "-xpf", str(other.path / "template" / "cache" / template.name), "-C",
         str(extracted)])
    for path, body in files.items():
        assert (extracted / path).read_bytes() == body, path
    assert other.unmount() == 0, log_tail(other)


def test_snippet_hook_script_is_executable_from_the_mount(mount_s3pvefs, s3_client, bucket):
    mount = mount_s3pvefs()
    options = [line.split()[3] for line in open("/proc/mounts")
               if line.split()[1] == str(mount.path)]
    assert options and "noexec" not in options[0].split(","), options
    snippets = mount.path / "snippets"
    hook = snippets / "vzdump-hook.sh"
    hook.write_text('#!/bin/sh\necho "hook $1 $2 $3 phase=${PHASE:-none}"\n')
    os.chmod(hook, 0o755)
    user_data = snippets / "user-data.yaml"
    user_data.write_text("#cloud-config\nhostname: vm100\n")
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    result = run([str(hook), "job-start", "snapshot", "100"], text=True,
                 env={**os.environ, "PHASE": "job-start"})
    assert result.stdout == "hook job-start snapshot 100 phase=job-start\n"
    with pytest.raises(PermissionError):  # no executable bit: execve refuses (mode is real)
        run([str(user_data)])
    sync(mount)
    assert data_keys(s3_client, bucket, PREFIX + "snippets/") == {
        PREFIX + "snippets/vzdump-hook.sh", PREFIX + "snippets/user-data.yaml"}
    head = s3_client.head_object(Bucket=bucket, Key=PREFIX + "snippets/vzdump-hook.sh")
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o755, head["Metadata"]
    assert object_bytes(s3_client, bucket, PREFIX + "snippets/user-data.yaml") == \
        b"#cloud-config\nhostname: vm100\n"
    assert mount.unmount() == 0, log_tail(mount)

    other = mount_s3pvefs()  # a fresh cache: the mode comes back from S3
    hook = other.path / "snippets" / "vzdump-hook.sh"
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert stat.S_IMODE((other.path / "snippets" / "user-data.yaml").stat().st_mode) == 0o644
    result = run([str(hook), "backup-end", "stop", "101"], text=True)
    assert result.stdout == "hook backup-end stop 101 phase=none\n"
    assert other.unmount() == 0, log_tail(other)


def test_deleting_the_last_iso_removes_the_directory(mount_s3pvefs, s3_client, bucket):
    """Deleting a volume ends with rmdir of its directory: ENOTEMPTY while another file is
    there, even one this mount never listed; success once empty; mkpath brings it back."""
    for name in ("a.iso", "b.iso"):
        s3_client.put_object(Bucket=bucket, Key=ISO + name, Body=name.encode() * 1000)
    mount = mount_s3pvefs()
    iso = mount.path / "template" / "iso"
    os.unlink(iso / "a.iso")  # straight to the volume's path, as `pvesm free` does
    with pytest.raises(OSError) as excinfo:
        os.rmdir(iso)
    assert excinfo.value.errno == errno.ENOTEMPTY
    assert os.listdir(iso) == ["b.iso"]
    assert keys(s3_client, bucket, ISO) >= {ISO + "b.iso"}
    assert ISO + "a.iso" not in keys(s3_client, bucket, ISO)
    os.unlink(iso / "b.iso")
    os.rmdir(iso)
    assert keys(s3_client, bucket, ISO) == set()
    assert os.listdir(mount.path / "template") == ["cache"]
    os.makedirs(iso, exist_ok=True)  # the next activation
    sync(mount)
    assert keys(s3_client, bucket, ISO) == {ISO}
    assert mount.unmount() == 0, log_tail(mount)
