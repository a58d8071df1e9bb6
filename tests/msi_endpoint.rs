//! The Azure ML managed identity endpoint end to end, with two admitted namespaces on one
//! ClusterAzureCredential: the documents' training code runs unmodified in a pod-shaped process
//! whose only inputs are the token Secret's keys, the endpoint answers only for the identities a
//! ComputeIdentity lists and the audiences its credential allows, never across namespaces, shares
//! one Entra request among concurrent callers, limits each secret, answers on every replica, and
//! stops answering a rotated secret or a deleted object's at once.

mod support;

use std::time::Duration;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::{Subscription, UserAssignedIdentity, Vault};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};

use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::*;

const LABEL: &str = "amlidentity.io/msi-test";
const VAULT_SECRET: &str = "value-the-training-job-reads";

struct Team {
    ns: String,
    rg: String,
    identities: Vec<(String, String, String)>,
}

impl Team {
    fn id(&self, provider: &str, name: &str) -> String {
        format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{}/providers/{provider}/{name}",
            self.rg
        )
    }
    /// (resource id, client id, principal id) of the team's `i`th identity.
    fn identity(&self, i: usize) -> &(String, String, String) {
        &self.identities[i]
    }
}

fn team(ns: String, names: &[&str]) -> Team {
    let rg = format!("rg-aml-{ns}");
    let mut t = Team {
        ns,
        rg,
        identities: vec![],
    };
    for name in names {
        let id = t.id("Microsoft.ManagedIdentity/userAssignedIdentities", name);
        t.identities.push((
            id,
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        ));
    }
    t
}

/// One request to the endpoint: (status, body, Retry-After).
async fn ask(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    resource: &str,
    client_id: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let mut query = vec![("api-version", "2017-09-01"), ("resource", resource)];
    if let Some(c) = client_id {
        query.push(("clientid", c));
    }
    let mut request = http.get(url).query(&query).header("Metadata", "true");
    if let Some(s) = secret {
        request = request.header("secret", s);
    }
    // 0: nothing listens (yet).
    let Ok(response) = request.send().await else {
        return (0, serde_json::Value::Null, None);
    };
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body, retry)
}

/// Waits until a request with `secret` answers `want` (the endpoint learns changes from watches).
async fn until_status(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    want: u16,
    within: Duration,
    what: &str,
) {
    cluster::wait_until(within, what, || {
        let (http, url, secret) = (http.clone(), url.to_owned(), secret.to_owned());
        async move {
            let (got, _, _) = ask(
                &http,
                &url,
                Some(&secret),
                "https://storage.azure.com",
                None,
            )
            .await;
            (got == want).then_some(())
        }
    })
    .await;
}

/// A training pod: an SDK's program, its arguments and what its image adds to the environment.
struct Pod<'a> {
    sdk: &'a str,
    program: &'a str,
    args: Vec<&'a str>,
    env: Vec<(&'a str, String)>,
}

/// A request the endpoint must refuse, and the words its answer must say why with.
struct Refused<'a> {
    what: &'a str,
    secret: Option<&'a str>,
    resource: &'a str,
    client_id: Option<&'a str>,
    status: u16,
    words: &'a str,
}

