//! `kubectl amlid whoami` and `kubectl amlid audit access`: which Azure principal signs in for a
//! namespace or an object, and which namespaces can cause which identities to be used — the
//! confused-deputy question, answered from what the cluster holds.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;
use serde_json::Value;

use super::kinds::{Kind, parse_target};
use super::{name_of, namespace_of};
use crate::api::ClusterAzureCredential;

/// A credential a namespace may use.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usable {
    /// `AzureCredential/ns/name` or `ClusterAzureCredential/name`.
    pub credential: String,
    /// How it signs in: `servicePrincipal 2f5c…`, `workloadIdentity 8b3f… as ns/sa`, …
    pub signs_in_as: String,
    /// The principal's object id, once the operator proved the credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Why this namespace may use it.
    pub because: String,
}

/// What `whoami` found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// The namespace asked about.
    pub namespace: String,
    /// The object asked about, if any, and the chain it signs in through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Its chain (with an object).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<super::status::Link>,
    /// The identity pods get from the object (a ComputeIdentity's client id), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods_get: Option<String>,
    /// Credentials the namespace may use.
    pub credentials: Vec<Usable>,
}

fn signs_in_as(spec: &Value, home: &str) -> String {
    if let Some(sp) = spec.get("servicePrincipal").filter(|v| v.is_object()) {
        format!(
            "servicePrincipal {}",
            sp["clientId"].as_str().unwrap_or("?")
        )
    } else if let Some(wi) = spec.get("workloadIdentity").filter(|v| v.is_object()) {
        format!(
            "workloadIdentity {} as ServiceAccount {home}/{}",
            wi["clientId"].as_str().unwrap_or("?"),
            wi["serviceAccountName"].as_str().unwrap_or("?")
        )
    } else if let Some(mi) = spec.get("managedIdentity").filter(|v| v.is_object()) {
        format!(
            "the node's managed identity {}",
            mi["clientId"].as_str().unwrap_or("(system-assigned)")
        )
    } else if spec.get("azureCli").is_some_and(|v| v.is_object()) {
        "the Azure CLI of the operator's machine".into()
    } else {
        "?".into()
    }
}

fn admits(
    cred: &ClusterAzureCredential,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'static str> {
    let allowed = &cred.spec.allowed_namespaces;
    if allowed.names.iter().any(|n| n == namespace) {
        return Some("named in allowedNamespaces.names");
    }
    allowed
        .selector
        .as_ref()
        .filter(|s| crate::controllers::credentials::selector_matches(s, labels))
        .map(|_| "its labels match allowedNamespaces.selector")
}

async fn list_cluster_credentials(
    client: &Client,
) -> Result<Vec<(ClusterAzureCredential, Value)>, super::Error> {
    let all = Kind::named("ClusterAzureCredential")
        .list(client, None)
        .await?;
    Ok(all
        .into_iter()
        .filter_map(|v| Some((serde_json::from_value(v.clone()).ok()?, v)))
        .collect())
}

/// Who signs in for `namespace`, or for the object `target` in it.
pub async fn whoami(
    client: &Client,
    namespace: &str,
    target: Option<&str>,
    name: Option<&str>,
    cluster_home: &str,
) -> Result<WhoAmI, super::Error> {
    let mut report = WhoAmI {
        namespace: namespace.into(),
        object: None,
        chain: Vec::new(),
        pods_get: None,
        credentials: Vec::new(),
    };
    if let Some(target) = target {
        let (kind, name) = parse_target(target, name)?;
        let name = name.ok_or_else(|| {
            super::Error::Usage("whoami takes kind/name, or nothing for the namespace".into())
        })?;
        let object = serde_json::to_value(kind.api(client, Some(namespace)).get(&name).await?)
            .unwrap_or_default();
        report.object = Some(format!("{}/{namespace}/{name}", kind.kind));
        report.chain = super::status::chain(client, Some(namespace), &object).await;
        if kind.kind == "ComputeIdentity" {
            report.pods_get = object["status"]["clientId"]
                .as_str()
                .map(|c| format!("identity {c} (DEFAULT_IDENTITY_CLIENT_ID)"));
        }
    }
    for v in Kind::named("AzureCredential")
        .list(client, Some(namespace))
        .await?
    {
        report.credentials.push(Usable {
            credential: format!("AzureCredential/{namespace}/{}", name_of(&v)),
            signs_in_as: signs_in_as(&v["spec"], namespace),
            object_id: v["status"]["objectId"].as_str().map(str::to_owned),
            because: "it is in the namespace".into(),
        });
    }
    let labels = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    for (cred, v) in list_cluster_credentials(client).await? {
        if let Some(because) = admits(&cred, namespace, &labels) {
            report.credentials.push(Usable {
                credential: format!("ClusterAzureCredential/{}", cred.name_any()),
                signs_in_as: signs_in_as(&v["spec"], cluster_home),
                object_id: v["status"]["objectId"].as_str().map(str::to_owned),
                because: format!(
                    "{because}; allowedScopes {}",
                    cred.spec.allowed_scopes.join(", ")
                ),
            });
        }
    }
    Ok(report)
}

