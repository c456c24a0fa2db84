//! Backends.
pub mod sqlite;
