"""Group parse: read_neuroresults on .gz and plain text vs numpy.loadtxt and plain decompression, and the
parse cache."""
from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

from benchmarks.common import Row, Sizes, best_time


def truncated_copies(gz_path: Path, rows: int, folder: Path) -> tuple[Path, Path, Path, int]:
    """The plain form of a .gz, and the header plus its first `rows` rows, as .gz and as plain text."""
    raw = gzip.decompress(gz_path.read_bytes())
    plain = folder / "train_plain.txt"
    plain.write_bytes(raw)
    cut = 0
    for _ in range(rows + 2):
        nxt = raw.find(b"\n", cut)
        if nxt < 0:
            cut = len(raw)
            break
        cut = nxt + 1
    head = raw[:cut]
    head_gz, head_plain = folder / "train_head.gz", folder / "train_head.txt"
    head_gz.write_bytes(gzip.compress(head, compresslevel=1))
    head_plain.write_bytes(head)
    return plain, head_gz, head_plain, head.count(b"\n") - 2


def inflate(path: Path) -> int:
    """gzip.open(path).read(): only decompressing the file, the floor of any parser reading it."""
    with gzip.open(path) as handle:
        return len(handle.read())


def inflate_isal(path: Path) -> int:
    """The inflating the reader itself does (python-isal), for comparison."""
    from isal import isal_zlib

    return len(isal_zlib.decompressobj(wbits=31).decompress(path.read_bytes()))


def bench_parse(train_gz: Path, tmp: Path, sizes: Sizes) -> list[Row]:
    """read_neuroresults (no cache) on .gz and plain text vs numpy.loadtxt and plain decompression."""
    import numpy as np

    from neuro_trigger.data.neuroresults.reader import parse_threads, read_neuroresults

    plain, head_gz, head_plain, head_rows = truncated_copies(train_gz, sizes.loadtxt_rows, tmp)
    reps = sizes.parse_repeats
    read_neuroresults(head_gz, cache_dir=None)  # warm-up: imports, first allocations
    n = 0
    times: dict[str, list[float]] = {"gz": [], "inflate": [], "plain": [], "isal": []}
    for _ in range(reps):  # interleaved, so that a noisy moment hits the parse and its reference alike
        t, table = best_time(lambda: read_neuroresults(train_gz, cache_dir=None), 1)
        times["gz"].append(t)
        n = len(table["Expert"])
        del table
        times["inflate"].append(best_time(lambda: inflate(train_gz), 1)[0])
        times["isal"].append(best_time(lambda: inflate_isal(train_gz), 1)[0])
        times["plain"].append(best_time(lambda: read_neuroresults(plain, cache_dir=None), 1)[0])
    t_gz, t_inflate, t_plain, t_isal = (min(times[k]) for k in ("gz", "inflate", "plain", "isal"))
    t_lt_gz, _ = best_time(lambda: np.loadtxt(head_gz, skiprows=2), 1)
    t_lt_plain, _ = best_time(lambda: np.loadtxt(head_plain, skiprows=2), 1)
    ours_gz, ours_plain = n / t_gz, n / t_plain
    lt_gz, lt_plain = head_rows / t_lt_gz, head_rows / t_lt_plain
    scaled = f"timed on the first {head_rows:,} rows (a truncated copy), scaled to rows/s"
    mb = train_gz.stat().st_size / 1e6
    rows = [
        Row("parse_gz_vs_loadtxt", f"parse .gz, {n:,} rows ({mb:.0f} MB), read_neuroresults(cache_dir=None)",
            ours_gz, "rows/s", "numpy.loadtxt(path, skiprows=2) on the same .gz", lt_gz, ours_gz / lt_gz,
            "speed-up", ">= 1.5x", ours_gz / lt_gz >= 1.5, f"loadtxt {scaled}; ours {t_gz:.2f} s",
            extra={"seconds": t_gz, "loadtxt_seconds": t_lt_gz, "loadtxt_rows": head_rows}),
        Row("parse_gz_vs_decompress", "parse .gz (same call) vs only inflating it", t_gz, "s",
            "gzip.open(path).read(): the floor of a gzip stream", t_inflate, t_gz / t_inflate,
            "time / inflate time", "<= 1.3x", t_gz / t_inflate <= 1.3,
            f"{n / 1e6:.2f} M rows; the reader inflates with isal, which alone takes {t_isal:.2f} s "
            f"({t_gz / t_isal:.2f}x); parsing runs on {parse_threads()} threads",
            extra={"isal_inflate_seconds": t_isal, "times": times}),
        Row("parse_plain_vs_loadtxt", f"parse the same file uncompressed ({plain.stat().st_size / 1e6:.0f} MB)",
            ours_plain, "rows/s", "numpy.loadtxt(path, skiprows=2), plain", lt_plain, ours_plain / lt_plain,
            "speed-up", ">= 3x", ours_plain / lt_plain >= 3, f"loadtxt {scaled}; ours {t_plain:.2f} s",
            extra={"seconds": t_plain, "loadtxt_seconds": t_lt_plain}),
    ]
    for path in (plain, head_gz, head_plain):
        path.unlink()
    return rows


def bench_cache(train_gz: Path, cache: Path, sizes: Sizes) -> list[Row]:
    """Second read_neuroresults with a cache_dir: sha256 of the file plus loading the npz."""
    from neuro_trigger.data.neuroresults.reader import read_neuroresults

    start = time.perf_counter()
    n = len(read_neuroresults(train_gz, cache_dir=cache)["Expert"])  # parse and store
    t_first = time.perf_counter() - start

    def cold() -> None:
        # a new mtime (same bytes) defeats the in-process hash memo: the file is hashed again, as
        # in a new process, and the cache entry (keyed by content) still hits
        os.utime(train_gz)
        read_neuroresults(train_gz, cache_dir=cache)

    t_cold, _ = best_time(cold, sizes.parse_repeats + 1)
    t_warm, _ = best_time(lambda: read_neuroresults(train_gz, cache_dir=cache), sizes.parse_repeats + 1)
    per_m = t_cold / (n / 1e6)
    return [Row("cache_reload", "reload a parsed split from the cache (second call, file hashed again)",
                per_m, "s per 1M rows", "the first call (parse + store), per 1M rows", t_first / (n / 1e6),
                t_first / t_cold, "speed-up over parsing", "<= 1 s per 1M rows", per_m <= 1.0,
                f"with the in-process hash memo (same process, file unchanged): {t_warm / (n / 1e6):.3f} s "
                "per 1M rows", extra={"seconds_cold": t_cold, "seconds_memo": t_warm, "rows": n})]
