//! Deployment settings: every variable a Worker reads, registered once ([`SETTINGS`]: its name,
//! default, the Workers that read it and one line of doc), and read only through [`Vars`], which
//! takes the default from the registry. `docs/reference.md`'s settings table is checked against
//! the registry by a test, and so are the local stack's overrides; nothing here touches `Env`
//! (the Worker passes a lookup function).

use std::fmt;

/// Which Workers read a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The upload Worker.
    Upload,
    /// The compaction Worker.
    Compaction,
    /// Both Workers.
    Both,
}

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reader::Upload => "upload",
            Reader::Compaction => "compaction",
            Reader::Both => "both",
        })
    }
}

/// One setting, as the registry and the docs state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable's name, as in the wrangler configs.
    pub name: &'static str,
    /// The Workers that read it.
    pub read_by: Reader,
    /// The default as the docs state it; a number's default is its leading digits.
    pub default: &'static str,
    /// What it does, in one line (Markdown).
    pub doc: &'static str,
}

impl Setting {
    /// The default of a numeric setting: the leading digits of [`Setting::default`].
    pub fn default_number(&self) -> Option<u64> {
        let digits: String = self.default.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
}

/// Every setting either Worker reads.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "SUPABASE_URL",
        read_by: Reader::Both,
        default: "(required)",
        doc: "the Supabase project; locally the stand-in, from the generated `.dev.vars`",
    },
    Setting { name: "SUPABASE_SERVICE_KEY", read_by: Reader::Both, default: "(required secret)", doc: "service key for PostgREST" },
    Setting {
        name: "UPLOAD_TOKEN_SECRET",
        read_by: Reader::Upload,
        default: "(required secret, ≥ 32 chars)",
        doc: "signs upload URLs; unset: uploads answer 500 \"misconfigured\"",
    },
    Setting {
        name: "OPERATOR_SECRET",
        read_by: Reader::Both,
        default: "(required secret, ≥ 32 chars)",
        doc: "bearer of the operator routes; the compaction Worker checks it too",
    },
    Setting {
        name: "LAKE_READ_SECRET",
        read_by: Reader::Upload,
        default: "unset",
        doc: "(secret, ≥ 32 chars) a read-only bearer for the open tables' readers: it opens the Iceberg REST catalog and `GET /lake/object`, and no other route (the operator secret opens them too)",
    },
    Setting {
        name: "SUPABASE_JWT_SECRET",
        read_by: Reader::Upload,
        default: "unset",
        doc: "legacy HS256 user tokens; unset refuses HS256",
    },
    Setting {
        name: "ENVIRONMENT",
        read_by: Reader::Both,
        default: "unset",
        doc: "`production` in the production environment: no test hook may be on there",
    },
    Setting {
        name: "ALLOW_ANONYMOUS_UPLOADS",
        read_by: Reader::Upload,
        default: "`false`",
        doc: "whether Supabase's anonymous sign-ins may upload (403 otherwise)",
    },
    Setting {
        name: "MAX_UPLOAD_BYTES",
        read_by: Reader::Upload,
        default: "16777216 (16 MiB)",
        doc: "largest fragment (413 above); at most 32 MiB, and no more than `COMPACTION_MAX_RUN_BYTES`",
    },
    Setting {
        name: "MAX_DIRECT_UPLOAD_BYTES",
        read_by: Reader::Upload,
        default: "16777216 (16 MiB)",
        doc: "largest `/compact/upload` file (413 above); at most 32 MiB",
    },
    Setting { name: "UPLOAD_TOKEN_TTL_SECONDS", read_by: Reader::Upload, default: "120", doc: "lifetime of an upload URL" },
    Setting {
        name: "MAX_UPLOAD_ROWS",
        read_by: Reader::Upload,
        default: "1000000",
        doc: "most rows one upload holds, all its tables together (413 above); a client's fragment holds hundreds",
    },
    Setting {
        name: "REALTIME_DELAY_SECONDS",
        read_by: Reader::Upload,
        default: "30",
        doc: "queue delay of upload-triggered compactions, so one run takes a burst",
    },
    Setting {
        name: "REMOTE_TIMEOUT_MS",
        read_by: Reader::Both,
        default: "5000",
        doc: "a Supabase call (REST, the key set) or a service-binding call gives up after this",
    },
    Setting { name: "BINDING_TIMEOUT_MS", read_by: Reader::Both, default: "30000", doc: "a D1, R2 or queue call gives up after this" },
    Setting {
        name: "COMPACTION_MAX_FRAGMENTS",
        read_by: Reader::Compaction,
        default: "500",
        doc: "fragments one run reads (consolidated files included)",
    },
    Setting {
        name: "COMPACTION_MAX_RUN_BYTES",
        read_by: Reader::Compaction,
        default: "33554432 (32 MiB)",
        doc: "fragment bytes one run holds in memory",
    },
    Setting {
        name: "COMPACTION_CONCURRENT_RUNS",
        read_by: Reader::Compaction,
        default: "10",
        doc: "runs of different datasets a queue batch runs side by side, within the memory of one run at its caps (1: one at a time)",
    },
    Setting {
        name: "COMPACTION_MAX_OUTPUTS",
        read_by: Reader::Compaction,
        default: "128",
        doc: "outputs one run plans: distinct (period, table) of its fragments and the files it consolidates",
    },
    Setting {
        name: "COMPACTION_MERGE_STEP_BYTES",
        read_by: Reader::Compaction,
        default: "8388608 (8 MiB)",
        doc: "input bytes of the consecutive outputs one checkpointed merge step writes: a crash costs at most one step's merging, each step one D1 write",
    },
    Setting {
        name: "COMPACTION_FAN_IN",
        read_by: Reader::Compaction,
        default: "8",
        doc: "files of one size tier that the next run merges into one (below 2: no consolidation)",
    },
    Setting {
        name: "COMPACTION_SMALL_FILE_BYTES",
        read_by: Reader::Compaction,
        default: "4194304 (4 MiB)",
        doc: "compacted files from this size up are never merged again",
    },
    Setting {
        name: "COMPACTION_RETRY_DELAY_SECONDS",
        read_by: Reader::Compaction,
        default: "10",
        doc: "a failed message comes back after this",
    },
    Setting {
        name: "FRAGMENT_RETENTION_DAYS",
        read_by: Reader::Compaction,
        default: "7",
        doc: "compacted fragments' objects, retired files, finished runs' checkpoints and refused uploads' tombstones are deleted after this",
    },
    Setting {
        name: "ORPHAN_GRACE_MINUTES",
        read_by: Reader::Compaction,
        default: "60",
        doc: "a staged output this old, of a run holding no lease, is an orphan",
    },
    Setting {
        name: "LAKE_LOCATION",
        read_by: Reader::Both,
        default: "`s3://fusou-battle-data`",
        doc: "where readers of the open tables find the bucket's keys: R2's S3 API in production; the local stack's mirror directory (`file://…`)",
    },
    Setting {
        name: "LAKE_SNAPSHOT_DAYS",
        read_by: Reader::Compaction,
        default: "7",
        doc: "the open tables keep snapshots (time travel) this long: an older one expires once `LAKE_MIN_SNAPSHOTS` newer ones are kept (as R2 Data Catalog's `max_snapshot_age`)",
    },
    Setting {
        name: "LAKE_MIN_SNAPSHOTS",
        read_by: Reader::Compaction,
        default: "100",
        doc: "the newest snapshots a table keeps whatever their age (as R2 Data Catalog's `min_snapshots_to_keep`)",
    },
    Setting {
        name: "LAKE_GRACE_MINUTES",
        read_by: Reader::Compaction,
        default: "60",
        doc: "what only an expired snapshot referenced is deleted this long after it expired, so that a reader still planning from it finds its files",
    },
    Setting {
        name: "LAKE_COMMIT_INTERVAL_SECONDS",
        read_by: Reader::Compaction,
        default: "60",
        doc: "the open tables' committer gives each table at most one snapshot this often, taking every run's files pending for it (as Pipelines' roll interval)",
    },
    Setting {
        name: "LAKE_ROLLUP_MIN_FILES",
        read_by: Reader::Compaction,
        default: "32",
        doc: "a table's period is rolled up (its files across datasets rewritten into a few large ones, by the clean-up) once the table lists at least this many of its files on their own",
    },
    Setting {
        name: "LAKE_ROLLUP_TARGET_MB",
        read_by: Reader::Compaction,
        default: "256",
        doc: "the size a roll-up's output files are packed to (whole datasets; one larger dataset is a file of its own)",
    },
    Setting {
        name: "TEST_HOOKS",
        read_by: Reader::Both,
        default: "`off`",
        doc: "test stacks only (refused where `ENVIRONMENT` is `production`): crashes injected into runs, `POST /compact/replay?unchecked`, `POST /compact/sql` (one statement on D1 through the binding, for the tests' own writes; 404 elsewhere), clean-up ages per request, `INJECT_LATENCY_MS`",
    },
    Setting {
        name: "INJECT_LATENCY_MS",
        read_by: Reader::Both,
        default: "0",
        doc: "test stacks only: added before every remote call (D1, R2, queue, Supabase, service binding), as a network would",
    },
];

