//! The relay: one task per application connection, each with its own TLS
//! connection to the server.
//!
//! - [`listener`]: accepting, the connection limit, shutdown and draining.
//! - [`connection`]: one connection from accept to close, and its states.
//! - [`client_handshake`]: PRELOGIN, TLS and LOGIN7 on the application leg.
//! - [`upstream`]: tdsguard's own PRELOGIN and TLS toward the server.
//! - [`login`] and [`redirect`]: the login exchange and Azure routing.
//! - [`pump`]: the request/response loop, with [`attention`] tracking.
//! - [`hook`]: where column encryption rewrites messages; [`columns`] does it.

pub mod attention;
pub mod client_handshake;
pub mod columns;
pub mod connection;
pub mod error;
pub mod hook;
pub mod io;
pub mod listener;
pub mod login;
pub mod pump;
pub mod redirect;
pub mod reply;
pub mod upstream;

pub use error::{Fault, Leg, RelayError};
pub use hook::{PassThrough, RequestRewriter, ResponseRewriter, RewriterFactory};
pub use listener::{Listener, Upstream};
