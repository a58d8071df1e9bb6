//! The Helm chart from a test's point of view: rendered and linted by Helm itself (helm-python-sdk
//! in the test venv), applied to the local API server, and the operator's own ServiceAccount.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/aml-identity-operator")
}

fn python(args: &[&str]) -> Value {
    let python = std::env::var("AMLID_PYTHON").expect(
        "AMLID_PYTHON is not set: run the tests with `make test`, which creates the Python venv",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/chart.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("running tests/python/chart.py");
    assert!(
        out.status.success(),
        "chart.py {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("chart.py prints JSON")
}

/// The manifests Helm renders for `values`, as objects ordered by template then position, or
/// Helm's message when it refuses the values.
pub fn try_render(release: &str, namespace: &str, values: &Value) -> Result<Vec<Value>, String> {
    let dir = chart_dir();
    let answer = python(&[
        "render",
        dir.to_str().unwrap(),
        release,
        namespace,
        &values.to_string(),
    ]);
    if let Some(error) = answer["error"].as_str() {
        return Err(error.to_owned());
    }
    let mut templates: Vec<(&String, &Value)> =
        answer["manifests"].as_object().unwrap().iter().collect();
    templates.sort_by_key(|(path, _)| path.as_str());
    let mut objects = Vec::new();
    for (path, text) in templates {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        for document in serde_yaml::Deserializer::from_str(text.as_str().unwrap()) {
            let object: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{path} renders invalid YAML: {e}"));
            if !object.is_null() {
                objects.push(object);
            }
        }
    }
    Ok(objects)
}

/// Like [`try_render`], for values that must render.
pub fn render(release: &str, namespace: &str, values: &Value) -> Vec<Value> {
    try_render(release, namespace, values).unwrap_or_else(|e| panic!("rendering {values}: {e}"))
}

/// NOTES.txt as Helm renders it.
pub fn notes(values: &Value) -> String {
    let dir = chart_dir();
    let answer = python(&[
        "render",
        dir.to_str().unwrap(),
        "aml-identity-operator",
        "aml-identity-system",
        &values.to_string(),
    ]);
    answer["manifests"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(path, _)| path.ends_with("NOTES.txt"))
        .map(|(_, text)| text.as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// `helm lint --strict` findings for `values` against `kube_version`.
pub fn lint(values: &Value, kube_version: &str) -> Value {
    let dir = chart_dir();
    python(&[
        "lint",
        dir.to_str().unwrap(),
        &values.to_string(),
        kube_version,
    ])
}

/// The objects of `kind` (and `name`, if given).
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

/// Server-side applies each object as the tests' field manager (CRDs without CEL: the local API
/// server is 1.20).
pub async fn apply(client: &Client, objects: &[Value]) {
    for object in objects {
        let mut object = object.clone();
        if object["kind"] == "CustomResourceDefinition" {
            let crd = serde_json::from_value(object).unwrap();
            object = aml_identity_operator::crd::strip_cel(&crd);
        }
        let api = api_for(client, &object);
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        // A Pod in a namespace made a moment ago waits for its default ServiceAccount's token
        // (the API server says so with a 500 and retry-after 1): a bounded wait, as kubectl's.
        let mut attempts = 0;
        loop {
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply("aml-identity-operator-tests").force(),
                    &Patch::Apply(&object),
                )
                .await;
            match applied {
                Err(kube::Error::Api(e))
                    if e.code == 500
                        && e.message.contains("No API token found")
                        && attempts < 20 =>
                {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                other => {
                    other.unwrap_or_else(|e| panic!("applying {} {name}: {e}", object["kind"]));
                    break;
                }
            }
        }
    }
}

/// Deletes the cluster-scoped objects among `objects` (but namespaces), which deleting a test's
/// namespace does not remove.
pub async fn delete_cluster_scoped(client: &Client, objects: &[Value]) {
    let cluster_scoped: Vec<Value> = objects
        .iter()
        .filter(|o| o["metadata"]["namespace"].is_null() && o["kind"] != "Namespace")
        .cloned()
        .collect();
    delete(client, &cluster_scoped).await;
}

/// Objects as the local 1.20 API server takes them: policy/v1 (1.21, the chart's minimum) as
/// policy/v1beta1, whose fields are the same.
pub fn for_local_server(objects: Vec<Value>) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut o| {
            if o["apiVersion"] == "policy/v1" {
                o["apiVersion"] = "policy/v1beta1".into();
            }
            o
        })
        .collect()
}

/// Deletes each object, ignoring those already gone.
pub async fn delete(client: &Client, objects: &[Value]) {
    for object in objects {
        let api = api_for(client, object);
        let name = object["metadata"]["name"].as_str().unwrap();
        let _ = api.delete(name, &Default::default()).await;
    }
}

fn api_for(client: &Client, object: &Value) -> Api<DynamicObject> {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (
            String::new(),
            object["apiVersion"].as_str().unwrap().to_owned(),
        ),
    };
    let kind = object["kind"].as_str().unwrap();
    let ours = aml_identity_operator::crd::all()
        .into_iter()
        .find(|c| c.spec.group == group && c.spec.names.kind == kind);
    let plural = match (ours, kind) {
        (Some(crd), _) => crd.spec.names.plural,
        (None, "PodDisruptionBudget") => "poddisruptionbudgets".to_owned(),
        (None, "NetworkPolicy") => "networkpolicies".to_owned(),
        (None, k) => format!("{}s", k.to_lowercase()),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), &plural);
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A kubeconfig that signs in as `namespace/service_account` with a token from the TokenRequest
/// API, next to the admin one, so a process can run with exactly that account's permissions.
pub async fn kubeconfig_for(client: &Client, namespace: &str, service_account: &str, path: &Path) {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [], "expirationSeconds": 24 * 3600}
    }))
    .unwrap();
    let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(service_account, &Default::default(), &request)
        .await
        .expect("a token for the operator's ServiceAccount")
        .status
        .expect("a token")
        .token;
    let admin = kube::config::Kubeconfig::read().unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.server,
            "certificate-authority": cluster.certificate_authority,
        }}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": service_account}}],
        "current-context": "operator",
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&config).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// A client signed in with the kubeconfig at `path`.
pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}
