"""The Debian package, as an admin meets it: `bash scripts/build-deb` builds it from this
checkout; it installs with apt into a clean Debian root made by debootstrap (no compiler, no
-dev package); there `s3pvefs` runs, the installed units pass `systemd-analyze verify`, a mount
against the test's S3 server stores a file (checked in S3 by checksum), and the maintainer
scripts keep a busy mount: a reinstall leaves it running, a removal is refused until it is
idle, then unmounts it. lintian finds no error.

Slow (a build fetches the Python libraries from PyPI, debootstrap fetches Debian): about five
minutes, once per session (its fixtures are session-scoped). Needs root, network access to PyPI and deb.debian.org, and
debootstrap (scripts/test installs it). ``S3PVEFS_TEST_PACKAGE=0`` skips it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import needs_fuse, object_bytes
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
SUITE = "bookworm"  # the build machine's Debian (12): the package is built for it
INSTALLED_LIMIT_KIB = 60 * 1024
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"  # the root's commands get no PATH
UNITS = ("s3pvefs@backup.service", "s3pvefs-verify@backup.service",
         "s3pvefs-verify@backup.timer", "s3pvefs-metrics@backup.service",
         "s3pvefs-metrics@backup.timer")

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.environ.get("S3PVEFS_TEST_PACKAGE", "1") == "0",
                       reason="S3PVEFS_TEST_PACKAGE=0: the package tier is off"),
    pytest.mark.skipif(os.geteuid() != 0, reason="building and installing a package needs root"),
]


def run(argv: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)


class DebianRoot:
    """A debootstrapped Debian root with /proc, /sys and /dev mounted, for chroot."""

    def __init__(self, path: Path):
        self.path = path
        self._mounted: list[Path] = []

    def create(self) -> None:
        made = run(["debootstrap", "--variant=minbase", SUITE, str(self.path),
                    "http://deb.debian.org/debian"], timeout=1200)
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        for kind, source, target in (("proc", "proc", "proc"), ("sysfs", "sys", "sys"),
                                     ("bind", "/dev", "dev")):
            where = self.path / target
            options = ["--bind", source] if kind == "bind" else ["-t", kind, source]
            assert run(["mount", *options, str(where)]).returncode == 0
            self._mounted.append(where)
        (self.path / "run").mkdir(exist_ok=True)

    def sh(self, command: str, timeout: float = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A shell command in the root, with only PATH, the locale and ``env`` set."""
        environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "LANG": "C.UTF-8",
                       "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        return run([CHROOT, str(self.path), "/bin/sh", "-c", command], timeout=timeout,
                   env=environment)

    def close(self) -> None:
        for where in reversed(self._mounted):
            run(["umount", "-l", str(where)])
        self._mounted.clear()


# Session fixtures: one build and one root. scripts/test's workers take whole modules
# (--dist loadfile), so these tests share them on one worker.
@pytest.fixture(scope="session")
def package(tmp_path_factory) -> Path:
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap missing: apt-get install debootstrap (scripts/test does)")
    out = tmp_path_factory.mktemp("dist")
    built = run(["bash", str(REPO / "scripts" / "build-deb"), "--out", str(out)], timeout=1800)
    assert built.returncode == 0, built.stderr[-4000:]
    deb = Path(built.stdout.strip().splitlines()[-1])
    assert deb.parent == out and deb.name.startswith("s3pvefs_") and deb.suffix == ".deb", deb
    return deb


@pytest.fixture(scope="session")
def debian(package, tmp_path_factory) -> Iterator[DebianRoot]:
    root = DebianRoot(tmp_path_factory.mktemp("debian-root"))
    try:
        root.create()
        shutil.copy(package, root.path / "tmp" / package.name)
        installed = root.sh(f"apt-get update -qq && apt-get install -y -qq /tmp/{package.name}",
                            timeout=900)
        assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
        # No compiler: checked here, before any test (the checkout replay installs one).
        assert root.sh("command -v gcc cc c99 || exit 3").returncode == 3
        yield root
    finally:
        root.close()


