-- A failed run whose last attempt was a call that did not answer in time records the limit it
-- waited for, so that an outage (a timeout) reads apart from an error the service answered.
alter table public.processing_metrics
    add column error_timed_out_ms bigint;
