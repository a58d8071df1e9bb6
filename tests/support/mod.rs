//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod azure;
pub mod cluster;
pub mod samples;
