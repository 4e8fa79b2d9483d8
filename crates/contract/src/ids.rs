//! Identifiers that end up in storage keys and queries.
//!
//! Each is checked once, where it enters, and then carried as a validated newtype so that no
//! unchecked string can reach an R2 key or a SQL statement.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted dataset id: a UUID is 36 characters, a SHA-256 digest 64.
pub const MAX_DATASET_ID_LEN: usize = 128;
/// Longest accepted table name.
pub const MAX_TABLE_LEN: usize = 64;
/// Longest accepted period tag (`YYYY-MM-DD` is 10; leaves room for other tag styles).
pub const MAX_PERIOD_TAG_LEN: usize = 32;

/// The columns that carry a row's period and dataset in every compacted file (and the open
/// tables' partition source columns): set by the engine from the upload's own metadata, never
/// taken from an uploader's bytes.
pub const PERIOD_COLUMN: &str = "period_tag";
/// See [`PERIOD_COLUMN`].
pub const DATASET_COLUMN: &str = "dataset_id";

/// Why an identifier was refused. Each variant's message says what it means; `what` names the
/// identifier (dataset id, table, period tag).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} may contain only {allowed}")]
    BadCharacter { what: &'static str, allowed: &'static str },
}

fn check(what: &'static str, value: &str, max: usize, allowed: &'static str, ok: impl Fn(usize, char) -> bool) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.chars().count() > max {
        return Err(IdError::TooLong { what, max });
    }
    if !value.char_indices().all(|(i, c)| ok(i, c)) {
        return Err(IdError::BadCharacter { what, allowed });
    }
    Ok(())
}

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier, as it was accepted.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(v: String) -> Result<Self, IdError> {
                Self::parse(&v)
            }
        }
    };
}

validated_string!(
    /// A dataset id: letters, digits, `-` and `_`. Older clients send a UUID, newer ones a
    /// 64-character hex digest; older ones also append a newline, which [`DatasetId::parse`] trims.
    DatasetId
);
validated_string!(
    /// A table name: a lowercase identifier (`port_table`, `battle`, …).
    TableName
);
validated_string!(
    /// A period tag: word characters and `-` (`2025-11-05`, or `0` when the client did not know it).
    PeriodTag
);

impl DatasetId {
    /// A dataset id: ASCII letters, digits, `-` and `_` (surrounding spaces trimmed).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let v = raw.trim();
        check("dataset id", v, MAX_DATASET_ID_LEN, "ASCII letters, digits, '-' and '_'", |_, c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '_'
        })?;
        Ok(Self(v.to_owned()))
    }
}

impl TableName {
    /// A table name: lowercase letters, digits and `_`, starting with a letter.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check("table", raw, MAX_TABLE_LEN, "lowercase letters, digits and '_', starting with a letter", |i, c| {
            c.is_ascii_lowercase() || (i > 0 && (c.is_ascii_digit() || c == '_'))
        })?;
        Ok(Self(raw.to_owned()))
    }
}

impl PeriodTag {
    /// A period tag: ASCII letters, digits, `_` and `-`.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check("period tag", raw, MAX_PERIOD_TAG_LEN, "ASCII letters, digits, '_' and '-'", |_, c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })?;
        Ok(Self(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_ids_from_old_and_new_clients() {
        let uuid = "3f0c2c0e-6a43-4a59-9d7b-1a2b3c4d5e6f\n";
        assert_eq!(DatasetId::parse(uuid).unwrap().as_str(), uuid.trim());
        let digest = "9b74c9897bac770ffc029102a200c5de9b74c9897bac770ffc029102a200c5de";
        assert_eq!(DatasetId::parse(digest).unwrap().as_str(), digest);
    }

    #[test]
    fn dataset_ids_that_would_escape_a_key_are_refused() {
        for bad in ["", " \n", "../x", "a/b", "a.b", "a b", "ü", &"a".repeat(129)] {
            assert!(DatasetId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn table_names() {
        assert!(TableName::parse("port_table").is_ok());
        assert!(TableName::parse("battle2").is_ok());
        for bad in ["", "Battle", "_x", "1x", "a-b", "a/b", "..", &"a".repeat(65)] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn period_tags() {
        for ok in ["2025-11-05", "0", "2025_w3"] {
            assert!(PeriodTag::parse(ok).is_ok(), "{ok:?} refused");
        }
        for bad in ["", "2025/11/05", "a b", "../", &"1".repeat(33)] {
            assert!(PeriodTag::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: DatasetId = serde_json::from_str("\"abc-1\"").unwrap();
        assert_eq!(ok.as_str(), "abc-1");
        assert!(serde_json::from_str::<TableName>("\"../etc\"").is_err());
    }
}
