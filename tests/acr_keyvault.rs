//! ACR token exchange and Key Vault reads against the emulator, where RBAC decides: no AcrPull, no
//! refresh token; no Key Vault Secrets User, no secret. The official azure-keyvault-secrets reads a
//! secret through the same endpoints.

mod support;

use std::process::Command;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::{Registry, Vault};
use aml_identity_operator::azure::{AzureError, TokenCache, acr, keyvault};
use base64::Engine;
use support::azure::*;

const LOGIN_SERVER: &str = "crmlwteama.azurecr.io";
const VAULT: &str = "kv-mlw-team-a";

fn registry_id(azure: &Azure) -> String {
    format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/crmlwteama",
        azure.resource_group_id()
    )
}

fn vault_id(azure: &Azure) -> String {
    format!(
        "{}/providers/Microsoft.KeyVault/vaults/{VAULT}",
        azure.resource_group_id()
    )
}

async fn start() -> Azure {
    let mut azure = Azure::start(vec![]).await;
    let (registry, vault) = (registry_id(&azure), vault_id(&azure));
    azure
        .emulator()
        .seed(Seed {
            registries: vec![Registry {
                id: registry,
                login_server: LOGIN_SERVER.into(),
                admin_user_enabled: false,
            }],
            vaults: vec![Vault {
                id: vault,
                tenant_id: TENANT.into(),
                secrets: [(
                    "storage-conn".to_string(),
                    "s3cr3t-value-for-training".to_string(),
                )]
                .into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    let addr = azure.running.https_addr;
    azure.transport = azure
        .transport
        .resolving(LOGIN_SERVER, addr)
        .resolving(&format!("{VAULT}.vault.azure.net"), addr);
    azure
}

#[tokio::test]
async fn acr_exchange_needs_acr_pull_and_the_refresh_token_carries_its_expiry() {
    let azure = start().await;
    let http = azure.transport.client().unwrap();
    let aad = azure
        .app_credential("sp")
        .request(
            &azure.cloud.container_registry_audience,
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();

    let refused = acr::exchange(&http, LOGIN_SERVER, TENANT, aad.secret())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::DataPlane { status: 401, .. }),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("AcrPull"),
        "the refusal says what is missing: {refused}"
    );

    azure.grant(&registry_id(&azure), "AcrPull", APP_OBJECT_ID);
    let refresh = acr::exchange(&http, LOGIN_SERVER, TENANT, aad.secret())
        .await
        .unwrap();
    let lifetime = refresh.expires_on - jiff::Timestamp::now().as_second();
    assert!(
        (3 * 3600 - 60..=3 * 3600 + 60).contains(&lifetime),
        "ACR refresh tokens live 3 h, got {lifetime}s"
    );
    assert!(!format!("{refresh:?}").contains(refresh.secret()));

    // The docker credential works at the registry's token endpoint, for pulls only.
    let config: serde_json::Value =
        serde_json::from_str(&refresh.docker_config(LOGIN_SERVER)).unwrap();
    let auth = &config["auths"][LOGIN_SERVER];
    assert_eq!(auth["username"], acr::TOKEN_USERNAME);
    let basic = base64::engine::general_purpose::STANDARD
        .decode(auth["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(basic).unwrap(),
        format!("{}:{}", acr::TOKEN_USERNAME, refresh.secret())
    );
    let token = |scope: &str| {
        http.get(format!("https://{LOGIN_SERVER}/oauth2/token"))
            .query(&[("service", LOGIN_SERVER), ("scope", scope)])
            .basic_auth(acr::TOKEN_USERNAME, Some(refresh.secret()))
            .send()
    };
    assert_eq!(
        token("repository:training/base:pull")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        token("repository:training/base:push")
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong = http
        .get(format!("https://{LOGIN_SERVER}/oauth2/token"))
        .query(&[
            ("service", LOGIN_SERVER),
            ("scope", "repository:training/base:pull"),
        ])
        .basic_auth(acr::TOKEN_USERNAME, Some("not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn key_vault_reads_need_secrets_user_after_the_challenge() {
    let azure = start().await;
    let http = azure.transport.client().unwrap();
    let tokens = TokenCache::default();
    let credential = azure.app_credential("sp");
    let vault_url = format!("https://{VAULT}.vault.azure.net");

    let refused = keyvault::get_secret(&http, &tokens, &credential, &vault_url, "storage-conn")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::DataPlane { status: 403, code, .. } if code == "Forbidden"),
        "{refused:?}"
    );

    azure.grant(&vault_id(&azure), "Key Vault Secrets User", APP_OBJECT_ID);
    let secret = keyvault::get_secret(&http, &tokens, &credential, &vault_url, "storage-conn")
        .await
        .unwrap();
    assert_eq!(secret.value(), "s3cr3t-value-for-training");
    assert!(!format!("{secret:?}").contains("s3cr3t"));
    let missing = keyvault::get_secret(&http, &tokens, &credential, &vault_url, "absent")
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, AzureError::DataPlane { status: 404, code, .. } if code == "SecretNotFound"),
        "{missing:?}"
    );
}

/// A vault that authorizes with access policies ignores Azure RBAC for data actions, as Key Vault
/// does: a role is not enough, an entry allowing `get` on secrets is.
#[tokio::test]
async fn an_access_policy_vault_reads_need_a_policy_not_a_role() {
    use aml_identity_emulator::state::AccessPolicy;
    let azure = start().await;
    let policy = |secrets: &[&str]| AccessPolicy {
        tenant_id: TENANT.into(),
        object_id: APP_OBJECT_ID.into(),
        permissions: [(
            "secrets".to_owned(),
            secrets.iter().map(|s| s.to_string()).collect(),
        )]
        .into(),
    };
    let reseed = |policies: Vec<AccessPolicy>| {
        azure
            .emulator()
            .seed(Seed {
                vaults: vec![Vault {
                    id: vault_id(&azure),
                    tenant_id: TENANT.into(),
                    secrets: [("storage-conn".to_string(), "s3cr3t".to_string())].into(),
                    enable_rbac_authorization: false,
                    access_policies: policies,
                }],
                ..Default::default()
            })
            .unwrap()
    };
    let http = azure.transport.client().unwrap();
    let tokens = TokenCache::default();
    let credential = azure.app_credential("sp");
    let vault_url = format!("https://{VAULT}.vault.azure.net");
    let read = || keyvault::get_secret(&http, &tokens, &credential, &vault_url, "storage-conn");

    azure.grant(&vault_id(&azure), "Key Vault Secrets User", APP_OBJECT_ID);
    reseed(vec![policy(&["list"])]);
    let refused = read().await.unwrap_err();
    assert!(
        matches!(&refused, AzureError::DataPlane { status: 403, message, .. } if message.contains("secrets get permission")),
        "{refused:?}"
    );
    reseed(vec![policy(&["Get"])]);
    assert_eq!(read().await.unwrap().value(), "s3cr3t");
    reseed(vec![policy(&["all"])]);
    assert_eq!(read().await.unwrap().value(), "s3cr3t");
}

#[test]
fn challenges_name_their_resource() {
    let header = "Bearer authorization=\"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47\", resource=\"https://vault.azure.net\"";
    assert_eq!(
        keyvault::challenge_resource(header).as_deref(),
        Some("https://vault.azure.net")
    );
    let scoped = "Bearer authorization=\"https://login.microsoftonline.com/t\", scope=\"https://vault.azure.net/.default\"";
    assert_eq!(
        keyvault::challenge_resource(scoped).as_deref(),
        Some("https://vault.azure.net")
    );
    assert_eq!(keyvault::challenge_resource("Basic realm=x"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_keyvault_secrets_reads_a_secret_from_the_emulator() {
    let azure = start().await;
    azure.grant(&vault_id(&azure), "Key Vault Secrets User", APP_OBJECT_ID);
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let port = azure.running.https_addr.port();
    let output = tokio::task::block_in_place(|| {
        Command::new(python)
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/keyvault.py"),
                &format!("https://localhost:{port}/_vault/{VAULT}"),
                "storage-conn",
            ])
            .env("REQUESTS_CA_BUNDLE", &azure.running.ca_path)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_CLIENT_ID", APP_CLIENT_ID)
            .env("AZURE_CLIENT_SECRET", APP_SECRET)
            .env("AZURE_AUTHORITY_HOST", format!("https://localhost:{port}"))
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"s3cr3t-value-for-training");
    let hex: String = expected
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stdout.trim(), hex);
}