/// The registered setting `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// A variable that holds no value its setting accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("variable {name} = {value:?} is not {expected}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What it holds.
    pub value: String,
    /// What it must hold.
    pub expected: &'static str,
}

/// A Worker's variables, read through the registry: a name outside it is a bug (a debug build
/// panics, so that the native tests of every settings type find it).
pub struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Vars<'a> {
    /// Variables looked up by `get` (unset: `None`).
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { get }
    }

    fn registered(name: &str) -> &'static Setting {
        setting(name).unwrap_or_else(|| panic!("{name} is read but not registered in fusou_ports::settings::SETTINGS"))
    }

    /// The value of `name`, trimmed; `None` when unset or blank.
    pub fn text(&self, name: &'static str) -> Option<String> {
        debug_assert!(setting(name).is_some(), "{name} is read but not registered in fusou_ports::settings::SETTINGS");
        (self.get)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The value of `name`, which must be set.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.text(name).ok_or(ConfigError { name, value: String::new(), expected: "set" })
    }

    /// A whole number, or the registered default when unset.
    pub fn number(&self, name: &'static str) -> Result<u64, ConfigError> {
        match self.text(name) {
            None => Ok(Self::registered(name).default_number().unwrap_or_else(|| panic!("{name} has no numeric default"))),
            Some(v) => v.parse().map_err(|_| ConfigError { name, value: v, expected: "a whole number" }),
        }
    }

    /// A whole number above 0, or the registered default when unset.
    pub fn positive(&self, name: &'static str) -> Result<u64, ConfigError> {
        match self.number(name)? {
            0 => Err(ConfigError { name, value: "0".into(), expected: "a positive number" }),
            n => Ok(n),
        }
    }

    /// `true` or `false`, or the registered default (`false` unless it says `true`) when unset.
    pub fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.text(name).as_deref() {
            None => Ok(Self::registered(name).default.contains("true")),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ConfigError { name, value: v.to_owned(), expected: "true or false" }),
        }
    }

    /// A queue delay in seconds, or the registered default, held to the 12 hours a queue
    /// delays a message at most.
    pub fn queue_delay_secs(&self, name: &'static str) -> Result<u32, ConfigError> {
        Ok(self.number(name)?.min(MAX_QUEUE_DELAY_SECS as u64) as u32)
    }
}

