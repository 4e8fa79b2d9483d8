// The upload's crypto in Wasm (as the upload Worker runs it: crates/engine-wasm) beside the
// platform's WebCrypto doing the same work, in one V8 (Node's; workerd embeds V8 too, with
// BoringSSL behind its WebCrypto where Node has OpenSSL). Called by scripts/bench-upload.sh.
// Usage: node bench-upload-crypto.mjs <wasm-bindgen --target nodejs output dir>
import path from 'node:path';
import { createRequire } from 'node:module';

const [pkg] = process.argv.slice(2);
const wasm = createRequire(import.meta.url)(path.resolve(pkg, 'fusou_engine_wasm.js'));
const subtle = globalThis.crypto.subtle;

// Median time per operation, in ms, of `rounds` rounds of `n` operations each.
async function perOp(n, rounds, run) {
    const times = [];
    for (let r = 0; r < rounds; r++) {
        const started = performance.now();
        await run(n);
        times.push((performance.now() - started) / n);
    }
    return times.sort((a, b) => a - b)[Math.floor(rounds / 2)];
}

const row = (what, wasmMs, platformMs) =>
    console.log(`${what.padEnd(34)} Wasm ${wasmMs.toFixed(3).padStart(8)} ms   WebCrypto ${platformMs.toFixed(3).padStart(8)} ms   Wasm / WebCrypto ${(wasmMs / platformMs).toFixed(2)}`);

// SHA-256 of a body. WebCrypto's figure includes copying the bytes out of Wasm memory, which a
// Worker holding the body in Wasm would pay.
for (const size of [64 * 1024, 1024 * 1024, 16 * 1024 * 1024]) {
    const body = new Uint8Array(size).map((_, i) => (i * 2654435761) >>> 24);
    const n = Math.max(3, Math.round(64 * 1024 * 1024 / size / 4));
    const w = await perOp(n, 5, async (k) => { for (let i = 0; i < k; i++) wasm.content_hash(body); });
    const p = await perOp(n, 5, async (k) => { for (let i = 0; i < k; i++) await subtle.digest('SHA-256', body.slice()); });
    const hex = Buffer.from(await subtle.digest('SHA-256', body)).toString('hex');
    if (hex !== wasm.content_hash(body)) throw new Error('the two SHA-256 differ');
    row(`SHA-256 of ${size / 1024} KiB`, w, p);
}

// A Supabase user token, signed by a fresh key; its public JWK imported once (as a Worker would
// per isolate), then verified. Wasm's figure includes the header and claims checks.
const b64 = (bytes) => Buffer.from(bytes).toString('base64url');
const issuer = 'http://127.0.0.1:54321/auth/v1';
const now = Math.floor(Date.now() / 1000);
const claims = { sub: '6f1c1c7e-3b8a-4c53-9a1f-2a4b5c6d7e8f', iss: issuer, aud: 'authenticated', exp: now + 3600, role: 'authenticated' };
for (const [alg, generate, sign] of [
    ['ES256', { name: 'ECDSA', namedCurve: 'P-256' }, { name: 'ECDSA', hash: 'SHA-256' }],
    ['RS256', { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, { name: 'RSASSA-PKCS1-v1_5' }],
]) {
    const keys = await subtle.generateKey(generate, true, ['sign', 'verify']);
    const jwk = { ...(await subtle.exportKey('jwk', keys.publicKey)), kid: 'k1', alg, use: 'sig' };
    delete jwk.key_ops;
    delete jwk.ext;
    const message = `${b64(JSON.stringify({ alg, typ: 'JWT', kid: 'k1' }))}.${b64(JSON.stringify(claims))}`;
    const signature = new Uint8Array(await subtle.sign(sign, keys.privateKey, new TextEncoder().encode(message)));
    const token = `${message}.${b64(signature)}`;
    const jwks = JSON.stringify({ keys: [jwk] });
    if (wasm.verify_token(token, jwks, issuer, now, 1) !== claims.sub) throw new Error(`${alg}: Wasm refused the token`);
    const imported = await subtle.importKey('jwk', jwk, generate, false, ['verify']);
    const n = 200;
    const w = await perOp(1, 5, async () => wasm.verify_token(token, jwks, issuer, now, n)) / n;
    const p = await perOp(n, 5, async (k) => {
        for (let i = 0; i < k; i++) {
            if (!(await subtle.verify(sign, imported, signature, new TextEncoder().encode(message)))) throw new Error('refused');
        }
    });
    row(`${alg} token verification`, w, p);
}