fn sha256(v: &str) -> String {
    use std::fmt::Write;
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes())
        .as_ref()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aml_documents_code_runs_unmodified_through_the_endpoint_and_nothing_else_does() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let (_, ca) = cluster::issuer_and_ca(&client).await;
    let azure = Azure::start(vec![ca]).await;
    let home = cluster::namespace(&client, "msi-op").await;
    let label = cluster::unique();
    let a = team(
        cluster::namespace(&client, "msi-a").await,
        &["id-a1", "id-a2"],
    );
    let b = team(cluster::namespace(&client, "msi-b").await, &["id-b1"]);
    let vault = a.id("Microsoft.KeyVault/vaults", "my-key-vault");
    let mut seed = Seed {
        subscriptions: vec![Subscription {
            id: SUBSCRIPTION.into(),
            tenant_id: TENANT.into(),
            resource_groups: vec![a.rg.clone(), b.rg.clone()],
        }],
        vaults: vec![Vault {
            id: vault.clone(),
            tenant_id: TENANT.into(),
            secrets: [("secret-name".to_string(), VAULT_SECRET.to_string())].into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    for t in [&a, &b] {
        seed.resources.push(serde_json::json!({"id": t.id("Microsoft.MachineLearningServices/workspaces", "mlw"), "name": "mlw", "location": "eastus",
            "identity": {"type": "SystemAssigned", "principalId": "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"},
            "properties": {"workspaceId": "0f0e0d0c-0b0a-4909-8807-060504030201", "provisioningState": "Succeeded"}}));
        for (id, client_id, principal_id) in &t.identities {
            seed.user_assigned_identities.push(UserAssignedIdentity {
                id: id.clone(),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: client_id.clone(),
                principal_id: principal_id.clone(),
                tags: Default::default(),
                federated_credentials: vec![],
            });
        }
    }
    azure.emulator().seed(seed).unwrap();
    let credential = format!("msi-{label}");
    platform_credential(&client, &azure, &home, &credential, &[&a.ns, &b.ns]).await;

    let port = cluster::free_port();
    let url = format!("http://127.0.0.1:{port}/msi/token");
    let endpoint_args = |p: u16| {
        let mut args = azure_args(&azure);
        args.extend([
            "--msi-endpoint-addr".to_string(),
            format!("127.0.0.1:{p}"),
            "--msi-endpoint-url".into(),
            url.clone(),
            "--msi-burst".into(),
            "300".into(),
        ]);
        args
    };
    let selector = format!("{LABEL}={label}");
    let leader = Operator::start_across(
        &home,
        &selector,
        &format!("lease-{label}"),
        "msi-0",
        &endpoint_args(port),
    );
    for t in [&a, &b] {
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "training"}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &t.ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        apply(&client, &t.ns, serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "ws", "labels": {LABEL: label}},
            "spec": {"credentialRef": {"kind": "ClusterAzureCredential", "name": credential},
                     "subscriptionId": SUBSCRIPTION, "resourceGroup": t.rg, "workspaceName": "mlw"},
        }))
        .await;
        let ids: Vec<&String> = t.identities.iter().map(|(id, _, _)| id).collect();
        let grants = if t.ns == a.ns {
            serde_json::json!({"keyVaultSecretsUser": [vault]})
        } else {
            serde_json::json!({})
        };
        apply(&client, &t.ns, serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity",
            "metadata": {"name": "cpu-cluster", "labels": {LABEL: label}},
            "spec": {"workspaceRef": {"name": "ws"}, "computeName": "cpu-cluster",
                     "identity": {"type": "UserAssigned", "userAssignedIdentities": ids},
                     "grants": grants,
                     "federation": {"serviceAccounts": ["training"]},
                     "tokenSecret": {"name": "cpu-cluster-identity", "audiences": ["https://storage.azure.com"], "msiEndpoint": true}},
        }))
        .await;
    }
    for t in [&a, &b] {
        let (status, message, _) = ready_reason(
            &client,
            "ComputeIdentity",
            &t.ns,
            "cpu-cluster",
            "TokensIssued",
        )
        .await;
        assert_eq!(status, "True", "{message}");
    }
    let secret_of = |ns: String| {
        let client = client.clone();
        async move {
            Api::<Secret>::namespaced(client, &ns)
                .get("cpu-cluster-identity")
                .await
                .unwrap()
        }
    };
    let secret_a = secret_of(a.ns.clone()).await;
    let secret_b = secret_of(b.ns.clone()).await;
    assert_eq!(text(&secret_a, "MSI_ENDPOINT"), url);
    let (msi_a, msi_b) = (text(&secret_a, "MSI_SECRET"), text(&secret_b, "MSI_SECRET"));
    assert_eq!(msi_a.len(), 43);
    assert_ne!(msi_a, msi_b, "one secret per ComputeIdentity");
    assert_eq!(
        text(&secret_a, "DEFAULT_IDENTITY_CLIENT_ID"),
        a.identity(0).1
    );
    // Every listed identity is federated, so the endpoint can mint each one.
    for (id, _, _) in &a.identities {
        let subjects: Vec<String> = azure
            .emulator()
            .identity(id)
            .unwrap()
            .federated_credentials
            .into_iter()
            .map(|f| f.subject)
            .collect();
        assert_eq!(
            subjects,
            vec![format!("system:serviceaccount:{}:training", a.ns)],
            "{id}"
        );
    }
    let e = azure.emulator();
    let http = reqwest::Client::new();

    // 200 concurrent requests for one (identity, audience): one Entra request, one token.
    let before = e.counter("entra.token");
    let answers = futures::future::join_all((0..200).map(|i| {
        let (http, url, msi) = (http.clone(), url.clone(), msi_a.clone());
        // Every form the SDKs send is the same audience.
        let resource = [
            "https://vault.azure.net",
            "https://vault.azure.net/",
            "https://vault.azure.net/.default",
        ][i % 3];
        async move { ask(&http, &url, Some(&msi), resource, None).await }
    }))
    .await;
    assert!(
        answers.iter().all(|(s, _, _)| *s == 200),
        "{:?}",
        answers.iter().find(|(s, _, _)| *s != 200)
    );
    let first = answers[0].1["access_token"].as_str().unwrap();
    assert!(answers.iter().all(|(_, b, _)| b["access_token"] == first));
    assert_eq!(
        e.counter("entra.token") - before,
        1,
        "one Entra request for 200 callers"
    );
    let claims = e.verify_token(first).unwrap();
    assert_eq!(
        (claims.aud.as_str(), claims.oid.as_str()),
        ("https://vault.azure.net", a.identity(0).2.as_str())
    );
    assert!(
        answers[0].1["expires_on"].is_i64(),
        "expires_on is a number, as AML answers"
    );
    assert_eq!(
        answers[1].1["resource"], "https://vault.azure.net/",
        "the resource as sent"
    );

    // The documents' code, unmodified, in a process whose only inputs are the Secret's keys.
    let blob = support::azurite::Blob::new();
    let container = blob.prepare().await;
    let bundle = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bundle.path(),
        [
            std::fs::read(&blob.ca).unwrap(),
            std::fs::read(&azure.running.ca_path).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let node_modules = std::env::var("AMLID_NODE_MODULES")
        .expect("AMLID_NODE_MODULES is not set: run the tests with `make test`");
    let pods = [
        Pod {
            sdk: "Python azure-identity",
            program: &python,
            args: vec![concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/aml_training_pod.py"
            )],
            env: vec![
                (
                    "PYTHONPATH",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pod").into(),
                ),
                ("REQUESTS_CA_BUNDLE", bundle.path().display().to_string()),
            ],
        },
        Pod {
            sdk: "Node @azure/identity",
            program: "node",
            args: vec![
                "--require",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/pod/hosts.cjs"),
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/node/aml_training_pod.cjs"
                ),
            ],
            env: vec![
                ("NODE_PATH", node_modules.clone()),
                ("NODE_EXTRA_CA_CERTS", bundle.path().display().to_string()),
                // Where the node binary is; nothing else of the test's environment.
                ("PATH", std::env::var("PATH").unwrap_or_default()),
            ],
        },
    ];
    for Pod {
        sdk,
        program,
        args,
        env: extra,
    } in pods
    {
        let before = e.counter("entra.token");
        let pod = tokio::task::block_in_place(|| {
            let mut command = std::process::Command::new(program);
            command.env_clear().args(args);
            for (key, value) in secret_a.data.as_ref().unwrap() {
                if !key.ends_with(".token") && !key.ends_with(".expires-on") {
                    command.env(key, String::from_utf8(value.0.clone()).unwrap());
                }
            }
            command
                .envs(extra)
                .env(
                    "AMLID_POD_HOSTS",
                    format!("my-key-vault.vault.azure.net={}", azure.running.https_addr),
                )
                .env("ACCOUNT_URL", &blob.base)
                .env("CONTAINER", &container)
                .env("BLOB_NAME", support::azurite::BLOB.0)
                .output()
                .unwrap()
        });
        let result: serde_json::Value = serde_json::from_slice(&pod.stdout).unwrap_or_else(|_| {
            panic!(
                "{sdk}: the training pod failed: {}",
                String::from_utf8_lossy(&pod.stderr)
            )
        });
        assert_eq!(result["blob"], support::azurite::BLOB.1, "{sdk}: {result}");
        assert_eq!(result["default_scope_same_token"], true, "{sdk}: {result}");
        assert_eq!(
            result["secret_sha256"],
            sha256(VAULT_SECRET),
            "{sdk}: {result}"
        );
        let storage_token = e
            .issued_tokens()
            .into_iter()
            .find(|t| sha256(t) == result["storage_token_sha256"])
            .unwrap_or_else(|| panic!("{sdk}: the pod's storage token is one the emulator issued"));
        let claims = e.verify_token(&storage_token).unwrap();
        assert_eq!(
            (claims.aud.as_str(), claims.oid.as_str()),
            ("https://storage.azure.com", a.identity(0).2.as_str()),
            "{sdk}"
        );
        let expires_on = result["storage_token_expires_on"]
            .as_i64()
            .unwrap_or_default();
        assert!(
            (expires_on - claims.exp).abs() <= 5,
            "{sdk}: the SDK read expires_on {expires_on}, the token expires at {}",
            claims.exp
        );
        assert_eq!(
            e.counter("entra.token") - before,
            0,
            "{sdk}: the pod's tokens came from the cache the controllers share"
        );
    }

    // A listed identity other than the default one, by clientid.
    let (status, body, _) = ask(
        &http,
        &url,
        Some(&msi_a),
        "https://storage.azure.com/",
        Some(&a.identity(1).1),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = e
        .verify_token(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.oid, a.identity(1).2);

    // Refusals that say why.
    let wrong = "x".repeat(43);
    let refused = [
        Refused {
            what: "no secret",
            secret: None,
            resource: "https://storage.azure.com/",
            client_id: None,
            status: 401,
            words: "secret header is missing",
        },
        Refused {
            what: "a wrong secret",
            secret: Some(&wrong),
            resource: "https://storage.azure.com/",
            client_id: None,
            status: 401,
            words: "matches no ComputeIdentity",
        },
        Refused {
            what: "another namespace's identity",
            secret: Some(&msi_b),
            resource: "https://storage.azure.com/",
            client_id: Some(&a.identity(0).1),
            status: 400,
            words: "is not one of ComputeIdentity",
        },
        Refused {
            what: "an identity not listed",
            secret: Some(&msi_a),
            resource: "https://storage.azure.com/",
            client_id: Some(&b.identity(0).1),
            status: 400,
            words: "spec.identity.userAssignedIdentities",
        },
        Refused {
            what: "a disallowed audience",
            secret: Some(&msi_a),
            resource: "https://management.azure.com/",
            client_id: None,
            status: 400,
            words: "not among the token audiences",
        },
    ];
    for r in refused {
        let before = e.counter("entra.token");
        let (got, body, _) = ask(&http, &url, r.secret, r.resource, r.client_id).await;
        assert_eq!(got, r.status, "{}: {body}", r.what);
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(r.words), "{}: {description}", r.what);
        assert_eq!(
            e.counter("entra.token"),
            before,
            "{}: a refusal calls no Azure",
            r.what
        );
    }
    // Team B's own secret mints team B's identity, and only that.
    let (status, body, _) = ask(&http, &url, Some(&msi_b), "https://storage.azure.com", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        e.verify_token(body["access_token"].as_str().unwrap())
            .unwrap()
            .oid,
        b.identity(0).2
    );

    // Past its budget a secret gets 429 with Retry-After; other secrets are not affected. Batches
    // of 100 at once until the first 429 (bounded): how fast they go depends on the machine, so
    // what is checked is that no more were answered than the budget (burst 300, 20/s) allows.
    let started = std::time::Instant::now();
    let (mut answered, mut throttled) = (0, Vec::new());
    for _ in 0..30 {
        let batch = futures::future::join_all((0..100).map(|_| {
            let (http, url, msi) = (http.clone(), url.clone(), msi_a.clone());
            async move { ask(&http, &url, Some(&msi), "https://vault.azure.net", None).await }
        }))
        .await;
        answered += batch.iter().filter(|(s, _, _)| *s == 200).count();
        throttled.extend(batch.into_iter().filter(|(s, _, _)| *s == 429));
        if !throttled.is_empty() {
            break;
        }
    }
    assert!(
        !throttled.is_empty(),
        "3,000 requests exceed a burst of 300"
    );
    let allowed = 300.0 + 20.0 * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        answered as f64 <= allowed,
        "{answered} answered, the budget allows {allowed}"
    );
    assert!(throttled.iter().all(|(_, _, retry)| retry.is_some()));
    assert_eq!(
        ask(&http, &url, Some(&msi_b), "https://storage.azure.com", None)
            .await
            .0,
        200
    );

    // A second replica (a follower: it does not lead) answers too.
    let follower_port = cluster::free_port();
    let follower = Operator::start_across(
        &home,
        &selector,
        &format!("lease-{label}"),
        "msi-1",
        &endpoint_args(follower_port),
    );
    let follower_url = format!("http://127.0.0.1:{follower_port}/msi/token");
    let (status, body) =
        cluster::wait_until(Duration::from_secs(30), "the follower's endpoint", || {
            let (http, url, msi) = (http.clone(), follower_url.clone(), msi_a.clone());
            async move {
                let (s, b, _) =
                    ask(&http, &url, Some(&msi), "https://storage.azure.com", None).await;
                (s != 503 && s != 0).then_some((s, b))
            }
        })
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        follower.metric_sum("aml_identity_operator_leader").await,
        Some(0.0)
    );

    // One audit Event per identity, audience and token, never per request.
    let events = Api::<Event>::namespaced(client.clone(), &a.ns)
        .list(&Default::default())
        .await
        .unwrap();
    let served: Vec<&Event> = events
        .items
        .iter()
        .filter(|ev| ev.reason.as_deref() == Some("TokenServed"))
        .collect();
    let vault_events = served
        .iter()
        .filter(|ev| {
            let note = ev.note.as_deref().unwrap_or_default();
            note.contains(&a.identity(0).1) && note.contains("https://vault.azure.net")
        })
        .count();
    assert_eq!(
        vault_events, 1,
        "one Event for hundreds of requests of one token"
    );

    // A namespace the credential no longer admits gets 403 for its secret, without an Azure
    // call; admitted again, the same secret works again.
    let admit = |names: Vec<&str>| {
        let (client, credential) = (client.clone(), credential.clone());
        let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        async move {
            cluster::dynamic_api(&client, &kind("ClusterAzureCredential"), "")
                .patch(
                    &credential,
                    &PatchParams::default(),
                    &Patch::Merge(
                        serde_json::json!({"spec": {"allowedNamespaces": {"names": names}}}),
                    ),
                )
                .await
                .unwrap();
        }
    };
    admit(vec![&a.ns]).await;
    for endpoint in [&url, &follower_url] {
        until_status(
            &http,
            endpoint,
            &msi_b,
            403,
            Duration::from_secs(30),
            "a de-admitted namespace's secret to be refused",
        )
        .await;
    }
    let before = e.counter("entra.token");
    let (_, body, _) = ask(&http, &url, Some(&msi_b), "https://vault.azure.net", None).await;
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(&b.ns), "{description}");
    assert_eq!(e.counter("entra.token"), before, "a 403 calls no Azure");
    assert_eq!(
        ask(&http, &url, Some(&msi_a), "https://storage.azure.com", None)
            .await
            .0,
        200,
        "the other team is not affected"
    );
    admit(vec![&a.ns, &b.ns]).await;
    until_status(
        &http,
        &url,
        &msi_b,
        200,
        Duration::from_secs(30),
        "a re-admitted namespace's secret to work again",
    )
    .await;

    // A force-refresh rotates the secret: the old one stops working, the rewritten one works.
    cluster::dynamic_api(&client, &kind("ComputeIdentity"), &a.ns)
        .patch("cpu-cluster", &PatchParams::default(), &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"amlidentity.io/force-refresh": "rotate-1"}}})))
        .await
        .unwrap();
    until_status(
        &http,
        &url,
        &msi_a,
        401,
        Duration::from_secs(20),
        "the old secret to be refused",
    )
    .await;
    let rotated = cluster::wait_until(Duration::from_secs(30), "a rewritten MSI_SECRET", || {
        let (secret, old) = (secret_of(a.ns.clone()), msi_a.clone());
        async move {
            let s = text(&secret.await, "MSI_SECRET");
            (s != old).then_some(s)
        }
    })
    .await;
    until_status(
        &http,
        &url,
        &rotated,
        200,
        Duration::from_secs(20),
        "the new secret to work",
    )
    .await;

    // A deleted ComputeIdentity's secret is refused at once, on every replica.
    cluster::dynamic_api(&client, &kind("ComputeIdentity"), &b.ns)
        .delete("cpu-cluster", &Default::default())
        .await
        .unwrap();
    for endpoint in [&url, &follower_url] {
        until_status(
            &http,
            endpoint,
            &msi_b,
            401,
            Duration::from_secs(10),
            "the deleted object's secret to be refused",
        )
        .await;
    }

    // No token and no MSI_SECRET in any log, Event or status.
    for operator in [&leader, &follower] {
        for t in [&a, &b] {
            assert_no_leaks(
                &client,
                &azure,
                operator,
                &t.ns,
                &[&msi_a, &msi_b, &rotated],
            )
            .await;
        }
    }
    // An address that keeps sending unknown secrets is made to wait, on the replica it asks,
    // with no Azure call; the other replica still answers it.
    let before = e.counter("entra.token");
    let mut guessed = Vec::new();
    for i in 0..40 {
        let guess = format!("{i:0>43}");
        guessed.push(
            ask(
                &http,
                &follower_url,
                Some(&guess),
                "https://storage.azure.com",
                None,
            )
            .await,
        );
    }
    let first = guessed
        .iter()
        .position(|(s, _, _)| *s == 429)
        .expect("40 unknown secrets from one address are throttled");
    assert!(first <= 21, "throttled after {first} guesses");
    assert!(guessed[..first].iter().all(|(s, _, _)| *s == 401));
    let (_, body, retry) = &guessed[first];
    assert!(retry.is_some());
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("too many secrets that match no ComputeIdentity"),
        "{body}"
    );
    assert_eq!(
        ask(
            &http,
            &follower_url,
            Some(&rotated),
            "https://storage.azure.com",
            None
        )
        .await
        .0,
        429,
        "the guessing address waits, whatever it sends"
    );
    assert_eq!(
        ask(
            &http,
            &url,
            Some(&rotated),
            "https://storage.azure.com",
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(e.counter("entra.token"), before, "guesses call no Azure");
    let outcomes = leader
        .metric_sum("aml_identity_operator_msi_endpoint_requests_total{outcome=\"throttled\"")
        .await;
    assert!(outcomes.unwrap_or_default() >= throttled.len() as f64);
    // Cleanup while the operators still run (what the objects made in Azure goes first).
    for (kind_name, t) in [
        ("ComputeIdentity", &a),
        ("Workspace", &a),
        ("Workspace", &b),
    ] {
        let name = if kind_name == "Workspace" {
            "ws"
        } else {
            "cpu-cluster"
        };
        delete_and_wait(&client, kind_name, &t.ns, name).await;
    }
    for ns in [&a.ns, &b.ns, &home] {
        cluster::delete_namespace(&client, ns).await;
    }
    drop(follower);
    drop(leader);
}