def test_the_package_installs_what_it_should_and_nothing_else(debian):
    version = debian.sh("s3pvefs --version")
    assert version.returncode == 0 and version.stdout.startswith("s3pvefs "), version
    helped = debian.sh("s3pvefs check --help")
    assert helped.returncode == 0 and "usage: s3pvefs check" in helped.stdout, helped
    size = debian.sh("dpkg-query -W -f='${Installed-Size}' s3pvefs")
    assert 0 < int(size.stdout) < INSTALLED_LIMIT_KIB, size.stdout
    listed = debian.sh("dpkg -L s3pvefs").stdout.splitlines()
    for wanted in ("/usr/bin/s3pvefs", "/usr/lib/s3pvefs/libexec/s3pvefs-unmount-stale",
                   "/usr/share/s3pvefs/vzdump-hook-s3pvefs", "/etc/s3pvefs/vzdump-hook.conf",
                   "/usr/share/doc/s3pvefs/examples/minio.toml",
                   "/usr/share/doc/s3pvefs/examples/prometheus-alerts.yml"):
        assert wanted in listed, wanted
    assert [unit for unit in listed if unit.endswith((".service", ".timer"))]
    for absent in ("moto", "pytest", "flask", "hypothesis", "pip"):
        assert not [path for path in listed if f"/site-packages/{absent}/" in path], absent
    assert debian.sh("stat -c %a /etc/s3pvefs").stdout.strip() == "700"
    conffiles = debian.sh("cat /var/lib/dpkg/info/s3pvefs.conffiles").stdout.split()
    assert conffiles == ["/etc/s3pvefs/vzdump-hook.conf"]
    hook = debian.sh("grep -c 'install -m 0755 /usr/share/s3pvefs/vzdump-hook-s3pvefs' "
                     "/usr/share/s3pvefs/vzdump-hook-s3pvefs")
    assert hook.stdout.strip() == "1", "the hook's instructions name the checkout's paths"


def test_the_installed_units_pass_systemd_analyze_verify(debian):
    # systemd is not a dependency (Proxmox has it); the clean root needs it to verify.
    got = debian.sh("apt-get install -y -qq --no-install-recommends systemd", timeout=600)
    assert got.returncode == 0, got.stderr[-2000:]
    for unit in UNITS:
        verified = debian.sh(f"systemd-analyze verify --man=no {unit}")
        assert verified.returncode == 0 and not (verified.stdout + verified.stderr).strip(), (
            unit, verified)
    service = (debian.path / "lib" / "systemd" / "system" / "s3pvefs@.service").read_text()
    assert ("ExecStart=/usr/bin/s3pvefs mount --config /etc/s3pvefs/%i.toml /mnt/pve/%i"
            in service.splitlines()), service


def readme_commands(after: str) -> list[str]:
    """The commands of the README's first ```sh block after the text ``after``, one per
    command (continuation lines joined, comments dropped)."""
    text = (REPO / "README.md").read_text()
    start = text.index("```sh\n", text.index(after)) + len("```sh\n")
    block = text[start:text.index("```", start)].replace("\\\n", " ")
    commands = [line.split("  #")[0].split(" # ")[0].strip() for line in block.splitlines()]
    return [" ".join(command.split()) for command in commands if command]


def unit_commands(unit: Path, instance: str) -> list[str]:
    """ExecStartPre= and ExecStart= of a template unit file, for one instance."""
    return [line.split("=", 1)[1].replace("%i", instance)
            for line in unit.read_text().splitlines()
            if line.startswith(("ExecStartPre=", "ExecStart="))]


def edit_config(config: str, endpoint_url: str, bucket: str, prefix: str) -> str:
    """The admin's edit of a copied example (the README's `editor`): what `sed` of the
    endpoint, bucket, prefix and cache size makes of it, in shell."""
    return (f"sed -i -e 's|^endpoint_url = .*|endpoint_url = \"{endpoint_url}\"|' "
            f"-e 's|^bucket = .*|bucket = \"{bucket}\"|' -e 's|^prefix = .*|prefix = \"{prefix}\"|' "
            f"-e 's|^size = .*|size = \"64MiB\"|' {config}")


