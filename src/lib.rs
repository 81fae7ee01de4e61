//! tdsguard: an encrypting proxy for Microsoft SQL Server's TDS protocol.

pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod relay;
pub mod rewrite;
pub mod sandbox;
pub mod tds;
pub mod tls;
