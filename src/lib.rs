//! aml-identity-operator: the identity side of Azure Machine Learning as Kubernetes custom resources.

pub mod api;
pub mod azure;
pub mod controllers;
pub mod crd;
pub mod crd_docs;
pub mod freshness;
#[cfg(test)]
mod fuzz;
pub mod kube_requests;
pub mod metrics;
pub mod msi;
pub mod outputs;
pub mod plugin;
pub mod renewal;
pub mod run;
pub mod server;
pub mod workload_identity;
