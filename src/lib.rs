//! tdsguard: an encrypting proxy for Microsoft SQL Server's TDS protocol.

pub mod sandbox;
pub mod tds;
