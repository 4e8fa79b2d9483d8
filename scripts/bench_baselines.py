"""Baselines for the engine benchmark: DuckDB (one thread) and pyarrow merge the same segment
files, table by table, into one SNAPPY Parquet file each. Prints MB/s of input per tool (DuckDB:
the median of three runs).

Usage: bench_baselines.py <segments dir> <out dir>
"""
import json
import os
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

segments, out = sys.argv[1], sys.argv[2]
tables = sorted(os.listdir(segments))
files = {t: sorted(os.path.join(segments, t, f) for f in os.listdir(os.path.join(segments, t))) for t in tables}
input_bytes = sum(os.path.getsize(f) for fs in files.values() for f in fs)


def duckdb_merge():
    con = duckdb.connect()
    con.execute("SET threads = 1")
    os.makedirs(f"{out}/duckdb", exist_ok=True)
    for t, fs in files.items():
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in fs)
        con.execute(f"COPY (SELECT * FROM read_parquet([{listing}])) TO '{out}/duckdb/{t}.parquet' (FORMAT parquet, COMPRESSION snappy)")


def pyarrow_merge():
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    os.makedirs(f"{out}/pyarrow", exist_ok=True)
    for t, fs in files.items():
        table = pa.concat_tables(pq.read_table(f) for f in fs)
        pq.write_table(table, f"{out}/pyarrow/{t}.parquet", compression="snappy")


results = {}
# DuckDB, the reference, runs three times (its median is reported: this machine's noise is
# several percent); pyarrow, far slower, once.
for name, run, times in (("duckdb", duckdb_merge, 3), ("pyarrow", pyarrow_merge, 1)):
    runs = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        runs.append(time.perf_counter() - start)
    seconds = sorted(runs)[len(runs) // 2]
    rows = sum(pq.ParquetFile(f"{out}/{name}/{t}.parquet").metadata.num_rows for t in tables)
    results[name] = {"seconds": seconds, "mb_per_s": input_bytes / 1e6 / seconds, "rows": rows,
                     "runs_mb_per_s": [round(input_bytes / 1e6 / r, 1) for r in runs]}
print(json.dumps({"input_bytes": input_bytes, "segments": sum(len(f) for f in files.values()), "results": results}))
