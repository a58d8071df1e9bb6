//! Events on reconciled objects, including cluster-scoped ones.
//!
//! An Event about a cluster-scoped object has to live in some namespace. kube's `Recorder` puts it in
//! `default`, which API servers before 1.22 refuse (`involvedObject.namespace "" does not match
//! event.namespace`): they accept such Events only in `kube-system`. The first refusal switches
//! this process to `kube-system` for cluster-scoped objects; `kubectl describe` finds them in
//! either place.

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};

const CLUSTER_EVENTS_FALLBACK: &str = "kube-system";

/// Publishes Events; one per process.
pub struct Events {
    client: Client,
    recorder: Recorder,
    reporter: Reporter,
    /// Set once `default` refused an Event about a cluster-scoped object.
    cluster_in_kube_system: AtomicBool,
}

impl Events {
    /// Events reported as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            cluster_in_kube_system: AtomicBool::new(false),
        }
    }

    /// Publishes `event` about the object `regarding`.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let cluster_scoped = regarding.namespace.is_none();
        if cluster_scoped && self.cluster_in_kube_system.load(Ordering::Relaxed) {
            return self.create_in_kube_system(event, regarding).await;
        }
        match self.recorder.publish(event, regarding).await {
            Err(kube::Error::Api(status)) if cluster_scoped && status.code == 422 => {
                self.cluster_in_kube_system.store(true, Ordering::Relaxed);
                self.create_in_kube_system(event, regarding).await
            }
            other => other,
        }
    }

    async fn create_in_kube_system(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let event = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            metadata: ObjectMeta {
                // Named as the Recorder names them: the object's name and the time.
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller)
                        .chars()
                        .take(200)
                        .collect::<String>(),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), CLUSTER_EVENTS_FALLBACK)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}
