//! `kubectl amlid status`: for each object, its verdict and when its credentials expire; for one
//! object also every condition, the identity chain it signs in through, its output Secrets and
//! its Events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;
use serde_json::Value;

use super::inspect::{self, Decoded};
use super::kinds::{Kind, parse_target};

/// What `status` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// One entry per object.
    pub objects: Vec<ObjectStatus>,
}

/// One object's state.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// Its kind.
    pub kind: String,
    /// Its namespace (none for cluster-scoped kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// `True`, `False` or `Unknown` (not yet reconciled).
    pub ready: String,
    /// The Ready reason.
    pub reason: String,
    /// The Ready message.
    pub message: String,
    /// When its credentials expire, and in how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the operator renews them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    /// When a failing object is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<String>,
    /// Failed renewals in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<i64>,
    /// Every condition (one object only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Value>,
    /// What it signs in through, nearest first (one object only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Link>,
    /// Secrets it wrote (one object only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretSummary>,
    /// Its Events, oldest first (one object only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventLine>,
}

/// A step of the identity chain.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// Which field of the previous step names it.
    pub via: String,
    /// `Kind/name` (or `Kind/namespace/name`).
    pub object: String,
    /// Its Ready status and reason, or `NotFound`.
    pub ready: String,
    /// Azure ids it reports (clientId, principalId, objectId, appId).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ids: BTreeMap<String, String>,
    /// Its kind.
    #[serde(skip)]
    pub kind: String,
    /// The object as read (none when it does not exist), for callers that look further.
    #[serde(skip)]
    pub found: Option<Value>,
}

impl Link {
    /// `via -> object: ready ids…`, for people.
    pub fn line(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let line = format!(
            "{} -> {}: {} {}",
            self.via,
            self.object,
            self.ready,
            ids.join(" ")
        );
        line.trim_end().to_owned()
    }
}

/// An output Secret, as its annotations describe it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSummary {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `amlidentity.io/expires-at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// One Event.
#[derive(Debug, Serialize)]
pub struct EventLine {
    /// When it was last seen.
    pub time: String,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    /// Its reason.
    pub reason: String,
    /// Its note.
    pub message: String,
}

/// The Ready condition of `object`: status, reason and message (`Unknown` before the first
/// reconcile).
pub fn ready_of(object: &Value) -> (String, String, String) {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"), s("message"))
        })
        .unwrap_or_else(|| ("Unknown".into(), "NotReconciled".into(), String::new()))
}

fn summary(kind: &Kind, object: &DynamicObject) -> ObjectStatus {
    let value = serde_json::to_value(object).unwrap_or_default();
    let (ready, reason, message) = ready_of(&value);
    let text = |k: &str| value["status"][k].as_str().map(str::to_owned);
    ObjectStatus {
        kind: kind.kind.clone(),
        namespace: object.namespace(),
        name: object.name_any(),
        ready,
        reason,
        message,
        expires_at: text("expiresAt"),
        renewal_time: text("renewalTime"),
        next_retry_time: text("nextRetryTime"),
        failed_attempts: value["status"]["failedAttempts"].as_i64(),
        ..Default::default()
    }
}

/// Collects the report for `target` (a kind, `kind/name`, or every kind).
pub async fn collect(
    client: &Client,
    namespace: Option<&str>,
    target: Option<&str>,
    name: Option<&str>,
) -> Result<Report, super::Error> {
    let (kinds, name) = match target {
        Some(t) => {
            let (kind, name) = parse_target(t, name)?;
            (vec![kind], name)
        }
        None => (Kind::all(), None),
    };
    let mut report = Report::default();
    for kind in kinds {
        let api = kind.api(client, namespace);
        match &name {
            Some(name) => {
                let object = api.get(name).await?;
                let mut status = summary(&kind, &object);
                detail(client, &object, &mut status).await?;
                report.objects.push(status);
            }
            None => {
                let mut objects = api.list(&ListParams::default()).await?.items;
                objects.sort_by_key(|o| (o.namespace(), o.name_any()));
                report
                    .objects
                    .extend(objects.iter().map(|o| summary(&kind, o)));
            }
        }
    }
    Ok(report)
}

