//! End-to-end tests over HTTP against the whole local stack: both Workers under one
//! `wrangler dev`, local R2/D1/queues, the Supabase stand-in and its PostgreSQL.
//!
//! `scripts/test.sh` starts the stack once, runs this binary, and stops the stack. The
//! addresses and keys come from the environment it exports. Without the stack (no
//! `FUSOU_STATE`: `cargo test --workspace` builds and runs every test binary), every test is
//! reported ignored.

mod support;
mod tests_bad_input;
mod tests_compaction;
mod tests_failures;
mod tests_hostile;
mod tests_lake;
mod tests_outage;
mod tests_stack;
mod tests_supabase;
mod tests_upload;

use libtest_mimic::{Arguments, Trial};
use support::Test;

fn trials(tests: &[&[(&str, Test)]]) -> Vec<Trial> {
    let no_stack = std::env::var_os("FUSOU_STATE").is_none();
    tests
        .iter()
        .flat_map(|group| group.iter())
        .map(|&(name, test)| Trial::test(name, move || test().map_err(Into::into)).with_ignored_flag(no_stack))
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    if std::env::var_os("FUSOU_STATE").is_none() {
        eprintln!("the end-to-end tests need the local stack: scripts/test.sh starts it and runs them");
    }
    let shared = trials(&[
        tests_stack::TESTS,
        tests_supabase::TESTS,
        tests_upload::TESTS,
        tests_bad_input::TESTS,
        tests_compaction::TESTS,
        tests_failures::TESTS,
        tests_hostile::TESTS,
        tests_lake::TESTS,
    ]);
    // The tests mostly wait (on queues, runs, retries): run many at once unless told otherwise.
    let first = libtest_mimic::run(&Arguments { test_threads: args.test_threads.or(Some(6)), ..args.clone() }, shared);
    // These take Supabase down or delete every compacted fragment: alone, one at a time, after.
    let alone = libtest_mimic::run(&Arguments { test_threads: Some(1), ..args }, trials(&[tests_outage::TESTS]));
    if first.has_failed() || alone.has_failed() {
        std::process::exit(101);
    }
}