def start_unit(debian: DebianRoot, steps: list[str], mountpoint: Path) -> subprocess.Popen:
    """What `systemctl start` does with a unit's ExecStartPre= and ExecStart= ``steps`` (no
    systemd runs in the root): the first ones in turn, the last in the background, until the
    mount is up."""
    *before, start = steps
    for step in before:
        prepared = debian.sh(step)
        assert prepared.returncode == 0, (step, prepared)
    started = subprocess.Popen([CHROOT, str(debian.path), *start.split()],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin"})
    deadline = time.monotonic() + 60
    while not (mountpoint / "dump").is_dir():
        assert started.poll() is None, started.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the mount did not come up"
        time.sleep(0.2)
    return started


def backup_through_the_hook(debian: DebianRoot, hook: str, name: str, s3_client, bucket: str,
                            key: str) -> None:
    """A backup as vzdump writes it into /mnt/pve/s3backup, then ``hook`` as vzdump runs it
    (no PATH), then the object in S3 by checksum."""
    data = os.urandom(1024 * 1024)
    (debian.path / "mnt" / "pve" / "s3backup" / "dump" / name).write_bytes(data)
    hooked = run([CHROOT, str(debian.path), hook, "backup-end", "snapshot", "101"],
                 env={"STOREID": "s3backup", "DUMPDIR": "/mnt/pve/s3backup/dump",
                      "VMTYPE": "qemu", "TARGET": f"/mnt/pve/s3backup/dump/{name}"})
    assert hooked.returncode == 0 and "is on S3" in hooked.stdout, hooked
    stored = object_bytes(s3_client, bucket, key)
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


def test_the_readme_steps_on_a_node_run_as_written(debian, package, s3_server, s3_client,
                                                   bucket):
    """Replays the README's package steps in the clean root, each as written, except: `-y`
    for apt (no one answers its question), the admin's editing done by sed, systemd's start
    of the unit done by running the unit's own commands (no systemd runs in the root), and
    `pvesm` (no Proxmox here)."""
    commands = readme_commands("Then on every node")
    names = [command.split()[0] for command in commands]
    assert names == ["apt", "cp", "chmod", "s3pvefs", "systemctl", "pvesm", "echo"], commands
    mountpoint = debian.path / "mnt" / "pve" / "s3backup"
    started = None
    try:
        for command in commands:
            if command.startswith("apt install ./"):
                assert command.split()[2] == f"./{package.name}", "the README names another file"
                done = debian.sh(f"cd /tmp && apt install -y {command.split()[2]}", timeout=600)
            elif command.startswith("chmod 600 ") and "&& editor " in command:
                chmod, editor = command.split(" && ")
                config = editor.split()[1]
                edit = edit_config(config, s3_server.endpoint_url, bucket, "pve/")
                done = debian.sh(f"{chmod} && {edit} && stat -c %a {config}")
                assert done.stdout.strip() == "600", done
            elif command == "systemctl enable --now s3pvefs@s3backup":
                unit = debian.path / "lib" / "systemd" / "system" / "s3pvefs@.service"
                started = start_unit(debian, unit_commands(unit, "s3backup"), mountpoint)
                continue
            elif command.startswith("pvesm "):
                assert "--path /mnt/pve/s3backup --is_mountpoint yes" in command
                continue
            else:
                done = debian.sh(command, timeout=300)
            assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        vzdump_conf = (debian.path / "etc" / "vzdump.conf").read_text().splitlines()
        hook = vzdump_conf[-1].removeprefix("script: ")
        name = "vzdump-lxc-101-2026_12_02-09_00_00.tar.zst"
        backup_through_the_hook(debian, hook, name, s3_client, bucket, f"pve/dump/{name}")
        # Metrics as node_exporter's textfile collector reads them (s3pvefs-metrics@.timer).
        printed = debian.sh("s3pvefs status --prometheus /mnt/pve/s3backup")
        assert printed.returncode == 0, printed.stderr
        metrics = {sample.name: sample.value
                   for family in text_string_to_metric_families(printed.stdout)
                   for sample in family.samples if not sample.labels}
        assert metrics["s3pvefs_endpoint_up"] == 1 and metrics["s3pvefs_dirty_bytes"] == 0
        assert metrics["s3pvefs_sent_bytes_total"] >= 1024 * 1024
    finally:
        if started is not None:
            run(["umount", str(mountpoint)])
            started.wait(timeout=120)


def test_a_mount_from_the_package_stores_files_and_keeps_them_through_the_maintainer_scripts(
        debian, package, s3_server, s3_client, bucket):
    mountpoint = debian.path / "mnt" / "pve" / "backup"
    mountpoint.mkdir(parents=True)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    log = debian.path / "tmp" / "mount.log"
    mount = subprocess.Popen(
        [CHROOT, str(debian.path), "s3pvefs", "mount", "--endpoint-url",
         s3_server.endpoint_url, "--bucket", bucket, "--prefix", "pve/",
         "--cache-dir", "/var/cache/s3pvefs", "--cache-size", "64MiB", "/mnt/pve/backup"],
        env={"PATH": "/usr/bin:/bin", **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (mountpoint / "dump").is_dir():
            assert mount.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        data = os.urandom(3 * 1024 * 1024)
        archive = mountpoint / "dump" / "vzdump-qemu-100-2026_12_02-08_00_00.vma.zst"
        archive.write_bytes(data)
        # vzdump runs the hook with no PATH: it finds the packaged s3pvefs and syncs.
        hooked = run([CHROOT, str(debian.path), "/usr/share/s3pvefs/vzdump-hook-s3pvefs",
                      "backup-end", "snapshot", "100"],
                     env={"STOREID": "backup", "DUMPDIR": "/mnt/pve/backup/dump",
                          "VMTYPE": "qemu", "TARGET": f"/mnt/pve/backup/dump/{archive.name}"})
        assert hooked.returncode == 0, hooked
        assert "s3pvefs" in hooked.stdout + hooked.stderr, hooked
        stored = object_bytes(s3_client, bucket,
                              "pve/dump/vzdump-qemu-100-2026_12_02-08_00_00.vma.zst")
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()

        with open(mountpoint / "dump" / "task.log", "w") as busy:  # the mount is now busy
            busy.write("INFO: starting new backup job\n")
            busy.flush()
            again = debian.sh(f"dpkg -i /tmp/{package.name}")  # an upgrade's scripts
            assert again.returncode == 0, again.stderr
            assert mount.poll() is None, "a reinstall stopped a busy mount"
            removed = debian.sh("apt-get remove -y -qq s3pvefs")
            assert removed.returncode != 0, removed.stdout
            assert "not removed: these mounts are busy" in removed.stderr, removed.stderr
            assert "/mnt/pve/backup: busy (1 file(s) not on S3 yet" in removed.stderr
            assert mount.poll() is None and debian.sh("s3pvefs --version").returncode == 0
            busy.write("INFO: finished\n")
        assert debian.sh("s3pvefs sync /mnt/pve/backup").returncode == 0
        removed = debian.sh("apt-get remove -y -qq s3pvefs")
        assert removed.returncode == 0, removed.stderr
        assert "unmounting /mnt/pve/backup (idle)" in removed.stdout, removed.stdout
        assert mount.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert object_bytes(s3_client, bucket, "pve/dump/task.log") == \
            b"INFO: starting new backup job\nINFO: finished\n"
        assert debian.sh("test -d /etc/s3pvefs").returncode == 0  # kept until purge
    finally:
        if mount.poll() is None:
            run(["umount", "-l", str(mountpoint)])
            mount.wait(timeout=60)


def trust_the_hosts_cas(debian: DebianRoot) -> dict[str, str]:
    """The CAs this host trusts locally (a proxy in front of PyPI may need one), in the root
    too; and pip's setting to use the system's bundle, if this host has it."""
    local = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    if local:
        target = debian.path / "usr" / "local" / "share" / "ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for cert in local:
            shutil.copy(cert, target / cert.name)
        assert debian.sh("update-ca-certificates").returncode == 0
    return {"PIP_CERT": os.environ["PIP_CERT"]} if "PIP_CERT" in os.environ else {}


def test_the_readme_checkout_steps_run_as_written(debian, s3_server, s3_client, bucket):
    """The README's other way, from a checkout, replayed in the same root after the package's
    tests (it installs compilers there: it runs last). As written, except: this checkout
    copied in place of `git clone`, the steps "as above" (chmod, the edit, check) done as for
    the package, and systemd's start of the unit done by running the unit's own commands."""
    commands = readme_commands("From a checkout instead")
    assert commands[0] == "git clone <this repository> /opt/s3pvefs", commands
    debian.sh("apt-get remove -y -qq s3pvefs")  # if a test left it: /usr/bin/s3pvefs goes
    env = trust_the_hosts_cas(debian)
    copied = run(["rsync", "-a", "--exclude=.git", "--exclude=.venv", "--exclude=dist",
                  "--exclude=__pycache__", f"{REPO}/", f"{debian.path}/opt/s3pvefs/"])
    assert copied.returncode == 0, copied.stderr
    mountpoint = debian.path / "mnt" / "pve" / "s3backup"
    config = "/etc/s3pvefs/s3backup.toml"
    started = None
    try:
        for command in commands[1:]:
            if command == "systemctl daemon-reload && systemctl enable --now s3pvefs@s3backup":
                unit = debian.path / "etc" / "systemd" / "system" / "s3pvefs@.service"
                started = start_unit(debian, unit_commands(unit, "s3backup"), mountpoint)
                continue
            done = debian.sh(command, timeout=1200, env=env)
            assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
            if command.startswith(f"cp /opt/s3pvefs/examples/minio.toml {config}"):
                edit = edit_config(config, s3_server.endpoint_url, bucket, "co/")
                edited = debian.sh(f"chmod 600 {config} && {edit} && "
                                   f"s3pvefs check --config {config}")
                assert edited.returncode == 0, (edited.stdout[-2000:], edited.stderr[-2000:])
        hook = (debian.path / "etc" / "vzdump.conf").read_text().splitlines()[-1]
        assert hook == "script: /usr/local/bin/vzdump-hook-s3pvefs"
        name = "vzdump-qemu-102-2026_12_02-09_30_00.vma.zst"
        backup_through_the_hook(debian, hook.removeprefix("script: "), name, s3_client, bucket,
                                f"co/dump/{name}")
    finally:
        if started is not None:
            run(["umount", str(mountpoint)])
            started.wait(timeout=120)


def test_lintian_finds_no_error(package):
    if shutil.which("lintian") is None:
        pytest.fail("lintian missing: apt-get install lintian (scripts/test does)")
    checked = run(["lintian", "--tag-display-limit", "0", str(package)], timeout=900)
    errors = [line for line in checked.stdout.splitlines() if line.startswith("E:")]
    assert not errors, checked.stdout
