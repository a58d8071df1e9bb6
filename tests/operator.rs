//! The operator against the real local control plane: CRDs install, samples reach honest conditions,
//! invalid samples are refused where they should be, finalizers, restarts, leader election and
//! sharding by namespace label.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use support::cluster::{self, Operator};
use support::samples::{self, Expect, Sample};

const FINALIZER: &str = "amlidentity.io/finalizer";

/// Creates a sample in `ns`; cluster-scoped samples get a unique name so tests do not collide.
async fn create(client: &Client, sample: &Sample, ns: &str) -> Result<DynamicObject, kube::Error> {
    let mut object = sample.object.clone();
    if sample.kind().starts_with("Cluster") {
        object["metadata"]["name"] = format!("{}-{}", sample.name(), cluster::unique()).into();
        // Admit the test namespace, as a platform team would for a team's namespace.
        object["spec"]["allowedNamespaces"]["names"] = serde_json::json!([ns]);
        // Cluster-scoped objects outlive the namespace: the label lets the test delete them.
        object["metadata"]["labels"] = serde_json::json!({ cluster::TEST_NAMESPACE_LABEL: ns });
    }
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    cluster::dynamic_api(client, &sample.object, ns)
        .create(&PostParams::default(), &object)
        .await
}

/// Waits until the operator reported on the object's current generation; returns the object.
async fn reported(client: &Client, sample: &Sample, name: &str, ns: &str) -> DynamicObject {
    let api = cluster::dynamic_api(client, &sample.object, ns);
    cluster::wait_until(
        Duration::from_secs(30),
        &format!("status of {} {name}", sample.kind()),
        || {
            let api = api.clone();
            async move {
                let obj = api.get(name).await.ok()?;
                let (_, _, _, observed) = cluster::ready_condition(&obj)?;
                (observed == obj.metadata.generation).then_some(obj)
            }
        },
    )
    .await
}

#[tokio::test]
async fn crds_install_without_cel_and_keep_their_schema() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for c in aml_identity_operator::crd::all() {
        let served = api.get(c.metadata.name.as_deref().unwrap()).await.unwrap();
        let schema = serde_json::to_string(&served.spec.versions[0].schema).unwrap();
        assert!(!schema.contains("x-kubernetes-validations"));
        assert!(
            schema.contains("\"pattern\""),
            "{:?} lost its patterns",
            c.metadata.name
        );
        assert!(
            served.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        assert_eq!(served.spec.names.categories, Some(vec!["aml".to_string()]));
    }
}

