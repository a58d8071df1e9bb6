//! The RegistryConnection controller end to end: a compute identity's AAD token exchanged at the
//! registry (only once it holds AcrPull) for a refresh token in a dockerconfigjson Secret that the
//! registry's token endpoint accepts, attached to a ServiceAccount, with the workspace connection;
//! and the admin-user variant.

mod support;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::Registry;
use base64::Engine;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::*;

const LOGIN_SERVER: &str = "crmlwteama.azurecr.io";

fn rg() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")
}

fn workspace_id() -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/mlw-team-a",
        rg()
    )
}

fn registry_id() -> String {
    format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/crmlwteama",
        rg()
    )
}

async fn setup(prefix: &str, admin_user: bool) -> (Client, Azure, String, Operator) {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let (_, ca) = cluster::issuer_and_ca(&client).await;
    let azure = Azure::start(vec![ca]).await;
    azure.grant(&rg(), "Owner", APP_OBJECT_ID);
    azure
        .emulator()
        .seed(Seed {
            registries: vec![Registry { id: registry_id(), login_server: LOGIN_SERVER.into(), admin_user_enabled: admin_user }],
            resources: vec![
                serde_json::json!({"id": workspace_id(), "name": "mlw-team-a", "location": "eastus", "properties": {"provisioningState": "Succeeded"}}),
                serde_json::json!({"id": format!("{}/computes/cpu-cluster", workspace_id()), "name": "cpu-cluster", "location": "eastus", "identity": {"type": "None"}, "properties": {"computeType": "AmlCompute"}}),
            ],
            ..Default::default()
        })
        .unwrap();
    let ns = cluster::namespace(&client, prefix).await;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "training"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    service_principal_credential(&client, &ns).await;
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "ml-workspace"},
        "spec": {"credentialRef": {"name": "team-a"}, "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": "mlw-team-a"},
    }))
    .await;
    let mut args = azure_args(&azure);
    args.push("--azure-resolve".into());
    args.push(format!("{LOGIN_SERVER}={}", azure.running.https_addr));
    let operator = Operator::start_with(
        &ns,
        &format!("lease-{prefix}"),
        &format!("{prefix}-0"),
        &args,
    );
    (client, azure, ns, operator)
}

fn connection(name: &str, acr_pull: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "RegistryConnection", "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"},
            "registry": {"loginServer": LOGIN_SERVER, "resourceId": registry_id()},
            "auth": {"type": "ManagedIdentity", "managedIdentity": {"computeIdentityRef": {"name": "cpu-cluster"}}},
            "workspaceConnection": {"name": "workspace-acr"},
            "grants": {"acrPull": acr_pull},
            "target": {"secretName": format!("{name}-pull"), "serviceAccounts": ["training"]},
        },
    })
}

