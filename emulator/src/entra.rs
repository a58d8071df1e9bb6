//! Entra ID: the v2 token endpoint (client secret and client assertion, including federated
//! assertions) and the tenant's OIDC discovery document that MSAL-based clients read first.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::errors::entra as error;
use crate::federation;
use crate::{Emulator, host_of};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub async fn discovery(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !emu.state().tenants.contains(&tenant) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let base = format!("https://{}", host_of(&headers));
    Json(serde_json::json!({
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "issuer": format!("{base}/{tenant}/v2.0"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "tenant_region_scope": "NA",
    }))
    .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`.
pub async fn token(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if !emu.state().tenants.contains(&tenant) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if field("grant_type") != "client_credentials" {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let scope = field("scope");
    let Some(resource) = scope
        .strip_suffix("/.default")
        .filter(|r| !r.is_empty() && !r.contains(' '))
    else {
        return if scope.contains("://") || scope.contains(' ') {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                &format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
            )
        } else {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            )
        };
    };
    if !emu.knows_resource(resource) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}."
            ),
        );
    }
    let client_id = field("client_id");
    emu.count(&format!("entra.token:{client_id}:{resource}"));
    let Some(principal) = emu.state().principal_by_client_id(client_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    };
    if principal.tenant_id != tenant {
        return error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    }

    let by_secret = if let Some(secret) = form.get("client_secret") {
        let valid = emu
            .state()
            .service_principals
            .get(client_id)
            .is_some_and(|sp| sp.secrets.iter().any(|s| s == secret));
        if !valid {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
        true
    } else if let Some(assertion) = form.get("client_assertion") {
        if field("client_assertion_type") != JWT_BEARER {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            );
        }
        // A self-issued assertion (iss = client id) is a certificate credential; any other is federated.
        let self_issued = federation::peek(assertion).is_some_and(|c| c.iss == client_id);
        let checked = if self_issued {
            check_certificate(
                &emu,
                client_id,
                assertion,
                &format!("https://{}/{tenant}/oauth2/v2.0/token", host_of(&headers)),
            )
        } else {
            check_federated(&emu, client_id, assertion).await
        };
        if let Err(refusal) = checked {
            return *refusal;
        }
        false
    } else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };

    let lifetime = emu.lifetime_for(&principal.client_id);
    let (access_token, _) =
        emu.signer()
            .issue(&principal, resource, emu.clock().now(), lifetime, by_secret);
    Json(serde_json::json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }))
    .into_response()
}

/// Matches a federated assertion against the principal's federated credentials (issuer, subject and
/// audience, case-sensitively), then verifies its signature and time window.
async fn check_federated(
    emu: &Emulator,
    client_id: &str,
    assertion: &str,
) -> Result<(), Box<Response>> {
    let Some(claims) = federation::peek(assertion) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            50027,
            "JWT token is invalid or malformed.",
        )));
    };
    let audiences = claims.aud.values();
    let credentials = emu.state().federated_credentials(client_id);
    let matched = credentials.iter().any(|fic| {
        fic.issuer == claims.iss
            && fic.subject == claims.sub
            && audiences.iter().any(|a| fic.audiences.contains(a))
    });
    if !matched {
        let description = format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
            claims.iss,
            claims.sub,
            audiences.join(",")
        );
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            70021,
            &description,
        )));
    }
    if let Err(e) = emu.keys().verify(&claims.iss, assertion).await {
        tracing::info!(issuer = %claims.iss, error = %e, "federated assertion refused");
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            5002738,
            &format!("Invalid JWT token. {e}."),
        )));
    }
    let now = emu.clock().now();
    if claims.exp <= now || claims.nbf.is_some_and(|nbf| nbf > now + 300) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        )));
    }
    Ok(())
}

/// Verifies a certificate client assertion: signed (RS256) by the key of a certificate registered on
/// the application and named by its `x5t` thumbprint, for this token endpoint, inside its window.
fn check_certificate(
    emu: &Emulator,
    client_id: &str,
    assertion: &str,
    token_url: &str,
) -> Result<(), Box<Response>> {
    let refuse = |code: u32, description: &str| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        ))
    };
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| refuse(50027, "JWT token is invalid or malformed."))?;
    let thumbprint = header.x5t.ok_or_else(|| {
        refuse(
            700027,
            "Client assertion contains an invalid signature: the x5t header is missing.",
        )
    })?;
    let certificates = emu
        .state()
        .service_principals
        .get(client_id)
        .map(|sp| sp.certificates.clone())
        .unwrap_or_default();
    let key = certificates
        .iter()
        .find_map(|pem| certificate_key(pem).filter(|(print, _)| print == &thumbprint).map(|(_, key)| key))
        .ok_or_else(|| refuse(700027, &format!("Client assertion failed signature validation. The key was not found: no certificate with thumbprint {thumbprint} is registered on app '{client_id}'.")))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
        .map_err(|_| refuse(700027, "Client assertion failed signature validation."))?
        .claims;
    if claims["aud"].as_str() != Some(token_url) {
        return Err(refuse(
            700212,
            &format!(
                "No matching federated identity record found for presented assertion audience '{}'.",
                claims["aud"]
            ),
        ));
    }
    if claims["sub"].as_str() != Some(client_id) {
        return Err(refuse(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let now = emu.clock().now();
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        )));
    }
    Ok(())
}

/// The base64url SHA-1 thumbprint of a PEM certificate and its RSA public key.
fn certificate_key(pem: &str) -> Option<(String, jsonwebtoken::DecodingKey)> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let key = jsonwebtoken::DecodingKey::from_rsa_der(&cert.public_key().subject_public_key.data);
    Some((
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
        key,
    ))
}
