import os, time, threading
import pytest
from test_faults import *  # noqa

def test_stale_listing_while_stopped(faulty_mount, proxy, s3_client, bucket):
    mount = faulty_mount("--dir-ttl", "1")
    f = mount.path / "dump" / "known.txt"
    f.write_bytes(b"hello")
    assert s3pvefs_cli("sync", str(f)).returncode == 0
    os.listdir(f.parent)
    proxy.stop()
    time.sleep(1.5)
    for check in (lambda: os.stat(f), lambda: os.listdir(f.parent), lambda: f.read_bytes(), lambda: os.stat(mount.path / "dump")):
        t = time.monotonic()
        try:
            r = check()
            print("ok", time.monotonic() - t, r if not isinstance(r, os.stat_result) else r.st_size)
        except OSError as e:
            print("err", time.monotonic() - t, e)

def test_sync_during_outage(faulty_mount, proxy, s3_client, bucket):
    mount = faulty_mount()
    f = mount.path / "snippets" / "x.txt"
    proxy.stop()
    f.write_bytes(b"hello")
    threading.Timer(3, proxy.start).start()
    t = time.monotonic()
    r = s3pvefs_cli("sync", "--timeout", "60", str(f))
    print("sync", r.returncode, time.monotonic() - t, r.stderr)
