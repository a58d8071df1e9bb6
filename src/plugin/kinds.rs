//! The six kinds by any name kubectl would accept: kind, singular, plural or short name.

use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

/// One of the operator's kinds.
#[derive(Clone, Debug)]
pub struct Kind {
    /// `ComputeIdentity`.
    pub kind: String,
    /// `computeidentities`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    resource: ApiResource,
}

impl Kind {
    /// Every kind, in the CRDs' order.
    pub fn all() -> Vec<Kind> {
        crate::crd::all()
            .into_iter()
            .map(|crd| {
                let version = &crd.spec.versions[0].name;
                let gvk = GroupVersionKind::gvk(&crd.spec.group, version, &crd.spec.names.kind);
                Kind {
                    kind: crd.spec.names.kind.clone(),
                    plural: crd.spec.names.plural.clone(),
                    namespaced: crd.spec.scope == "Namespaced",
                    resource: ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural),
                }
            })
            .collect()
    }

    /// The kind `name` means, case-insensitively, by kind, singular, plural or short name
    /// (optionally with `.amlidentity.io`).
    pub fn find(name: &str) -> Option<Kind> {
        let name = name.to_lowercase();
        let name = name.strip_suffix(".amlidentity.io").unwrap_or(&name);
        crate::crd::all()
            .into_iter()
            .zip(Kind::all())
            .find_map(|(crd, kind)| {
                let names = &crd.spec.names;
                let matches = names.kind.to_lowercase() == name
                    || names.plural == name
                    || names.singular.as_deref() == Some(name)
                    || names.short_names.iter().flatten().any(|s| s == name);
                matches.then_some(kind)
            })
    }

    /// Every object of this kind in `namespace` (every namespace when `None`), as JSON.
    pub async fn list(
        &self,
        client: &Client,
        namespace: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, kube::Error> {
        let objects = self
            .api(client, namespace)
            .list(&Default::default())
            .await?;
        Ok(objects
            .items
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect())
    }

    /// The kind named `kind`, which must be one of the six.
    pub fn named(kind: &str) -> Kind {
        Kind::find(kind).unwrap_or_else(|| panic!("{kind} is not one of the operator's kinds"))
    }

    /// The API of this kind in `namespace` (every namespace when `None` or cluster-scoped).
    pub fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// `kind/name` or (`kind`, `name`) as given on the command line.
pub fn parse_target(
    target: &str,
    name: Option<&str>,
) -> Result<(Kind, Option<String>), super::Error> {
    let (kind, inline) = match target.split_once('/') {
        Some((k, n)) => (k, Some(n.to_owned())),
        None => (target, None),
    };
    let found = Kind::find(kind).ok_or_else(|| {
        let known: Vec<String> = Kind::all()
            .into_iter()
            .map(|k| k.kind.to_lowercase())
            .collect();
        super::Error::Usage(format!(
            "{kind:?} is not one of the operator's kinds ({})",
            known.join(", ")
        ))
    })?;
    match (inline, name) {
        (Some(_), Some(_)) => Err(super::Error::Usage(
            "give the name once: kind/name or kind name".into(),
        )),
        (Some(n), None) => Ok((found, Some(n))),
        (None, n) => Ok((found, n.map(str::to_owned))),
    }
}
