//! Prometheus metrics of the operator (OpenMetrics text on `/metrics`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-kind metrics. Bounded: six kinds, a handful of error reasons; never object names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The custom resource kind.
    pub kind: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The custom resource kind.
    pub kind: String,
    /// The error category (PascalCase).
    pub reason: String,
}

/// What the per-object series say of one object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectValues {
    /// Ready (1) or not (0).
    pub ready: bool,
    /// When the credentials it wrote expire (Unix seconds), if it wrote any.
    pub expiry: Option<i64>,
    /// Renewals that failed in a row, while the last one failed.
    pub failed_attempts: Option<i64>,
}

/// The per-object series (`ready`, `credential_expiry_timestamp_seconds`,
/// `renewal_failed_attempts`, each labelled kind, namespace and name, as certificate managers
/// export expiry), one entry per object under its kind and namespace. A family per series keyed
/// by its labels held every object's kind, namespace and name once per series, and a gauge on the
/// heap for each: about 400 bytes per object, against about 100 here.
#[derive(Debug, Default)]
pub struct ObjectSeries {
    objects: std::sync::Mutex<ByKind>,
}

/// Kind → namespace → name → values.
type ByKind = BTreeMap<String, BTreeMap<String, HashMap<Box<str>, ObjectValues>>>;

/// Each per-object series: its name, help and value.
type Series = (&'static str, &'static str, fn(&ObjectValues) -> Option<i64>);
const OBJECT_SERIES: [Series; 3] = [
    (
        "ready",
        "1 while an object is Ready, 0 while it is not",
        |v| Some(i64::from(v.ready)),
    ),
    (
        "credential_expiry_timestamp_seconds",
        "When the credentials an object wrote expire",
        |v| v.expiry,
    ),
    (
        "renewal_failed_attempts",
        "Failed renewals of an object's credential in a row",
        |v| v.failed_attempts,
    ),
];

impl ObjectSeries {
    fn lock(&self) -> std::sync::MutexGuard<'_, ByKind> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what an object's series say now (namespace empty for cluster-scoped kinds).
    pub fn set(&self, kind: &str, namespace: &str, name: &str, values: ObjectValues) {
        let mut objects = self.lock();
        let namespaces = match objects.get_mut(kind) {
            Some(n) => n,
            None => objects.entry(kind.to_owned()).or_default(),
        };
        let names = match namespaces.get_mut(namespace) {
            Some(n) => n,
            None => namespaces.entry(namespace.to_owned()).or_default(),
        };
        match names.get_mut(name) {
            Some(v) => *v = values,
            None => {
                names.insert(name.into(), values);
            }
        }
    }

    /// What an object's series say, if it has any.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<ObjectValues> {
        self.lock().get(kind)?.get(namespace)?.get(name).copied()
    }

    /// Forgets an object that is gone: its series would otherwise alert for ever.
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let mut objects = self.lock();
        let Some(namespaces) = objects.get_mut(kind) else {
            return;
        };
        if let Some(names) = namespaces.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                namespaces.remove(namespace);
            } else if names.len() * 4 < names.capacity() {
                names.shrink_to_fit();
            }
        }
        if namespaces.is_empty() {
            objects.remove(kind);
        }
    }
}

impl Collector for ObjectSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let objects = self.lock();
        for (series, help, value) in OBJECT_SERIES {
            let each = || {
                objects.iter().flat_map(|(kind, namespaces)| {
                    namespaces.iter().flat_map(move |(namespace, names)| {
                        names.iter().filter_map(move |(name, v)| {
                            Some((
                                [
                                    ("kind", kind.as_str()),
                                    ("namespace", namespace.as_str()),
                                    ("name", &**name),
                                ],
                                value(v)?,
                            ))
                        })
                    })
                })
            };
            // An empty family is left out of the exposition, as the registry does.
            if each().next().is_none() {
                continue;
            }
            let mut metric = encoder.encode_descriptor(series, help, None, MetricType::Gauge)?;
            for (labels, v) in each() {
                metric.encode_family(&labels)?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }
}

/// Labels of Azure request counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AzureLabels {
    /// `arm`, `entra`, `imds`, `azure-cli`.
    pub service: String,
    /// HTTP status (0: no answer).
    pub code: String,
}

/// Labels of the operator's Kubernetes API requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubernetesLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `apply`, `delete`, `deletecollection`.
    pub verb: String,
    /// The resource, with its subresource: `secrets`, `datastores/status`, ….
    pub resource: String,
}

