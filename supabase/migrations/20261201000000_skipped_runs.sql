-- A run that did nothing (another run held the dataset, or nothing was pending: its request was
-- coalesced into another run) is recorded as `skipped`, not as a `success` an owner cannot tell
-- from a run that did the work. The policies are unchanged.
alter type public.metric_status add value if not exists 'skipped' after 'success';
