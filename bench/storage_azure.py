"""Benchmark Azure Blob storage against Azurite on loopback: upload and download MB/s, peak RSS.

Run from the repository root (Azurite installed by scripts/ensure_azurite.sh):

    .venv/bin/python bench/storage_azure.py                      # 1 GiB, 4 blocks in flight
    .venv/bin/python bench/storage_azure.py --size-mib 256 --concurrency 1 4 8

It starts one in-memory Azurite (blob service) on a free loopback port, then
for each concurrency runs the upload and the download each in a fresh
interpreter: the upload puts SIZE bytes generated on the fly (no file, no
whole copy in memory) through AzureStorage.put with size_hint=SIZE, the
download reads the blob back through AzureStorage.get in 4 MiB reads.
MB/s is 10^6 bytes per second of wall time around put/get alone; peak RSS
is the child's VmHWM (its own high-water mark), "growth" is that peak minus its RSS just before
the transfer (after imports and a 16 MiB warm-up). Azurite's own memory is
not counted. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: the root, so covet and bench import by their package names

MiB = 1 << 20


class Generated:
    """SIZE bytes made on the fly from a random 8 MiB pattern, read as an encoder's output would be."""

    def __init__(self, size: int):
        self.left = size
        self.offset = 0
        self.pattern = os.urandom(8 * MiB)

    def read(self, n: int = -1) -> bytes:
        n = min(self.left, MiB if n < 0 else n)
        out = bytearray()
        while len(out) < n:
            take = min(n - len(out), len(self.pattern) - self.offset)
            out += self.pattern[self.offset:self.offset + take]
            self.offset = (self.offset + take) % len(self.pattern)
        self.left -= n
        return bytes(out)


def status(field: str) -> int:
    """Return a /proc/self/status size in bytes: VmRSS now, VmHWM the peak (ru_maxrss would include
    the parent's size, since it survives fork + exec)."""
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":")) * 1024


def child(phase: str, config: dict, size: int) -> dict:
    from covet.storage import open_storage

    store = open_storage("azure", config)
    store.put("warm/up", Generated(16 * MiB), size_hint=16 * MiB)  # imports, threads, connections
    with store.get("warm/up") as stream:
        while stream.read(4 * MiB):
            pass
    idle = status("VmRSS")
    cpu0 = time.process_time()
    started = time.perf_counter()
    if phase == "upload":
        moved = store.put("bench/object", Generated(size), size_hint=size).size
    else:
        moved = 0
        with store.get("bench/object") as stream:
            while data := stream.read(4 * MiB):
                moved += len(data)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    peak = status("VmHWM")
    return {"bytes": moved, "wall": wall, "cpu": cpu, "peak": peak, "growth": peak - idle,
            "block": store.block_size_for(size)}


def run_child(phase: str, config: dict, size: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", phase, json.dumps(config), str(size)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{phase} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4])
    args = parser.parse_args()
    size = args.size_mib * MiB

    from bench.servers.azurite import ACCOUNT_KEY, ACCOUNT_NAME, AzuriteServer

    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "account.key"
        key_file.write_text(ACCOUNT_KEY)
        key_file.chmod(0o600)
        print(f"Azure Blob on Azurite 3.35.0 (loopback, in memory), object {args.size_mib} MiB "
              f"generated on the fly, {os.cpu_count()} CPUs\n")
        print(f"{'phase':<9}{'parallel':>9}{'block MiB':>10}{'MB/s':>9}{'CPU s':>8}"
              f"{'peak RSS MiB':>14}{'growth MiB':>12}{'bound MiB':>11}")
        for concurrency in args.concurrency:
            # A fresh emulator each time: Azurite frees deleted blobs' memory lazily.
            server = AzuriteServer(memory_limit_mb=max(1024, 3 * args.size_mib)).start()
            try:
                config = {"container": server.new_container(), "account_url": server.account_url,
                          "account_name": ACCOUNT_NAME, "account_key_file": str(key_file),
                          "max_concurrency": concurrency}
                for phase in ("upload", "download"):
                    result = run_child(phase, config, size)
                    if result["bytes"] != size:
                        sys.exit(f"{phase} moved {result['bytes']} bytes, not {size}")
                    bound = (concurrency + 1) * result["block"] + 64 * MiB
                    print(f"{phase:<9}{concurrency:>9}{result['block'] / MiB:>10.0f}"
                          f"{size / result['wall'] / 1e6:>9.0f}{result['cpu']:>8.1f}"
                          f"{result['peak'] / MiB:>14.0f}{result['growth'] / MiB:>12.0f}{bound / MiB:>11.0f}",
                          flush=True)
            finally:
                server.close()


if __name__ == "__main__":
    main()
