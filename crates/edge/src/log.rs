//! Emits one structured log line (see `fusou_core::log`) at its level's console method.

use fusou_core::log::{Level, line};
use serde_json::Value;

pub fn emit(level: Level, event: &str, fields: Value) {
    let l = line(level, event, fields);
    match level {
        Level::Info => worker::console_log!("{l}"),
        Level::Warn => worker::console_warn!("{l}"),
        Level::Error => worker::console_error!("{l}"),
    }
}

pub fn info(event: &str, fields: Value) {
    emit(Level::Info, event, fields)
}

pub fn warn(event: &str, fields: Value) {
    emit(Level::Warn, event, fields)
}

pub fn error(event: &str, fields: Value) {
    emit(Level::Error, event, fields)
}
