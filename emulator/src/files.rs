//! Azure Files, as a pod reading a share with a file-service SAS sees it: list a directory, read a
//! file, create one. Every request is authorized by its SAS alone, checked as the service checks
//! it: the signature over the fields the SAS declares (with either key of the account), the
//! signed resource (`sr=s` the share, `sr=f` one file), the time window on the emulator's clock,
//! the protocol, the source address and the permission the operation needs. Failures answer with
//! the service's error codes in its XML shape.
//!
//! Shares are addressed by path, as the SDKs do for an address without an account host name:
//! `/_file/{account}/{share}[/{path}]`.

use std::collections::HashMap;
use std::net::SocketAddr;

use aws_lc_rs::hmac;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::Emulator;

/// The oldest signed version whose string to sign is the one checked here.
const OLDEST_VERSION: &str = "2015-04-05";

fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{}</Message></Error>",
        uuid::Uuid::new_v4()
    );
    (
        status,
        [
            ("content-type", "application/xml"),
            ("x-ms-error-code", code),
        ],
        body,
    )
        .into_response()
}

fn authentication_failed(detail: &str) -> Response {
    storage_error(
        StatusCode::FORBIDDEN,
        "AuthenticationFailed",
        &format!(
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.\nAuthenticationErrorDetail:{detail}"
        ),
    )
}

/// What an operation needs from the SAS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    List,
    Read,
    Create,
}

impl Operation {
    fn permission(self) -> &'static [char] {
        match self {
            Operation::List => &['l'],
            Operation::Read => &['r'],
            Operation::Create => &['c', 'w'],
        }
    }
}

/// Whether `letters` are a subset of `order`, each once, in that order.
fn canonical_subset(letters: &str, order: &str) -> bool {
    let mut rest = order.chars();
    !letters.is_empty() && letters.chars().all(|c| rest.by_ref().any(|o| o == c))
}

fn ip_allowed(sip: &str, client: std::net::IpAddr) -> bool {
    let parse = |s: &str| s.trim().parse::<std::net::IpAddr>().ok();
    match sip.split_once('-') {
        Some((from, to)) => match (parse(from), parse(to)) {
            (Some(from), Some(to)) => from <= client && client <= to,
            _ => false,
        },
        None => parse(sip) == Some(client),
    }
}

/// Checks the SAS in `query` for `operation` on `path` (empty: the share's root) of `share`: the
/// refusal to answer with, or `None` when the SAS allows it.
fn authorize(
    emu: &Emulator,
    account: &str,
    share: &str,
    path: &str,
    operation: Operation,
    query: &HashMap<String, String>,
    client: Option<std::net::IpAddr>,
) -> Option<Response> {
    let field = |name: &str| query.get(name).map(String::as_str);
    let Some(sig) = field("sig") else {
        return Some(storage_error(
            StatusCode::UNAUTHORIZED,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
        ));
    };
    let (Some(sv), Some(sr), Some(sp), Some(se)) =
        (field("sv"), field("sr"), field("sp"), field("se"))
    else {
        return Some(authentication_failed(
            "Signature fields not well formed: sv, sr, sp and se are required.",
        ));
    };
    if sv < OLDEST_VERSION || sv.len() != 10 {
        return Some(authentication_failed(&format!(
            "The signed version {sv} is not one this service signs with."
        )));
    }
    let canonical = match sr {
        "s" => format!("/file/{account}/{share}"),
        "f" if !path.is_empty() => format!("/file/{account}/{share}/{path}"),
        "f" => {
            return Some(storage_error(
                StatusCode::FORBIDDEN,
                "AuthorizationResourceTypeMismatch",
                "This request is not authorized to perform this operation using this resource type.",
            ));
        }
        other => {
            return Some(authentication_failed(&format!(
                "The signed resource {other} is not valid for the File service."
            )));
        }
    };
    let order = if sr == "s" { "rcwdl" } else { "rcwd" };
    if !canonical_subset(sp, order) {
        return Some(authentication_failed(&format!(
            "The signed permissions {sp} are not a subset of {order} in that order."
        )));
    }
    let string_to_sign = [
        sp,
        field("st").unwrap_or(""),
        se,
        &canonical,
        field("si").unwrap_or(""),
        field("sip").unwrap_or(""),
        field("spr").unwrap_or(""),
        sv,
        field("rscc").unwrap_or(""),
        field("rscd").unwrap_or(""),
        field("rsce").unwrap_or(""),
        field("rscl").unwrap_or(""),
        field("rsct").unwrap_or(""),
    ]
    .join("\n");
    let keys: Vec<String> = emu
        .state()
        .storage_accounts
        .values()
        .filter(|a| {
            a.id.rsplit('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(account))
        })
        .flat_map(|a| a.keys.clone())
        .collect();
    let engine = base64::engine::general_purpose::STANDARD;
    let signed_by_a_key = engine.decode(sig).is_ok_and(|given| {
        keys.iter().any(|key| {
            engine.decode(key.trim()).is_ok_and(|key| {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
                hmac::verify(&key, string_to_sign.as_bytes(), &given).is_ok()
            })
        })
    });
    if !signed_by_a_key {
        return Some(authentication_failed(
            "Signature did not match the string to sign of this request.",
        ));
    }
    let now = emu.clock().now();
    let time = |text: &str| text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second());
    let Some(expiry) = time(se) else {
        return Some(authentication_failed(&format!(
            "The signed expiry {se} is not an ISO 8601 time."
        )));
    };
    let start = match field("st") {
        Some(st) => match time(st) {
            Some(t) => Some(t),
            None => {
                return Some(authentication_failed(&format!(
                    "The signed start {st} is not an ISO 8601 time."
                )));
            }
        },
        None => None,
    };
    if now > expiry || start.is_some_and(|s| now < s) {
        return Some(authentication_failed(
            "Signature not valid in the specified time frame.",
        ));
    }
    // The emulator serves HTTPS only: a SAS limited to http cannot be used with it.
    if let Some(spr) = field("spr")
        && spr != "https"
        && spr != "https,http"
    {
        return Some(storage_error(
            StatusCode::FORBIDDEN,
            "AuthorizationProtocolMismatch",
            "This request is not authorized to perform this operation using this protocol.",
        ));
    }
    if let Some(sip) = field("sip")
        && !client.is_some_and(|ip| ip_allowed(sip, ip))
    {
        return Some(storage_error(
            StatusCode::FORBIDDEN,
            "AuthorizationSourceIPMismatch",
            "This request is not authorized to perform this operation using this source IP.",
        ));
    }
    if !operation.permission().iter().any(|p| sp.contains(*p)) {
        return Some(storage_error(
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        ));
    }
    None
}

