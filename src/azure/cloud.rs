//! National clouds and custom endpoints, and the HTTP transport every Azure call shares: an optional
//! extra CA bundle and host→address overrides, so the same code reaches an emulator under the real
//! host names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::error::AzureError;

/// Endpoints of one cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cloud {
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: String,
    /// Resource Manager endpoint, e.g. `https://management.azure.com`.
    pub resource_manager: String,
    /// Storage DNS suffix.
    pub storage_suffix: String,
    /// Key Vault DNS suffix.
    pub key_vault_suffix: String,
    /// Container registry DNS suffix.
    pub container_registry_suffix: String,
    /// The Entra ID resource registries accept for the ACR token exchange.
    pub container_registry_audience: String,
}

/// The ACR token exchange's Entra ID resource. ACR's service team gave it as the default "for all
/// clouds" (Azure/azure-sdk-for-net#34785); Resource Manager tokens work too unless a registry
/// disables `azureADAuthenticationAsArmPolicy`, so this one is asked for.
pub const CONTAINER_REGISTRY_AUDIENCE: &str = "https://containerregistry.azure.net";

impl Cloud {
    /// Azure public cloud.
    pub fn public() -> Self {
        Self {
            authority_host: "https://login.microsoftonline.com".into(),
            resource_manager: "https://management.azure.com".into(),
            storage_suffix: "core.windows.net".into(),
            key_vault_suffix: "vault.azure.net".into(),
            container_registry_suffix: "azurecr.io".into(),
            container_registry_audience: CONTAINER_REGISTRY_AUDIENCE.into(),
        }
    }

    /// Azure US Government.
    pub fn us_government() -> Self {
        Self {
            authority_host: "https://login.microsoftonline.us".into(),
            resource_manager: "https://management.usgovcloudapi.net".into(),
            storage_suffix: "core.usgovcloudapi.net".into(),
            key_vault_suffix: "vault.usgovcloudapi.net".into(),
            container_registry_suffix: "azurecr.us".into(),
            container_registry_audience: CONTAINER_REGISTRY_AUDIENCE.into(),
        }
    }

    /// Azure operated by 21Vianet.
    pub fn china() -> Self {
        Self {
            authority_host: "https://login.chinacloudapi.cn".into(),
            resource_manager: "https://management.chinacloudapi.cn".into(),
            storage_suffix: "core.chinacloudapi.cn".into(),
            key_vault_suffix: "vault.azure.cn".into(),
            container_registry_suffix: "azurecr.cn".into(),
            container_registry_audience: CONTAINER_REGISTRY_AUDIENCE.into(),
        }
    }

    /// The `scope` for Resource Manager tokens.
    pub fn resource_manager_scope(&self) -> String {
        format!("{}/.default", self.resource_manager.trim_end_matches('/'))
    }
}

/// Told of every Azure response: the service (`arm`, `entra`, `imds`, `azure-cli`) and the HTTP
/// status (0 when no answer came). Metrics hang off it.
#[derive(Clone, Default)]
pub struct Observer(Option<std::sync::Arc<ObserveFn>>);

type ObserveFn = dyn Fn(&str, u16) + Send + Sync;

impl Observer {
    /// An observer calling `f`.
    pub fn new(f: impl Fn(&str, u16) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(f)))
    }

    /// Reports one response.
    pub fn observe(&self, service: &str, status: u16) {
        if let Some(f) = &self.0 {
            f(service, status);
        }
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

/// How Azure is reached: extra trust and name overrides on top of the system's.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// PEM bundle of extra CAs to trust (e.g. an emulator's CA).
    pub ca_bundle: Option<PathBuf>,
    /// Host names resolved to fixed addresses (the address's port replaces the URL's).
    pub host_overrides: Vec<(String, SocketAddr)>,
    /// Per-request timeout.
    pub timeout: Option<Duration>,
    /// Told of every response.
    pub observer: Observer,
    /// The client built from the fields above, once: building one parses every root certificate
    /// (milliseconds of CPU), and one shared client also shares its connections. Clones share it,
    /// so a changed field needs a new transport ([`Transport::resolving`]).
    pub built: Arc<OnceLock<reqwest::Client>>,
}

impl Transport {
    /// Parses `host=ip:port` overrides as the `--azure-resolve` flag takes them.
    pub fn parse_override(text: &str) -> Result<(String, SocketAddr), String> {
        let (host, addr) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not host=ip:port"))?;
        let addr = addr.parse().map_err(|e| format!("{text:?}: {e}"))?;
        Ok((host.to_owned(), addr))
    }

    /// This transport with `host` also resolved to `addr`, and its own client.
    pub fn resolving(&self, host: &str, addr: SocketAddr) -> Transport {
        let mut transport = self.clone();
        transport.host_overrides.push((host.to_owned(), addr));
        transport.built = Arc::default();
        transport
    }

    /// A reqwest client honouring the extra CA and the overrides (built on first use, then
    /// shared by every clone of this transport).
    pub fn client(&self) -> Result<reqwest::Client, AzureError> {
        if let Some(client) = self.built.get() {
            return Ok(client.clone());
        }
        let client = self.build()?;
        Ok(self.built.get_or_init(|| client).clone())
    }

    fn build(&self) -> Result<reqwest::Client, AzureError> {
        let mut builder = reqwest::Client::builder()
            // A redirect would carry the bearer token or client assertion to a host no check saw.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout.unwrap_or(Duration::from_secs(30)))
            .connect_timeout(Duration::from_secs(10));
        if let Some(path) = &self.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                AzureError::Credential(format!("reading CA bundle {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AzureError::Credential(format!("CA bundle {}: {e}", path.display()))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        for (host, addr) in &self.host_overrides {
            builder = builder.resolve(host, *addr);
        }
        builder
            .build()
            .map_err(|e| AzureError::Transport(e.to_string()))
    }
}
