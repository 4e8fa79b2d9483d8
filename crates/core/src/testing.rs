//! Test support shared by the unit tests: SQLite with every D1 migration applied.

use rusqlite::Connection;

/// An in-memory SQLite database with `migrations/*.sql` applied in order, as D1 applies them.
pub fn migrated_sqlite() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        conn.execute_batch(&std::fs::read_to_string(&f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    conn
}