async fn dockerconfig(client: &Client, ns: &str, name: &str) -> (String, String) {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    let auth = &config["auths"][LOGIN_SERVER];
    let basic = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(auth["auth"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        basic,
        format!(
            "{}:{}",
            auth["username"].as_str().unwrap(),
            auth["password"].as_str().unwrap()
        )
    );
    (
        auth["username"].as_str().unwrap().to_owned(),
        auth["password"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_compute_identity_pulls_once_it_holds_acr_pull() {
    let (client, azure, ns, operator) = setup("rc-mi", false).await;
    let uai = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-cpu-cluster",
        rg()
    );
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "cpu-cluster"},
        "spec": {"workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
                 "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai]}, "createIfMissing": {"location": "eastus"},
                 "federation": {"serviceAccounts": ["training"]}},
    }))
    .await;
    let (_, _, ci) = ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        "cpu-cluster",
        "IdentityReady",
    )
    .await;
    let client_id = ci.data["status"]["clientId"].as_str().unwrap().to_owned();

    // Without AcrPull the registry refuses the exchange, and the condition says so.
    // (Without a workspace connection of its own: two objects must not manage the same connection.)
    let mut no_grant = connection("no-grant", false);
    no_grant["spec"]
        .as_object_mut()
        .unwrap()
        .remove("workspaceConnection");
    let denied = apply(&client, &ns, no_grant).await;
    let (_, message, _) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &denied,
        "PermissionDenied",
    )
    .await;
    assert!(message.contains("AcrPull"), "{message}");

    let mut object = connection("workspace-registry", true);
    object["spec"]["target"]["renewBefore"] = "2h".into();
    let name = apply(&client, &ns, object).await;
    let (status, message, obj) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PullSecretIssued",
    )
    .await;
    assert_eq!(status, "True", "{message}");
    let pull = obj.data["spec"]["target"]["secretName"]
        .as_str()
        .unwrap()
        .to_owned();
    reconcile_leaves_secret_alone(&client, &operator, "RegistryConnection", &ns, &name, &pull)
        .await;
    let expires: jiff::Timestamp = obj.data["status"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let lifetime = expires.as_second() - jiff::Timestamp::now().as_second();
    assert!(
        (3 * 3600 - 120..=3 * 3600).contains(&lifetime),
        "renewed from the refresh token's own exp: {lifetime}s"
    );
    // target.renewBefore 2h: renewed two hours before that (less up to 9 minutes of jitter).
    let renewal: jiff::Timestamp = obj.data["status"]["renewalTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let before = expires.as_second() - renewal.as_second();
    assert!(
        (7200..=7200 + 540).contains(&before),
        "renewal {before} s before expiry, not 2 h"
    );

    let (username, password) = dockerconfig(&client, &ns, "workspace-registry-pull").await;
    assert_eq!(username, "00000000-0000-0000-0000-000000000000");
    let transport = azure
        .transport
        .resolving(LOGIN_SERVER, azure.running.https_addr);
    let registry_http = transport.client().unwrap();
    let pull = registry_http
        .get(format!("https://{LOGIN_SERVER}/oauth2/token"))
        .query(&[
            ("service", LOGIN_SERVER),
            ("scope", "repository:training/base:pull"),
        ])
        .basic_auth(&username, Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), 200, "the registry accepts the pull Secret");

    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("training")
        .await
        .unwrap();
    assert!(
        sa.image_pull_secrets
            .unwrap()
            .iter()
            .any(|p| p.name == "workspace-registry-pull")
    );
    let arm = azure.arm(azure.app_credential("test"));
    // The workspace connection with its credentials, as `listsecrets` returns it.
    let listed = || async {
        arm.post::<(), aml_identity_operator::azure::models::WorkspaceConnection>(
            &format!("{}/connections/workspace-acr/listsecrets", workspace_id()),
            "2025-12-01",
            None,
        )
        .await
        .unwrap()
        .body
        .unwrap()
    };
    let conn = listed().await;
    assert_eq!(conn.properties.auth_type, "ManagedIdentity");
    assert_eq!(
        conn.properties.credentials.unwrap()["clientId"],
        client_id.as_str()
    );
    assert!(!operator.logs().contains(&password));

    // A second object naming the same workspace connection is told it belongs to another, and
    // neither writes it nor takes it away when deleted.
    let second = apply(&client, &ns, connection("second-registry", true)).await;
    let (_, message, _) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &second,
        "AzureTargetConflict",
    )
    .await;
    assert!(
        message.contains("spec.workspaceConnection.name"),
        "{message}"
    );
    delete_and_wait(&client, "RegistryConnection", &ns, &second).await;
    let kept = listed().await;
    assert_eq!(
        kept.properties.credentials.unwrap()["clientId"],
        client_id.as_str(),
        "the first object's connection is untouched"
    );

    // The workspace connection goes with the object.
    delete_and_wait(&client, "RegistryConnection", &ns, &name).await;
    let gone: Option<aml_identity_operator::azure::models::WorkspaceConnection> = arm
        .get(
            &format!("{}/connections/workspace-acr", workspace_id()),
            "2025-12-01",
        )
        .await
        .unwrap();
    assert!(gone.is_none());
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("training")
        .await
        .unwrap();
    assert!(
        !sa.image_pull_secrets
            .unwrap_or_default()
            .iter()
            .any(|p| p.name == "workspace-registry-pull"),
        "the ServiceAccount no longer names the deleted Secret"
    );
    assert_no_leaks(&client, &azure, &operator, &ns, &[APP_SECRET, &password]).await;
    cluster::delete_namespace(&client, &ns).await;
}

