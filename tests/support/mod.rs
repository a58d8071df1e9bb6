//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod azure;
pub mod azurite;
pub mod chart;
pub mod cluster;
pub mod e2e;
pub mod plugin;
pub mod samples;
