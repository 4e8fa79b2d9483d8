//! The client's contract: the battle tables the FUSOU client uploads and their columns, with
//! their types (`data/port_tables.json`, the client's own table list, committed here).
//!
//! The shared tables are governed by it, not by uploads: `fusou.<table>` exists only for a
//! table of the contract, and its schema holds exactly the contract's columns (with the
//! partition columns), each of the contract's type. An upload's other columns stay in its
//! owner's compacted files, unread by the table, and its other tables never become tables; the
//! reason is recorded on each file (`lake_note`, `lake_refused`) and shown on the dataset's
//! status route. So no uploader can add a field, fix a type before the client does, or make a
//! table.
//!
//! Changing the contract is a change to this repository: the file, and, for the tables that
//! exist, the next commit of each evolves its schema to the new contract (new columns as new
//! fields; Iceberg's promotions, int to long and float to double, widen a type).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::schema::Column;

const CONTRACT_JSON: &str = fusou_contract::PORT_TABLES_JSON;

/// The contract's tables, by name, each with its columns in the client's order.
#[derive(Debug)]
pub struct Contract {
    pub about: String,
    tables: BTreeMap<String, Vec<Column>>,
}

#[derive(Deserialize)]
struct File {
    about: String,
    uploaded_tables: Vec<String>,
    tables: BTreeMap<String, Vec<FileColumn>>,
}

#[derive(Deserialize)]
struct FileColumn {
    name: String,
    parquet: String,
}

impl Contract {
    /// The contract this build carries.
    pub fn client() -> &'static Contract {
        static CONTRACT: OnceLock<Contract> = OnceLock::new();
        CONTRACT.get_or_init(|| Contract::parse(CONTRACT_JSON).expect("data/port_tables.json is a valid contract"))
    }

    /// A contract in the format of `port_tables.json`: only its `uploaded_tables` are governed
    /// tables.
    pub fn parse(json: &str) -> Result<Contract, String> {
        let file: File = serde_json::from_str(json).map_err(|e| format!("the contract does not parse: {e}"))?;
        let mut tables = BTreeMap::new();
        for name in &file.uploaded_tables {
            let columns = file.tables.get(name).ok_or_else(|| format!("the contract lists {name} but not its columns"))?;
            let columns =
                columns.iter().map(|c| Ok(Column::new(c.name.clone(), iceberg_type(&c.parquet)?))).collect::<Result<Vec<_>, String>>()?;
            tables.insert(name.clone(), columns);
        }
        Ok(Contract { about: file.about, tables })
    }

    /// The columns of `table`, or `None` for a table outside the contract.
    pub fn table(&self, table: &str) -> Option<&[Column]> {
        self.tables.get(table).map(Vec::as_slice)
    }

    pub fn tables(&self) -> impl Iterator<Item = (&str, &[Column])> {
        self.tables.iter().map(|(name, columns)| (name.as_str(), columns.as_slice()))
    }
}

/// The Iceberg type of a column the contract gives as the client's Arrow type.
fn iceberg_type(arrow: &str) -> Result<&'static str, String> {
    Ok(match arrow {
        "Utf8" => "string",
        "Int32" => "int",
        "Int64" => "long",
        "Float32" => "float",
        "Float64" => "double",
        "Boolean" => "boolean",
        other => return Err(format!("the contract names a type {other} the client does not write")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_contract_is_the_clients_32_tables() {
        let contract = Contract::client();
        assert_eq!(contract.tables().count(), 32);
        assert!(contract.table("support_hourai").is_none(), "never uploaded, so never governed");
        assert!(contract.table("junk_table_1").is_none());
        let battle = contract.table("battle").unwrap();
        assert!(battle.iter().any(|c| c.name == "uuid" && c.kind == "string"));
        // The synthetic client writes exactly the contract's columns with its types.
        for table in fusou_synth::client_tables() {
            let columns = contract.table(table.name.as_str()).unwrap();
            let schema = fusou_synth::table_batch(table, 1, "env", &mut fusou_synth::Rng::new(1)).schema();
            assert_eq!(crate::schema::columns(&schema), columns, "{}", table.name);
        }
    }
}
