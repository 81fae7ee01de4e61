//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_server;
pub mod proxy;
pub mod python;
pub mod raw_client;
pub mod sandbox;
pub mod tiberius_scenario;
