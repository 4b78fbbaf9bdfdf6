"""Benchmark the backup pipeline: codec x cipher throughput, ratio and memory.

Run from the repository root:

    .venv/bin/python bench/pipeline.py                      # every codec x cipher
    .venv/bin/python bench/pipeline.py --codecs zstd --ciphers aes-256-gcm
    .venv/bin/python bench/pipeline.py --rss-check          # 2 GiB zstd + AES-GCM, peak RSS

It writes a synthetic SQL dump (COPY blocks, multi-row INSERTs and JSON
events with varied ids, names, timestamps and text) to a temporary file,
measures each bare compressor on it (1 MiB pieces, only the compress calls
timed; configured as the pipeline configures it: zstd on codecs.ZSTD_THREADS
libzstd workers, whose wait the final flush includes, the others on one
thread), then streams it through EncodingStream into a local
file (1 MiB writes, as local storage does) and prints MB/s (source bytes /
wall time, fsync excluded; the fsync is shown apart), ratio, peak RSS delta
and pipeline/bare. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from covet.pipeline import codecs, crypto  # noqa: E402
from covet.pipeline.container import EncodingStream  # noqa: E402
from covet.pipeline.container_format import Header  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PIECE = MiB
WRITE_SIZE = MiB
# The slow codecs would take minutes per cipher at 1 GiB.
DEFAULT_CODEC_SIZE = {"gzip": 256 * MiB, "bzip2": 64 * MiB}

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Christopher Karen Charles Lisa Daniel Nancy "
    "Matthew Betty Anthony Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily Zoë "
    "José Łukasz Søren Aiko Chen Priya Olumide Fatima Mateo Ingrid Dmitri Ana Kwame"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Müller Kowalski Tanaka Okafor Ivanova Haddad Silva Johansson Novak O'Brien"
).split()
WORDS = (
    "the of and to in is you that it was for on are as with they at be this have from or one "
    "had by word but not what all were we when your can said there use each which do how their "
    "if will up other about out many then them these so some would make like into time has "
    "look two more write see number way could people than first been call who now find long "
    "down day did get come made may part order shipped delayed refund invoice customer payment "
    "pending warehouse backorder express standard priority returned damaged gift wrap coupon"
).split()
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "shop.example.io"]
STATUS = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]
EVENTS = ["page_view", "add_to_cart", "checkout", "login", "logout", "search", "review"]
TABLE_BYTES = 16 * MiB  # one table's block before the dump moves to the next table


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_dump(size: int, seed: int = 20240501):
    """Yield about ``size`` bytes of a deterministic, varied SQL dump."""
    rnd = random.Random(seed)
    bits = rnd.getrandbits
    people = []
    for _ in range(50000):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        mail = f"{first.lower()}.{last.lower()}{rnd.randint(1, 99)}@{rnd.choice(DOMAINS)}"
        people.append((rnd.randint(1, 250000), f"{first} {last}", mail))
    stamp = 1_600_000_000
    details = []
    for _ in range(65536):
        stamp += rnd.randint(0, 400)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))
        note = " ".join(rnd.choices(WORDS, k=rnd.randint(0, 14))) or "\\N"
        details.append((rnd.choice(STATUS), f"{rnd.randint(100, 9999999) / 100:.2f}",
                        f"{when}.{rnd.randint(0, 999999):06d}+00", note))
    ids = [1_000_000, 1, 70_000_000]

    def orders(lines: int) -> str:
        out = []
        for _ in range(lines):
            ids[0] += 1 + (bits(2) & 1)
            cid, name, mail = people[bits(16) % 50000]
            status, amount, when, note = details[bits(16)]
            out.append(f"{ids[0]}\t{cid}\t{name}\t{mail}\t{status}\t{amount}\t{when}\t{note}\n")
        return "".join(out)

    def customers(lines: int) -> str:
        rows = []
        for _ in range(lines):
            ids[1] += 1
            cid, name, mail = people[bits(16) % 50000]
            _, amount, when, _ = details[bits(16)]
            rows.append(f"({ids[1]},{quoted(name)},{quoted(mail)},{amount},'{when}')")
        return "INSERT INTO `customers` VALUES " + ",".join(rows) + ";\n"

    def events(lines: int) -> str:
        out = []
        for _ in range(lines):
            ids[2] += 1 + (bits(3) & 3)
            cid, _, _ = people[bits(16) % 50000]
            _, amount, when, note = details[bits(16)]
            kind = EVENTS[bits(3) % len(EVENTS)]
            out.append(f'{ids[2]}\t{when}\t{{"type": "{kind}", "customer": {cid}, "value": {amount}, '
                       f'"session": "{bits(64):016x}", "query": "{note[:40]}"}}\n')
        return "".join(out)

    tables = [
        ("COPY public.orders (id, customer_id, customer_name, email, status, amount, created_at, "
         "note) FROM stdin;\n", orders, 4096),
        ("", customers, 64),
        ("COPY public.events (id, created_at, payload) FROM stdin;\n", events, 4096),
    ]
    produced = 0
    block = 0
    yield b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n"
    while produced < size:
        preamble, make, lines = tables[block % len(tables)]
        block += 1
        chunk = preamble.encode()
        table_bytes = 0
        while table_bytes < TABLE_BYTES and produced < size:
            chunk += make(lines).encode()
            table_bytes += len(chunk)
            produced += len(chunk)
            yield chunk
            chunk = b""
        if preamble:
            yield b"\\.\n\n"


def write_dump(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        written = 0
        for chunk in sql_dump(size):
            chunk = chunk[: size - written]
            out.write(chunk)
            written += len(chunk)
            if written >= size:
                break


class Limited:
    """Read at most ``size`` bytes of ``stream``."""

    def __init__(self, stream, size: int) -> None:
        self.stream = stream
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.stream.read(n)
        self.left -= len(data)
        return data


class Repeated:
    """Read ``path`` ``times`` times in a row, as one stream."""

    def __init__(self, path: Path, times: int) -> None:
        self.path = path
        self.times = times
        self.stream = open(path, "rb")

    def read(self, n: int = -1) -> bytes:
        while True:
            data = self.stream.read(n)
            if data or self.times <= 1:
                return data
            self.times -= 1
            self.stream.close()
            self.stream = open(self.path, "rb")


def peak_rss_reset() -> int:
    """Reset the peak RSS (Linux) and return the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status("VmRSS")


