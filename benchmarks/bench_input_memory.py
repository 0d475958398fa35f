"""Memory of long text and time and memory of tiny row groups, before and after (issue 16).

Each measurement runs in a process of its own (peak RSS is the process's
ru_maxrss), on the taxi's February 2023 file:

- long text: the 2,569 trips of 2023-02-08 with `store_and_fwd_flag` a 1 MiB
  string in 300 rows, encoded for binary COPY as `load.copy_arrow` does. "before":
  text gathered through a rows x length int64 index matrix, chunks of 100,000
  rows (modelwatch until issue 16); "after": `pgbinary` as it is, in the slices
  of `load.chunks`.
- row groups: the whole February file written one row group per 6 rows (10,802
  groups) and in one group, read with `source.read_batch_file`. "before": the
  file read with `pq.read_table` (one Arrow chunk per group); "after": as
  `source` reads it.

    .venv/bin/python benchmarks/bench_input_memory.py   # prints a JSON line per figure

Not part of run_all (no database needed, no ratio target): figures go to
docs/performance.md by hand.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

FEBRUARY = REPO / "python" / "modelwatch" / "data" / "green_tripdata_2023-02.parquet"
DAY = date(2023, 2, 8)
LONG_ROWS, LONG_BYTES = 300, 1 << 20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_files(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(FEBRUARY)
    day = table.filter(pc.equal(pc.cast(table["lpep_pickup_datetime"], pa.date32()), pa.scalar(DAY, pa.date32())))
    flags = day["store_and_fwd_flag"].to_pylist()
    flags[:LONG_ROWS] = ["x" * LONG_BYTES] * LONG_ROWS
    pq.write_table(day.set_column(day.schema.get_field_index("store_and_fwd_flag"), "store_and_fwd_flag",
                                  pa.array(flags, pa.string())), folder / "long.parquet")
    pq.write_table(table, folder / "groups_many.parquet", row_group_size=6)
    pq.write_table(table, folder / "groups_one.parquet")


def long_text(folder: Path, how: str) -> dict:
    import numpy as np
    import pyarrow as pa

    from modelwatch.config import Settings
    from modelwatch.monitors import Monitor
    from modelwatch.pipeline import load
    from modelwatch.pipeline.source import read_batch_file
    from modelwatch.postgres import pgbinary

    taxi = Settings.from_env().monitor("nyc_taxi")
    taxi = Monitor(**{**taxi.__dict__, "max_text_bytes": 2 * LONG_BYTES})
    clock = time.perf_counter()
    read = read_batch_file(folder / "long.parquet", taxi)
    if how == "before":
        def gathered(self, rows, length):  # the index matrix of modelwatch until issue 16
            _, offsets, data = self.array.buffers()
            starts = np.frombuffer(offsets, dtype=np.int32)[self.array.offset:][rows].astype(np.int64)
            return np.frombuffer(data, dtype=np.uint8)[starts[:, None] + np.arange(length)].view(f"S{length}").ravel()
        pgbinary._Column.gathered = gathered
        parts = (pa.Table.from_batches([batch]) for batch in read.table.to_batches(load.COPY_CHUNK_ROWS))
    else:
        parts = load.chunks(read.table)
    size = sum(len(pgbinary.encode(part)) for part in parts)
    return {"figure": f"long_text_{how}", "rows": read.rows, "copy_bytes": size,
            "seconds": round(time.perf_counter() - clock, 2), "peak_mb": round(_peak_mb())}


def row_groups(folder: Path, how: str, layout: str) -> dict:
    import pyarrow.parquet as pq

    from modelwatch.config import Settings
    from modelwatch.pipeline import source

    taxi = Settings.from_env().monitor("nyc_taxi")
    if how == "before":
        source._read_parquet = pq.read_table
    clock = time.perf_counter()
    read = source.read_batch_file(folder / f"groups_{layout}.parquet", taxi)
    return {"figure": f"row_groups_{layout}_{how}", "rows": read.rows, "chunks": read.table.column(0).num_chunks,
            "seconds": round(time.perf_counter() - clock, 2), "peak_mb": round(_peak_mb())}


def main() -> None:
    if len(sys.argv) > 1:  # one measurement, in this process
        folder, what, *args = sys.argv[1:]
        print(json.dumps({"long": long_text, "groups": row_groups}[what](Path(folder), *args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        make_files(Path(folder))
        runs = [("long", "before"), ("long", "after"), ("groups", "before", "one"), ("groups", "after", "one"),
                ("groups", "before", "many"), ("groups", "after", "many")]
        for run in runs:
            done = subprocess.run([sys.executable, __file__, folder, *run], capture_output=True, text=True)
            print(done.stdout.strip() or done.stderr.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