async fn detail(
    client: &Client,
    object: &DynamicObject,
    status: &mut ObjectStatus,
) -> Result<(), super::Error> {
    let value = serde_json::to_value(object).unwrap_or_default();
    status.conditions = value["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    status.chain = chain(client, object.namespace().as_deref(), &value).await;
    let uid = object.uid().unwrap_or_default();
    if let Some(ns) = object.namespace() {
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                crate::outputs::MANAGED_BY.0,
                crate::outputs::MANAGED_BY.1
            )))
            .await?;
        for s in secrets.items {
            if s.owner_references().iter().any(|r| r.uid == uid) {
                status.secrets.push(SecretSummary {
                    name: s.name_any(),
                    type_: s.type_.clone().unwrap_or_default(),
                    expires_at: s.annotations().get("amlidentity.io/expires-at").cloned(),
                });
            }
        }
    }
    let events_api: Api<Event> = match object.namespace() {
        Some(ns) => Api::namespaced(client.clone(), &ns),
        None => Api::all(client.clone()),
    };
    let events = events_api
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await?;
    let mut lines: Vec<EventLine> = events
        .items
        .into_iter()
        .map(|e| EventLine {
            time: e
                .last_timestamp
                .map(|t| t.0.to_string())
                .or(e.event_time.map(|t| t.0.to_string()))
                .unwrap_or_default(),
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        })
        .collect();
    lines.sort_by(|a, b| a.time.cmp(&b.time));
    status.events = lines;
    Ok(())
}

/// The objects `value` signs in through: its credential, Workspace or ComputeIdentity, and theirs,
/// up to four steps.
pub async fn chain(client: &Client, namespace: Option<&str>, value: &Value) -> Vec<Link> {
    let mut links = Vec::new();
    let mut current = value.clone();
    for _ in 0..4 {
        let spec = &current["spec"];
        let next = [
            ("spec.credentialRef", &spec["credentialRef"]),
            (
                "spec.podAccess.identity.computeIdentityRef",
                &spec["podAccess"]["identity"]["computeIdentityRef"],
            ),
            (
                "spec.auth.managedIdentity.computeIdentityRef",
                &spec["auth"]["managedIdentity"]["computeIdentityRef"],
            ),
            ("spec.workspaceRef", &spec["workspaceRef"]),
        ]
        .into_iter()
        .find(|(_, r)| r["name"].is_string());
        let Some((via, reference)) = next else { break };
        let kind_name = match via {
            "spec.credentialRef" => reference["kind"].as_str().unwrap_or("AzureCredential"),
            "spec.workspaceRef" => "Workspace",
            _ => "ComputeIdentity",
        };
        let Some(kind) = Kind::find(kind_name) else {
            break;
        };
        let name = reference["name"].as_str().unwrap_or_default();
        let ns = kind.namespaced.then_some(namespace).flatten();
        let object = match ns {
            Some(ns) => format!("{}/{ns}/{name}", kind.kind),
            None => format!("{}/{name}", kind.kind),
        };
        match kind.api(client, ns).get(name).await {
            Ok(found) => {
                let found = serde_json::to_value(&found).unwrap_or_default();
                let (ready, reason, _) = ready_of(&found);
                let ids = ["clientId", "principalId", "objectId", "appId"]
                    .into_iter()
                    .filter_map(|k| {
                        found["status"][k]
                            .as_str()
                            .map(|v| (k.to_owned(), v.to_owned()))
                    })
                    .collect();
                links.push(Link {
                    via: via.into(),
                    object,
                    ready: format!("{ready} ({reason})"),
                    ids,
                    kind: kind.kind.clone(),
                    found: Some(found.clone()),
                });
                current = found;
            }
            Err(_) => {
                links.push(Link {
                    via: via.into(),
                    object,
                    ready: "NotFound".into(),
                    ids: BTreeMap::new(),
                    kind: kind.kind.clone(),
                    found: None,
                });
                break;
            }
        }
    }
    links
}

