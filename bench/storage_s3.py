"""Benchmark S3 storage against a moto server on loopback: upload and download MB/s and peak RSS.

Run from the repository root:

    .venv/bin/python bench/storage_s3.py                    # 1 GiB, the backend's defaults
    .venv/bin/python bench/storage_s3.py --size-mib 256 --concurrency 8 --part-size-mib 16

It starts ``python -m moto.server`` on a free loopback port (bench/servers/moto.py),
uploads and deletes one object of the same size to warm it up, then for each row runs the transfer in a fresh interpreter so its
ru_maxrss (peak RSS) sees only that work, and reports the peak's growth
over the idle process (imports and a warm connection done). The object is
generated as it is read (a 1 MiB random block repeated), never held whole.
Rows:

- ``S3Storage.put`` / ``S3Storage.get``: this project's backend (multipart
  upload, ranged GETs read in 1 MiB pieces);
- ``boto3 upload_fileobj`` / ``get_object``: plain boto3 (s3transfer with
  the same part size and concurrency; one streamed GET) against the same
  server, to tell moto's own ceiling from our overhead.

CPU seconds are shown for the client and for the moto process (from
/proc via psutil), and moto's peak RSS, sampled every 0.1 s. Not a test:
it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: the root, so covet and bench import by their package names

from bench.servers.moto import TEST_CREDENTIALS, MotoServer  # noqa: E402

MiB = 1 << 20

CLIENT = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
import boto3
from boto3.s3.transfer import TransferConfig
from covet.storage import open_storage

MiB = 1 << 20
BLOCK = os.urandom(MiB)
op, bucket, endpoint, key = sys.argv[2:6]
size, part_size, concurrency = (int(v) for v in sys.argv[6:9])
checksum = sys.argv[9]


class Source:
    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        # As a file would: n bytes until the end (s3transfer asks for a whole part at once).
        n = min(MiB if n is None or n < 0 else n, self.left)
        self.left -= n
        return BLOCK[:n] if n <= MiB else (BLOCK * (n // MiB + 1))[:n]


config = {"bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1", "max_concurrency": concurrency,
          "checksum": checksum}
if part_size:
    config["part_size"] = part_size
store = open_storage("s3", config)
raw = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
store.put_bytes("warm-up", b"x" * 1024)
raw.head_object(Bucket=bucket, Key="warm-up")
idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu0 = time.process_time()
started = time.perf_counter()
moved = 0
if op == "put":
    moved = store.put(key, Source(size), size_hint=size).size
elif op == "get":
    with store.get(key) as stream:
        while chunk := stream.read(MiB):
            moved += len(chunk)
elif op == "raw-put":
    chunk = part_size or store.part_size_for(size)
    raw.upload_fileobj(Source(size), bucket, key,
                       Config=TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk,
                                             max_concurrency=concurrency))
    moved = size
elif op == "raw-get":
    body = raw.get_object(Bucket=bucket, Key=key)["Body"]
    while chunk := body.read(MiB):
        moved += len(chunk)
wall = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"bytes": moved, "wall": wall, "cpu": time.process_time() - cpu0, "idle": idle * 1024,
                  "growth": (peak - idle) * 1024, "part_size": store.part_size_for(size)}))
"""


class Sampler:
    """Peak RSS and CPU time of the moto process while one row runs."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        times = self.proc.cpu_times()
        self.cpu0 = times.user + times.system
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        times = self.proc.cpu_times()
        self.cpu = times.user + times.system - self.cpu0


def run(op: str, server: MotoServer, bucket: str, key: str, size: int, part_size: int, concurrency: int,
        checksum: str) -> dict:
    env = dict(os.environ, **TEST_CREDENTIALS, AWS_EC2_METADATA_DISABLED="true")
    with Sampler(server.proc.pid) as moto:
        done = subprocess.run([sys.executable, "-c", CLIENT, str(REPO), op, bucket, server.endpoint, key, str(size),
                               str(part_size), str(concurrency), checksum], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{op} failed:\n{done.stderr}")
    result = json.loads(done.stdout)
    if result["bytes"] != size:
        sys.exit(f"{op} moved {result['bytes']} bytes, not {size}")
    result.update(moto_cpu=moto.cpu, moto_peak=moto.peak)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-size-mib", type=int, default=0, help="0: chosen from the size (8 MiB up to 40 GiB)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--checksum", default="SHA256", choices=["SHA256", "CRC32", "MD5"])
    parser.add_argument("--skip-raw", action="store_true", help="only this project's backend")
    args = parser.parse_args()
    size, part_size = args.size_mib * MiB, args.part_size_mib * MiB

    server = MotoServer().start()
    try:
        bucket = server.new_bucket()
        client = server.client()
        # moto's first big object grows its heap (gigabytes of page faults): pay that outside the figures,
        # or the first row measured pays it.
        run("raw-put", server, bucket, "bench/warm-up.bin", size, part_size, args.concurrency, args.checksum)
        client.delete_object(Bucket=bucket, Key="bench/warm-up.bin")
        rows = []
        pairs = [("S3Storage.put", "put", "S3Storage.get", "get")]
        if not args.skip_raw:
            pairs.append(("boto3 upload_fileobj", "raw-put", "boto3 get_object", "raw-get"))
        for up_name, up, down_name, down in pairs:
            key = f"bench/{up}.bin"
            rows.append((up_name, run(up, server, bucket, key, size, part_size, args.concurrency, args.checksum)))
            rows.append((down_name, run(down, server, bucket, key, size, part_size, args.concurrency,
                                        args.checksum)))
            client.delete_object(Bucket=bucket, Key=key)
        chosen = rows[0][1]["part_size"] if not part_size else part_size
        print(f"{size / MiB:.0f} MiB object, part size {chosen / MiB:.0f} MiB, concurrency {args.concurrency}, "
              f"checksum {args.checksum}, moto {server.endpoint} ({os.cpu_count()} CPUs)")
        print(f"documented bound for put: ({args.concurrency} + 1) x {chosen / MiB:.0f} MiB + 64 MiB = "
              f"{((args.concurrency + 1) * chosen) / MiB + 64:.0f} MiB")
        header = f"{'operation':<22}{'MB/s':>8}{'wall s':>8}{'client RSS +MiB':>17}{'client CPU s':>14}" \
                 f"{'moto CPU s':>12}{'moto peak MiB':>15}"
        print(header)
        print("-" * len(header))
        for name, r in rows:
            print(f"{name:<22}{size / 1e6 / r['wall']:>8.1f}{r['wall']:>8.2f}{r['growth'] / MiB:>17.1f}"
                  f"{r['cpu']:>14.2f}{r['moto_cpu']:>12.2f}{r['moto_peak'] / MiB:>15.0f}")
        print("client RSS +MiB: peak RSS growth over the idle client (interpreter, boto3, "
              f"{rows[0][1]['idle'] / MiB:.0f} MiB); MB/s: 10^6 bytes per second.")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