#[tokio::test]
async fn valid_samples_report_an_honest_condition_and_get_the_finalizer() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let ns = cluster::namespace(&client, "valid").await;
    let _operator = Operator::start(&ns, "lease-valid", "valid-0");

    for sample in samples::valid() {
        let created = create(&client, &sample, &ns)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sample.file_name()));
        let obj = reported(&client, &sample, &created.name_any(), &ns).await;
        let (status, reason, message, _) = cluster::ready_condition(&obj).unwrap();
        // Every kind acts for real; here nothing they reference exists and Azure is out of reach,
        // and the condition says which.
        assert_eq!(status, "False", "{}", sample.file_name());
        assert!(
            !["InvalidSpec", "NotImplemented"].contains(&reason.as_str()),
            "{}: {reason}: {message}",
            sample.file_name()
        );
        assert!(!message.is_empty());
        assert!(
            obj.finalizers().iter().any(|f| f == FINALIZER),
            "{}: no finalizer",
            sample.file_name()
        );
    }
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn invalid_samples_are_refused_at_admission_or_with_invalid_spec() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let ns = cluster::namespace(&client, "invalid").await;
    let operator = Operator::start(&ns, "lease-invalid", "invalid-0");

    let mut admitted = Vec::new();
    for sample in samples::invalid() {
        let field = sample.field.clone().unwrap();
        match (sample.expect, create(&client, &sample, &ns).await) {
            (Expect::Schema, Err(kube::Error::Api(status))) => {
                assert_eq!(status.code, 422, "{}: {status:?}", sample.file_name());
                assert!(
                    status.message.contains(&field),
                    "{}: the refusal does not name {field}: {}",
                    sample.file_name(),
                    status.message
                );
            }
            (Expect::Schema, other) => panic!(
                "{}: expected a 422 at admission, got {other:?}",
                sample.file_name()
            ),
            (Expect::Cel | Expect::Operator, Ok(created)) => {
                admitted.push((sample, created.name_any(), field))
            }
            (_, other) => panic!(
                "{}: the 1.20 API server should admit it (CEL is not enforced there): {other:?}",
                sample.file_name()
            ),
        }
    }
    assert!(admitted.len() > 15);
    for (sample, name, field) in &admitted {
        let obj = reported(&client, sample, name, &ns).await;
        let (status, reason, message, _) = cluster::ready_condition(&obj).unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidSpec"),
            "{}",
            sample.file_name()
        );
        assert!(
            message.contains(&format!("{field}:")),
            "{}: message does not name {field}: {message}",
            sample.file_name()
        );
        assert!(
            obj.finalizers().is_empty(),
            "{}: an invalid spec must have no side effect",
            sample.file_name()
        );
    }

    // Each refusal is also a Warning Event on the object, cluster-scoped ones included (which the
    // API server keeps in `default` or `kube-system`).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let regards =
        |e: &k8s_openapi::api::events::v1::Event, sample: &samples::Sample, name: &str| {
            let Some(r) = e.regarding.as_ref() else {
                return false;
            };
            r.name.as_deref() == Some(name)
                && r.kind.as_deref() == Some(sample.kind())
                && if sample.kind().starts_with("Cluster") {
                    r.namespace.is_none()
                } else {
                    r.namespace.as_deref() == Some(ns.as_str())
                }
        };
    let list = cluster::wait_until(Duration::from_secs(20), "InvalidSpec events", || {
        let events = events.clone();
        let admitted = &admitted;
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            let warnings: Vec<_> = list
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("InvalidSpec"))
                .collect();
            admitted
                .iter()
                .all(|(s, name, _)| warnings.iter().any(|e| regards(e, s, name)))
                .then_some(warnings)
        }
    })
    .await;
    assert!(
        admitted
            .iter()
            .any(|(s, _, _)| s.kind().starts_with("Cluster")),
        "the samples include invalid cluster-scoped objects"
    );
    for (sample, name, field) in &admitted {
        let event = list.iter().find(|e| regards(e, sample, name));
        let event = event.unwrap_or_else(|| panic!("no InvalidSpec event for {name}"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert!(
            event
                .note
                .as_deref()
                .unwrap_or_default()
                .contains(field.as_str())
        );
    }
    assert!(!operator.logs().contains("panicked"), "{}", operator.logs());
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deleting_an_object_with_the_finalizer_completes() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let ns = cluster::namespace(&client, "delete").await;
    let _operator = Operator::start(&ns, "lease-delete", "delete-0");

    for sample in samples::valid() {
        let name = create(&client, &sample, &ns).await.unwrap().name_any();
        let obj = reported(&client, &sample, &name, &ns).await;
        assert!(obj.finalizers().iter().any(|f| f == FINALIZER));
        let api = cluster::dynamic_api(&client, &sample.object, &ns);
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        cluster::wait_until(
            Duration::from_secs(30),
            &format!("{name} to be gone"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    matches!(api.get(&name).await, Err(kube::Error::Api(s)) if s.code == 404)
                        .then_some(())
                }
            },
        )
        .await;
    }
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn restarting_the_operator_rewrites_nothing() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let ns = cluster::namespace(&client, "restart").await;
    let mut first = Operator::start(&ns, "lease-restart", "restart-0");

    let mut versions = Vec::new();
    let mut all = samples::valid();
    all.extend(samples::invalid().into_iter().filter(|s| {
        matches!(s.expect, Expect::Cel | Expect::Operator) && !s.kind().starts_with("Cluster")
    }));
    for sample in &all {
        let name = create(&client, sample, &ns).await.unwrap().name_any();
        reported(&client, sample, &name, &ns).await;
        versions.push((sample.clone(), name));
    }
    // Let the first operator go quiet, then take a snapshot of every object and Event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = snapshot(&client, &versions, &ns).await;
    assert!(first.stop(), "the operator did not exit on SIGTERM");

    let second = Operator::start(&ns, "lease-restart", "restart-1");
    let expected = versions.len() as f64;
    cluster::wait_until(
        Duration::from_secs(40),
        "the restarted operator to reconcile everything",
        || async {
            let reconciles = second
                .metric_sum("aml_identity_operator_reconciles_total")
                .await?;
            (reconciles >= expected).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        snapshot,
        self::snapshot(&client, &versions, &ns).await,
        "the restart rewrote something"
    );
    cluster::delete_namespace(&client, &ns).await;
}

/// resourceVersion of every object and the Events' (name, count), sorted.
async fn snapshot(client: &Client, objects: &[(Sample, String)], ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (sample, name) in objects {
        let obj = cluster::dynamic_api(client, &sample.object, ns)
            .get(name)
            .await
            .unwrap();
        out.push(format!("{name}={}", obj.resource_version().unwrap()));
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    for e in events.list(&ListParams::default()).await.unwrap() {
        out.push(format!(
            "event {}={}",
            e.name_any(),
            e.resource_version().unwrap()
        ));
    }
    out.sort();
    out
}

#[tokio::test]
async fn two_operators_elect_exactly_one_leader() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let ns = cluster::namespace(&client, "leader").await;
    let mut operators = [
        Operator::start(&ns, "lease-shared", "leader-a"),
        Operator::start(&ns, "lease-shared", "leader-b"),
    ];
    let sample = samples::valid()
        .into_iter()
        .find(|s| s.kind() == "Workspace")
        .unwrap();

    let first = create(&client, &sample, &ns).await.unwrap().name_any();
    reported(&client, &sample, &first, &ns).await;
    let leader = cluster::wait_until(Duration::from_secs(30), "exactly one leader", || async {
        let a = operators[0]
            .metric_sum("aml_identity_operator_leader")
            .await?;
        let b = operators[1]
            .metric_sum("aml_identity_operator_leader")
            .await?;
        match (a, b) {
            (1.0, 0.0) => Some(0),
            (0.0, 1.0) => Some(1),
            _ => None,
        }
    })
    .await;
    let standby = 1 - leader;
    assert!(
        operators[leader]
            .metric_sum("aml_identity_operator_reconciles_total")
            .await
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        operators[standby]
            .metric_sum("aml_identity_operator_reconciles_total")
            .await
            .unwrap(),
        0.0,
        "the standby reconciled"
    );

    // The leader stops and releases the Lease; the standby takes over and reconciles what comes next.
    assert!(
        operators[leader].stop(),
        "the leader did not exit on SIGTERM"
    );
    let mut second = sample.clone();
    second.object["metadata"]["name"] = "after-failover".into();
    create(&client, &second, &ns).await.unwrap();
    reported(&client, &second, "after-failover", &ns).await;
    assert_eq!(
        operators[standby]
            .metric_sum("aml_identity_operator_leader")
            .await,
        Some(1.0)
    );
    assert!(
        operators[standby]
            .metric_sum("aml_identity_operator_reconciles_total")
            .await
            .unwrap()
            >= 1.0
    );
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_exits_to_rejoin_the_election() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let ns = cluster::namespace(&client, "lease-lost").await;
    let mut operator = Operator::start(&ns, "lease-lost", "first-holder");
    cluster::wait_until(Duration::from_secs(30), "leadership", || async {
        (operator.metric_sum("aml_identity_operator_leader").await? == 1.0).then_some(())
    })
    .await;

    // Another instance holds the Lease now (as after a network partition outlived the Lease).
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    leases
        .patch(
            "lease-lost",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"holderIdentity": "second-holder", "acquireTime": now, "renewTime": now}
            })),
        )
        .await
        .unwrap();
    let status = operator.exited_within(Duration::from_secs(30));
    let logs = operator.logs();
    let status = status.unwrap_or_else(|| {
        panic!("the operator kept running 30 s after losing its Lease; its log:\n{logs}")
    });
    assert!(
        !status.success(),
        "it exited with {status}: a restart must follow"
    );
    assert!(logs.contains("lost the leader Lease"), "{logs}");
    cluster::delete_namespace(&client, &ns).await;
}

