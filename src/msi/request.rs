//! What a pod asks the endpoint, read from the query and headers the SDKs send (Python
//! azure-identity and MSAL, `@azure/identity`), and the refusals the endpoint answers with: every
//! one says which parameter is wrong and what to send instead, and none repeats the secret.

use crate::azure::scope::normalize_audience;

/// The only API version of the Azure ML compute endpoint.
pub const API_VERSION: &str = "2017-09-01";
/// The longest `resource` accepted.
const MAX_RESOURCE: usize = 512;

/// A token request.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// `resource` exactly as sent (answered back in the response, as AML does).
    pub resource: String,
    /// The audience it names, normalised: bare host, trailing slash and `/.default` are one.
    pub audience: String,
    /// The identity asked for (`clientid`); `None`: the ComputeIdentity's default identity.
    pub client_id: Option<String>,
    /// The `secret` header.
    pub secret: String,
}

/// A refusal: HTTP status, OAuth-style error code and a description for the SDK's exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// `error` of the body.
    pub error: &'static str,
    /// `error_description` of the body.
    pub description: String,
    /// The outcome label of the metrics.
    pub outcome: &'static str,
    /// Seconds to wait (429, 503).
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// 400: a parameter is wrong.
    pub fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(400, error, description, "bad_request")
    }

    /// 401: the secret is missing or matches nothing.
    pub fn unauthorized(description: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", description, "unauthorized")
    }

    /// 403: the secret is right but the ComputeIdentity may not get tokens now.
    pub fn forbidden(description: impl Into<String>) -> Self {
        Self::new(403, "forbidden", description, "forbidden")
    }

    /// 429: the ComputeIdentity's request budget is spent.
    pub fn throttled(retry_after: u64) -> Self {
        Self::too_many(
            format!(
                "this ComputeIdentity's requests exceed the endpoint's rate limit; retry after {retry_after} s (tokens are cached: a client needs one per resource per hour)"
            ),
            "throttled",
            retry_after,
        )
    }

    /// 429: the caller sent too many unknown secrets.
    pub fn guessing(retry_after: u64) -> Self {
        Self::too_many(
            format!(
                "this address sent too many secrets that match no ComputeIdentity; retry after {retry_after} s with MSI_SECRET of the current token Secret"
            ),
            "guessing",
            retry_after,
        )
    }

    fn too_many(description: String, outcome: &'static str, retry_after: u64) -> Self {
        Self::retry_after(
            Self::new(429, "too_many_requests", description, outcome),
            retry_after,
        )
    }

    /// 503: not ready yet, or Kubernetes or Entra ID failed; worth a retry.
    pub fn unavailable(description: impl Into<String>, retry_after: u64) -> Self {
        Self::retry_after(
            Self::new(503, "temporarily_unavailable", description, "unavailable"),
            retry_after,
        )
    }

    fn retry_after(refusal: Self, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..refusal
        }
    }

    fn new(
        status: u16,
        error: &'static str,
        description: impl Into<String>,
        outcome: &'static str,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            outcome,
            retry_after: None,
        }
    }
}