/// The text form of `whoami`.
pub fn whoami_text(r: &WhoAmI) -> String {
    let mut out = String::new();
    if let Some(o) = &r.object {
        out.push_str(&format!("{o} signs in through:\n"));
        for l in &r.chain {
            out.push_str(&format!("  {}\n", l.line()));
        }
        if let Some(p) = &r.pods_get {
            out.push_str(&format!("Pods get {p}\n"));
        }
    }
    out.push_str(&format!("Credentials namespace {} may use:\n", r.namespace));
    if r.credentials.is_empty() {
        out.push_str("  none: create an AzureCredential here, or ask for admission to a ClusterAzureCredential\n");
    }
    for c in &r.credentials {
        out.push_str(&format!(
            "  {}: {}{} ({})\n",
            c.credential,
            c.signs_in_as,
            c.object_id
                .as_ref()
                .map(|o| format!(", object id {o}"))
                .unwrap_or_default(),
            c.because
        ));
    }
    out
}

/// One identity and who can have it used.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reachable {
    /// The identity: a user-assigned identity's resource id or a client id.
    pub identity: String,
    /// Namespaces whose objects can cause it to be used.
    pub namespaces: BTreeSet<String>,
    /// The objects, and through which ServiceAccount if federated.
    pub through: Vec<String>,
    /// Reachable from more than one namespace.
    pub shared: bool,
}

/// What `audit access` found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Each cluster credential and the namespaces it admits.
    pub cluster_credentials: BTreeMap<String, BTreeSet<String>>,
    /// Each identity and who can have it used, shared ones first.
    pub identities: Vec<Reachable>,
}

/// Which namespaces can cause which identities and shared principals to be used.
pub async fn audit(client: &Client) -> Result<Audit, super::Error> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut cluster_credentials = BTreeMap::new();
    let mut identities: BTreeMap<String, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
    let mut add = |identity: String, namespace: String, how: String| {
        let entry = identities.entry(identity).or_default();
        entry.0.insert(namespace);
        entry.1.push(how);
    };
    for (cred, v) in list_cluster_credentials(client).await? {
        let admitted: BTreeSet<String> = namespaces
            .iter()
            .filter(|n| admits(&cred, &n.name_any(), n.labels()).is_some())
            .map(|n| n.name_any())
            .collect();
        let principal = principal_of(&v["spec"]);
        for ns in &admitted {
            add(
                principal.clone(),
                ns.clone(),
                format!("ClusterAzureCredential/{} admits {ns}", cred.name_any()),
            );
        }
        cluster_credentials.insert(cred.name_any(), admitted);
    }
    for v in Kind::named("AzureCredential").list(client, None).await? {
        let ns = namespace_of(&v).to_owned();
        let how = format!("AzureCredential/{ns}/{}", name_of(&v));
        add(principal_of(&v["spec"]), ns, how);
    }
    for v in Kind::named("ComputeIdentity").list(client, None).await? {
        let ns = namespace_of(&v).to_owned();
        let accounts = super::strings(&v["spec"]["federation"]["serviceAccounts"]);
        let how = if accounts.is_empty() {
            format!("ComputeIdentity/{ns}/{}", name_of(&v))
        } else {
            let accounts: Vec<String> = accounts.iter().map(|a| format!("{ns}/{a}")).collect();
            format!(
                "ComputeIdentity/{ns}/{} federates {}",
                name_of(&v),
                accounts.join(", ")
            )
        };
        for id in super::strings(&v["spec"]["identity"]["userAssignedIdentities"]) {
            add(id.to_ascii_lowercase(), ns.clone(), how.clone());
        }
    }
    for v in Kind::named("RegistryConnection").list(client, None).await? {
        let ns = namespace_of(&v).to_owned();
        let identity = &v["spec"]["auth"]["managedIdentity"];
        if let Some(id) = identity["resourceId"].as_str() {
            let how = match identity["serviceAccount"].as_str() {
                Some(account) => format!(
                    "RegistryConnection/{ns}/{} federates {ns}/{account}",
                    name_of(&v)
                ),
                None => format!("RegistryConnection/{ns}/{}", name_of(&v)),
            };
            add(id.to_ascii_lowercase(), ns, how);
        }
    }
    let mut identities: Vec<Reachable> = identities
        .into_iter()
        .map(|(identity, (namespaces, through))| Reachable {
            shared: namespaces.len() > 1,
            identity,
            namespaces,
            through,
        })
        .collect();
    identities.sort_by_key(|r| (!r.shared, r.identity.clone()));
    Ok(Audit {
        cluster_credentials,
        identities,
    })
}

fn principal_of(spec: &Value) -> String {
    for source in ["servicePrincipal", "workloadIdentity", "managedIdentity"] {
        if let Some(id) = spec[source]["clientId"].as_str() {
            return format!("client {id}");
        }
    }
    if spec["managedIdentity"].is_object() {
        return "the node's system-assigned identity".into();
    }
    if spec["azureCli"].is_object() {
        return "the Azure CLI's signed-in user".into();
    }
    "?".into()
}

/// The text form of `audit access`.
pub fn audit_text(a: &Audit) -> String {
    let mut out = String::from("Cluster credentials and the namespaces they admit:\n");
    if a.cluster_credentials.is_empty() {
        out.push_str("  none\n");
    }
    for (name, namespaces) in &a.cluster_credentials {
        out.push_str(&format!(
            "  {name}: {}\n",
            if namespaces.is_empty() {
                "none".to_owned()
            } else {
                namespaces.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        ));
    }
    out.push_str("Identities and the namespaces that can have them used:\n");
    for r in &a.identities {
        let flag = if r.shared { "SHARED " } else { "" };
        out.push_str(&format!(
            "  {flag}{} <- {}\n",
            r.identity,
            r.namespaces.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        for t in &r.through {
            out.push_str(&format!("      {t}\n"));
        }
    }
    out
}
