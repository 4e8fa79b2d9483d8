//! One module per route group; each handler reads its input, calls the core, answers.

pub mod datasets;
pub mod direct;
pub mod health;
pub mod lake;
pub mod openapi;
pub mod operator;
pub mod sanitize;
pub mod trigger;
pub mod upload;