/// The registry's answer to a pull with the Secret's credentials.
async fn pull_status(azure: &Azure, username: &str, password: &str) -> u16 {
    let transport = azure
        .transport
        .resolving(LOGIN_SERVER, azure.running.https_addr);
    transport
        .client()
        .unwrap()
        .get(format!("https://{LOGIN_SERVER}/oauth2/token"))
        .query(&[
            ("service", LOGIN_SERVER),
            ("scope", "repository:training/base:pull"),
        ])
        .basic_auth(username, Some(password))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A user-assigned identity named by client and resource id (no ComputeIdentity) pulls through a
/// ServiceAccount the object federates with it: the federated credential is made (recorded first),
/// moves when the spec names another ServiceAccount, and goes with the object; a client id that
/// is not the identity's is refused before anything is written.
#[tokio::test]
async fn an_identity_named_by_ids_pulls_through_its_federated_service_account() {
    use aml_identity_emulator::state::UserAssignedIdentity;
    use aml_identity_operator::controllers::federation::federation_name;
    let (client, azure, ns, operator) = setup("rc-named", false).await;
    let (issuer, _) = cluster::issuer_and_ca(&client).await;
    let uai = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-image-pull",
        rg()
    );
    let (client_id, principal_id) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    azure
        .emulator()
        .seed(Seed {
            user_assigned_identities: vec![UserAssignedIdentity {
                id: uai.clone(),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: client_id.clone(),
                principal_id: principal_id.clone(),
                federated_credentials: vec![],
                tags: Default::default(),
            }],
            ..Default::default()
        })
        .unwrap();
    for name in ["image-pull", "image-pull-2"] {
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
    }
    let named = |client_id: &str, account: &str| {
        serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "RegistryConnection", "metadata": {"name": "named-identity"},
            "spec": {
                "workspaceRef": {"name": "ml-workspace"},
                "registry": {"loginServer": LOGIN_SERVER, "resourceId": registry_id()},
                "auth": {"type": "ManagedIdentity", "managedIdentity": {"clientId": client_id, "resourceId": uai, "serviceAccount": account}},
                "workspaceConnection": {"name": "named-acr"},
                "grants": {"acrPull": true},
                "target": {"secretName": "named-pull", "serviceAccounts": ["training"]},
            },
        })
    };
    let subjects = || {
        azure
            .emulator()
            .identity(&uai)
            .unwrap()
            .federated_credentials
            .into_iter()
            .map(|f| (f.name, f.issuer, f.subject))
            .collect::<Vec<_>>()
    };

    // Another identity's client id: refused, nothing trusted, nothing granted.
    let wrong = uuid::Uuid::new_v4().to_string();
    let name = apply(&client, &ns, named(&wrong, "image-pull")).await;
    let (_, message, _) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "IdentityMismatch",
    )
    .await;
    assert!(
        message.starts_with("spec.auth.managedIdentity.clientId") && message.contains(&client_id),
        "{message}"
    );
    assert!(subjects().is_empty());
    assert!(
        !azure
            .emulator()
            .role_assignments()
            .iter()
            .any(|r| r.principal_id == principal_id),
        "no AcrPull for a refused object"
    );

    // Its own client id: the ServiceAccount is trusted on the identity and the identity pulls.
    let api = cluster::dynamic_api(&client, &kind("RegistryConnection"), &ns);
    let identity_patch = |client_id: &str, account: &str| {
        Patch::Merge(
            serde_json::json!({"spec": {"auth": {"managedIdentity": {"clientId": client_id, "serviceAccount": account}}}}),
        )
    };
    api.patch(
        &name,
        &PatchParams::default(),
        &identity_patch(&client_id, "image-pull"),
    )
    .await
    .unwrap();
    let (status, message, obj) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PullSecretIssued",
    )
    .await;
    assert_eq!(status, "True", "{message}");
    assert_eq!(
        subjects(),
        vec![(
            federation_name(&ns, "image-pull"),
            issuer.clone(),
            format!("system:serviceaccount:{ns}:image-pull")
        )]
    );
    let federation = obj.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "FederationValid")
        .unwrap()
        .clone();
    assert_eq!(
        (&federation["status"], &federation["reason"]),
        (&serde_json::json!("True"), &serde_json::json!("Federated")),
        "{federation}"
    );
    let recorded = obj.data["status"]["azureResources"].to_string();
    assert!(
        recorded.contains(&federation_name(&ns, "image-pull")),
        "{recorded}"
    );
    let (username, password) = dockerconfig(&client, &ns, "named-pull").await;
    assert_eq!(pull_status(&azure, &username, &password).await, 200);
    // The refresh token is the identity's: its AAD token came from the federated exchange.
    assert!(
        azure.emulator().counter(&format!(
            "entra.token:{client_id}:https://containerregistry.azure.net"
        )) >= 1
    );
    let connection = azure
        .arm(azure.app_credential("test"))
        .post::<(), aml_identity_operator::azure::models::WorkspaceConnection>(
            &format!("{}/connections/named-acr/listsecrets", workspace_id()),
            "2025-12-01",
            None,
        )
        .await
        .unwrap()
        .body
        .unwrap();
    assert_eq!(
        connection.properties.credentials.unwrap()["clientId"],
        client_id.as_str()
    );

    // Another ServiceAccount: the trust moves with the spec.
    api.patch(
        &name,
        &PatchParams::default(),
        &identity_patch(&client_id, "image-pull-2"),
    )
    .await
    .unwrap();
    cluster::wait_until(
        std::time::Duration::from_secs(40),
        "the federated credential to move to image-pull-2",
        || async {
            let now: Vec<String> = subjects().into_iter().map(|s| s.2).collect();
            (now == vec![format!("system:serviceaccount:{ns}:image-pull-2")]).then_some(())
        },
    )
    .await;

    // Deleting the object removes the trust, never the identity it did not make.
    delete_and_wait(&client, "RegistryConnection", &ns, &name).await;
    assert!(subjects().is_empty());
    assert!(azure.emulator().identity(&uai).is_some());
    assert_no_leaks(&client, &azure, &operator, &ns, &[APP_SECRET, &password]).await;
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn the_admin_user_variant_reads_list_credentials() {
    let (client, _azure, ns, _operator) = setup("rc-admin", true).await;
    let name = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "RegistryConnection", "metadata": {"name": "admin"},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"},
            "registry": {"loginServer": LOGIN_SERVER, "resourceId": registry_id()},
            "auth": {"type": "AdminUser"},
            "target": {"secretName": "admin-pull"},
        },
    }))
    .await;
    ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PullSecretIssued",
    )
    .await;
    let (username, password) = dockerconfig(&client, &ns, "admin-pull").await;
    assert_eq!(username, "crmlwteama");
    assert_eq!(password.len(), 32);
    cluster::delete_namespace(&client, &ns).await;
}

