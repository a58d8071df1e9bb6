//! The operator's Kubernetes client, counting every request it sends by verb and resource (what an
//! API server operator asks first of a controller, and what the benchmark reports).

use http::{Method, Request};
use kube::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::KubernetesLabels;

/// A client from the inferred configuration (in-cluster or `KUBECONFIG`) whose requests are counted
/// into `family`.
pub async fn client(family: Family<KubernetesLabels, Counter>) -> kube::Result<Client> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let counting =
        tower::util::MapRequestLayer::new(move |request: Request<kube::client::Body>| {
            family.get_or_create(&labels(&request)).inc();
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&counting)
        .build())
}

/// The Kubernetes verb and resource of a request: `get`/`list`/`watch`/`create`/`update`/`patch`/
/// `apply`/`delete`/`deletecollection`, and `secrets`, `computeidentities/status`, … (never a
/// name or namespace: the label set stays bounded).
pub fn labels<B>(request: &Request<B>) -> KubernetesLabels {
    let uri = request.uri();
    let (resource, named) = resource(uri.path());
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let apply = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let verb = match *request.method() {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH if apply => "apply",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    KubernetesLabels {
        verb: verb.to_owned(),
        resource,
    }
}

/// `(resource[/subresource], names one object)` of an API path: `/api/v1/namespaces/a/secrets/b`
/// is `("secrets", true)`, `/apis/g/v1/widgets` is `("widgets", false)`; a path outside the
/// resource API (`/version`) is `("other", true)`.
fn resource(path: &str) -> (String, bool) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(mut rest) = rest.filter(|r| !r.is_empty()) else {
        return ("other".to_owned(), true);
    };
    if rest[0] == "namespaces" && rest.len() >= 3 {
        rest = &rest[2..];
    }
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_owned(),
    };
    (resource, rest.len() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &str, uri: &str, content_type: Option<&str>) -> (String, String) {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(c) = content_type {
            builder = builder.header("content-type", c);
        }
        let l = labels(&builder.body(()).unwrap());
        (l.verb, l.resource)
    }

    #[test]
    fn verbs_and_resources_of_the_paths_the_operator_uses() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/a/secrets/b",
                None,
                "get",
                "secrets",
            ),
            (
                "GET",
                "/api/v1/secrets?labelSelector=x",
                None,
                "list",
                "secrets",
            ),
            (
                "GET",
                "/api/v1/secrets?watch=true&resourceVersion=1",
                None,
                "watch",
                "secrets",
            ),
            ("GET", "/api/v1/namespaces", None, "list", "namespaces"),
            (
                "GET",
                "/api/v1/namespaces/team-a",
                None,
                "get",
                "namespaces",
            ),
            (
                "PATCH",
                "/apis/amlidentity.io/v1alpha1/namespaces/a/datastores/d/status",
                Some("application/merge-patch+json"),
                "patch",
                "datastores/status",
            ),
            (
                "PATCH",
                "/api/v1/namespaces/a/secrets/s?fieldManager=x",
                Some("application/apply-patch+yaml"),
                "apply",
                "secrets",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/serviceaccounts/sa/token",
                None,
                "create",
                "serviceaccounts/token",
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None,
                "create",
                "events",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                None,
                "update",
                "leases",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/secrets/s",
                None,
                "delete",
                "secrets",
            ),
            ("GET", "/version", None, "get", "other"),
            ("GET", "/apis", None, "get", "other"),
        ];
        for (method, uri, content_type, verb, resource) in cases {
            assert_eq!(
                of(method, uri, content_type),
                (verb.to_owned(), resource.to_owned()),
                "{method} {uri}"
            );
        }
    }
}
