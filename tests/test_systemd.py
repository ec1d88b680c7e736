"""systemd integration: sd_notify from the mount, the unit file, the stale-mount helper, and the
vzdump hook script.

The notification tests bind a Unix datagram socket, start a real mount with NOTIFY_SOCKET set
and read what it sends, like systemd would. The unit file is checked by `systemd-analyze
verify` (Debian package `systemd`; the test is skipped only when that command is missing).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import needs_fuse

from s3pvefs.service import mount as mount_module
from s3pvefs.service.preflight import is_mounted
from s3pvefs.service.sdnotify import Notifier

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "s3pvefs@.service"
STALE_HELPER = REPO / "systemd" / "s3pvefs-unmount-stale"
HOOK = REPO / "examples" / "vzdump-hook-s3pvefs"
MiB = 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"



# -- a stand-in for systemd's notification socket --------------------------------------------


@dataclass
class Message:
    at: float
    fields: dict[str, str]
    mounted: bool | None  # was the watched mountpoint in the mount table when it arrived?

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)


@dataclass
class NotifyReceiver:
    """Receives datagrams like systemd's notify socket, in a thread, and keeps them in order."""

    address: str  # as NOTIFY_SOCKET spells it
    sock: socket.socket
    mountpoint: Path | None = None
    messages: list[Message] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> NotifyReceiver:
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()
        return self

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            mounted = is_mounted(self.mountpoint) if self.mountpoint is not None else None
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append(Message(time.monotonic(), fields, mounted))

    def wait_for(self, predicate, timeout: float = 20.0, after: int = 0) -> int:
        """Index of the first message from ``after`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(after, len(self.messages)):
                if predicate(self.messages[index]):
                    return index
            if time.monotonic() > deadline:
                raise AssertionError(f"no such message within {timeout} s; got: "
                                     f"{[m.fields for m in self.messages]}")
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be too deep.
    directory = Path(tempfile.mkdtemp(prefix="s3n", dir="/tmp"))
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    receiver = NotifyReceiver(str(path), sock).start()
    try:
        yield receiver
    finally:
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def abstract_notify_socket():
    name = f"s3pvefs-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    receiver = NotifyReceiver("@" + name, sock).start()
    try:
        yield receiver
    finally:
        receiver.close()


# -- sdnotify on its own ----------------------------------------------------------------------


def test_notifier_without_notify_socket_does_nothing():
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("x") is False and notifier.stopping("y") is False
    assert notifier.watchdog_interval is None


def test_notifier_sends_to_a_path_socket(notify_socket):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.ready("mounted\nsecond line") is True
    assert notifier.extend_timeout(2.5) is True
    notify_socket.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m.fields)
    assert notify_socket.messages[0].fields == {"READY": "1", "STATUS": "mounted second line"}
    assert notify_socket.messages[1].fields == {"EXTEND_TIMEOUT_USEC": "2500000"}
    notifier.close()


def test_notifier_sends_to_an_abstract_socket(abstract_notify_socket):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": abstract_notify_socket.address})
    assert notifier.stopping("bye") is True
    abstract_notify_socket.wait_for(lambda m: m.get("STOPPING") == "1")
    assert abstract_notify_socket.messages[0].fields == {"STOPPING": "1", "STATUS": "bye"}
    notifier.close()


def test_notifier_never_raises(tmp_path, caplog):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.enabled
    for _ in range(3):
        assert notifier.status("x") is False
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cannot notify systemd" in warnings[0].getMessage()
    unsupported = Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not unsupported.enabled and unsupported.ready("x") is False


def test_watchdog_settings():
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environment(env).watchdog_interval == 15.0
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_environment(env).watchdog_interval == 15.0
    env["WATCHDOG_PID"] = "1"  # meant for another process
    assert Notifier.from_environment(env).watchdog_interval is None
    assert Notifier.from_environment({"WATCHDOG_USEC": "30000000"}).watchdog_interval is None


# -- what the mount reports, on a stand-in core -----------------------------------------------


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__("/nonexistent/notify")
        self.sent: list[dict] = []

    def notify(self, **fields) -> bool:
        self.sent.append({key: str(value) for key, value in fields.items()})
        return True

    def take(self) -> list[dict]:
        sent, self.sent = self.sent, []
        return sent


class FakeCore:
    """What the reporter reads of the core (store, cache, dirty_nodes) and of its admin
    (status)."""

    def __init__(self) -> None:
        self.files = 2
        self.errors: list[dict] = []
        self.store = SimpleNamespace(stats=SimpleNamespace(bytes_sent=0))
        self.cache = SimpleNamespace(dirty_bytes=40 * MiB)

    def status(self) -> dict:
        return {"dirty_files": self.files, "dirty_bytes": self.cache.dirty_bytes,
                "uploads": [{}], "errors": self.errors}

    def dirty_nodes(self) -> list:
        return [object()] * self.files


def test_status_text_and_timeout_extension_follow_the_drain():
    notifier, core = RecordingNotifier(), FakeCore()
    reporter = mount_module._Reporter(notifier, core, core, "s3://b/p/ on /mnt/pve/x")  # core, admin
    assert reporter.text() == ("Mounted s3://b/p/ on /mnt/pve/x: 2 file(s), 40.0 MiB not on S3 "
                               "yet, 1 uploading")
    core.errors = [{"path": "dump/a", "error": "AccessDenied"}]
    assert reporter.text().endswith("; 1 upload error(s), see: s3pvefs status")
    core.errors = []

    core.store.stats.bytes_sent += MiB
    reporter.tick()  # progress while serving: a status, no extension
    assert notifier.take() == [{"STATUS": reporter.text()}]

    reporter.stopping("SIGTERM")
    reporter.stopping("unmounted")  # only the first reason counts
    assert notifier.take() == [{"STOPPING": "1", "STATUS": "Stopping (SIGTERM): uploading 2 "
                                "file(s), 40.0 MiB left"}]
    reporter.tick()  # nothing moved: no extension, and the same status is not sent again
    assert notifier.take() == []
    core.store.stats.bytes_sent += 16 * MiB  # a part went up
    reporter.tick()
    assert notifier.take() == [{"EXTEND_TIMEOUT_USEC": "300000000"}]
    core.files, core.cache.dirty_bytes = 1, 8 * MiB
    reporter.tick()
    assert notifier.take() == [
        {"STATUS": "Stopping (SIGTERM): uploading 1 file(s), 8.0 MiB left"},
        {"EXTEND_TIMEOUT_USEC": "300000000"}]
    reporter.tick()
    assert notifier.take() == []  # stalled: systemd's stop timeout runs on

    reporter.force()
    core.files = 0
    reporter.tick()
    sent = notifier.take()
    assert all("EXTEND_TIMEOUT_USEC" not in m for m in sent)
    assert sent[0]["STATUS"].startswith("Stopping without waiting for uploads")
    reporter.finished(0)
    assert notifier.take() == [{"STATUS": "Stopped: all data on S3"}]


# -- the real mount under a notify socket -----------------------------------------------------


@needs_fuse
def test_mount_notifies_ready_status_and_stopping(faulty_mount, proxy, notify_socket, tmp_path,
                                                  s3_client, bucket):
    mountpoint = tmp_path / "mnt-notify"
    notify_socket.mountpoint = mountpoint
    mount = faulty_mount("--max-attempts", "2", mountpoint=mountpoint,
                         env={"NOTIFY_SOCKET": notify_socket.address})
    where = f"s3://{bucket}/pve/ on {mountpoint}"

    ready = notify_socket.wait_for(lambda m: m.get("READY") == "1")
    messages = notify_socket.messages
    assert messages[ready].mounted is True, "READY=1 before the mount was in the mount table"
    assert messages[ready].get("STATUS") == f"Mounted {where}: all data on S3"
    assert any(m.get("STATUS").startswith("checking s3://") for m in messages[:ready])

    # Data not on S3 yet shows in the status line (updated every NOTIFY_INTERVAL seconds).
    path = mountpoint / "snippets" / "open.bin"
    with open(path, "wb") as f:
        f.write(os.urandom(3 * MiB))
        f.flush()
        dirty = notify_socket.wait_for(
            lambda m: m.get("STATUS") == f"Mounted {where}: 1 file(s), 3.0 MiB not on S3 yet, "
                                          "0 uploading", after=ready)
    notify_socket.wait_for(lambda m: m.get("STATUS") == f"Mounted {where}: all data on S3",
                           after=dirty)

    # SIGTERM while S3 is away: STOPPING=1 says what is left; once S3 is back, the drain ends
    # and the process exits 0.
    os.listdir(mountpoint / "dump")
    proxy.stop()
    last = os.urandom(2 * MiB)
    (mountpoint / "dump" / "last.log").write_bytes(last)
    mount.process.send_signal(signal.SIGTERM)
    stopping = notify_socket.wait_for(lambda m: m.get("STOPPING") == "1")
    proxy.start()
    assert notify_socket.messages[stopping].get("STATUS") == (
        "Stopping (SIGTERM): uploading 1 file(s), 2.0 MiB left")
    assert mount.wait() == 0, mount.log()
    assert s3_client.get_object(Bucket=bucket, Key="pve/dump/last.log")["Body"].read() == last
    assert s3_client.get_object(Bucket=bucket, Key="pve/snippets/open.bin")["ContentLength"] == (
        3 * MiB)
    time.sleep(0.3)
    assert notify_socket.messages[-1].fields == {"STATUS": "Stopped: all data on S3"}
    assert [m.get("READY") for m in notify_socket.messages].count("1") == 1
    assert [m.get("STOPPING") for m in notify_socket.messages].count("1") == 1


@needs_fuse
def test_stop_with_s3_gone_exits_1_and_says_the_data_waits(faulty_mount, proxy, notify_socket,
                                                            tmp_path):
    mountpoint = tmp_path / "mnt-gone"
    mount = faulty_mount("--max-attempts", "2", mountpoint=mountpoint,
                         env={"NOTIFY_SOCKET": notify_socket.address})
    notify_socket.wait_for(lambda m: m.get("READY") == "1")
    os.listdir(mountpoint / "dump")
    proxy.stop()
    (mountpoint / "dump" / "stuck.log").write_bytes(b"cannot reach S3\n")
    mount.process.send_signal(signal.SIGTERM)
    notify_socket.wait_for(lambda m: m.get("STOPPING") == "1")
    assert mount.wait() == 1, mount.log()  # gave up after its retries: stays journaled
    assert not is_mounted(mountpoint)
    notify_socket.wait_for(lambda m: m.get("STATUS") == (
        "Stopped: 1 file(s) not on S3 stay in the cache journal and are uploaded by the next "
        "mount"), timeout=5)


@needs_fuse
def test_unmount_by_hand_reports_stopping(mount_s3pvefs, notify_socket, tmp_path):
    mount = mount_s3pvefs(mountpoint=tmp_path / "mnt-umount",
                          env={"NOTIFY_SOCKET": notify_socket.address})
    notify_socket.wait_for(lambda m: m.get("READY") == "1")
    assert mount.unmount() == 0
    stopping = notify_socket.wait_for(lambda m: m.get("STOPPING") == "1", timeout=5)
    assert notify_socket.messages[stopping].get("STATUS") == "Stopping (unmounted): all data on S3"


# -- the unit file ---------------------------------------------------------------------------


def installed_unit(tmp_path: Path, root: Path = REPO) -> Path:
    """The unit as an operator installs it, with /opt/s3pvefs replaced by ``root``."""
    directory = tmp_path / "units"
    directory.mkdir()
    unit = directory / "s3pvefs@.service"
    unit.write_text(UNIT.read_text().replace("/opt/s3pvefs", str(root)))
    return directory / "s3pvefs@backup.service"


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60, cwd=unit.parent)


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing: apt-get install systemd (scripts/test installs it)")


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path):
    if not (REPO / ".venv" / "bin" / "s3pvefs").exists():
        pytest.skip("no .venv/bin/s3pvefs for ExecStart= (bash scripts/run --install-only)")
    result = verify(installed_unit(tmp_path))
    # verify exits 0 even for unknown keys or bad values: every line it prints is a finding.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_mistakes(tmp_path):
    unit = installed_unit(tmp_path, root=tmp_path / "nowhere")
    result = verify(unit)
    assert result.returncode != 0 and "is not executable" in result.stderr, result
    template = unit.parent / "s3pvefs@.service"
    template.write_text(UNIT.read_text().replace("/opt/s3pvefs", str(REPO))
                        .replace("Type=notify", "Type=notiffy"))
    result = verify(unit)
    assert "notiffy" in result.stdout + result.stderr, result


@needs_systemd_analyze
def test_verify_and_metrics_units_pass_systemd_analyze_verify(tmp_path):
    if not (REPO / ".venv" / "bin" / "s3pvefs").exists():
        pytest.skip("no .venv/bin/s3pvefs for ExecStart= (bash scripts/run --install-only)")
    directory = tmp_path / "units"
    directory.mkdir()
    for name in ("s3pvefs-verify@.service", "s3pvefs-verify@.timer",
                 "s3pvefs-metrics@.service", "s3pvefs-metrics@.timer"):
        text = (REPO / "systemd" / name).read_text().replace("/opt/s3pvefs", str(REPO))
        (directory / name).write_text(text)
    for unit in ("s3pvefs-verify@backup.service", "s3pvefs-verify@backup.timer",
                 "s3pvefs-metrics@backup.service", "s3pvefs-metrics@backup.timer"):
        result = verify(directory / unit)
        assert result.returncode == 0 and result.stdout + result.stderr == "", (unit, result)
    service = (REPO / "systemd" / "s3pvefs-verify@.service").read_text()
    assert ("ExecStart=/opt/s3pvefs/.venv/bin/s3pvefs verify --config /etc/s3pvefs/%i.toml dump"
            in service.splitlines())


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_settings():
    settings = unit_settings()
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]
    assert "network-online.target" in settings["After"][0]
    assert "network-online.target" in settings["Wants"][0]
    before = " ".join(settings["Before"]).split()
    assert {"pvestatd.service", "pve-guests.service", "pve-storage.target",
            "pvescheduler.service"} <= set(before)
    assert settings["Restart"] == ["on-failure"] and settings["KillMode"] == ["mixed"]
    assert settings["TimeoutStopSec"] == ["30min"]
    assert settings["ExecStart"] == [
        "/opt/s3pvefs/.venv/bin/s3pvefs mount --config /etc/s3pvefs/%i.toml /mnt/pve/%i"]
    # Nothing that would give the service a mount namespace of its own: the host must see it.
    for key in ("ProtectSystem", "PrivateTmp", "ProtectHome", "PrivateDevices", "ReadWritePaths",
                "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "PrivateMounts",
                "ProtectKernelTunables", "ProtectControlGroups", "DevicePolicy",
                "CapabilityBoundingSet", "ExecStop"):
        assert key not in settings, key


# -- the stale-mount helper -------------------------------------------------------------------


@needs_fuse
def test_unmount_stale_detaches_a_dead_mount_only(mount_s3pvefs, tmp_path):
    live = mount_s3pvefs(mountpoint=tmp_path / "live")
    dead = mount_s3pvefs(mountpoint=tmp_path / "dead")
    dead.process.kill()
    dead.process.wait()
    assert is_mounted(dead.path)
    deadline = time.monotonic() + 10  # the kernel answers from attributes it still trusts
    with pytest.raises(OSError):  # ENOTCONN, once they expired (attr_ttl)
        while time.monotonic() < deadline:
            os.stat(dead.path)
            time.sleep(0.1)
    for path in (live.path, dead.path, tmp_path / "not-a-mount", tmp_path / "absent"):
        (tmp_path / "not-a-mount").mkdir(exist_ok=True)
        result = subprocess.run([str(STALE_HELPER), str(path)], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, result
    assert not is_mounted(dead.path)
    assert is_mounted(live.path) and os.listdir(live.path)
    assert live.unmount() == 0


# -- the vzdump hook --------------------------------------------------------------------------


@pytest.fixture
def s3pvefs_command(tmp_path) -> Path:
    """An `s3pvefs` command running this checkout (the hook's S3PVEFS_BIN)."""
    wrapper = tmp_path / "bin" / "s3pvefs"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m s3pvefs \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def run_hook(s3pvefs_command: Path, phase: str, timeout: float = 120,
             **env: str) -> subprocess.CompletedProcess:
    """Run the hook as vzdump does: PHASE MODE VMID, and only vzdump's variables (no PATH)."""
    environment = {"S3PVEFS_BIN": str(s3pvefs_command), "S3PVEFS_HOOK_CONF": "/nonexistent",
                   **env}
    args = [str(HOOK), phase] + (["snapshot", "100"] if not phase.startswith("job-") else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env=environment, stdin=subprocess.DEVNULL)


def vzdump_env(dumpdir: Path, **extra: str) -> dict[str, str]:
    return {"STOREID": "s3", "DUMPDIR": str(dumpdir), "VMTYPE": "qemu", "HOSTNAME": "vm100",
            **extra}


@needs_fuse
def test_hook_puts_the_backup_on_s3_before_it_returns(mount_s3pvefs, s3pvefs_command, s3_client,
                                                      bucket):
    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    name = "vzdump-qemu-100-2024_01_02-03_04_05"
    archive, log = dump / f"{name}.vma.zst", dump / f"{name}.log"
    data = ZSTD_MAGIC + os.urandom(7 * MiB)
    # vzdump writes X.vma.dat and renames it; the kernel may release the file after the hook
    # already runs, so the file is still open here: without the hook's sync nothing completes
    # the upload.
    with open(dump / f"{name}.vma.dat", "wb") as f:
        f.write(data)
        f.flush()
        os.rename(dump / f"{name}.vma.dat", archive)
        (dump / f"{name}.vma.zst.notes").write_text("nightly\n")
        result = run_hook(s3pvefs_command, "backup-end", **vzdump_env(dump, TARGET=str(archive)))
        assert result.returncode == 0, (result.stdout, result.stderr, mount.log()[-5000:])
        stored = s3_client.get_object(Bucket=bucket, Key=f"pve/dump/{name}.vma.zst")
        assert stored["Body"].read() == data
        notes = s3_client.get_object(Bucket=bucket, Key=f"pve/dump/{name}.vma.zst.notes")
        assert notes["Body"].read() == b"nightly\n"
        assert f"{archive} is on S3" in result.stdout

    with open(log, "wb") as f:
        f.write(b"INFO: Finished Backup of VM 100\n")
        f.flush()
        result = run_hook(s3pvefs_command, "log-end", **vzdump_env(
            dump, TARGET=str(archive), LOGFILE=str(log)))
        assert result.returncode == 0, (result.stdout, result.stderr)
        stored = s3_client.get_object(Bucket=bucket, Key=f"pve/dump/{name}.log")
        assert stored["Body"].read() == b"INFO: Finished Backup of VM 100\n"

    result = run_hook(s3pvefs_command, "job-end", **vzdump_env(dump))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert mount.unmount() == 0


def test_hook_leaves_other_storages_alone(tmp_path, s3pvefs_command):
    archive = tmp_path / "dump" / "vzdump-qemu-100-2024_01_02-03_04_05.vma.zst"
    archive.parent.mkdir()
    archive.write_bytes(b"local backup")
    env = vzdump_env(archive.parent, TARGET=str(archive), LOGFILE=str(tmp_path / "x.log"))
    for phase in ("job-init", "job-start", "backup-start", "pre-stop", "pre-restart",
                  "post-restart", "backup-end", "backup-abort", "log-end", "job-end",
                  "job-abort"):
        result = run_hook(s3pvefs_command, phase, **env)
        assert result.returncode == 0 and result.stdout == result.stderr == "", (phase, result)
    # --stdout and Proxmox Backup Server targets are not paths
    for target in ("-", "vm/100/2024-01-02T03:04:05Z"):
        result = run_hook(s3pvefs_command, "backup-end", **vzdump_env(tmp_path, TARGET=target))
        assert result.returncode == 0 and result.stdout == "", result


@needs_fuse
def test_hook_fails_the_backup_when_s3_is_unreachable(faulty_mount, proxy, s3pvefs_command,
                                                      s3_client, bucket):
    mount = faulty_mount("--max-attempts", "2")
    dump = mount.path / "dump"
    archive = dump / "vzdump-lxc-101-2024_01_02-03_04_05.tar.zst"
    os.listdir(dump)
    proxy.stop()
    archive.write_bytes(ZSTD_MAGIC + b"written while S3 is away")
    started = time.monotonic()
    result = run_hook(s3pvefs_command, "backup-end", S3PVEFS_SYNC_TIMEOUT="3",
                      **vzdump_env(dump, TARGET=str(archive)))
    elapsed = time.monotonic() - started
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "timed out after 3 s, 1 files still pending" in result.stderr, result.stderr
    assert f"ERROR: {archive} is NOT on S3" in result.stdout, result.stdout
    assert elapsed < 30
    with pytest.raises(s3_client.exceptions.ClientError):
        s3_client.head_object(Bucket=bucket, Key="pve/dump/" + archive.name)
    proxy.start()
    result = run_hook(s3pvefs_command, "backup-end", S3PVEFS_SYNC_TIMEOUT="60",
                      **vzdump_env(dump, TARGET=str(archive)))
    assert result.returncode == 0, (result.stdout, result.stderr)
    s3_client.head_object(Bucket=bucket, Key="pve/dump/" + archive.name)
    assert mount.unmount() == 0


@needs_fuse
def test_hook_fails_the_backup_when_the_mount_died(mount_s3pvefs, s3pvefs_command):
    mount = mount_s3pvefs()
    dump = mount.path / "dump"
    archive = dump / "vzdump-qemu-102-2024_01_02-03_04_05.vma.zst"
    archive.write_bytes(ZSTD_MAGIC + b"data")
    mount.process.kill()  # the storage is now a dead FUSE mount (ENOTCONN)
    mount.process.wait()
    result = run_hook(s3pvefs_command, "backup-end", **vzdump_env(dump, TARGET=str(archive)))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Transport endpoint is not connected" in result.stdout + result.stderr, result
