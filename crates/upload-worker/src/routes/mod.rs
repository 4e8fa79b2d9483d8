//! One module per route group; each handler reads its input, calls the core, answers.

pub(crate) mod datasets;
pub(crate) mod direct;
pub(crate) mod health;
pub(crate) mod lake;
pub(crate) mod openapi;
pub(crate) mod operator;
pub(crate) mod sanitize;
pub(crate) mod trigger;
pub(crate) mod upload;
