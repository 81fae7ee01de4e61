//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod proxy;
pub mod sandbox;
pub mod tiberius_scenario;
pub mod python;
