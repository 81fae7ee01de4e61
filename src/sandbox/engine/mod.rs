//! Execution engine of the sandbox.
pub mod catalog;
pub mod errors;
pub mod session;
pub mod translate;
pub mod types;
