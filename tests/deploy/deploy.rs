//! The committed configuration deploys as it is. Both wrangler configs have a production
//! environment with every binding; the two agree on the bucket, database, queue and service;
//! nothing in them points at this machine; the compaction Worker has no public URL; no test hook
//! is on in production; the limits fit what the Workers can hold; and every setting the code
//! reads is documented. (`scripts/test.sh` also runs `wrangler deploy --dry-run --env
//! production` for both.)

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// The checkout, found when the test runs (cargo sets `CARGO_MANIFEST_DIR` then too): a shared
/// target directory may hold a binary built from another checkout of the same sources.
fn root() -> PathBuf {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest).join("../..")
}

fn config(path: &str) -> Table {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(!text.contains("127.0.0.1") && !text.contains("localhost"), "{path} points at this machine");
    text.parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

const UPLOAD: &str = "wrangler.toml";
const COMPACTION: &str = "crates/compaction-worker/wrangler.toml";

fn production(t: &Table) -> &Table {
    t["env"]["production"].as_table().expect("an [env.production]")
}

/// The value at `path` (keys, from `t` down).
fn get<'a>(t: &'a Table, path: &[&str]) -> &'a Value {
    let (head, rest) = path.split_first().expect("a path");
    let mut cur = t.get(*head).unwrap_or_else(|| panic!("no {path:?}"));
    for key in rest {
        cur = cur.get(*key).unwrap_or_else(|| panic!("no {path:?}"));
    }
    cur
}

fn text<'a>(t: &'a Table, path: &[&str]) -> &'a str {
    get(t, path).as_str().unwrap_or_else(|| panic!("{path:?} is not text"))
}

/// The first table of the list at `path` (`"queues.producers"`, say).
fn first<'a>(t: &'a Table, path: &str) -> &'a Table {
    let keys: Vec<&str> = path.split('.').collect();
    get(t, &keys).as_array().and_then(|a| a.first()).and_then(Value::as_table).unwrap_or_else(|| panic!("no {path}"))
}

fn number(vars: &Table, name: &str) -> u64 {
    vars[name].as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} is not a whole number"))
}

#[test]
fn both_production_environments_declare_every_binding_and_agree() {
    let (upload, compaction) = (config(UPLOAD), config(COMPACTION));
    for (name, whole) in [(UPLOAD, &upload), (COMPACTION, &compaction)] {
        for section in [whole, production(whole)] {
            let bucket = first(section, "r2_buckets");
            assert_eq!(text(bucket, &["binding"]), "BATTLE_DATA_BUCKET", "{name}");
            assert_eq!(text(bucket, &["bucket_name"]), "fusou-battle-data", "{name}");
            let db = first(section, "d1_databases");
            assert_eq!(text(db, &["binding"]), "BATTLE_INDEX_DB", "{name}");
            assert_eq!(text(db, &["database_name"]), "fusou-battle-index", "{name}");
            assert_eq!(
                text(db, &["database_id"]),
                text(first(production(&upload), "d1_databases"), &["database_id"]),
                "{name}: one database"
            );
            let producer = first(section, "queues.producers");
            assert_eq!((text(producer, &["binding"]), text(producer, &["queue"])), ("COMPACTION_QUEUE", "fusou-compaction"), "{name}");
            assert!(get(section, &["triggers", "crons"]).as_array().is_some_and(|c| c.len() == 1), "{name}: its schedule");
        }
    }
    // The upload Worker binds to the compaction Worker by the name it deploys under.
    for section in [&upload, production(&upload)] {
        let service = first(section, "services");
        assert_eq!(
            (text(service, &["binding"]), text(service, &["service"])),
            ("COMPACTION_SERVICE", text(production(&compaction), &["name"]))
        );
    }
    assert_eq!(text(production(&upload), &["name"]), "fusou-upload");
    for section in [&compaction, production(&compaction)] {
        let consumers = get(section, &["queues", "consumers"]).as_array().expect("consumers");
        let queues: Vec<&str> = consumers.iter().map(|c| c["queue"].as_str().unwrap()).collect();
        assert_eq!(queues, ["fusou-compaction", "fusou-compaction-dlq"]);
        assert_eq!(consumers[0]["dead_letter_queue"].as_str(), Some("fusou-compaction-dlq"));
        assert_eq!(get(section, &["limits", "cpu_ms"]).as_integer(), Some(300_000), "merging is CPU work");
    }
}

