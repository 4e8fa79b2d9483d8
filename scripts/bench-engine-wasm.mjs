// The compaction engine alone in Wasm, run by V8 (Node's, the engine workerd embeds): the
// fragments of `fusou gen` loaded into Wasm memory, then compacted once cold (V8 compiles Wasm
// lazily and tiers hot code up) and three times warm. Called by scripts/bench-worker.sh.
// Usage: node bench-engine-wasm.mjs <wasm-bindgen --target nodejs output dir> <fragments dir>
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [pkg, dir] = process.argv.slice(2);
const { Fragments } = createRequire(import.meta.url)(path.resolve(pkg, 'fusou_engine_wasm.js'));

const fragments = new Fragments();
for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.bin')).sort()) {
    const offsets = fs.readFileSync(path.join(dir, name.replace(/\.bin$/, '.offsets.json')), 'utf8');
    fragments.add(offsets, fs.readFileSync(path.join(dir, name)));
}
const mb = fragments.bytes() / 1e6;
const runs = [];
for (let i = 0; i < 4; i++) {
    const started = performance.now();
    const out = fragments.compact();
    const seconds = (performance.now() - started) / 1000;
    runs.push(mb / seconds);
    console.log(`engine in Wasm (V8), run ${i + 1}: ${mb.toFixed(1)} MB -> ${(out / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s, ${(mb / seconds).toFixed(1)} MB/s`);
}
const warm = runs.slice(1).sort((a, b) => a - b)[1];
console.log(`engine in Wasm (V8): cold ${runs[0].toFixed(1)} MB/s, warm (median of 3) ${warm.toFixed(1)} MB/s, Wasm memory ${(Fragments.memory_bytes() / 2 ** 20).toFixed(1)} MiB (the whole input held)`);
