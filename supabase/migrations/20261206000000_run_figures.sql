-- What a run cost the Worker: its own execution without its waits (a local figure; on
-- Cloudflare the clock stands still while code runs), and the Wasm memory after it.
alter table public.processing_metrics
    add column worker_busy_ms bigint,
    add column wasm_memory_bytes bigint;
-- A failed run whose last attempt was a call that did not answer in time records the limit it
-- waited for, so that an outage (a timeout) reads apart from an error the service answered.
alter table public.processing_metrics
    add column error_timed_out_ms bigint;
