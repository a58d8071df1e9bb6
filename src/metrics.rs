//! Prometheus metrics of the operator (OpenMetrics text on `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
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

/// Labels of per-object metrics: the object whose credentials expire (one series per object, as
/// certificate managers export expiry).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// The custom resource kind.
    pub kind: String,
    /// Its namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// Its name.
    pub name: String,
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
    /// When the credentials an object wrote expire (Unix seconds).
    pub expiry: Family<ObjectLabels, Gauge>,
    /// 1 while an object is Ready, 0 while it is not (for alerting on objects stuck not Ready).
    pub ready: Family<ObjectLabels, Gauge>,
    /// Renewals of an object's credential that failed in a row (absent while the last one worked).
    pub renewal_failures: Family<ObjectLabels, Gauge>,
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
        let expiry = Family::<ObjectLabels, Gauge>::default();
        let azure_requests = Family::<AzureLabels, Counter>::default();
        let ready = Family::<ObjectLabels, Gauge>::default();
        let renewal_failures = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "ready",
            "1 while an object is Ready, 0 while it is not",
            ready.clone(),
        );
        registry.register(
            "renewal_failed_attempts",
            "Failed renewals of an object's credential in a row",
            renewal_failures.clone(),
        );
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
            "credential_expiry_timestamp_seconds",
            "When the credentials an object wrote expire",
            expiry.clone(),
        );
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
            expiry,
            ready,
            renewal_failures,
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

    /// Labels of an object.
    pub fn object(kind: &str, namespace: Option<String>, name: String) -> ObjectLabels {
        ObjectLabels {
            kind: kind.to_owned(),
            namespace: namespace.unwrap_or_default(),
            name,
        }
    }

    /// Forgets an object that is gone: its series would otherwise alert for ever.
    pub fn forget(&self, labels: &ObjectLabels) {
        self.expiry.remove(labels);
        self.ready.remove(labels);
        self.renewal_failures.remove(labels);
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