/// Reads a request from its query pairs and its `secret` header.
pub fn parse<'a>(
    query: impl IntoIterator<Item = (&'a str, &'a str)>,
    secret: Option<&str>,
) -> Result<TokenRequest, Refusal> {
    let (mut version, mut resource, mut client_id) = (None, None, None);
    for (name, value) in query {
        match name {
            "api-version" => version = Some(value),
            "resource" => resource = Some(value),
            // MSAL renames client_id to clientid for this version; older clients may not.
            "clientid" | "client_id" => {
                let earlier = client_id.replace(value);
                if earlier.is_some() {
                    return Err(Refusal::bad_request(
                        "invalid_request",
                        "clientid is given more than once: send one identity's client id",
                    ));
                }
            }
            "object_id" | "principal_id" | "mi_res_id" | "msi_res_id" => {
                return Err(Refusal::bad_request(
                    "invalid_request",
                    format!(
                        "{name} is not supported by the Azure ML managed identity endpoint: select the identity with clientid (its client id; DEFAULT_IDENTITY_CLIENT_ID by default)"
                    ),
                ));
            }
            _ => {}
        }
    }
    match version {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(Refusal::bad_request(
                "invalid_request",
                format!(
                    "api-version {} is not supported: this endpoint serves the Azure ML compute protocol, api-version={API_VERSION}",
                    crate::api::validation::shown(other)
                ),
            ));
        }
        None => {
            return Err(Refusal::bad_request(
                "invalid_request",
                format!("api-version is missing: send api-version={API_VERSION}"),
            ));
        }
    }
    let resource = resource.unwrap_or_default().trim();
    if resource.is_empty() {
        return Err(Refusal::bad_request(
            "invalid_resource",
            "resource is missing: send the resource to get a token for, e.g. resource=https://storage.azure.com/",
        ));
    }
    if resource.len() > MAX_RESOURCE || resource.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Refusal::bad_request(
            "invalid_resource",
            format!(
                "resource is not a resource URI or application id (at most {MAX_RESOURCE} characters, no spaces), e.g. https://storage.azure.com/"
            ),
        ));
    }
    let client_id = match client_id.map(str::trim) {
        None | Some("") => None,
        Some(c) if uuid::Uuid::parse_str(c).is_ok() => Some(c.to_ascii_lowercase()),
        Some(c) => {
            return Err(Refusal::bad_request(
                "invalid_request",
                format!(
                    "clientid {} is not a client id (a GUID): send the identity's client id, e.g. DEFAULT_IDENTITY_CLIENT_ID",
                    crate::api::validation::shown(c)
                ),
            ));
        }
    };
    let secret = match secret.map(str::trim) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => {
            return Err(Refusal::unauthorized(
                "the secret header is missing: send MSI_SECRET from the ComputeIdentity's token Secret as the header `secret`",
            ));
        }
    };
    Ok(TokenRequest {
        resource: resource.to_owned(),
        audience: normalize_audience(resource),
        client_id,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(query: &[(&str, &str)], secret: Option<&str>) -> Result<TokenRequest, Refusal> {
        parse(query.iter().copied(), secret)
    }

    #[test]
    fn every_resource_form_the_sdks_send_is_one_audience() {
        for resource in [
            "https://storage.azure.com",
            "https://storage.azure.com/",
            "https://storage.azure.com/.default",
            "HTTPS://Storage.Azure.com/",
        ] {
            let r = ask(
                &[("api-version", API_VERSION), ("resource", resource)],
                Some("s"),
            )
            .unwrap();
            assert_eq!(r.audience, "https://storage.azure.com", "{resource}");
            assert_eq!(r.resource, resource);
            assert_eq!(r.client_id, None);
        }
    }

    #[test]
    fn refusals_name_the_parameter_and_the_fix() {
        let v = [
            ("api-version", API_VERSION),
            ("resource", "https://vault.azure.net"),
        ];
        type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>, u16, &'a str);
        let cases: Vec<Case> = vec![
            (v.to_vec(), None, 401, "secret header is missing"),
            (v.to_vec(), Some("  "), 401, "secret header is missing"),
            (
                vec![("resource", "https://vault.azure.net")],
                Some("s"),
                400,
                "api-version is missing",
            ),
            (
                vec![("api-version", "2019-08-01"), ("resource", "r")],
                Some("s"),
                400,
                "api-version=2017-09-01",
            ),
            (
                vec![("api-version", API_VERSION)],
                Some("s"),
                400,
                "resource is missing",
            ),
            (
                vec![("api-version", API_VERSION), ("resource", "a b")],
                Some("s"),
                400,
                "not a resource URI",
            ),
            (
                [&v[..], &[("clientid", "nope")]].concat(),
                Some("s"),
                400,
                "not a client id",
            ),
            (
                [&v[..], &[("object_id", "x")]].concat(),
                Some("s"),
                400,
                "select the identity with clientid",
            ),
            (
                [
                    &v[..],
                    &[
                        ("clientid", "00000000-0000-0000-0000-000000000001"),
                        ("client_id", "00000000-0000-0000-0000-000000000002"),
                    ],
                ]
                .concat(),
                Some("s"),
                400,
                "more than once",
            ),
        ];
        for (query, secret, status, words) in cases {
            let refused = parse(query.iter().copied(), secret).unwrap_err();
            assert_eq!(refused.status, status, "{query:?}: {refused:?}");
            assert!(
                refused.description.contains(words),
                "{query:?}: {refused:?}"
            );
        }
        let long = "x".repeat(600);
        let refused = ask(
            &[("api-version", API_VERSION), ("resource", &long)],
            Some("s"),
        )
        .unwrap_err();
        assert!(
            !refused.description.contains(&long),
            "the input is not echoed at length"
        );
    }

    #[test]
    fn the_client_id_is_read_in_either_spelling() {
        let id = "1B2C3D4E-0000-4000-8000-000000000001";
        for name in ["clientid", "client_id"] {
            let r = ask(
                &[
                    ("api-version", API_VERSION),
                    ("resource", "https://vault.azure.net/"),
                    (name, id),
                ],
                Some("s"),
            )
            .unwrap();
            assert_eq!(
                r.client_id.as_deref(),
                Some(id.to_ascii_lowercase().as_str())
            );
        }
    }
}
