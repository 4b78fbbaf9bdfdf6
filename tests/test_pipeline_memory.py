"""Streaming holds a few chunks at a time, never the whole stream."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter so its peak RSS (VmHWM) sees only this work.
SCRIPT = r"""
import json, random, sys


def peak_rss():
    # VmHWM, not ru_maxrss: ru_maxrss survives fork + exec and would start at pytest's own size.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
sys.path.insert(0, sys.argv[1])
from covet.pipeline import crypto
from covet.pipeline.container import DecodingStream, EncodingStream
from covet.pipeline.container_format import Header

MiB = 1 << 20
TEXT = b"".join(b"%d\tcustomer %d\t2024-05-01 12:00:%02d+00\tpaid\n" % (i, i * 7919 % 100003, i % 60)
                for i in range(20000))[: MiB // 2]


class Source:
    # Generated lazily: half random bytes (which do not compress), half text.
    def __init__(self, size):
        self.left = size
        self.random = random.Random(1)

    def read(self, size=-1):
        size = min(MiB if size < 0 else size, self.left, MiB)
        self.left -= size
        half = size // 2
        return self.random.randbytes(half) + TEXT[: size - half]


def stream(size):
    data_key_id, key = crypto.new_data_key()
    header = Header(codec="zstd", level=3, cipher="aes-256-gcm", data_key_id=data_key_id)
    encoder = EncodingStream(Source(size), header, key)
    decoder = DecodingStream(encoder, lambda h: key)
    total = 0
    while data := decoder.read(4 * MiB):
        total += len(data)
    return total, encoder.stored_bytes


stream(8 * MiB)  # warm up: imports, the compressor thread, allocator arenas
idle = peak_rss()
plaintext, stored = stream(256 * MiB)
peak = peak_rss()
print(json.dumps({"plaintext": plaintext, "stored": stored, "growth": peak - idle}))
"""


def test_streaming_256_mib_through_encoder_and_decoder_keeps_memory_bounded():
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], capture_output=True, text=True,
                          timeout=120, check=True)
    result = json.loads(done.stdout)
    assert result["plaintext"] == 256 << 20
    assert result["stored"] > 128 << 20  # so holding the whole stream would show
    assert result["growth"] < 64 << 20, f"peak RSS grew by {result['growth'] / (1 << 20):.1f} MiB"