/// The namespaces of the objects an instance reports a Ready series for, i.e. reconciled last.
async fn reported_namespaces(operator: &Operator, kind: &str) -> Option<BTreeSet<String>> {
    let text = operator.metrics().await?;
    let prefix = format!("aml_identity_operator_ready{{kind=\"{kind}\",namespace=\"");
    Some(
        text.lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect(),
    )
}

async fn label_namespace(client: &Client, ns: &str, key: &str, value: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn two_instances_shard_the_cluster_by_namespace_label_and_objects_follow_a_relabel() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let run = cluster::unique();
    let (shard_key, object_label) = (
        format!("amlidentity.io/shard-{run}"),
        format!("amlidentity.io/shard-test={run}"),
    );
    let home = cluster::namespace(&client, "shard-home").await;
    let mut teams = Vec::new();
    for shard in ["a", "a", "b", "b"] {
        let ns = cluster::namespace(&client, &format!("shard-{shard}")).await;
        label_namespace(&client, &ns, &shard_key, shard).await;
        teams.push(ns);
    }
    let operators = ["a", "b"].map(|shard| {
        Operator::start_across(
            &home,
            &object_label,
            &format!("shard-{shard}"),
            &format!("shard-{shard}"),
            &[
                "--namespace-selector".into(),
                format!("{shard_key}={shard}"),
            ],
        )
    });
    let sample = samples::valid()
        .into_iter()
        .find(|s| s.kind() == "Workspace")
        .unwrap();
    let labelled = |name: &str| {
        let mut s = sample.clone();
        s.object["metadata"]["name"] = name.into();
        s.object["metadata"]["labels"] = serde_json::json!({"amlidentity.io/shard-test": run});
        s
    };
    for ns in &teams {
        create(&client, &labelled("mlw"), ns).await.unwrap();
    }
    // None by neither: every object gets a status.
    for ns in &teams {
        reported(&client, &labelled("mlw"), "mlw", ns).await;
    }
    let expect = |names: &[&String]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let shares = |want_a: BTreeSet<String>, want_b: BTreeSet<String>, what: &'static str| {
        let operators = &operators;
        async move {
            cluster::wait_until(Duration::from_secs(30), what, || {
                let (want_a, want_b) = (want_a.clone(), want_b.clone());
                async move {
                    let a = reported_namespaces(&operators[0], "Workspace").await?;
                    let b = reported_namespaces(&operators[1], "Workspace").await?;
                    (a == want_a && b == want_b).then_some(())
                }
            })
            .await
        }
    };
    // None by both: each instance reports only the namespaces its selector picks.
    shares(
        expect(&[&teams[0], &teams[1]]),
        expect(&[&teams[2], &teams[3]]),
        "each shard to report only its own namespaces",
    )
    .await;

    // A relabelled namespace moves at once, with no edit of its objects.
    label_namespace(&client, &teams[1], &shard_key, "b").await;
    shares(
        expect(&[&teams[0]]),
        expect(&[&teams[1], &teams[2], &teams[3]]),
        "the relabelled namespace to move from shard a to shard b",
    )
    .await;
    // What is created there next is shard b's alone: shard a sees it and reconciles nothing.
    let before = operators[0]
        .metric_sum("aml_identity_operator_reconciles_total")
        .await
        .unwrap();
    create(&client, &labelled("mlw-after-move"), &teams[1])
        .await
        .unwrap();
    reported(
        &client,
        &labelled("mlw-after-move"),
        "mlw-after-move",
        &teams[1],
    )
    .await;
    assert_eq!(
        operators[0]
            .metric_sum("aml_identity_operator_reconciles_total")
            .await
            .unwrap(),
        before,
        "shard a reconciled an object of a namespace that left it"
    );
    for ns in teams.iter().chain([&home]) {
        cluster::delete_namespace(&client, ns).await;
    }
}

