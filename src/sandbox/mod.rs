//! The embedded stand-in server: an execution engine that runs T-SQL on SQLite.
//!
//! The TDS front end lives elsewhere; `engine` takes T-SQL text and typed parameters and
//! streams typed result sets to a sink.

pub mod engine;
pub mod login;
pub mod results;
pub mod rpc;
pub mod server;

pub use server::{RoutingTarget, Sandbox, SandboxError, SandboxHandle, SandboxOptions, TlsSource};
