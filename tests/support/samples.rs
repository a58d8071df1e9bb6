//! Loads `deploy/samples` and the expectations written in each invalid sample's header.

use std::path::{Path, PathBuf};

use aml_identity_operator::api::*;
use serde::de::DeserializeOwned;

/// How an invalid sample is expected to be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Valid: accepted everywhere.
    Valid,
    /// Refused by the OpenAPI schema at admission (and by the Rust validation).
    Schema,
    /// Refused by a CEL rule (and by the Rust validation); 1.20 admits it, the operator refuses it.
    Cel,
    /// Refused by the operator alone (a check no admission rule can express, such as a login
    /// server naming the registry of the resource id beside it); every API server admits it.
    Operator,
}

/// One sample file.
#[derive(Clone, Debug)]
pub struct Sample {
    pub path: PathBuf,
    pub expect: Expect,
    /// The field the refusal must name (invalid samples).
    pub field: Option<String>,
    pub object: serde_json::Value,
}

impl Sample {
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().expect("kind")
    }
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().expect("name")
    }
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/samples")
}

fn load_dir(dir: &Path, default: Expect) -> Vec<Sample> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let header = |key: &str| {
                text.lines()
                    .take_while(|l| l.starts_with('#'))
                    .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_owned))
            };
            let expect = match header("expect").as_deref() {
                None => default,
                Some("cel") => Expect::Cel,
                Some("schema") => Expect::Schema,
                Some("operator") => Expect::Operator,
                Some(other) => panic!("{}: unknown expectation {other}", path.display()),
            };
            let object =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Sample {
                field: header("field"),
                path,
                expect,
                object,
            }
        })
        .collect()
}

/// Every valid sample (at least one per kind).
pub fn valid() -> Vec<Sample> {
    let samples = load_dir(&samples_dir(), Expect::Valid);
    let kinds: std::collections::BTreeSet<String> =
        samples.iter().map(|s| s.kind().to_owned()).collect();
    assert_eq!(kinds.len(), 6, "a valid sample of every kind: {kinds:?}");
    samples
}

/// Every invalid sample, each with its expectation and field.
pub fn invalid() -> Vec<Sample> {
    let samples = load_dir(&samples_dir().join("invalid"), Expect::Valid);
    for s in &samples {
        assert_ne!(
            s.expect,
            Expect::Valid,
            "{} lacks an '# expect:' header",
            s.file_name()
        );
        assert!(
            s.field.is_some(),
            "{} lacks a '# field:' header",
            s.file_name()
        );
    }
    assert!(samples.len() >= 20, "invalid samples are missing");
    samples
}

fn typed<K: DeserializeOwned + Validate>(
    object: &serde_json::Value,
) -> Result<Vec<Violation>, String> {
    serde_json::from_value::<K>(object.clone())
        .map(|k| k.validate())
        .map_err(|e| e.to_string())
}

/// Deserializes a sample into its kind and runs the Rust validation. `Err` when it does not even
/// deserialize (an enum value the type does not know, a wrong type).
pub fn rust_validate(object: &serde_json::Value) -> Result<Vec<Violation>, String> {
    match object["kind"].as_str() {
        Some("AzureCredential") => typed::<AzureCredential>(object),
        Some("ClusterAzureCredential") => typed::<ClusterAzureCredential>(object),
        Some("Workspace") => typed::<Workspace>(object),
        Some("ComputeIdentity") => typed::<ComputeIdentity>(object),
        Some("Datastore") => typed::<Datastore>(object),
        Some("RegistryConnection") => typed::<RegistryConnection>(object),
        other => panic!("unknown kind {other:?}"),
    }
}