def peak_rss() -> int:
    return _status("VmHWM")


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def bare(codec: str, path: Path, size: int) -> float:
    """Return the bare compressor's MB/s: 1 MiB pieces, only compress calls (and the flush) timed."""
    compressor = codecs.compressor(codec, None)
    spent = 0.0
    with open(path, "rb") as handle:
        left = size
        while left:
            piece = handle.read(min(PIECE, left))
            left -= len(piece)
            started = time.perf_counter()
            compressor.compress(piece)
            spent += time.perf_counter() - started
        started = time.perf_counter()
        compressor.flush()
        spent += time.perf_counter() - started
    return size / spent / 1e6


def pipeline(codec: str, cipher: str, source, out_path: Path) -> dict:
    """Stream ``source`` through EncodingStream into ``out_path``; return the figures."""
    data_key_id, data_key = crypto.new_data_key() if cipher != "none" else (None, None)
    header = Header(codec=codec, level=codecs.DEFAULT_LEVEL[codec], cipher=cipher,
                    data_key_id=data_key_id, backup_id="bench")
    rss_before = peak_rss_reset()
    started = time.perf_counter()
    with open(out_path, "wb") as out, EncodingStream(source, header, data_key) as stream:
        while data := stream.read(WRITE_SIZE):
            out.write(data)
        out.flush()
        streamed = time.perf_counter() - started
        os.fsync(out.fileno())
    fsync = time.perf_counter() - started - streamed
    return {
        "seconds": streamed,
        "fsync": fsync,
        "source_bytes": stream.source_bytes,
        "stored_bytes": stream.stored_bytes,
        "rss_delta": peak_rss() - rss_before,
    }


def piped(data: Path, size: int, out_path: Path) -> dict:
    """Run zstd + AES-256-GCM with the source coming through a pipe, as a dump tool's would."""
    process = subprocess.Popen(["head", "-c", str(size), str(data)], stdout=subprocess.PIPE)
    with process:
        result = pipeline("zstd", "aes-256-gcm", process.stdout, out_path)
    out_path.unlink()
    return result


def print_row(codec: str, cipher: str, result: dict, bare_rate: float | None) -> float:
    """Print one table row; return the pipeline's MB/s."""
    rate = result["source_bytes"] / result["seconds"] / 1e6
    bare_text = f"{bare_rate:7.0f}" if bare_rate else f"{'-':>7}"
    versus = f"{rate / bare_rate:9.2f}" if bare_rate else f"{'-':>9}"
    print(f"{codec:6} {codecs.DEFAULT_LEVEL[codec]:3} {cipher:24} {rate:7.0f} {bare_text} {versus} "
          f"{result['source_bytes'] / result['stored_bytes']:6.2f} "
          f"{result['fsync']:7.2f} {result['rss_delta'] / MiB:8.1f}", flush=True)
    return rate


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 256MiB)")
    unit = (match.group(2) or "B").lower()
    return int(float(match.group(1)) * {"b": 1, "kib": 1 << 10, "mib": MiB, "gib": GiB}[unit])


def parse_codec_sizes(text: str) -> dict:
    sizes = {}
    for item in filter(None, text.split(",")):
        codec, _, size = item.partition("=")
        sizes[codecs.check_codec(codec)] = parse_size(size)
    return sizes


