//! Each kind's place in the shared reconciler: its Api scope and status. Behaviours land per kind.

use kube::{Api, Client};

use super::Reconciled;
use crate::api::*;

macro_rules! namespaced {
    ($($kind:ty => $status:ty),* $(,)?) => {$(
        impl Reconciled for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> { self.status.as_ref() }
            fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
                match namespace {
                    Some(ns) => Api::namespaced(client, ns),
                    None => Api::all(client),
                }
            }
        }
    )*};
}

namespaced!(
    AzureCredential => CredentialStatus,
    Workspace => WorkspaceStatus,
    ComputeIdentity => ComputeIdentityStatus,
    Datastore => DatastoreStatus,
    RegistryConnection => RegistryConnectionStatus,
);

impl Reconciled for ClusterAzureCredential {
    type Status = CredentialStatus;
    fn status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}