/// The share's key in the state.
fn share_key(account: &str, share: &str) -> String {
    format!(
        "{}/{}",
        account.to_ascii_lowercase(),
        share.to_ascii_lowercase()
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every request under `/_file/`.
pub async fn handle(State(emu): State<Emulator>, request: Request) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let query: HashMap<String, String> = match Query::try_from_uri(request.uri()) {
        Ok(Query(q)) => q,
        Err(_) => {
            return storage_error(
                StatusCode::BAD_REQUEST,
                "InvalidQueryParameterValue",
                "A query parameter is not well formed.",
            );
        }
    };
    let full = request
        .uri()
        .path()
        .trim_start_matches("/_file/")
        .to_owned();
    let decoded = percent_encoding::percent_decode_str(&full)
        .decode_utf8_lossy()
        .into_owned();
    let mut segments = decoded.splitn(3, '/');
    let (Some(account), Some(share)) = (segments.next(), segments.next()) else {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "The requested URI does not represent any resource on the server.",
        );
    };
    let path = segments
        .next()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_owned();
    let range = request
        .headers()
        .get("x-ms-range")
        .or_else(|| request.headers().get("range"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .filter(|(a, b)| a <= b);
    let listing = query.get("restype").map(String::as_str) == Some("directory")
        && query.get("comp").map(String::as_str) == Some("list");
    let operation = match *request.method() {
        Method::GET if listing => Operation::List,
        Method::GET if !path.is_empty() => Operation::Read,
        Method::PUT
            if !path.is_empty()
                && request
                    .headers()
                    .get("x-ms-type")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"file")) =>
        {
            Operation::Create
        }
        _ => {
            return storage_error(
                StatusCode::BAD_REQUEST,
                "UnsupportedHttpVerb",
                "The emulator's File service lists directories, reads files and creates them; nothing else.",
            );
        }
    };
    if let Some(refused) = authorize(&emu, account, share, &path, operation, &query, client) {
        return refused;
    }
    let key = share_key(account, share);
    let mut state = emu.state();
    let Some(files) = state.file_shares.get_mut(&key) else {
        return storage_error(
            StatusCode::NOT_FOUND,
            "ShareNotFound",
            "The specified share does not exist.",
        );
    };
    match operation {
        Operation::List => {
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            let mut directories = std::collections::BTreeSet::new();
            let mut entries = String::new();
            for (name, content) in files.range(prefix.clone()..) {
                let Some(rest) = name.strip_prefix(&prefix) else {
                    break;
                };
                match rest.split_once('/') {
                    Some((directory, _)) => {
                        directories.insert(directory.to_owned());
                    }
                    None => entries.push_str(&format!(
                        "<File><Name>{}</Name><Properties><Content-Length>{}</Content-Length></Properties></File>",
                        xml_escape(rest),
                        content.len()
                    )),
                }
            }
            if !prefix.is_empty() && entries.is_empty() && directories.is_empty() {
                return storage_error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "The specified resource does not exist.",
                );
            }
            for directory in directories {
                entries.push_str(&format!(
                    "<Directory><Name>{}</Name><Properties /></Directory>",
                    xml_escape(&directory)
                ));
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"https://{account}.file.core.windows.net/\" ShareName=\"{}\" DirectoryPath=\"{}\"><Entries>{entries}</Entries><NextMarker /></EnumerationResults>",
                xml_escape(share),
                xml_escape(&path)
            );
            (StatusCode::OK, [("content-type", "application/xml")], body).into_response()
        }
        Operation::Read => {
            let Some(content) = files.get(&path).cloned() else {
                return storage_error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "The specified resource does not exist.",
                );
            };
            let length = content.len();
            if length == 0 {
                return storage_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The range specified is invalid for the current size of the resource.",
                );
            }
            // `x-ms-range: bytes=a-b` (the SDKs ask for the first chunk), or the whole file.
            let (from, to) = match range {
                Some((from, to)) if from < length => (from, to.min(length - 1)),
                Some(_) => {
                    return storage_error(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "InvalidRange",
                        "The range specified is invalid for the current size of the resource.",
                    );
                }
                None => (0, length - 1),
            };
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    ("content-type", "application/octet-stream".to_owned()),
                    ("content-range", format!("bytes {from}-{to}/{length}")),
                    ("x-ms-type", "File".to_owned()),
                ],
                content[from..=to].to_vec(),
            )
                .into_response()
        }
        Operation::Create => {
            files.insert(path, Vec::new());
            StatusCode::CREATED.into_response()
        }
    }
}