#[tokio::test]
async fn a_namespace_selector_the_api_server_cannot_parse_stops_the_start_naming_the_flag() {
    let client = cluster::client().await;
    let home = cluster::namespace(&client, "bad-selector").await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_aml-identity-operator"));
    if let Some(path) = std::env::var_os("AMLID_OPERATOR_KUBECONFIG") {
        command.env("KUBECONFIG", path);
    }
    let run = command
        .args([
            "run",
            "--lease-namespace",
            &home,
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args(["--namespace-selector", "shard in a,b"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the operator kept running with a selector it cannot use")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--namespace-selector \"shard in a,b\" is not a label selector"),
        "{stderr}"
    );
    cluster::delete_namespace(&client, &home).await;
}

/// An Event that repeats within six minutes is one Event with a series count, as `kubectl describe`
/// shows "(x3 over …)"; another note is another Event; a cluster-scoped object's Events land in a
/// namespace this API server accepts.
#[tokio::test]
async fn a_repeated_event_is_counted_on_the_first_one() {
    use aml_identity_operator::controllers::events::Events;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Reporter};

    let client = cluster::client().await;
    let ns = cluster::namespace(&client, "events").await;
    let reporter = Reporter {
        controller: "aml-identity-operator".into(),
        instance: Some(cluster::unique()),
    };
    let events = Events::new(client.clone(), reporter);
    let warning = |note: &str| Event {
        type_: EventType::Warning,
        reason: "OutOfScope".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let regarding = ObjectReference {
        api_version: Some("amlidentity.io/v1alpha1".into()),
        kind: Some("Datastore".into()),
        name: Some("refused".into()),
        namespace: Some(ns.clone()),
        uid: Some(cluster::unique()),
        ..Default::default()
    };
    for _ in 0..3 {
        events
            .publish(&warning("spec.accountName is out of scope"), &regarding)
            .await
            .unwrap();
    }
    events
        .publish(&warning("spec.containerName is out of scope"), &regarding)
        .await
        .unwrap();
    let list = Api::<K8sEvent>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut counts: Vec<(String, i32)> = list
        .items
        .iter()
        .map(|e| {
            (
                e.note.clone().unwrap_or_default(),
                e.series.as_ref().map_or(1, |s| s.count),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("spec.accountName is out of scope".to_owned(), 3),
            ("spec.containerName is out of scope".to_owned(), 1),
        ]
    );

    // A cluster-scoped object: `default`, or `kube-system` where `default` refuses it (< 1.22).
    let cluster_scoped = ObjectReference {
        api_version: Some("amlidentity.io/v1alpha1".into()),
        kind: Some("ClusterAzureCredential".into()),
        name: Some(format!("shared-{}", cluster::unique())),
        uid: Some(cluster::unique()),
        ..Default::default()
    };
    for _ in 0..2 {
        events
            .publish(&warning("not admitted"), &cluster_scoped)
            .await
            .unwrap();
    }
    let everywhere = Api::<K8sEvent>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let about: Vec<_> = everywhere
        .items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_ref()) == cluster_scoped.name.as_ref()
        })
        .collect();
    assert_eq!(about.len(), 1, "{about:?}");
    assert_eq!(about[0].series.as_ref().map(|s| s.count), Some(2));
    cluster::delete_namespace(&client, &ns).await;
}
