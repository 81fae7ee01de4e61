//! TLS for both legs: toward the application (TLS inside PRELOGIN packets,
//! login-only encryption, TDS 8.0 strict) and upstream toward the database.
//! [MS-TDS] 2.2.6.5 (PRELOGIN encryption negotiation), 3.2.5.1 (the handshake
//! carried in PRELOGIN packets).
//!
//! - [`mod@detect`]: what a client's first bytes are (PRELOGIN, LOGIN7, strict TLS).
//! - [`server`] / [`client`]: rustls configurations for each role.
//! - [`certs`]: certificate loading and self-signed generation.
//! - [`prelogin_wrapper`]: the 0x12 packet adapter under the TLS engine.
//! - [`transport`]: the stream a leg runs on, with the login-only downgrade.

pub mod certs;
pub mod client;
pub mod detect;
pub mod error;
pub mod prelogin_wrapper;
pub mod replay;
pub mod server;
pub mod transport;

pub use client::{ConnectorOptions, TlsConnectors};
pub use detect::{detect, FirstPacket};
pub use error::{Fault, FramingError, Peer, TlsError};
pub use prelogin_wrapper::PreloginWrapper;
pub use replay::Replay;
pub use server::TlsAcceptors;
pub use transport::{Encryption, Transport, TransportKind, MAX_ENCRYPTED_PACKET_SIZE};
