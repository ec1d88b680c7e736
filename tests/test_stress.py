"""Stress tier: parallel writers and O_DIRECT readers through one mount whose cache is smaller
than the data, then `s3pvefs sync`, a clean status, an unmount, and every object on S3 checked
by SHA-256 against the model (the set of keys too: no `.dat` left), no multipart upload open.

Each writer thread runs a job list drawn from the seed: vzdump archives (`X.vma.dat` renamed to
`X.vma.zst`), archives and images written under their final names (some with `cp`), ISO
downloads (`.tmp_dwnl.<pid>`), notes (`.tmp.<pid>`), overwrites with O_TRUNC, rewrites of a
range inside a closed file, renames and unlinks of its own files. Sizes are mostly at and around
the part size / multipart threshold (0, 1, part-1, part, part+1, 2*part, ...). Reader threads
re-read files right after their writer closed them (while the mount uploads them), mostly with
O_DIRECT into aligned buffers, whole or a range, and compare with the model.

CI runs a few seeds; ``S3PVEFS_STRESS_SEEDS=20`` runs seeds 1..20 (``=7,12`` replays those).
``S3PVEFS_STRESS_WRITERS``, ``_READERS`` and ``_JOBS`` (per writer) scale the load.
"""

from __future__ import annotations

import errno
import random
import time

import pytest
from helpers import needs_fuse
from workload import (
    PREFIX,
    MiB,
    Run,
    check_bucket,
    describe_difference,
    env_int,
    hang_evidence,
    names_in,
    read_all,
    report,
    seeds,
    sha256,
    status_problems,
    sync,
    unmount_problems,
)

pytestmark = [
    pytest.mark.real_server,
    needs_fuse,
]

PART = 5 * MiB
MOUNT_ARGS = ("--cache-size", "24MiB", "--part-size", "5MiB", "--multipart-threshold", "5MiB",
              "--dir-ttl", "2")
SEEDS = seeds("S3PVEFS_STRESS_SEEDS", [1, 2])
WRITERS = env_int("S3PVEFS_STRESS_WRITERS", 8)
READERS = env_int("S3PVEFS_STRESS_READERS", 4)
JOBS = env_int("S3PVEFS_STRESS_JOBS", 6)
HANG_AFTER = env_int("S3PVEFS_STRESS_HANG_AFTER", 150)  # seconds: writers not done = a hang


@pytest.mark.parametrize("seed", SEEDS)
def test_parallel_writers_and_direct_readers(seed, mount_s3pvefs, s3_client, bucket, tmp_path):
    mount = mount_s3pvefs(*MOUNT_ARGS)
    run = Run(seed, mount.path, tmp_path, part=PART, jobs=JOBS)
    run.oplog.note("test", f"seed {seed}: {WRITERS} writers x {JOBS} jobs, {READERS} readers, "
                           f"mount {' '.join(MOUNT_ARGS)}")
    started = time.monotonic()
    evidence = []

    def on_hang():
        run.killed.set()  # what fails from here on is the kill's doing
        evidence.append(hang_evidence(mount))
        run.oplog.note("test", "kill -9 of the stuck mount")
        mount.kill()

    finished = run.wait(run.start(WRITERS, READERS), HANG_AFTER, on_hang)
    wrote = time.monotonic() - started
    problems = list(run.problems) + evidence
    if not finished:
        fail(seed, problems, run, mount, tmp_path)

    expected, unknown = run.expected()
    run.oplog.note("test", f"writers done after {wrote:.1f} s: {run.bytes_written} bytes, "
                           f"{run.reads} reads verified; s3pvefs sync")
    synced = sync(mount)
    problems += synced
    if not synced:
        problems += status_problems(mount)
        problems += [f"after `s3pvefs sync` exited 0: {problem}" for problem in
                     check_bucket(s3_client, bucket, expected, PREFIX, PART, ignore=unknown)]
    # A few files read back whole with O_DIRECT after the sync (their cache blocks evicted).
    for name in random.Random(seed).sample(sorted(expected), min(4, len(expected))):
        try:
            got = read_all(mount.path / name, direct=True)
        except OSError as exc:
            problems.append(f"O_DIRECT read of {name} after sync failed: "
                            f"{errno.errorcode.get(exc.errno, exc.errno)}")
            continue
        if sha256(got) != sha256(expected[name]):
            problems.append(f"O_DIRECT read of {name} after sync: "
                            + describe_difference(got, expected[name], PART))
    run.oplog.note("test", "unmount")
    problems += unmount_problems(mount)
    problems += [f"after unmount: {problem}" for problem in
                 check_bucket(s3_client, bucket, expected, PREFIX, PART, ignore=unknown)]
    if problems:
        fail(seed, problems, run, mount, tmp_path)


def fail(seed, problems, run, mount, tmp_path):
    text = report(f"stress seed {seed}", seed, problems, run.oplog, [mount], names_in(problems))
    (tmp_path / "report.txt").write_text(text)
    pytest.fail(text, pytrace=False)
