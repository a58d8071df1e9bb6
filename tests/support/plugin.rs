//! `kubectl amlid` as a user runs it (the built binary, with the kubeconfig of the environment),
//! and the metric families the operator exports, for tests of what the chart and docs name.

use std::collections::BTreeSet;

/// Runs `kubectl-amlid ARGS`: whether it succeeded, its stdout and its stderr.
pub fn amlid(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-amlid"))
        .args(args)
        .output()
        .expect("running kubectl-amlid");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Every metric name a scraper sees (counters with their `_total`): each family is given a
/// series, since an empty family does not show in the exposition.
pub fn exported_metrics() -> BTreeSet<String> {
    use aml_identity_operator::metrics::{
        AzureLabels, ErrorLabels, KindLabels, KubernetesLabels, Metrics,
    };
    let metrics = Metrics::default();
    let kind = KindLabels {
        kind: "Datastore".into(),
    };
    metrics.objects.set(
        "Datastore",
        "ns",
        "x",
        aml_identity_operator::metrics::ObjectValues {
            ready: true,
            expiry: Some(1),
            failed_attempts: Some(1),
        },
    );
    metrics.cleanup_abandoned.get_or_create(&kind).inc();
    metrics.reconciles.get_or_create(&kind).inc();
    metrics.duration.get_or_create(&kind).observe(1.0);
    metrics
        .errors
        .get_or_create(&ErrorLabels {
            kind: "Datastore".into(),
            reason: "X".into(),
        })
        .inc();
    metrics
        .azure_requests
        .get_or_create(&AzureLabels {
            service: "arm".into(),
            code: "429".into(),
        })
        .inc();
    metrics
        .kubernetes_requests
        .get_or_create(&KubernetesLabels {
            verb: "apply".into(),
            resource: "secrets".into(),
        })
        .inc();
    metrics.leader.set(1);
    metrics.observe_msi("issued", 0.001);
    metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            }
        })
        .collect()
}
