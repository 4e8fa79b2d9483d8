"""The reads of the reader benchmark (scripts/bench-lake-read.sh): for each table, before and
after the period roll-ups, a period-wide aggregate and a one-dataset lookup, by PyIceberg and by
DuckDB, over the tables' metadata files in a local copy of the bucket.

It reports the files a query plans (PyIceberg's plan: the files it opens), the bytes of those
files, and the bytes of the row groups a reader that prunes row groups by their `dataset_id`
statistics reads (both readers do); for both readers, the query's time (best of three) and its
answer, which must be the same before and after.

usage: bench_lake_read.py PLAN_JSON
"""

import json
import os
import sys
import time

import pyarrow.parquet as pq
from pyiceberg.expressions import And, EqualTo
from pyiceberg.table import StaticTable

# DuckDB with the Iceberg extension, loaded as the end-to-end tests load it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from read_lake import duck  # noqa: E402


def best(f, times=3):
    answer, seconds = None, float("inf")
    for _ in range(times):
        start = time.perf_counter()
        answer = f()
        seconds = min(seconds, time.perf_counter() - start)
    return answer, seconds


def row_group_bytes(path: str, dataset: str | None) -> int:
    """The compressed bytes of the row groups of `path` whose dataset_id bounds may hold `dataset`
    (all of them: None)."""
    meta = pq.ParquetFile(path.removeprefix("file://")).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    at = names.index("dataset_id") if "dataset_id" in names else None
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        stats = group.column(at).statistics if at is not None else None
        if dataset is None or stats is None or not stats.has_min_max or stats.min <= dataset <= stats.max:
            total += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
    return total


def main() -> None:
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    period, dataset = plan["period"], plan["dataset"]
    rows = []
    for table, states in plan["tables"].items():
        answers = {}
        for state, metadata in states.items():
            # A DuckDB of its own per state: no state reads another's cached footers.
            con = duck()
            iceberg = StaticTable.from_metadata(f"file://{metadata}")
            queries = {
                "period-wide aggregate": (EqualTo("period_tag", period), f"period_tag = '{period}'", None),
                "one-dataset lookup": (And(EqualTo("period_tag", period), EqualTo("dataset_id", dataset)),
                                       f"period_tag = '{period}' AND dataset_id = '{dataset}'", dataset),
            }
            for name, (expression, where, one) in queries.items():
                scan = iceberg.scan(row_filter=expression)
                planned = list(scan.plan_files())
                files, size = len(planned), sum(t.file.file_size_in_bytes for t in planned)
                groups = sum(row_group_bytes(t.file.file_path, one) for t in planned)

                def pyiceberg():
                    t = iceberg.scan(row_filter=expression).to_arrow()
                    return (t.num_rows, len(set(t.column("dataset_id").to_pylist())))

                sql = (f"SELECT count(*), count(DISTINCT dataset_id) FROM iceberg_scan('{metadata}') WHERE {where}")
                (py_answer, py_s) = best(pyiceberg)
                (duck_answer, duck_s) = best(lambda: tuple(con.execute(sql).fetchone()))
                assert py_answer == duck_answer, (table, state, name, py_answer, duck_answer)
                answers.setdefault(name, set()).add(py_answer)
                rows.append({"table": table, "state": state, "query": name, "files": files, "bytes": size, "read": groups,
                             "rows": py_answer[0], "datasets": py_answer[1],
                             "pyiceberg_ms": round(py_s * 1000, 1), "duckdb_ms": round(duck_s * 1000, 1)})
        for name, seen in answers.items():  # the same answer in every state
            assert len(seen) == 1, f"{table} {name}: answers differ before and after: {seen}"
    print(f"{'table':<8} {'state':<16} {'query':<22} {'files':>6} {'file bytes':>11} {'row groups':>11} {'rows':>7} {'datasets':>8} {'PyIceberg ms':>13} {'DuckDB ms':>10}")
    for r in rows:
        print(f"{r['table']:<8} {r['state']:<16} {r['query']:<22} {r['files']:>6} {r['bytes']:>11} {r['read']:>11} {r['rows']:>7} {r['datasets']:>8} {r['pyiceberg_ms']:>13} {r['duckdb_ms']:>10}")
    for table in plan["tables"]:
        for name in ("period-wide aggregate", "one-dataset lookup"):
            b, a, n = (next(r for r in rows if r["table"] == table and r["state"] == s and r["query"] == name)
                       for s in ("before", "after", "after, no stats"))
            print(f"{table} {name}: files {b['files']} before, {a['files']} after ({n['files']} without statistics); "
                  f"row-group bytes {b['read']} -> {a['read']}; PyIceberg {b['pyiceberg_ms'] / max(a['pyiceberg_ms'], 0.1):.1f}x, "
                  f"DuckDB {b['duckdb_ms'] / max(a['duckdb_ms'], 0.1):.1f}x faster after")


if __name__ == "__main__":
    main()
