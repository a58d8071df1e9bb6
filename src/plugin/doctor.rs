//! `kubectl amlid doctor`: the whole chain an object depends on, each link checked with a verdict
//! and a fix — the credential admits the namespace, the scopes allow every id, the audiences are
//! allowed, the federated ServiceAccounts exist and Entra ID must trust exactly this cluster's
//! issuer and subject, the operator's own checks (roles, federation, sign-in) passed, and the output
//! Secret is fresh. Read-only: it asks the API server, never Azure.

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Client;
use kube::ResourceExt;
use kube::api::Api;
use serde::Serialize;
use serde_json::Value;

use super::kinds::parse_target;
use super::name_of;
use crate::api::ClusterAzureCredential;
use crate::azure::scope::{Audiences, Ceiling};

/// One check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// `ok`, `warn` or `fail`.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when nothing).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken: the object cannot work until it is fixed.
    Fail,
}

/// What `doctor` found for one object.
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    /// `Kind/namespace/name`.
    pub object: String,
    /// Every check, in chain order.
    pub checks: Vec<Check>,
}

impl Diagnosis {
    fn push(
        &mut self,
        check: &str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.checks.push(Check {
            check: check.into(),
            verdict,
            detail: detail.into(),
            fix: fix.into(),
        });
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Every Azure resource id a spec names, with the field that names it.
pub fn ids_in(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) if s.to_ascii_lowercase().starts_with("/subscriptions/") => {
            out.push((path.to_owned(), s.clone()));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                ids_in(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                ids_in(v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Diagnoses `target` (`kind/name`, or a kind and `name`) in `namespace`.
pub async fn diagnose(
    client: &Client,
    namespace: &str,
    target: &str,
    name: Option<&str>,
    now: i64,
) -> Result<Diagnosis, super::Error> {
    let (kind, name) = parse_target(target, name)?;
    let name =
        name.ok_or_else(|| super::Error::Usage("doctor takes one object: kind/name".into()))?;
    let object = kind.api(client, Some(namespace)).get(&name).await?;
    let value = serde_json::to_value(&object).unwrap_or_default();
    let mut d = Diagnosis {
        object: format!("{}/{namespace}/{name}", kind.kind),
        checks: Vec::new(),
    };

    // The operator's own verdict on the object.
    let (ready, reason, message) = super::status::ready_of(&value);
    match ready.as_str() {
        "True" => d.push("ready", Verdict::Ok, format!("{reason}: {message}"), ""),
        "False" => d.push(
            "ready",
            Verdict::Fail,
            format!("{reason}: {message}"),
            "the checks below say which link is broken",
        ),
        _ => d.push(
            "ready",
            Verdict::Warn,
            "not reconciled yet",
            "is the operator running and does it serve this namespace (operator.namespace, operator.labelSelector)?",
        ),
    }

    // The chain, down to the credential.
    let chain = super::status::chain(client, Some(namespace), &value).await;
    let mut workspace: Option<Value> = None;
    let mut credential: Option<(String, Value)> = None;
    for link in &chain {
        if link.ready == "NotFound" {
            d.push(
                "reference",
                Verdict::Fail,
                format!("{} names {}, which does not exist", link.via, link.object),
                format!("create {} or correct {}", link.object, link.via),
            );
            continue;
        }
        let verdict = if link.ready.starts_with("True") {
            Verdict::Ok
        } else {
            Verdict::Fail
        };
        d.push(
            "reference",
            verdict,
            format!("{} -> {}: {}", link.via, link.object, link.ready),
            if verdict == Verdict::Ok {
                String::new()
            } else {
                format!(
                    "kubectl amlid doctor {}",
                    link.object.replace(&format!("/{namespace}/"), "/")
                )
            },
        );
        match (link.kind.as_str(), &link.found) {
            ("Workspace", Some(found)) => workspace = Some(found.clone()),
            (k, Some(found)) if k.ends_with("AzureCredential") => {
                credential = Some((k.to_owned(), found.clone()));
            }
            _ => {}
        }
    }
    if kind.kind.ends_with("AzureCredential") {
        credential = Some((kind.kind.clone(), value.clone()));
    }

    // The Azure ids the object would touch.
    let mut ids = Vec::new();
    ids_in(&value["spec"], "spec", &mut ids);
    if let Some(w) = &workspace
        && let Ok(spec) = serde_json::from_value::<crate::api::WorkspaceSpec>(w["spec"].clone())
    {
        ids.push((
            format!(
                "Workspace {} (its spec)",
                w["metadata"]["name"].as_str().unwrap_or("")
            ),
            spec.arm_id(),
        ));
    }

    // A cluster credential: admission, scopes, audiences.
    match &credential {
        Some((k, c)) if k == "ClusterAzureCredential" => {
            let typed: Result<ClusterAzureCredential, _> = serde_json::from_value(c.clone());
            match typed {
                Ok(cred) => cluster_credential_checks(client, &mut d, &cred, namespace, &ids, &value).await?,
                Err(e) => d.push("credential", Verdict::Fail, format!("ClusterAzureCredential {} does not parse: {e}", name_of(c)), "fix its spec"),
            }
        }
        Some((_, c)) => d.push("admission", Verdict::Ok, format!("AzureCredential {} of the namespace itself: its principal's own Azure RBAC bounds what it can do", name_of(c)), ""),
        None => d.push("credential", Verdict::Warn, "no credential found in the chain", "set spec.credentialRef on the Workspace (or the object)"),
    }

    // Workload identity: what Entra ID must trust.
    let issuer = cluster_issuer(client).await;
    if let Some((_, c)) = &credential {
        let spec = &c["spec"];
        if let Some(sa) = spec["workloadIdentity"]["serviceAccountName"].as_str() {
            let home = c["metadata"]["namespace"]
                .as_str()
                .unwrap_or("<the operator's namespace>");
            federation_checks(
                client,
                &mut d,
                home,
                &[sa.to_owned()],
                spec["workloadIdentity"]["clientId"].as_str().unwrap_or("?"),
                issuer.as_deref(),
            )
            .await;
        }
        if let Some(cond) = condition(c, "Ready").filter(|c| c["status"] != "True") {
            let message = cond["message"].as_str().unwrap_or("");
            let fix = if message.contains("AADSTS700211")
                || message.contains("AADSTS70021")
                || message.contains("federated")
            {
                "the identity's federated credential does not match: see the federation check above for the issuer and subject it must name"
            } else {
                "see the credential's message"
            };
            d.push(
                "sign-in",
                Verdict::Fail,
                format!("{}: {message}", cond["reason"].as_str().unwrap_or("")),
                fix,
            );
        }
    }
    if kind.kind == "ComputeIdentity" {
        let accounts: Vec<String> = super::strings(&value["spec"]["federation"]["serviceAccounts"])
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !accounts.is_empty() {
            let client_id = value["status"]["clientId"]
                .as_str()
                .unwrap_or("<the identity's client id>");
            federation_checks(
                client,
                &mut d,
                namespace,
                &accounts,
                client_id,
                issuer.as_deref(),
            )
            .await;
        }
        for type_ in ["FederationValid", "PermissionsVerified"] {
            if let Some(c) = condition(&value, type_) {
                let verdict = match c["status"].as_str() {
                    Some("True") => Verdict::Ok,
                    Some("False") => Verdict::Fail,
                    _ => Verdict::Warn,
                };
                let fix = if verdict == Verdict::Ok {
                    ""
                } else {
                    "the operator could not make Azure match the spec; the message names what is missing"
                };
                d.push(
                    type_,
                    verdict,
                    format!(
                        "{}: {}",
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    ),
                    fix,
                );
            }
        }
    }

    // The output Secret is fresh, judged by what it holds.
    let output = value["spec"]["tokenSecret"]["name"]
        .as_str()
        .or(value["spec"]["podAccess"]["secretName"].as_str())
        .or(value["spec"]["secretName"].as_str())
        .or(value["spec"]["target"]["secretName"].as_str());
    if let Some(secret_name) = output {
        output_checks(
            client,
            &mut d,
            namespace,
            secret_name,
            object.uid().as_deref(),
            now,
        )
        .await;
    }
    Ok(d)
}

async fn cluster_credential_checks(
    client: &Client,
    d: &mut Diagnosis,
    cred: &ClusterAzureCredential,
    namespace: &str,
    ids: &[(String, String)],
    object: &Value,
) -> Result<(), super::Error> {
    let name = cred.name_any();
    let allowed = &cred.spec.allowed_namespaces;
    let labels = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    let by_name = allowed.names.iter().any(|n| n == namespace);
    let by_labels = allowed
        .selector
        .as_ref()
        .is_some_and(|s| crate::controllers::credentials::selector_matches(s, &labels));
    if by_name || by_labels {
        d.push(
            "admission",
            Verdict::Ok,
            format!(
                "ClusterAzureCredential {name} admits {namespace} ({})",
                if by_name { "by name" } else { "by its labels" }
            ),
            "",
        );
    } else {
        let hint = allowed
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|s| !s.is_empty())
            .map(|l| format!("kubectl label namespace {namespace} {l}, or "))
            .unwrap_or_default();
        d.push("admission", Verdict::Fail, format!("ClusterAzureCredential {name} does not admit {namespace}"), format!("{hint}add {namespace} to spec.allowedNamespaces.names of ClusterAzureCredential {name} (a cluster admin's decision)"));
    }
    match Ceiling::for_namespace(&cred.spec.allowed_scopes, namespace) {
        Ok(ceiling) => {
            let outside: Vec<&(String, String)> =
                ids.iter().filter(|(_, id)| !ceiling.admits(id)).collect();
            if outside.is_empty() {
                d.push(
                    "scope",
                    Verdict::Ok,
                    format!("{} Azure id(s) lie within {ceiling}", ids.len()),
                    "",
                );
            }
            for (field, id) in outside {
                d.push("scope", Verdict::Fail, format!("{field} = {id} is outside the allowedScopes of {name} ({ceiling})"), format!("name an id within {ceiling}, or have a cluster admin add a scope that covers it to spec.allowedScopes of ClusterAzureCredential {name}"));
            }
        }
        Err(e) => d.push(
            "scope",
            Verdict::Fail,
            format!("allowedScopes of {name}: {e}"),
            "fix the credential's allowedScopes",
        ),
    }
    let audiences = Audiences::new(cred.spec.allowed_audiences.as_deref());
    let wanted = super::strings(&object["spec"]["tokenSecret"]["audiences"]);
    for audience in wanted {
        if audiences.admits(audience) {
            d.push(
                "audience",
                Verdict::Ok,
                format!("{audience} is allowed"),
                "",
            );
        } else {
            d.push("audience", Verdict::Fail, format!("spec.tokenSecret.audiences names {audience}, which ClusterAzureCredential {name} does not allow"), format!("drop it, or have a cluster admin add it to spec.allowedAudiences of {name}"));
        }
    }
    Ok(())
}

async fn cluster_issuer(client: &Client) -> Option<String> {
    let request = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .ok()?;
    let text = client.request_text(request).await.ok()?;
    serde_json::from_str::<Value>(&text).ok()?["issuer"]
        .as_str()
        .map(str::to_owned)
}

async fn federation_checks(
    client: &Client,
    d: &mut Diagnosis,
    namespace: &str,
    accounts: &[String],
    client_id: &str,
    issuer: Option<&str>,
) {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    for sa in accounts {
        match api.get_opt(sa).await {
            Ok(Some(_)) => {
                let issuer = issuer.unwrap_or(
                    "<the cluster's OIDC issuer: az aks show --query oidcIssuerProfile.issuerUrl>",
                );
                d.push(
                    "federation",
                    Verdict::Ok,
                    format!("ServiceAccount {namespace}/{sa} exists; identity {client_id} must trust issuer {issuer}, subject system:serviceaccount:{namespace}:{sa}, audience api://AzureADTokenExchange"),
                    "",
                );
            }
            Ok(None) => d.push(
                "federation",
                Verdict::Fail,
                format!("ServiceAccount {namespace}/{sa} does not exist"),
                format!("kubectl -n {namespace} create serviceaccount {sa}"),
            ),
            Err(e) => d.push(
                "federation",
                Verdict::Warn,
                format!("cannot read ServiceAccount {namespace}/{sa}: {e}"),
                "run doctor with read access to ServiceAccounts",
            ),
        }
    }
}

async fn output_checks(
    client: &Client,
    d: &mut Diagnosis,
    namespace: &str,
    name: &str,
    owner_uid: Option<&str>,
    now: i64,
) {
    let secret = match Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
    {
        Ok(Some(s)) => s,
        Ok(None) => {
            return d.push(
                "output",
                Verdict::Fail,
                format!("Secret {name} does not exist yet"),
                "it is written once every check above passes",
            );
        }
        Err(e) => {
            return d.push(
                "output",
                Verdict::Warn,
                format!("cannot read Secret {name}: {e}"),
                "run doctor with read access to Secrets to judge freshness",
            );
        }
    };
    if !secret
        .owner_references()
        .iter()
        .any(|r| Some(r.uid.as_str()) == owner_uid)
    {
        return d.push("output", Verdict::Fail, format!("Secret {name} exists but was not written by this object"), format!("rename or delete Secret {name}: the operator never overwrites what it did not create (TargetConflict)"));
    }
    let report = super::status::SecretReport::of(&secret, now);
    let lives: Vec<i64> = report
        .data
        .values()
        .filter_map(|v| match v {
            super::inspect::Decoded::Jwt {
                expires_in_seconds, ..
            }
            | super::inspect::Decoded::Sas {
                expires_in_seconds, ..
            } => *expires_in_seconds,
            super::inspect::Decoded::DockerConfig { registries } => {
                registries.values().find_map(|l| match &*l.password {
                    super::inspect::Decoded::Jwt {
                        expires_in_seconds, ..
                    } => *expires_in_seconds,
                    _ => None,
                })
            }
            _ => None,
        })
        .collect();
    match lives.iter().min() {
        Some(left) if *left > 0 => d.push(
            "output",
            Verdict::Ok,
            format!(
                "Secret {name} holds credentials valid for {}",
                super::duration(*left)
            ),
            "",
        ),
        Some(left) => d.push(
            "output",
            Verdict::Fail,
            format!(
                "Secret {name} holds credentials that expired {} ago",
                super::duration(-*left)
            ),
            format!("kubectl amlid renew -n {namespace} … and read the object's Ready message"),
        ),
        None => d.push(
            "output",
            Verdict::Ok,
            format!("Secret {name} exists (nothing in it expires)"),
            "",
        ),
    }
}

/// The text form.
pub fn text(d: &Diagnosis) -> String {
    let mut out = format!("{}\n", d.object);
    for c in &d.checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("  [{mark}] {:<20} {}\n", c.check, c.detail));
        if !c.fix.is_empty() {
            out.push_str(&format!("         {:<20} fix: {}\n", "", c.fix));
        }
    }
    out
}
