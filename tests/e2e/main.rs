//! End-to-end tests over HTTP against the whole local stack: both Workers under one
//! `wrangler dev`, local R2/D1/queues, the Supabase stand-in and its PostgreSQL.
//!
//! `scripts/test.sh` starts the stack once, runs this binary, and stops the stack. The
//! addresses and keys come from the environment it exports; run alone, this binary says which
//! variable is missing.

mod support;
mod tests_bad_input;
mod tests_compaction;
mod tests_stack;
mod tests_supabase;
mod tests_upload;

use libtest_mimic::{Arguments, Trial};

fn main() {
    let args = Arguments::from_args();
    let trials: Vec<Trial> = tests_stack::TESTS
        .iter()
        .chain(tests_supabase::TESTS)
        .chain(tests_upload::TESTS)
        .chain(tests_bad_input::TESTS)
        .chain(tests_compaction::TESTS)
        .map(|&(name, test)| Trial::test(name, move || test().map_err(Into::into)))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
