//! An in-process emulator with one tenant, subscription and service principal, and the operator's
//! Azure layer pointed at it under the real host names.

use std::sync::Arc;

use aml_identity_emulator::state::{ServicePrincipal, Subscription};
use aml_identity_emulator::{Config, Emulator, Running, Seed};
use aml_identity_operator::azure::arm::{ArmClient, Budget};
use aml_identity_operator::azure::{Cloud, Credential, TokenCache, Transport};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SUBSCRIPTION: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
pub const RESOURCE_GROUP: &str = "rg-aml-team-a";
/// A resource group where the platform team keeps identities, outside the app's Contributor scope.
pub const IDENTITY_RESOURCE_GROUP: &str = "rg-identities";
pub const APP_CLIENT_ID: &str = "2f5c3a1b-7d8e-4f90-a1b2-c3d4e5f60718";
pub const APP_OBJECT_ID: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
pub const APP_SECRET: &str = "emulated-client-secret-value-0001";

/// A running emulator and how to reach it.
pub struct Azure {
    pub running: Running,
    pub transport: Transport,
    pub cloud: Cloud,
    _dir: tempfile::TempDir,
}

impl Azure {
    /// Starts an emulator trusting `trust` (CA bundles of federated issuers) and seeds the basics.
    pub async fn start(trust: Vec<std::path::PathBuf>) -> Azure {
        Self::start_with_lifetime(trust, 3599).await
    }

    /// Like [`Azure::start`], issuing tokens that live `lifetime` seconds.
    pub async fn start_with_lifetime(trust: Vec<std::path::PathBuf>, lifetime: i64) -> Azure {
        Self::start_configured(|config| {
            config.trust = trust;
            config.token_lifetime = lifetime;
        })
        .await
    }

    /// Like [`Azure::start`], with the emulator's configuration adjusted by `adjust`.
    pub async fn start_configured(adjust: impl FnOnce(&mut Config)) -> Azure {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        // Long-running operations take two polls, without making the tests wait.
        config.lro_polls = 2;
        config.lro_retry_after = 0;
        adjust(&mut config);
        let running = Emulator::start(config).await.expect("emulator starts");
        running
            .emulator
            .seed(Seed {
                tenants: vec![TENANT.into()],
                subscriptions: vec![Subscription {
                    id: SUBSCRIPTION.into(),
                    tenant_id: TENANT.into(),
                    resource_groups: vec![RESOURCE_GROUP.into()],
                }],
                service_principals: vec![ServicePrincipal {
                    tenant_id: TENANT.into(),
                    client_id: APP_CLIENT_ID.into(),
                    object_id: APP_OBJECT_ID.into(),
                    display_name: "aml-platform".into(),
                    secrets: vec![APP_SECRET.into()],
                    federated_credentials: vec![],
                    certificates: vec![],
                }],
                ..Default::default()
            })
            .unwrap();
        let transport = Transport {
            ca_bundle: Some(running.ca_path.clone()),
            host_overrides: ["login.microsoftonline.com", "management.azure.com"]
                .iter()
                .map(|h| (h.to_string(), running.https_addr))
                .collect(),
            timeout: None,
            observer: Default::default(),
            ..Default::default()
        };
        Azure {
            running,
            transport,
            cloud: Cloud::public(),
            _dir: dir,
        }
    }

    pub fn emulator(&self) -> &Emulator {
        &self.running.emulator
    }

    /// The seeded service principal with its real secret.
    pub fn app_credential(&self, key: &str) -> Credential {
        Credential::client_secret(
            key,
            &self.cloud,
            &self.transport,
            TENANT,
            APP_CLIENT_ID,
            APP_SECRET.into(),
        )
        .unwrap()
    }

    /// An ARM client signing in as `credential`.
    pub fn arm(&self, credential: Credential) -> ArmClient {
        ArmClient::new(
            self.transport.client().unwrap(),
            &self.cloud.resource_manager,
            credential,
            Arc::new(TokenCache::default()),
            Arc::new(Budget::default()),
        )
    }

    /// Grants `role` at `scope` to `principal` directly in the emulator (the platform team's setup).
    pub fn grant(&self, scope: &str, role: &str, principal: &str) {
        self.emulator()
            .seed(Seed {
                role_assignments: vec![aml_identity_emulator::state::SeedRoleAssignment {
                    scope: scope.into(),
                    role: role.into(),
                    principal_id: principal.into(),
                }],
                ..Default::default()
            })
            .unwrap();
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}`.
    pub fn resource_group_id(&self) -> String {
        format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")
    }
}
