//! The embedded stand-in server: TDS in front of SQLite.

pub mod login;
