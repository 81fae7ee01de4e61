//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod external;
pub mod raw;
pub mod sandbox;
pub mod tiberius_scenario;