/// The text form of a report.
pub fn text(report: &Report) -> String {
    if report.objects.is_empty() {
        return "No objects found.\n".into();
    }
    let now = jiff::Timestamp::now().as_second();
    let until = |at: &Option<String>| {
        at.as_deref()
            .and_then(crate::renewal::parse_rfc3339)
            .map(|t| {
                if t >= now {
                    format!("in {}", super::duration(t - now))
                } else {
                    format!("{} ago", super::duration(now - t))
                }
            })
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    if report.objects.len() > 1 || report.objects[0].conditions.is_empty() {
        let rows: Vec<[String; 6]> = report
            .objects
            .iter()
            .map(|o| {
                [
                    o.kind.clone(),
                    o.namespace.clone().unwrap_or_else(|| "-".into()),
                    o.name.clone(),
                    o.ready.clone(),
                    o.reason.clone(),
                    until(&o.expires_at),
                ]
            })
            .collect();
        let header = ["KIND", "NAMESPACE", "NAME", "READY", "REASON", "EXPIRES"].map(String::from);
        let mut widths = [0usize; 6];
        for row in std::iter::once(&header).chain(rows.iter()) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(rows.iter()) {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        return out;
    }
    let o = &report.objects[0];
    let at = o
        .namespace
        .as_ref()
        .map(|n| format!(" in {n}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "{} {}{at}: Ready={} ({})\n",
        o.kind, o.name, o.ready, o.reason
    ));
    if !o.message.is_empty() {
        out.push_str(&format!("  {}\n", o.message));
    }
    if o.expires_at.is_some() {
        out.push_str(&format!(
            "Expires: {} ({}), renews {}\n",
            o.expires_at.as_deref().unwrap_or("-"),
            until(&o.expires_at),
            until(&o.renewal_time)
        ));
    }
    if let Some(n) = o.failed_attempts {
        out.push_str(&format!(
            "Failed renewals in a row: {n}; next try {}\n",
            until(&o.next_retry_time)
        ));
    }
    out.push_str("Conditions:\n");
    for c in &o.conditions {
        out.push_str(&format!(
            "  {:<20} {:<8} {:<24} {}\n",
            c["type"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        ));
    }
    if !o.chain.is_empty() {
        out.push_str("Signs in through:\n");
        for l in &o.chain {
            out.push_str(&format!("  {}\n", l.line()));
        }
    }
    if !o.secrets.is_empty() {
        out.push_str("Secrets:\n");
        for s in &o.secrets {
            out.push_str(&format!(
                "  {} ({}), expires {}\n",
                s.name,
                s.type_,
                until(&s.expires_at)
            ));
        }
    }
    if !o.events.is_empty() {
        out.push_str("Events:\n");
        for e in &o.events {
            out.push_str(&format!(
                "  {} {:<7} {:<22} {}\n",
                e.time, e.type_, e.reason, e.message
            ));
        }
    }
    out
}

/// What `inspect secret` shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretReport {
    /// The Secret.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Kind/name` of the object that wrote it, if the operator did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its expiry and renewal annotations (hints; the values decoded below are the truth).
    pub annotations: BTreeMap<String, String>,
    /// Each key, decoded.
    pub data: BTreeMap<String, Decoded>,
}

impl SecretReport {
    /// Decodes `secret` at `now`.
    pub fn of(secret: &Secret, now: i64) -> SecretReport {
        let owner = secret
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true) && r.api_version.starts_with("amlidentity.io/"))
            .map(|r| format!("{}/{}", r.kind, r.name));
        let annotations = secret
            .annotations()
            .iter()
            .filter(|(k, _)| k.starts_with("amlidentity.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let data = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), inspect::decode(k, &v.0, now)))
            .collect();
        SecretReport {
            name: secret.name_any(),
            namespace: secret.namespace().unwrap_or_default(),
            type_: secret.type_.clone().unwrap_or_default(),
            owner,
            annotations,
            data,
        }
    }

    /// The text form.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Secret {} in {} ({})\n",
            self.name, self.namespace, self.type_
        );
        out.push_str(&format!(
            "Written by: {}\n",
            self.owner.as_deref().unwrap_or("not the operator")
        ));
        for (k, v) in &self.annotations {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        for (key, decoded) in &self.data {
            let lines = inspect::describe(decoded);
            out.push_str(&format!("{key}: {}\n", lines[0]));
            for line in &lines[1..] {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}