/// Labels of the managed identity endpoint's requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `issued`, `unauthorized`, `forbidden`, `bad_request`, `throttled`, `guessing`,
    /// `unavailable`, `not_found`.
    pub outcome: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciliations started, per kind.
    pub reconciles: Family<KindLabels, Counter>,
    /// Reconciliations that failed, per kind and reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconciliation duration in seconds, per kind.
    pub duration: Family<KindLabels, Histogram>,
    /// 1 while this instance holds the leader lease.
    pub leader: Gauge,
    /// Per object: Ready, when its credentials expire, renewals failed in a row.
    pub objects: Arc<ObjectSeries>,
    /// Azure responses by service and status.
    pub azure_requests: Family<AzureLabels, Counter>,
    /// Objects released on delete although their cleanup in Azure could not finish, per kind: what
    /// they made may still be there (an alert should page on any increase).
    pub cleanup_abandoned: Family<KindLabels, Counter>,
    /// Requests the managed identity endpoint answered, by outcome.
    pub endpoint_requests: Family<EndpointLabels, Counter>,
    /// Time the managed identity endpoint took to answer, by outcome.
    pub endpoint_duration: Family<EndpointLabels, Histogram>,
    /// Kubernetes API requests sent, by verb and resource.
    pub kubernetes_requests: Family<KubernetesLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aml_identity_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let leader = Gauge::default();
        let azure_requests = Family::<AzureLabels, Counter>::default();
        let objects = Arc::new(ObjectSeries::default());
        registry.register_collector(Box::new(objects.clone()));
        let cleanup_abandoned = Family::<KindLabels, Counter>::default();
        registry.register(
            "cleanup_abandoned",
            "Objects released on delete with Azure cleanup unfinished",
            cleanup_abandoned.clone(),
        );
        registry.register(
            "azure_requests",
            "Azure responses by service and status",
            azure_requests.clone(),
        );
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent reconciling",
            duration.clone(),
        );
        let endpoint_requests = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "msi_endpoint_requests",
            "Requests the managed identity endpoint answered",
            endpoint_requests.clone(),
        );
        let endpoint_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "msi_endpoint_duration_seconds",
            "Time the managed identity endpoint took to answer",
            endpoint_duration.clone(),
        );
        let kubernetes_requests = Family::<KubernetesLabels, Counter>::default();
        registry.register(
            "kubernetes_requests",
            "Kubernetes API requests sent, by verb and resource",
            kubernetes_requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            objects,
            azure_requests,
            cleanup_abandoned,
            endpoint_requests,
            endpoint_duration,
            kubernetes_requests,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// An observer counting Azure responses into `azure_requests`.
    pub fn azure_observer(&self) -> crate::azure::cloud::Observer {
        let family = self.azure_requests.clone();
        crate::azure::cloud::Observer::new(move |service, code| {
            family
                .get_or_create(&AzureLabels {
                    service: service.to_owned(),
                    code: code.to_string(),
                })
                .inc();
        })
    }

    /// Counts one answer of the managed identity endpoint and the time it took.
    pub fn observe_msi(&self, outcome: &str, seconds: f64) {
        let labels = EndpointLabels {
            outcome: outcome.to_owned(),
        };
        self.endpoint_requests.get_or_create(&labels).inc();
        self.endpoint_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Counts a reconciliation and returns a guard that records its duration when dropped.
    pub fn start(&self, kind: &str) -> ReconcileTimer<'_> {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: std::time::Instant::now(),
        }
    }
}

/// Records a reconciliation's duration on drop, whichever way it ends.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: KindLabels,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, ObjectValues};

    #[test]
    fn per_object_series_read_as_families_and_go_with_their_object() {
        let metrics = Metrics::default();
        let values = |ready, expiry, failed_attempts| ObjectValues {
            ready,
            expiry,
            failed_attempts,
        };
        metrics
            .objects
            .set("Datastore", "team-a", "x", values(true, Some(1700), None));
        metrics
            .objects
            .set("Datastore", "team-b", "x", values(false, None, Some(2)));
        metrics.objects.set(
            "ClusterAzureCredential",
            "",
            "shared",
            values(true, None, None),
        );
        let text = metrics.encode();
        for line in [
            "# TYPE aml_identity_operator_ready gauge",
            r#"aml_identity_operator_ready{kind="Datastore",namespace="team-a",name="x"} 1"#,
            r#"aml_identity_operator_ready{kind="Datastore",namespace="team-b",name="x"} 0"#,
            r#"aml_identity_operator_ready{kind="ClusterAzureCredential",namespace="",name="shared"} 1"#,
            r#"aml_identity_operator_credential_expiry_timestamp_seconds{kind="Datastore",namespace="team-a",name="x"} 1700"#,
            r#"aml_identity_operator_renewal_failed_attempts{kind="Datastore",namespace="team-b",name="x"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(
            text.matches("credential_expiry_timestamp_seconds{").count(),
            1,
            "only objects with an expiry have one:\n{text}"
        );

        // A new verdict replaces the old; forgetting takes every series of the object.
        metrics
            .objects
            .set("Datastore", "team-b", "x", values(true, Some(1800), None));
        assert_eq!(
            metrics.objects.get("Datastore", "team-b", "x"),
            Some(values(true, Some(1800), None))
        );
        for (kind, namespace, name) in [
            ("Datastore", "team-a", "x"),
            ("Datastore", "team-b", "x"),
            ("ClusterAzureCredential", "", "shared"),
        ] {
            metrics.objects.forget(kind, namespace, name);
        }
        let text = metrics.encode();
        assert!(
            !text.contains("aml_identity_operator_ready") && !text.contains("namespace="),
            "{text}"
        );
        assert!(
            metrics.objects.lock().is_empty(),
            "no empty kind or namespace is kept"
        );
    }
}
