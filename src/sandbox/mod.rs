//! The embedded stand-in server: TDS in front of SQLite.

pub mod engine;
pub mod login;
