//! The stand-in as the local stack starts it: a missing setting stops it at once, named.

use std::process::Command;

#[test]
fn serve_without_its_database_refuses_to_start_and_names_the_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_fusou-supabase-local")).arg("serve").env_clear().output().expect("the stand-in runs");
    assert!(!out.status.success(), "started without a database");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
}
