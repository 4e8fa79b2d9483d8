//! The committed configuration deploys as it is. Both wrangler configs have a production
//! environment with every binding; the two agree on the bucket, database, queue and service;
//! nothing in them points at this machine; the compaction Worker has no public URL; no test hook
//! is on in production; the limits fit what the Workers can hold; and every setting is read
//! through the registry (`fusou_ports::settings`) by the Workers it names, is documented as it
//! says, and is the only kind of variable the configs and the local stack set. (`scripts/test.sh` also runs `wrangler deploy --dry-run --env
//! production` for both.)

use std::path::{Path, PathBuf};

use std::cell::RefCell;
use std::collections::BTreeSet;

use fusou_core::config::Vars;
use fusou_ports::settings::{self, Reader};
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
        let get = |name: &str| vars.get(name).and_then(Value::as_str).map(str::to_owned);
        let platform = fusou_core::config::Platform::from_vars(&Vars::new(&get)).unwrap();
        assert!(platform.production && !platform.test_hooks, "{path}");
    }
}

#[test]
fn the_limits_fit_what_the_workers_hold() {
    let (upload, compaction) = (config(UPLOAD), config(COMPACTION));
    for (up, comp) in [(&upload, &compaction), (production(&upload), production(&compaction))] {
        let up_vars = up["vars"].as_table().unwrap();
        let comp_vars = comp["vars"].as_table().unwrap();
        let up_get = |name: &str| up_vars.get(name).and_then(Value::as_str).map(str::to_owned);
        let comp_get = |name: &str| comp_vars.get(name).and_then(Value::as_str).map(str::to_owned);
        let limits = fusou_core::upload::UploadLimits::from_vars(&Vars::new(&up_get)).unwrap();
        let run = fusou_compaction::CompactionSettings::from_vars(&Vars::new(&comp_get)).unwrap().run;
        // Every accepted fragment fits one run's bytes, so none is set aside for its size.
        assert!(limits.max_fragment_bytes <= number(comp_vars, "COMPACTION_MAX_RUN_BYTES"));
        assert!(limits.max_direct_bytes <= run.max_fragment_bytes);
        // A batch of runs stays within one invocation's 10,000 subrequests.
        let batch = get(comp, &["queues", "consumers"]).as_array().unwrap()[0]["max_batch_size"].as_integer().unwrap() as u64;
        assert!(batch * run.subrequests_at_most() <= 10_000, "{batch} runs of up to {} subrequests", run.subrequests_at_most());
    }
}

/// The settings each Worker's settings types read, recorded as they ask for them.
fn settings_read() -> (BTreeSet<&'static str>, BTreeSet<&'static str>) {
    let asked = RefCell::new(Vec::new());
    let get = |name: &str| {
        asked.borrow_mut().push(settings::setting(name).expect("registered").name);
        matches!(name, "SUPABASE_URL" | "SUPABASE_SERVICE_KEY").then(|| "set".to_owned())
    };
    let vars = Vars::new(&get);
    let take = || asked.borrow_mut().drain(..).collect::<BTreeSet<_>>();
    fusou_core::config::Shared::from_vars(&vars).unwrap();
    let shared = take();
    fusou_core::config::UploadSettings::from_vars(&vars).unwrap();
    fusou_lake::rest::lake_root(&vars).unwrap();
    let upload = take();
    fusou_compaction::CompactionSettings::from_vars(&vars).unwrap();
    let compaction = take();
    (shared.union(&upload).copied().collect(), shared.union(&compaction).copied().collect())
}

#[test]
fn every_setting_is_read_by_the_workers_the_registry_names() {
    let (upload, compaction) = settings_read();
    for s in settings::SETTINGS {
        let by = (upload.contains(s.name), compaction.contains(s.name));
        let expected = match s.read_by {
            Reader::Upload => (true, false),
            Reader::Compaction => (false, true),
            Reader::Both => (true, true),
        };
        assert_eq!(by, expected, "{} is registered as read by {}, but read by (upload, compaction) = {by:?}", s.name, s.read_by);
    }
}

/// The settings table of docs/reference.md, as the registry gives it.
fn settings_table() -> String {
    let mut table = String::from("| variable | Worker | default | what |\n|---|---|---|---|\n");
    for s in settings::SETTINGS {
        table.push_str(&format!("| `{}` | {} | {} | {} |\n", s.name, s.read_by, s.default, s.doc));
    }
    table
}

#[test]
fn the_documented_settings_are_the_registry() {
    let path = root().join("docs/reference.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find("| variable | Worker | default | what |").expect("the settings table");
    let end = start + doc[start..].find("\n\n").expect("a blank line after the table") + 1;
    if std::env::var("FUSOU_WRITE_DOCS").is_ok() {
        std::fs::write(&path, format!("{}{}{}", &doc[..start], settings_table(), &doc[end..])).unwrap();
    }
    assert_eq!(doc[start..end], settings_table(), "docs/reference.md's settings table (FUSOU_WRITE_DOCS=1 writes it from the registry)");
}

#[test]
fn the_configs_and_the_local_stack_set_only_registered_settings() {
    for path in [UPLOAD, COMPACTION] {
        let whole = config(path);
        for section in [&whole, production(&whole)] {
            for name in section["vars"].as_table().expect("vars").keys() {
                assert!(settings::setting(name).is_some(), "{path} sets {name}, which no Worker reads");
            }
        }
    }
    // The stack passes `FUSOU_<NAME>` on as `<NAME>` for the settings it lists.
    let stack = std::fs::read_to_string(root().join("scripts/stack.sh")).unwrap();
    let list = stack.split_once("for name in ").and_then(|(_, rest)| rest.split_once(';')).expect("the stack's overrides").0;
    for name in list.split_whitespace() {
        assert!(settings::setting(name).is_some(), "the stack overrides {name}, which no Worker reads");
    }
    // What the test command sets: those overrides, the test hooks, and the queue's batch wait
    // (a wrangler setting, not a variable).
    let test = std::fs::read_to_string(root().join("scripts/test.sh")).unwrap();
    let overrides = test.split_once("export FUSOU_REALTIME_DELAY_SECONDS").expect("the test stack's overrides").1;
    // The one `export` statement, continued over lines ending in `\`.
    let mut statement = String::new();
    for line in overrides.lines() {
        statement.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            break;
        }
    }
    let exported: Vec<&str> = std::iter::once("REALTIME_DELAY_SECONDS")
        .chain(statement.split_whitespace().filter_map(|w| w.strip_prefix("FUSOU_").and_then(|w| w.split_once('=')).map(|(n, _)| n)))
        .collect();
    assert!(exported.contains(&"REALTIME_DELAY_SECONDS"), "{exported:?}");
    for name in exported {
        let passed = list.split_whitespace().any(|n| n == name) || name == "TEST_HOOKS";
        assert!(
            passed || matches!(name, "QUEUE_BATCH_TIMEOUT" | "FUZZ_SECONDS"),
            "the test command sets FUSOU_{name}, which the stack does not pass on"
        );
    }
}