#[test]
fn the_compaction_worker_has_no_public_url() {
    let compaction = config(COMPACTION);
    for section in [&compaction, production(&compaction)] {
        assert_eq!(section.get("workers_dev").and_then(Value::as_bool), Some(false), "no *.workers.dev URL");
        assert_eq!(section.get("preview_urls").and_then(Value::as_bool), Some(false), "no preview URLs");
        assert!(section.get("routes").is_none() && section.get("route").is_none(), "no route");
    }
}

#[test]
fn production_turns_no_test_hook_on_and_names_itself() {
    for path in [UPLOAD, COMPACTION] {
        let whole = config(path);
        for section in [&whole, production(&whole)] {
            let vars = section["vars"].as_table().expect("vars");
            for hook in ["TEST_HOOKS", "INJECT_LATENCY_MS"] {
                assert!(!vars.contains_key(hook), "{path} sets {hook}: test stacks set it in their .dev.vars only");
            }
        }
        let vars = production(&whole)["vars"].as_table().expect("production vars");
        assert_eq!(vars["ENVIRONMENT"].as_str(), Some("production"), "{path}");
        let platform = fusou_core::config::Platform::from_vars(|name| vars.get(name).and_then(Value::as_str).map(str::to_owned)).unwrap();
        assert!(platform.production && !platform.test_hooks, "{path}");
    }
}

#[test]
fn the_limits_fit_what_the_workers_hold() {
    let (upload, compaction) = (config(UPLOAD), config(COMPACTION));
    for (up, comp) in [(&upload, &compaction), (production(&upload), production(&compaction))] {
        let up_vars = up["vars"].as_table().unwrap();
        let comp_vars = comp["vars"].as_table().unwrap();
        let limits =
            fusou_core::upload::UploadLimits::from_vars(|name| up_vars.get(name).and_then(Value::as_str).map(str::to_owned)).unwrap();
        let run = fusou_compaction::RunConfig::from_vars(|name| comp_vars.get(name).and_then(Value::as_str).map(str::to_owned)).unwrap();
        // Every accepted fragment fits one run's bytes, so none is set aside for its size.
        assert!(limits.max_fragment_bytes <= number(comp_vars, "COMPACTION_MAX_RUN_BYTES"));
        assert!(limits.max_direct_bytes <= run.max_fragment_bytes);
        // A batch of runs stays within one invocation's 10,000 subrequests.
        let batch = get(comp, &["queues", "consumers"]).as_array().unwrap()[0]["max_batch_size"].as_integer().unwrap() as u64;
        assert!(batch * run.subrequests_at_most() <= 10_000, "{batch} runs of up to {} subrequests", run.subrequests_at_most());
    }
}

/// The names of the settings a Worker reads: the string literals passed to the settings
/// readers of `fusou-core` and the Workers.
fn settings_read() -> Vec<String> {
    let readers =
        ["number(\"", "number(&get, \"", "flag(&get, \"", "positive(\"", "body_limit(\"", "get(\"", "required(\"", "var(&env, \""];
    let mut names = Vec::new();
    for dir in ["crates/ports/src", "crates/core/src", "crates/lake/src", "crates/compaction/src", "crates/edge/src", "crates/upload-worker/src", "crates/compaction-worker/src"] {
        let mut stack = vec![root().join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for reader in readers {
                for (at, _) in source.match_indices(reader) {
                    let rest = &source[at + reader.len()..];
                    let name: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
                    if name.len() > 3 && rest[name.len()..].starts_with('"') && !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    names.sort();
    names
}

#[test]
fn every_setting_the_code_reads_is_documented() {
    let names = settings_read();
    for expected in
        ["SUPABASE_URL", "MAX_UPLOAD_BYTES", "COMPACTION_MAX_OUTPUTS", "TEST_HOOKS", "REMOTE_TIMEOUT_MS", "FRAGMENT_RETENTION_DAYS"]
    {
        assert!(names.iter().any(|n| n == expected), "the scan finds {expected}: {names:?}");
    }
    let mut docs = std::fs::read_to_string(root().join("README.md")).unwrap();
    if let Ok(entries) = std::fs::read_dir(root().join("docs")) {
        for e in entries {
            docs.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
        }
    }
    let undocumented: Vec<&String> = names.iter().filter(|n| !docs.contains(&format!("`{n}`"))).collect();
    assert!(undocumented.is_empty(), "settings read but not documented: {undocumented:?}");
}
