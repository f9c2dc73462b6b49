"""Cost of the shards' integrity checks: `nlaprobe.io.write_table` + `read_table` (CRC-32 page
checksums and the footer's SHA-256, both written and verified) vs the same atomic write and read
without them (`pq.write_table` into `io.atomic_path`, then `pq.read_table`: what `io` did
before), on the same table.

    python benchmarks/shard_checksums.py [--rows 250] [--dim 5376] [--layers 3] [--repeats 9]

The default table has the shape of one activation shard of the paper config (50 documents x 5
positions, Gemma-3-27B's d = 5376, the vectors of layer K and two adjacent layers, the text
columns), filled with random normal floats (activations do not compress either): about 16 MB.
`--dim 128 --rows 320` is the embedded default's shard. Files go to a temporary folder (the page
cache: disk speed is not measured, and it is the same for both sides). Prints each side's write,
read and total time (best of --repeats, runs interleaved) and the ratios checked / plain; the
tables read back must be equal.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_common import best_times

from nlaprobe import constants as C
from nlaprobe.io import atomic_path, read_table, vectors_to_arrow, write_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=250, help="rows (documents x positions)")
    p.add_argument("--dim", type=int, default=5376, help="vector width d")
    p.add_argument("--layers", type=int, default=3, help="vector columns (K + adjacent)")
    p.add_argument("--repeats", type=int, default=9, help="timings are the best of this many")
    return p.parse_args(argv)


def activation_table(rows: int, dim: int, layers: int) -> pa.Table:
    rng = np.random.default_rng(0)
    columns = {
        C.COL_DOC_ID: [f"ultrafineweb:en:{100000 + i // 5}" for i in range(rows)],
        C.COL_DOC_IDX: pa.array(np.arange(rows) // 5, pa.int64()),
        C.COL_N_RAW_TOKENS: pa.array(rng.integers(50, 4096, rows), pa.int64()),
        C.COL_DETOK: ["lorem ipsum " * int(n) for n in rng.integers(20, 200, rows)],
        C.COL_POSITION: pa.array(rng.integers(50, 4096, rows), pa.int64()),
        C.COL_CHAR_END: pa.array(rng.integers(200, 20000, rows), pa.int64()),
    }
    names = [C.COL_VECTOR] + [f"{C.COL_VECTOR}_L{k}" for k in range(1, layers)]
    for name in names:
        columns[name] = vectors_to_arrow(rng.standard_normal((rows, dim)).astype(np.float32))
    return pa.table(columns)


def write_plain(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def main(argv=None) -> int:
    args = parse_args(argv)
    table = activation_table(args.rows, args.dim, args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        plain, checked = Path(tmp) / "plain.parquet", Path(tmp) / "checked.parquet"
        (w_plain, w_checked), _ = best_times(
            [lambda: write_plain(plain, table), lambda: write_table(checked, table)],
            args.repeats,
        )
        (r_plain, r_checked), (t_plain, t_checked) = best_times(
            [lambda: pq.read_table(plain), lambda: read_table(checked)], args.repeats
        )
        assert t_plain.equals(table) and t_checked.equals(table)
        size_plain, size_checked = plain.stat().st_size, checked.stat().st_size
    print(
        f"table: {args.rows} rows, {args.layers} vector column(s) of d={args.dim}; file "
        f"{size_plain / 1e6:.2f} MB plain, {size_checked / 1e6:.2f} MB checked; "
        f"best of {args.repeats}"
    )
    print(f"{'':8} {'plain':>9} {'checked':>9} {'ratio':>7}")
    for what, a, b in (
        ("write", w_plain, w_checked),
        ("read", r_plain, r_checked),
        ("total", w_plain + r_plain, w_checked + r_checked),
    ):
        print(f"{what:8} {a * 1e3:7.1f}ms {b * 1e3:7.1f}ms {b / a:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
