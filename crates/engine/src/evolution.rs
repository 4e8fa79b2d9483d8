//! Schema fingerprints and additive evolution.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use fusou_contract::ids::{DATASET_COLUMN, PERIOD_COLUMN};
use sha2::{Digest, Sha256};

/// A stable digest of a schema: its fields' names, types and nullability, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The digest, as hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fingerprint of `schema`: its fields' names, types and nullability, in order.
pub fn fingerprint(schema: &Schema) -> Fingerprint {
    let mut hasher = Sha256::new();
    for field in schema.fields() {
        hasher.update(format!("{}\u{1f}{}\u{1f}{}\u{1e}", field.name(), field.data_type(), field.is_nullable()));
    }
    Fingerprint(hex::encode(&hasher.finalize()[..8]))
}

/// Whether `b`'s columns can join `a`'s: every column name they share has one type.
fn compatible(a: &Schema, b: &Schema) -> bool {
    b.fields().iter().all(|fb| a.field_with_name(fb.name()).map_or(true, |fa| fa.data_type() == fb.data_type()))
}

/// `a`'s columns then `b`'s new ones; a column missing from either side becomes nullable.
fn superset(a: &Schema, b: &Schema) -> Schema {
    let mut fields: Vec<Field> = a
        .fields()
        .iter()
        .map(|fa| {
            let nullable = fa.is_nullable() || b.field_with_name(fa.name()).map_or(true, |fb| fb.is_nullable());
            fa.as_ref().clone().with_nullable(nullable)
        })
        .collect();
    for fb in b.fields() {
        if a.field_with_name(fb.name()).is_err() {
            fields.push(fb.as_ref().clone().with_nullable(true));
        }
    }
    Schema::new(fields)
}

/// One output schema of a table and the input schemas it takes.
#[derive(Debug, Clone)]
pub struct SchemaGroup {
    /// The superset schema its members are merged under.
    pub schema: SchemaRef,
    /// The superset's fingerprint.
    pub fingerprint: Fingerprint,
    /// The fingerprints of the schemas it unifies.
    pub members: Vec<Fingerprint>,
}

/// Groups the distinct schemas of one table: in fingerprint order, each joins the first group
/// it is compatible with (widening its superset) or starts a new one. Deterministic.
pub fn unify(schemas: &HashMap<Fingerprint, SchemaRef>) -> Vec<SchemaGroup> {
    let mut ordered: Vec<(&Fingerprint, &SchemaRef)> = schemas.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(b.0));
    let mut groups: Vec<(Schema, Vec<Fingerprint>)> = Vec::new();
    for (fp, schema) in ordered {
        match groups.iter_mut().find(|(g, _)| compatible(g, schema)) {
            Some((g, members)) => {
                *g = superset(g, schema);
                members.push(fp.clone());
            }
            None => groups.push((schema.as_ref().clone(), vec![fp.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(schema, members)| {
            let schema = Arc::new(Schema::new(schema.fields().clone()));
            // Named without the period and dataset columns, which every output writes itself:
            // a compacted file merged again (which has them) keeps its inputs' fingerprint.
            let own = schema.fields().iter().filter(|f| f.name() != PERIOD_COLUMN && f.name() != DATASET_COLUMN).cloned();
            SchemaGroup { fingerprint: fingerprint(&Schema::new(own.collect::<Vec<_>>())), schema, members }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow_schema::DataType;

    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
    }

    fn groups(schemas: &[SchemaRef]) -> Vec<SchemaGroup> {
        unify(&schemas.iter().map(|s| (fingerprint(s), s.clone())).collect())
    }

    #[test]
    fn fingerprints_see_names_types_nullability_and_order() {
        let a = schema(&[("a", DataType::Int32), ("b", DataType::Utf8)]);
        assert_eq!(fingerprint(&a), fingerprint(&schema(&[("a", DataType::Int32), ("b", DataType::Utf8)])));
        assert_ne!(fingerprint(&a), fingerprint(&schema(&[("b", DataType::Utf8), ("a", DataType::Int32)])));
        assert_ne!(fingerprint(&a), fingerprint(&schema(&[("a", DataType::Int64), ("b", DataType::Utf8)])));
        let strict = Schema::new(vec![Field::new("a", DataType::Int32, false), Field::new("b", DataType::Utf8, true)]);
        assert_ne!(fingerprint(&a), fingerprint(&strict));
    }

    #[test]
    fn added_columns_merge_into_a_superset() {
        let old = schema(&[("a", DataType::Int32), ("b", DataType::Utf8)]);
        let new = schema(&[("a", DataType::Int32), ("b", DataType::Utf8), ("c", DataType::Int64)]);
        let g = groups(&[old, new.clone()]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].members.len(), 2);
        assert_eq!(g[0].schema.fields().len(), 3);
        assert!(g[0].schema.fields().iter().all(|f| f.is_nullable()));
    }

    #[test]
    fn one_name_two_types_splits() {
        let a = schema(&[("a", DataType::Int32)]);
        let b = schema(&[("a", DataType::Utf8)]);
        let c = schema(&[("a", DataType::Int32), ("x", DataType::Utf8)]);
        let g = groups(&[a, b, c]);
        assert_eq!(g.len(), 2);
        let sizes: Vec<usize> = g.iter().map(|g| g.members.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 3);
        assert!(sizes.contains(&2) && sizes.contains(&1));
    }

    #[test]
    fn grouping_is_deterministic() {
        let a = schema(&[("a", DataType::Int32)]);
        let b = schema(&[("b", DataType::Int32)]);
        let c = schema(&[("a", DataType::Utf8)]);
        let one = groups(&[a.clone(), b.clone(), c.clone()]);
        let two = groups(&[c, b, a]);
        let fps = |g: &[SchemaGroup]| g.iter().map(|g| g.fingerprint.clone()).collect::<Vec<_>>();
        assert_eq!(fps(&one), fps(&two));
    }
}