/// A real registry (Debian's docker-registry) whose token realm is the emulator's ACR `/oauth2/token`.
struct DockerRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    fn start(azure: &Azure) -> DockerRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = cluster::free_port();
        let token_ca = azure
            .running
            .ca_path
            .parent()
            .unwrap()
            .join("acr-token-ca.pem");
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: https://127.0.0.1:{}/oauth2/token\n    service: {LOGIN_SERVER}\n    issuer: Azure Container Registry\n    rootcertbundle: {}\n",
            dir.path().join("data").display(),
            azure.running.https_addr.port(),
            token_ca.display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = std::process::Command::new("docker-registry")
            .args([
                "serve",
                &dir.path().join("config.yml").display().to_string(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed by the test command");
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        DockerRegistry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-layer OCI image layout in `dir`, tagged `v1`.
fn oci_image(dir: &std::path::Path) {
    let sha = |bytes: &[u8]| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("train.py"), "print('training')\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-C", &content.display().to_string(), "-cf", "-", "train.py"])
        .output()
        .unwrap()
        .stdout;
    let layer = sha(&tar);
    std::fs::write(blobs.join(&layer), &tar).unwrap();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer}")]}}).to_string();
    std::fs::write(blobs.join(sha(config.as_bytes())), &config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(config.as_bytes())), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer}"), "size": tar.len()}],
    })
    .to_string();
    std::fs::write(blobs.join(sha(manifest.as_bytes())), &manifest).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", sha(manifest.as_bytes())), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Runs skopeo against the local registry, trusting the emulator for the token realm.