def run_matrix(args) -> None:
    sizes = {codec: args.size for codec in args.codecs}
    sizes.update({c: min(s, args.size) for c, s in DEFAULT_CODEC_SIZE.items() if c in sizes})
    sizes.update({c: s for c, s in args.codec_size.items() if c in sizes})
    with tempfile.TemporaryDirectory(prefix="covet-bench-") as tmp:
        data = args.data or Path(tmp) / "dump.sql"
        biggest = max(sizes.values())
        if not data.exists() or data.stat().st_size < biggest:
            started = time.perf_counter()
            write_dump(data, biggest)
            print(f"wrote {biggest / MiB:.0f} MiB synthetic SQL dump in "
                  f"{time.perf_counter() - started:.1f} s")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; "
              f"source sizes: " + ", ".join(f"{c} {s / MiB:.0f} MiB" for c, s in sizes.items()))
        print(f"zstd compresses on {codecs.ZSTD_THREADS} libzstd worker thread(s) up to level "
              f"{codecs.ZSTD_THREADED_MAX_LEVEL}, in bare and pipeline alike; the other codecs on one thread")
        print()
        print(f"{'codec':6} {'lvl':>3} {'cipher':24} {'MB/s':>7} {'bare':>7} {'pipe/bare':>9} "
              f"{'ratio':>6} {'fsync s':>7} {'RSS +MiB':>8}")
        out_path = Path(tmp) / "out.cvb"
        target = None
        for codec in args.codecs:
            size = sizes[codec]
            bare_rate = None
            if codec != "none":
                bare_rate = max(bare(codec, data, size) for _ in range(args.repeat))
            for cipher in args.ciphers:
                runs = []
                for _ in range(args.repeat):
                    with open(data, "rb") as handle:
                        runs.append(pipeline(codec, cipher, Limited(handle, size), out_path))
                    out_path.unlink()
                result = min(runs, key=lambda run: run["seconds"])
                rate = print_row(codec, cipher, result, bare_rate)
                if (codec, cipher) == ("zstd", "aes-256-gcm"):
                    target = rate / bare_rate
                    runs = [piped(data, size, out_path) for _ in range(args.repeat)]
                    print_row(codec, cipher + " (pipe)", min(runs, key=lambda run: run["seconds"]), bare_rate)
        if target is not None:
            print(f"\nzstd-3 + aes-256-gcm reaches {target:.2f} of bare zstd-3 (target 0.90): "
                  f"{'ok' if target >= 0.9 else 'BELOW TARGET'}")
        if args.repeat > 1:
            print(f"(best of {args.repeat} runs each)")


def rss_child(size: int, data: Path | None) -> None:
    """Stream ``size`` bytes through zstd-3 + AES-256-GCM and print the peak RSS growth as JSON."""
    with tempfile.TemporaryDirectory(prefix="covet-bench-rss-") as tmp:
        if data is None:
            data = Path(tmp) / "dump.sql"
            write_dump(data, GiB)
        times = -(-size // data.stat().st_size)
        source = Limited(Repeated(data, times), size)
        idle = peak_rss_reset()
        result = pipeline("zstd", "aes-256-gcm", source, Path(tmp) / "out.cvb")
        print(json.dumps({
            "idle_rss": idle,
            "peak_rss": idle + result["rss_delta"],
            "rss_delta": result["rss_delta"],
            "source_bytes": result["source_bytes"],
            "seconds": result["seconds"],
        }))


def run_rss_check(args) -> None:
    size = args.size if args.size_given else 2 * GiB
    command = [sys.executable, __file__, "--rss-child", "--size", str(size)]
    if args.data:
        command += ["--data", str(args.data)]
    print(f"streaming {size / GiB:.2f} GiB through zstd-3 + aes-256-gcm in a subprocess ...")
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    delta = result["rss_delta"] / MiB
    print(f"idle RSS {result['idle_rss'] / MiB:.1f} MiB, peak RSS {result['peak_rss'] / MiB:.1f} MiB, "
          f"growth {delta:.1f} MiB (limit 100 MiB): {'ok' if delta <= 100 else 'TOO MUCH'}; "
          f"{result['source_bytes'] / result['seconds'] / 1e6:.0f} MB/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=None,
                        help="source bytes per run (default 1GiB; 2GiB with --rss-check)")
    parser.add_argument("--codec-size", type=parse_codec_sizes, default={},
                        help="per-codec sizes, e.g. bzip2=64MiB,gzip=256MiB (the defaults)")
    parser.add_argument("--codecs", default=",".join(codecs.CODECS),
                        type=lambda text: [codecs.check_codec(c) for c in text.split(",")])
    parser.add_argument("--ciphers", default=",".join(crypto.CIPHERS),
                        type=lambda text: [crypto.check_cipher(c) for c in text.split(",")])
    parser.add_argument("--data", type=Path, help="reuse (or create) the synthetic dump here")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each measurement N times and keep the best (a busy machine is noisy)")
    parser.add_argument("--rss-check", action="store_true",
                        help="measure peak RSS growth streaming 2 GiB (zstd + aes-256-gcm)")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size_given = args.size is not None
    args.size = args.size or GiB
    if args.rss_child:
        rss_child(args.size, args.data)
    elif args.rss_check:
        run_rss_check(args)
    else:
        run_matrix(args)


if __name__ == "__main__":
    main()
