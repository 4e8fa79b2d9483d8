// A period's roll-up in Wasm, run by V8 (Node's, the engine workerd embeds): one table's
// compacted files of one period, from the reader benchmark's bucket, loaded into Wasm memory in
// dataset order, then rolled up as the compaction Worker's job does (parts counted, not
// written). Prints its MB/s and how much the module's memory grew beyond the files it holds.
// Called by scripts/bench-lake-read.sh.
// Usage: node bench-rollup-wasm.mjs <wasm-bindgen --target nodejs output dir> <period dir> <table>
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [pkg, dir, table] = process.argv.slice(2);
const { Period, Fragments } = createRequire(import.meta.url)(path.resolve(pkg, 'fusou_engine_wasm.js'));

// <period dir>/<dataset>/<table>/<run>-<n>.parquet
const period = new Period();
for (const dataset of fs.readdirSync(dir).sort()) {
    const files = path.join(dir, dataset, table);
    if (!fs.existsSync(files)) continue;
    for (const name of fs.readdirSync(files).sort()) period.add(dataset, fs.readFileSync(path.join(files, name)));
}
const mb = period.bytes() / 1e6;
const held = Fragments.memory_bytes();
const order = table === 'battle' ? 'timestamp' : '';
const started = performance.now();
const out = period.roll_up(table, order, 256);
const seconds = (performance.now() - started) / 1000;
const grew = Fragments.memory_bytes() - held;
console.log(`roll-up in Wasm (V8), ${table}: ${mb.toFixed(1)} MB -> ${(out / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s, ${(mb / seconds).toFixed(1)} MB/s; Wasm memory ${(held / 2 ** 20).toFixed(1)} MiB holding the files, grew ${(grew / 2 ** 20).toFixed(1)} MiB over the roll-up`);
