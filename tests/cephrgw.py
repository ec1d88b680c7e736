"""A throwaway single-node Ceph cluster with a RADOS Gateway (S3) on loopback.

One monitor, one OSD (BlueStore on a sparse file) and one radosgw (beast frontend on
127.0.0.1:<free port>), everything under one directory::

    DIR/ceph.conf       the cluster's configuration (cephx off, tiny pools, small caches)
    DIR/cluster.json    fsid, OSD uuid and ports, so a stopped cluster can start again
    DIR/mon/ osd/ rgw/  daemon data (the OSD's block file is sparse)
    DIR/log/            <daemon>.log (Ceph's own log) and <daemon>.out (stdout and stderr)
    DIR/run/            <daemon>.pid and admin sockets

Every daemon runs in the foreground (``-f``) as a child process; its pid is written to
DIR/run/<daemon>.pid and it is stopped by that pid (SIGTERM, then SIGKILL after a timeout).
The S3 user has the access key ``testing`` and the secret ``testing``, as the tests' moto
server.

    rgw = CephRGW(Path("/tmp/rgw")).start()   # creates the cluster on first use, ~20 s
    rgw.endpoint_url                          # http://127.0.0.1:<port>
    rgw.stop()                                # the data stays; start() again takes ~6 s

Also a command line (scripts/ceph-rgw wraps it): ``python tests/cephrgw.py start|stop DIR``.
Facts behind the settings: ../shared/ceph-rgw.md.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
USER = "s3pvefs-test"
START_TIMEOUT = 180.0  # seconds for the whole start; a cold start takes ~20 s on 2 cores
STOP_TIMEOUT = 15.0  # seconds from SIGTERM to SIGKILL, per daemon
COMMAND_TIMEOUT = 60.0  # seconds for one ceph / radosgw-admin / mkfs command
TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
PACKAGES = "ceph-mon ceph-osd radosgw ceph-common"
DAEMONS = ("mon.a", "osd.0", "client.rgw")  # start order; stopped in reverse
GiB = 1024 ** 3
DATA_POOL = "default.rgw.buckets.data"  # where the gateway keeps object data
MiB = 1024 ** 2


class RGWError(RuntimeError):
    """The cluster could not be started (the message says why, with the daemons' log tails)."""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(root: Path, fsid: str, mon_ports: tuple[int, int], rgw_port: int) -> str:
    asok = root / "run" / "$name.asok"
    if len(str(asok)) + 10 > 107:  # a unix socket path is at most 107 bytes: go without
        asok = ""
    v2, v1 = mon_ports
    return f"""\
[global]
fsid = {fsid}
mon_host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
public_addr = 127.0.0.1
ms_bind_ipv6 = false
# cephx off; clients (radosgw) then need crc mode to the monitor, "secure" needs cephx
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
# nothing outside this directory
keyring = {root}/keyring
run_dir = {root}/run
admin_socket = {asok}
crash_dir = {root}/crash
log_file = {root}/log/$name.log
mon_cluster_log_file = {root}/log/cluster.log
mon_data = {root}/mon/$id
osd_data = {root}/osd/$id
rgw_data = {root}/rgw
# one OSD: pools of size 1, few placement groups, no autoscaler (there is no mgr)
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000

[osd]
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = {32 * GiB}
bluestore_fsck_on_mkfs = false
osd_memory_target = {GiB}

[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw_thread_pool_size = 64
rgw_enable_usage_log = false
# deleted objects' space comes back within a minute instead of hours
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30
"""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (a killed
    pytest does not leave a cluster running)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(text)


class CephRGW:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.conf = self.root / "ceph.conf"
        self.state_file = self.root / "cluster.json"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.die_with_parent = False  # the pytest fixture sets it; the command line does not

    # -- facts ------------------------------------------------------------------------------

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.state['rgw_port']}"

    def pid_file(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    def pids(self) -> dict[str, int]:
        """The daemons of this cluster that are running, by name."""
        found = {}
        for daemon in DAEMONS:
            try:
                pid = int(self.pid_file(daemon).read_text())
            except (OSError, ValueError):
                continue
            if _running(pid) and self._is_ours(pid):
                found[daemon] = pid
        return found

    def _is_ours(self, pid: int) -> bool:
        """A pid file can outlive its process and the pid be reused: check the command line."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.conf).encode() in cmdline

    def logs(self, lines: int = 25) -> str:
        """The tail of every daemon's log and output, to explain a failure."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path} (tail) ---\n{text}")
        return "\n".join(parts)

    # -- start ------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> CephRGW:
        """Create the cluster unless DIR holds one, start the daemons, create the S3 user and
        wait until S3 ListBuckets answers. Raises RGWError (and leaves nothing running)."""
        missing = missing_tools()
        if missing:
            raise RGWError(f"Ceph is not installed: {', '.join(missing)} not found "
                           f"(apt-get install --no-install-recommends {PACKAGES})")
        running = self.pids()
        if running:
            raise RGWError(f"a cluster already runs in {self.root}: {running}")
        deadline = time.monotonic() + timeout
        try:
            new = not self.state_file.exists()
            if new:
                self._create_mon()
            self._launch("mon.a", "ceph-mon", "-i", "a")
            if new:
                self._create_osd(deadline)
            self._launch("osd.0", "ceph-osd", "-i", "0")
            self._launch("client.rgw", "radosgw", "-n", "client.rgw")
            self._wait_http(deadline)
            self._ensure_user(deadline)
            self._wait_list_buckets(deadline)
            if new:
                self._warm_up()
        except BaseException as error:
            self.stop()
            if isinstance(error, RGWError):
                raise
            if isinstance(error, Exception):
                raise RGWError(f"{type(error).__name__}: {error}\n{self.logs()}") from error
            raise
        return self

    def _create_mon(self) -> None:
        if self.root.exists() and any(self.root.iterdir()):
            raise RGWError(f"{self.root} is neither empty nor a cluster made by this module")
        for sub in ("mon", "osd/0", "rgw", "log", "run", "crash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        mon_ports = (free_port(), free_port())
        rgw_port = free_port()
        self.conf.write_text(config_text(self.root, fsid, mon_ports, rgw_port))
        monmap = self.root / "monmap"
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{mon_ports[0]},v1:127.0.0.1:{mon_ports[1]}]", str(monmap))
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap))
        # Written last: its presence means "a cluster made by this module lives here".
        self.state_file.write_text(json.dumps({
            "fsid": fsid, "osd_uuid": str(uuid.uuid4()), "mon_ports": list(mon_ports),
            "rgw_port": rgw_port}, indent=2) + "\n")

    def _create_osd(self, deadline: float) -> None:
        osd_uuid = self.state["osd_uuid"]
        osd_id = self._run("ceph", "--connect-timeout", str(int(self._left(deadline))),
                           "osd", "new", osd_uuid).stdout.strip()
        if osd_id != "0":
            raise RGWError(f"`ceph osd new` gave OSD id {osd_id!r}, expected 0")
        self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)

    def _run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        command = [args[0], "-c", str(self.conf), *args[1:]]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RGWError(f"`{' '.join(command)}` did not finish within {timeout} s\n"
                           f"{self.logs()}") from None
        if done.returncode != 0:
            raise RGWError(f"`{' '.join(command)}` failed with {done.returncode}:\n"
                           f"{done.stdout}{done.stderr}\n{self.logs()}")
        return done

    def add_user(self, uid: str, access_key: str, secret_key: str) -> None:
        """Another S3 user (with no rights on other users' buckets unless a bucket policy
        gives them); a user that exists already is left as it is."""
        info = subprocess.run(["radosgw-admin", "-c", str(self.conf), "user", "info",
                               f"--uid={uid}"], capture_output=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
        if info.returncode != 0:
            self._run("radosgw-admin", "user", "create", f"--uid={uid}",
                      f"--display-name={uid}", f"--access-key={access_key}",
                      f"--secret={secret_key}")

    def rot(self, bucket: str, key: str, offset: int = 0) -> list[str]:
        """Flip one byte of a stored object's data in RADOS, behind the gateway's back (bit rot
        at rest): in the RADOS object holding ``offset`` of the first part of an object uploaded
        in parts, else in its head object (its data starts there; on a versioned bucket, the
        head of every version that holds data). Returns the RADOS objects changed."""
        stats = json.loads(self._run("radosgw-admin", "bucket", "stats", "--bucket",
                                     bucket).stdout)
        marker = stats["marker"]
        names = self._run("rados", "-p", DATA_POOL, "ls").stdout.split()
        targets = sorted(n for n in names
                         if n.startswith(f"{marker}__multipart_{key}.") and n.endswith(".1"))[:1]
        if not targets:  # the head: <marker>_<key>, or <marker>__:<version>_<key> when versioned
            targets = [n for n in names if n == f"{marker}_{key}"
                       or (n.startswith(f"{marker}__:") and n.endswith(f"_{key}"))]
        changed = [target for target in targets if self._flip(target, offset)]
        if not changed:
            raise RGWError(f"no RADOS object holds byte {offset} of {key} in {DATA_POOL}")
        return changed

    def _flip(self, target: str, offset: int) -> bool:
        local = self.root / "rot.tmp"
        self._run("rados", "-p", DATA_POOL, "get", target, str(local))
        data = bytearray(local.read_bytes())
        if offset >= len(data):
            local.unlink()
            return False
        data[offset] ^= 0x01
        local.write_bytes(bytes(data))
        self._run("rados", "-p", DATA_POOL, "put", target, str(local))
        local.unlink()
        return True

    def _launch(self, daemon: str, program: str, *args: str) -> None:
        with (self.root / "log" / f"{daemon}.out").open("ab") as out:
            process = subprocess.Popen(
                [program, "-f", "-c", str(self.conf), *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal does not reach the cluster
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        self._procs[daemon] = process
        self.pid_file(daemon).write_text(f"{process.pid}\n")

    def _check_alive(self) -> None:
        for daemon, process in self._procs.items():
            if process.poll() is not None:
                raise RGWError(f"{daemon} exited with {process.returncode} while starting\n"
                               f"{self.logs()}")

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RGWError(f"the Ceph RGW did not come up within {START_TIMEOUT:.0f} s\n"
                           f"{self.logs()}")
        return left

    def _wait_http(self, deadline: float) -> None:
        """Until the frontend answers HTTP at all (RGW creates its pools before it listens)."""
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(self.endpoint_url + "/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                pass
            self._left(deadline)
            time.sleep(0.2)

    def _ensure_user(self, deadline: float) -> None:
        timeout = min(COMMAND_TIMEOUT, self._left(deadline))
        info = subprocess.run(["radosgw-admin", "-c", str(self.conf), "user", "info",
                               f"--uid={USER}"], capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if info.returncode == 0:
            return
        self._run("radosgw-admin", "user", "create", f"--uid={USER}",
                  "--display-name=s3pvefs tests", f"--access-key={ACCESS_KEY}",
                  f"--secret={SECRET_KEY}", timeout=timeout)

    def _wait_list_buckets(self, deadline: float) -> None:
        client = self.client()
        while True:
            self._check_alive()
            try:
                client.list_buckets()
                return
            except Exception as error:  # noqa: BLE001 - any failure: try again until the deadline
                last = error
            if deadline - time.monotonic() <= 0:
                raise RGWError(f"S3 ListBuckets on {self.endpoint_url} still fails: {last}\n"
                               f"{self.logs()}")
            time.sleep(0.5)

    def _warm_up(self) -> None:
        """RGW creates its bucket index and data pools at the first bucket and the first object:
        do both now, so that the first test does not pay for it (~3 s)."""
        client = self.client()
        name = f"warm-up-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=name)
        client.put_object(Bucket=name, Key="x", Body=b"x")
        client.delete_object(Bucket=name, Key="x")
        client.delete_bucket(Bucket=name)

    def client(self):
        """A boto3 S3 client with the test user's keys."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.head_bucket(Bucket=name)
        except client.exceptions.ClientError:
            client.create_bucket(Bucket=name)

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every daemon of this cluster by pid, radosgw first and the monitor last: SIGTERM,
        then SIGKILL if it is still running after ``timeout`` seconds. The data stays."""
        running = self.pids()
        for daemon in reversed(DAEMONS):
            pid = running.get(daemon)
            if pid is not None:
                self._stop_pid(pid, self._procs.get(daemon), timeout)
            self.pid_file(daemon).unlink(missing_ok=True)
        for process in self._procs.values():
            if process.poll() is None:  # launched but already gone from the pid files
                process.kill()
                process.wait()
        self._procs.clear()

    @staticmethod
    def _stop_pid(pid: int, process: subprocess.Popen | None, timeout: float) -> None:
        def gone(within: float) -> bool:
            end = time.monotonic() + within
            while True:
                exited = process.poll() is not None if process else not _running(pid)
                if exited:
                    return True
                if time.monotonic() > end:
                    return False
                time.sleep(0.05)

        for signum, within in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return
            if gone(within):
                return

    def remove(self, keep_logs: bool = False) -> None:
        """Stop, then delete the directory and everything in it (but log/ with ``keep_logs``)."""
        self.stop()
        if not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for path in self.root.iterdir() if self.root.exists() else ():
            if path.name != "log":
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="ceph-rgw", description="A single-node Ceph RGW on loopback for tests and "
        "benchmarks (S3 keys: testing / testing).")
    parser.add_argument("action", choices=["start", "stop", "status", "remove"])
    parser.add_argument("dir", type=Path, help="the cluster's directory (created on first start)")
    parser.add_argument("--bucket", action="append", default=[], metavar="NAME",
                        help="with start: also create this bucket if it does not exist")
    args = parser.parse_args(argv)
    rgw = CephRGW(args.dir)
    try:
        if args.action == "start":
            began = time.monotonic()
            rgw.start()
            for bucket in args.bucket:
                rgw.create_bucket(bucket)
            print(f"ceph-rgw: S3 at {rgw.endpoint_url} (access key {ACCESS_KEY}, secret "
                  f"{SECRET_KEY}), started in {time.monotonic() - began:.1f} s", file=sys.stderr)
            print(rgw.endpoint_url)
        elif args.action == "stop":
            began = time.monotonic()
            rgw.stop()
            print(f"ceph-rgw: stopped in {time.monotonic() - began:.1f} s", file=sys.stderr)
        elif args.action == "remove":
            rgw.remove()
        else:
            pids = rgw.pids()
            for daemon in DAEMONS:
                print(f"{daemon}: {pids.get(daemon, 'stopped')}")
            if pids and rgw.state_file.exists():
                print(f"endpoint: {rgw.endpoint_url}")
            return 0 if len(pids) == len(DAEMONS) else 3
    except RGWError as error:
        print(f"ceph-rgw: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
