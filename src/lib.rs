//! tdsguard: an encrypting proxy for Microsoft SQL Server's TDS protocol.

pub mod tds;
pub mod sandbox;