fn skopeo(azure: &Azure, work: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::fs::write(
        work.join("policy.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    std::process::Command::new("skopeo")
        .args([
            "--policy",
            &work.join("policy.json").display().to_string(),
            "--registries-conf",
            "/dev/null",
        ])
        .args(args)
        .env("SSL_CERT_FILE", &azure.running.ca_path)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pulls_with_the_pull_secret_from_a_real_registry() {
    let (client, azure, ns, operator) = setup("rc-skopeo", false).await;
    let registry = DockerRegistry::start(&azure);
    let host = format!("127.0.0.1:{}", registry.port);
    let work = tempfile::tempdir().unwrap();

    // The platform pushes an image with its own AcrPush credential.
    azure.grant(&registry_id(), "AcrPush", APP_OBJECT_ID);
    let transport = azure
        .transport
        .resolving(LOGIN_SERVER, azure.running.https_addr);
    let aad = azure
        .app_credential("push")
        .request(
            &azure.cloud.container_registry_audience,
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    let push = aml_identity_operator::azure::acr::exchange(
        &transport.client().unwrap(),
        LOGIN_SERVER,
        TENANT,
        aad.secret(),
    )
    .await
    .unwrap();
    std::fs::write(work.path().join("push.json"), push.docker_config(&host)).unwrap();
    oci_image(&work.path().join("image"));
    let image = format!("docker://{host}/training/base:v1");
    let oci = format!("oci:{}:v1", work.path().join("image").display());
    let pushed = tokio::task::block_in_place(|| {
        skopeo(
            &azure,
            work.path(),
            &[
                "copy",
                "--dest-authfile",
                &work.path().join("push.json").display().to_string(),
                "--dest-tls-verify=false",
                &oci,
                &image,
            ],
        )
    });
    assert!(
        pushed.status.success(),
        "push: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // A compute identity with AcrPull gets a pull Secret through a RegistryConnection.
    let uai = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-cpu-cluster",
        rg()
    );
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "cpu-cluster"},
        "spec": {"workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
                 "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai]}, "createIfMissing": {"location": "eastus"},
                 "federation": {"serviceAccounts": ["training"]}},
    }))
    .await;
    ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        "cpu-cluster",
        "IdentityReady",
    )
    .await;
    let name = apply(&client, &ns, connection("puller", true)).await;
    ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PullSecretIssued",
    )
    .await;
    let (username, password) = dockerconfig(&client, &ns, "puller-pull").await;
    // The Secret is keyed by the real login server; here the registry is reached by address.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    std::fs::write(work.path().join("pull.json"), serde_json::json!({"auths": {host.clone(): {"username": username, "password": password, "auth": auth}}}).to_string()).unwrap();

    let pulled = tokio::task::block_in_place(|| {
        skopeo(
            &azure,
            work.path(),
            &[
                "inspect",
                "--authfile",
                &work.path().join("pull.json").display().to_string(),
                "--tls-verify=false",
                &image,
            ],
        )
    });
    assert!(
        pulled.status.success(),
        "inspect: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&pulled.stdout).unwrap();
    assert_eq!(manifest["Layers"].as_array().map(Vec::len), Some(1));

    // Without credentials, and with a tampered password, the registry refuses.
    let anonymous = tokio::task::block_in_place(|| {
        skopeo(
            &azure,
            work.path(),
            &["inspect", "--no-creds", "--tls-verify=false", &image],
        )
    });
    assert!(!anonymous.status.success());
    let forged =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}x"));
    std::fs::write(
        work.path().join("forged.json"),
        serde_json::json!({"auths": {host.clone(): {"auth": forged}}}).to_string(),
    )
    .unwrap();
    let refused = tokio::task::block_in_place(|| {
        skopeo(
            &azure,
            work.path(),
            &[
                "inspect",
                "--authfile",
                &work.path().join("forged.json").display().to_string(),
                "--tls-verify=false",
                &image,
            ],
        )
    });
    assert!(!refused.status.success());
    assert_no_leaks(&client, &azure, &operator, &ns, &[APP_SECRET, &password]).await;
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_service_principal_pulls_and_failures_are_counted_until_it_may() {
    let (client, azure, ns, _operator) = setup("rc-sp", false).await;
    // A separate pulling application that holds no role yet.
    let (puller, puller_object) = (
        "4d3c2b1a-0f9e-4d8c-b7a6-958473625140",
        "3e2d1c0b-9a8f-4e7d-a6c5-b4a392817160",
    );
    azure
        .emulator()
        .seed(Seed {
            service_principals: vec![aml_identity_emulator::state::ServicePrincipal {
                tenant_id: TENANT.into(),
                client_id: puller.into(),
                object_id: puller_object.into(),
                display_name: "puller".into(),
                secrets: vec!["puller-secret-value-77".into()],
                federated_credentials: vec![],
                certificates: vec![],
            }],
            ..Default::default()
        })
        .unwrap();
    secret(
        &client,
        &ns,
        "puller-sp",
        "clientSecret",
        "puller-secret-value-77",
    )
    .await;
    let name = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "RegistryConnection", "metadata": {"name": "sp"},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"},
            "registry": {"loginServer": LOGIN_SERVER, "resourceId": registry_id()},
            "auth": {"type": "ServicePrincipal", "servicePrincipal": {"clientId": puller, "clientSecretRef": {"name": "puller-sp", "key": "clientSecret"}}},
            "target": {"secretName": "sp-pull"},
        },
    }))
    .await;
    let (_, message, obj) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PermissionDenied",
    )
    .await;
    assert!(message.contains("AcrPull"), "{message}");
    assert!(obj.data["status"]["failedAttempts"].as_i64() >= Some(1));
    assert!(obj.data["status"]["lastFailureTime"].is_string());

    // Once the platform grants AcrPull, a force-refresh retries now instead of after the backoff.
    azure.grant(&registry_id(), "AcrPull", puller_object);
    let api = cluster::dynamic_api(&client, &kind("RegistryConnection"), &ns);
    api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {"amlidentity.io/force-refresh": "granted"}}})))
        .await
        .unwrap();
    let (_, _, obj) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PullSecretIssued",
    )
    .await;
    assert!(
        obj.data["status"]["failedAttempts"].is_null(),
        "a success clears the failure count"
    );
    let (username, _) = dockerconfig(&client, &ns, "sp-pull").await;
    assert_eq!(username, "00000000-0000-0000-0000-000000000000");
    cluster::delete_namespace(&client, &ns).await;
}
