//! Every call the operator makes to Azure: clouds and transport, credentials, the token cache, and
//! the ARM client. No Kubernetes types in here; Kubernetes-backed pieces (the TokenRequest assertion
//! for workload identity) come in through traits.

pub mod acr;
pub mod arm;
pub mod authorization;
pub mod cloud;
pub mod credential;
pub mod error;
pub mod jwt;
pub mod keyvault;
pub mod limits;
pub mod models;
pub mod paths;
pub mod read_cache;
pub mod scope;
pub mod storage;
pub mod token_cache;

pub use cloud::{Cloud, Transport};
pub use credential::{AssertionSource, Credential};
pub use error::AzureError;
pub use token_cache::{Token, TokenCache};
