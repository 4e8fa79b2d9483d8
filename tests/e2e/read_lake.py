"""Reads open tables with the public Iceberg readers, for the end-to-end tests.

PyIceberg finds each table through the stack's Iceberg REST catalog; DuckDB (its `iceberg`
extension) scans the metadata file the catalog names. Each reader's rows of the given datasets
are written as Parquet (strings as plain `string`), so that the test compares them by value with
the rows it uploaded.

usage: read_lake.py CATALOG_URI TOKEN OUT_DIR PLAN_JSON

The plan names the datasets, optionally a period (files planned for it, and for its first
dataset, are reported), and the reads: a table, a snapshot id, and the metadata file the
test mirrored (other writers may commit meanwhile: the catalog may already name a newer one,
whose files the mirror does not hold).
"""

import glob
import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import load_catalog
from pyiceberg.expressions import And, EqualTo, GreaterThan, In


def plain(table: pa.Table) -> pa.Table:
    fields = [pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def duck() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"allow_unsigned_extensions": True})
    site = os.path.dirname(os.path.dirname(duckdb.__file__))
    for name in ("avro", "iceberg"):
        (path,) = glob.glob(f"{site}/duckdb_extension_{name}/extensions/v*/{name}.duckdb_extension")
        con.execute(f"LOAD '{path}'")
    return con


def main() -> None:
    uri, token, out, plan_path = sys.argv[1:5]
    with open(plan_path) as f:
        plan = json.load(f)
    datasets = plan["datasets"]
    catalog = load_catalog("fusou", type="rest", uri=uri, token=token)
    con = duck()
    report = {"namespaces": [list(n) for n in catalog.list_namespaces()],
              "tables": sorted(name for _, name in catalog.list_tables("fusou"))}
    wanted = ", ".join(f"'{d}'" for d in datasets)
    for read in plan["reads"]:
        table = catalog.load_table(f"fusou.{read['table']}")
        snapshot_id = read["snapshot"]
        scanned = table.scan(row_filter=In("dataset_id", datasets), snapshot_id=snapshot_id).to_arrow()
        pq.write_table(plain(scanned), f"{out}/pyiceberg-{read['name']}.parquet")
        query = f"SELECT * FROM iceberg_scan('{read['metadata']}', snapshot_from_id => {snapshot_id}) WHERE dataset_id IN ({wanted})"
        pq.write_table(plain(con.execute(query).fetch_arrow_table()), f"{out}/duckdb-{read['name']}.parquet")
        # Files planned: all of them, and for a filter no file's bounds admit (the manifests'
        # column statistics prune them; without statistics every file would be read).
        planned = len(list(table.scan(snapshot_id=snapshot_id).plan_files()))
        number = next(f.name for f in table.schema().fields if str(f.field_type) in ("int", "long") and f.field_id > 2)
        beyond = table.scan(row_filter=GreaterThan(number, 2**30), snapshot_id=snapshot_id)
        report[read["name"]] = {"snapshot": snapshot_id, "pyiceberg": scanned.num_rows,
                                "partition": [f.name for f in table.spec().fields],
                                "files": planned, "files_beyond_bounds": len(list(beyond.plan_files()))}
        if "period" in plan:
            # Files planned for one period, and for one dataset of it (a roll-up holds many
            # datasets: its dataset_id bounds prune).
            of_period = EqualTo("period_tag", plan["period"])
            of_dataset = And(of_period, EqualTo("dataset_id", datasets[0]))
            report[read["name"]]["period_files"] = len(list(table.scan(row_filter=of_period, snapshot_id=snapshot_id).plan_files()))
            report[read["name"]]["dataset_files"] = len(list(table.scan(row_filter=of_dataset, snapshot_id=snapshot_id).plan_files()))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