/// The longest a queue delays a message (12 hours).
pub const MAX_QUEUE_DELAY_SECS: u32 = 43_200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_registered_once_with_a_default_its_reader_takes() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(SETTINGS[..i].iter().all(|t| t.name != s.name), "{} registered twice", s.name);
            assert!(!s.doc.is_empty() && !s.default.is_empty(), "{}", s.name);
        }
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let empty = vars(&[]);
        let v = Vars::new(&empty);
        assert_eq!(v.number("MAX_UPLOAD_ROWS"), Ok(1_000_000), "the default is the registry's");
        assert_eq!(v.flag("ALLOW_ANONYMOUS_UPLOADS"), Ok(false));
        assert_eq!(v.required("SUPABASE_URL").unwrap_err().name, "SUPABASE_URL");
        let set = vars(&[("REALTIME_DELAY_SECONDS", " 90000 "), ("COMPACTION_FAN_IN", "x"), ("REMOTE_TIMEOUT_MS", "0")]);
        let v = Vars::new(&set);
        assert_eq!(v.queue_delay_secs("REALTIME_DELAY_SECONDS"), Ok(MAX_QUEUE_DELAY_SECS), "a queue delays 12 hours at most");
        assert_eq!(v.number("COMPACTION_FAN_IN").unwrap_err().expected, "a whole number");
        assert_eq!(v.positive("REMOTE_TIMEOUT_MS").unwrap_err().name, "REMOTE_TIMEOUT_MS");
    }

    #[test]
    #[should_panic(expected = "not registered")]
    fn a_setting_outside_the_registry_is_a_bug() {
        let get = |_: &str| None;
        let _ = Vars::new(&get).text("SOME_NEW_SETTING");
    }
}
