//! aml-identity-operator: the identity side of Azure Machine Learning as Kubernetes custom resources.

pub mod api;
pub mod crd;
