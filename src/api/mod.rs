//! The public API: custom resource types of group `amlidentity.io/v1alpha1`, their CEL rules and the
//! same rules checked in Rust. One file per kind; shared field types live here.

pub mod common;
pub mod compute_identity;
pub mod conditions;
pub mod credential;
pub mod datastore;
pub mod registry_connection;
pub mod rules;
pub mod validation;
pub mod workspace;

pub use common::*;
pub use compute_identity::*;
pub use credential::*;
pub use datastore::*;
pub use registry_connection::*;
pub use validation::{Validate, Violation};
pub use workspace::*;

/// API group of every kind.
pub const GROUP: &str = "amlidentity.io";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";
