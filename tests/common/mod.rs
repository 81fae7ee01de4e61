//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod external;
pub mod fake_server;
pub mod proxy;
pub mod raw;
pub mod raw_client;
pub mod sandbox;
pub mod tiberius_scenario;
