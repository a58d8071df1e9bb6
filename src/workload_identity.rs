//! The Kubernetes side of workload identity: ServiceAccount tokens from the TokenRequest API,
//! audience `api://AzureADTokenExchange`, handed to the Azure layer as client assertions.

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use crate::azure::{AssertionSource, AzureError, Cloud, Credential, Transport};

/// The audience Entra ID expects in federated assertions.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Mints short-lived tokens for one ServiceAccount. The namespace is always the credential's own:
/// callers construct it from the referencing object's namespace, never from user input.
#[derive(Clone)]
pub struct ServiceAccountAssertion {
    api: Api<ServiceAccount>,
    namespace: String,
    name: String,
    /// Requested token lifetime in seconds (the API server's minimum is 600).
    pub expiration_seconds: i64,
}

impl ServiceAccountAssertion {
    /// Tokens of `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            expiration_seconds: 600,
        }
    }
}

/// Signs in as `client_id` through the ServiceAccount `account` of `namespace`, which a federated
/// identity credential trusts. Keyed by the ServiceAccount (the token cache adds the client id),
/// so every object and the managed identity endpoint using the pair share its tokens.
pub fn federated_credential(
    client: &kube::Client,
    transport: &Transport,
    namespace: &str,
    account: &str,
    cloud: &Cloud,
    tenant: &str,
    client_id: &str,
) -> Result<Credential, AzureError> {
    Credential::workload_identity(
        format!("federated/{namespace}/{account}"),
        cloud,
        transport,
        tenant,
        client_id,
        std::sync::Arc::new(ServiceAccountAssertion::new(
            client.clone(),
            namespace,
            account,
        )),
    )
}

impl std::fmt::Debug for ServiceAccountAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServiceAccountAssertion({}/{})",
            self.namespace, self.name
        )
    }
}

impl AssertionSource for ServiceAccountAssertion {
    fn assertion(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
                    expiration_seconds: Some(self.expiration_seconds),
                    ..Default::default()
                },
                ..Default::default()
            };
            let response = self
                .api
                .create_token_request(&self.name, &PostParams::default(), &request)
                .await
                .map_err(|e| {
                    format!(
                        "TokenRequest for ServiceAccount {}/{}: {e}",
                        self.namespace, self.name
                    )
                })?;
            response.status.map(|s| s.token).ok_or_else(|| {
                format!(
                    "TokenRequest for ServiceAccount {}/{} returned no token",
                    self.namespace, self.name
                )
            })
        })
    }
}
