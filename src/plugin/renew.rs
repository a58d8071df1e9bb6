//! `kubectl amlid renew`: sets `amlidentity.io/force-refresh` to a new value, which makes the
//! operator mint the object's credentials now (as `cmctl renew` does for certificates).

use kube::Client;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde::Serialize;

use super::kinds::parse_target;

/// Kinds whose outputs expire.
const RENEWABLE: [&str; 3] = ["ComputeIdentity", "Datastore", "RegistryConnection"];

/// One object marked for renewal.
#[derive(Debug, Serialize)]
pub struct Renewed {
    /// Its kind.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What `renew` marked.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The objects marked for renewal.
    pub renewed: Vec<Renewed>,
}

/// Marks the objects named by the command line; returns them.
#[allow(clippy::too_many_arguments)]
pub async fn renew(
    client: &Client,
    namespace: Option<&str>,
    target: &str,
    name: Option<&str>,
    selector: Option<&str>,
    all: bool,
    now: i64,
) -> Result<Report, super::Error> {
    let (kind, name) = parse_target(target, name)?;
    if !RENEWABLE.contains(&kind.kind.as_str()) {
        return Err(super::Error::Usage(format!(
            "{} writes nothing that expires; renew one of {}",
            kind.kind,
            RENEWABLE.join(", ")
        )));
    }
    let api = kind.api(client, namespace);
    let names: Vec<(String, String)> = match (name, selector, all) {
        (Some(name), None, false) => {
            let o = api.get(&name).await?;
            vec![(o.namespace().unwrap_or_default(), o.name_any())]
        }
        (None, Some(_), false) | (None, None, true) => {
            let params = match selector {
                Some(s) => ListParams::default().labels(s),
                None => ListParams::default(),
            };
            api.list(&params)
                .await?
                .items
                .iter()
                .map(|o| (o.namespace().unwrap_or_default(), o.name_any()))
                .collect()
        }
        _ => {
            return Err(super::Error::Usage(
                "name one object, or give -l SELECTOR or --all (not several)".into(),
            ));
        }
    };
    let value = format!("renew-{now}");
    let patch =
        serde_json::json!({"metadata": {"annotations": {crate::outputs::FORCE_REFRESH: value}}});
    let mut renewed = Vec::new();
    for (ns, name) in names {
        kind.api(client, Some(&ns))
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        renewed.push(Renewed {
            kind: kind.kind.clone(),
            namespace: ns,
            name,
        });
    }
    Ok(Report { renewed })
}

/// The text form.
pub fn text(report: &Report) -> String {
    let renewed = &report.renewed;
    if renewed.is_empty() {
        return "No objects matched.\n".into();
    }
    renewed
        .iter()
        .map(|r| {
            format!(
                "Renewal requested for {} {}/{}\n",
                r.kind, r.namespace, r.name
            )
        })
        .collect()
}
