//! The embedded stand-in server: TDS in front of SQLite.

pub mod login;
pub mod results;
pub mod rpc;
pub mod server;

pub use server::{RoutingTarget, Sandbox, SandboxError, SandboxHandle, SandboxOptions, TlsSource};
