//! Azure Storage shared access signatures (blob service, file service, account and user-delegation
//! SAS, signed version pinned) and the user-delegation key request. String-to-sign layouts follow
//! the service version they declare; the Python SDKs are the reference the tests compare against.

use aws_lc_rs::hmac;
use base64::Engine;
use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::error::AzureError;

/// The signed version (`sv`) of every SAS the operator writes.
pub const SAS_VERSION: &str = "2026-04-06";

/// Characters left as they are in query values: unreserved ones and `/`, as the SDKs quote.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// SAS time format: UTC, seconds precision.
pub fn sas_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// When a SAS expires, from its own `se` parameter (Unix seconds); `None` when it has none or it
/// does not read as a time.
pub fn sas_expiry(sas: &str) -> Option<i64> {
    let value = sas
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix("se="))?;
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?;
    decoded.parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// What a service SAS grants.
#[derive(Clone, Debug)]
pub struct ServiceSas {
    /// Storage account name.
    pub account: String,
    /// Container.
    pub container: String,
    /// A blob in it, or `None` for the whole container (`sr=c`).
    pub blob: Option<String>,
    /// Permissions in canonical order, e.g. `rl`.
    pub permissions: String,
    /// Start (`st`), if any.
    pub start: Option<Timestamp>,
    /// Expiry (`se`).
    pub expiry: Timestamp,
    /// `https` or `https,http`.
    pub protocol: Option<String>,
}

/// A user delegation key as the Blob service returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserDelegationKey {
    /// `SignedOid`.
    pub signed_oid: String,
    /// `SignedTid`.
    pub signed_tid: String,
    /// `SignedStart`.
    pub signed_start: String,
    /// `SignedExpiry`.
    pub signed_expiry: String,
    /// `SignedService`.
    pub signed_service: String,
    /// `SignedVersion`.
    pub signed_version: String,
    /// The key (base64); a secret.
    pub value: String,
}

fn sign(key_b64: &str, string_to_sign: &str) -> Result<String, AzureError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine
        .decode(key_b64.trim())
        .map_err(|_| AzureError::Credential("the storage key is not base64".into()))?;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    );
    Ok(engine.encode(tag.as_ref()))
}

/// Builds the query string from (name, value) pairs in order, leaving out absent ones.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(name, value)| {
            value.map(|v| format!("{name}={}", utf8_percent_encode(v, QUERY_VALUE)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical(sas: &ServiceSas) -> String {
    match &sas.blob {
        Some(blob) => format!(
            "/blob/{}/{}/{}",
            sas.account,
            sas.container,
            blob.trim_start_matches('/')
        ),
        None => format!("/blob/{}/{}", sas.account, sas.container),
    }
}

fn resource(sas: &ServiceSas) -> &'static str {
    if sas.blob.is_some() { "b" } else { "c" }
}

/// A service SAS signed with the account key (base64).
pub fn service_sas(account_key: &str, sas: &ServiceSas) -> Result<String, AzureError> {
    let start = sas.start.map(sas_time);
    let expiry = sas_time(sas.expiry);
    let sr = resource(sas);
    // sp, st, se, resource, si, sip, spr, sv, sr, snapshot time, ses, rscc, rscd, rsce, rscl, rsct
    let string_to_sign = [
        sas.permissions.as_str(),
        start.as_deref().unwrap_or(""),
        &expiry,
        &canonical(sas),
        "",
        "",
        sas.protocol.as_deref().unwrap_or(""),
        SAS_VERSION,
        sr,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let sig = sign(account_key, &string_to_sign)?;
    Ok(query(&[
        ("st", start.as_deref()),
        ("se", Some(&expiry)),
        ("sp", Some(&sas.permissions)),
        ("spr", sas.protocol.as_deref()),
        ("sv", Some(SAS_VERSION)),
        ("sr", Some(sr)),
        ("sig", Some(&sig)),
    ]))
}

/// A user-delegation SAS signed with a user delegation key.
pub fn user_delegation_sas(
    key: &UserDelegationKey,
    sas: &ServiceSas,
) -> Result<String, AzureError> {
    let start = sas.start.map(sas_time);
    let expiry = sas_time(sas.expiry);
    let sr = resource(sas);
    let mut lines: Vec<&str> = vec![&sas.permissions, start.as_deref().unwrap_or(""), &expiry];
    let canonical = canonical(sas);
    lines.push(&canonical);
    lines.extend([
        key.signed_oid.as_str(),
        &key.signed_tid,
        &key.signed_start,
        &key.signed_expiry,
        &key.signed_service,
        &key.signed_version,
        "", // saoid
        "", // suoid
        "", // scid
    ]);
    if SAS_VERSION >= "2025-07-05" {
        lines.extend(["", ""]); // skdutid, sduoid
    }
    lines.extend([
        "", // sip
        sas.protocol.as_deref().unwrap_or(""),
        SAS_VERSION,
        sr,
        "", // snapshot time
        "", // ses
    ]);
    if SAS_VERSION >= "2026-04-06" {
        lines.extend(["", ""]); // srh, srq
    }
    lines.extend(["", "", "", "", ""]); // rscc, rscd, rsce, rscl, rsct
    let sig = sign(&key.value, &lines.join("\n"))?;
    Ok(query(&[
        ("st", start.as_deref()),
        ("se", Some(&expiry)),
        ("sp", Some(&sas.permissions)),
        ("spr", sas.protocol.as_deref()),
        ("sv", Some(SAS_VERSION)),
        ("sr", Some(sr)),
        ("skoid", Some(&key.signed_oid)),
        ("sktid", Some(&key.signed_tid)),
        ("skt", Some(&key.signed_start)),
        ("ske", Some(&key.signed_expiry)),
        ("sks", Some(&key.signed_service)),
        ("skv", Some(&key.signed_version)),
        ("sig", Some(&sig)),
    ]))
}

/// What a file-service SAS grants: a whole share (`sr=s`) or one file in it (`sr=f`).
#[derive(Clone, Debug)]
pub struct FileSas {
    /// Storage account name.
    pub account: String,
    /// File share.
    pub share: String,
    /// A file in it (`dir/name`), or `None` for the whole share.
    pub file: Option<String>,
    /// Permissions in canonical order: a subset of `rcwdl` for a share, `rcwd` for a file.
    pub permissions: String,
    /// Start (`st`), if any.
    pub start: Option<Timestamp>,
    /// Expiry (`se`).
    pub expiry: Timestamp,
    /// The one address or `from-to` range allowed to use it (`sip`), if any.
    pub ip: Option<String>,
    /// `https` or `https,http`.
    pub protocol: Option<String>,
}

/// A file-service SAS signed with the account key (base64). Its string to sign has neither the
/// signed resource nor a snapshot time, unlike the Blob service's.
pub fn file_sas(account_key: &str, sas: &FileSas) -> Result<String, AzureError> {
    let start = sas.start.map(sas_time);
    let expiry = sas_time(sas.expiry);
    let (sr, canonical) = match &sas.file {
        Some(file) => (
            "f",
            format!(
                "/file/{}/{}/{}",
                sas.account,
                sas.share,
                file.trim_start_matches('/')
            ),
        ),
        None => ("s", format!("/file/{}/{}", sas.account, sas.share)),
    };
    // sp, st, se, resource, si, sip, spr, sv, rscc, rscd, rsce, rscl, rsct
    let string_to_sign = [
        sas.permissions.as_str(),
        start.as_deref().unwrap_or(""),
        &expiry,
        &canonical,
        "",
        sas.ip.as_deref().unwrap_or(""),
        sas.protocol.as_deref().unwrap_or(""),
        SAS_VERSION,
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let sig = sign(account_key, &string_to_sign)?;
    Ok(query(&[
        ("st", start.as_deref()),
        ("se", Some(&expiry)),
        ("sp", Some(&sas.permissions)),
        ("sip", sas.ip.as_deref()),
        ("spr", sas.protocol.as_deref()),
        ("sv", Some(SAS_VERSION)),
        ("sr", Some(sr)),
        ("sig", Some(&sig)),
    ]))
}

/// What an account SAS grants.
#[derive(Clone, Debug)]
pub struct AccountSas {
    /// Storage account name.
    pub account: String,
    /// Services, e.g. `b`.
    pub services: String,
    /// Resource types, e.g. `sco`.
    pub resource_types: String,
    /// Permissions, e.g. `rl`.
    pub permissions: String,
    /// Start, if any.
    pub start: Option<Timestamp>,
    /// Expiry.
    pub expiry: Timestamp,
    /// `https` or `https,http`.
    pub protocol: Option<String>,
}

/// An account SAS signed with the account key (base64).
pub fn account_sas(account_key: &str, sas: &AccountSas) -> Result<String, AzureError> {
    let start = sas.start.map(sas_time);
    let expiry = sas_time(sas.expiry);
    // account, sp, ss, srt, st, se, sip, spr, sv, ses — and, unlike the others, a trailing newline.
    let string_to_sign = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n\n{}\n{}\n\n",
        sas.account,
        sas.permissions,
        sas.services,
        sas.resource_types,
        start.as_deref().unwrap_or(""),
        expiry,
        sas.protocol.as_deref().unwrap_or(""),
        SAS_VERSION
    );
    let sig = sign(account_key, &string_to_sign)?;
    Ok(query(&[
        ("st", start.as_deref()),
        ("se", Some(&expiry)),
        ("sp", Some(&sas.permissions)),
        ("spr", sas.protocol.as_deref()),
        ("sv", Some(SAS_VERSION)),
        ("ss", Some(&sas.services)),
        ("srt", Some(&sas.resource_types)),
        ("sig", Some(&sig)),
    ]))
}

/// Asks the Blob service at `blob_endpoint` (e.g. `https://acct.blob.core.windows.net`) for a user
/// delegation key valid from `start` to `expiry`, authenticated with a storage-audience token.
pub async fn user_delegation_key(
    http: &reqwest::Client,
    blob_endpoint: &str,
    bearer: &str,
    start: Timestamp,
    expiry: Timestamp,
) -> Result<UserDelegationKey, AzureError> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
        sas_time(start),
        sas_time(expiry)
    );
    let url = format!(
        "{}/?restype=service&comp=userdelegationkey",
        blob_endpoint.trim_end_matches('/')
    );
    let response = http
        .post(url)
        .bearer_auth(bearer)
        .header("x-ms-version", SAS_VERSION)
        .header("content-type", "application/xml")
        .body(body)
        .send()
        .await
        .map_err(|e| AzureError::Transport(e.without_url().to_string()))?;
    let status = response.status();
    let text = super::limits::body(response).await?;
    if !status.is_success() {
        let code = xml_field(&text, "Code").unwrap_or_else(|| "Unknown".into());
        return Err(AzureError::Arm {
            method: "POST".into(),
            path: "/?comp=userdelegationkey".into(),
            status: status.as_u16(),
            code,
            message: xml_field(&text, "Message").unwrap_or_default(),
        });
    }
    let field = |name: &str| {
        xml_field(&text, name)
            .ok_or_else(|| AzureError::Unexpected(format!("user delegation key without {name}")))
    };
    Ok(UserDelegationKey {
        signed_oid: field("SignedOid")?,
        signed_tid: field("SignedTid")?,
        signed_start: field("SignedStart")?,
        signed_expiry: field("SignedExpiry")?,
        signed_service: field("SignedService")?,
        signed_version: field("SignedVersion")?,
        value: field("Value")?,
    })
}

/// The text of the first `<name>…</name>` element (the key response is flat and small).
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sas_tells_its_own_expiry() {
        let expiry = Timestamp::from_second(1_800_003_600).unwrap();
        let sas = service_sas(
            "a2V5MQ==",
            &ServiceSas {
                account: "st".into(),
                container: "c".into(),
                blob: None,
                permissions: "rl".into(),
                start: Some(Timestamp::from_second(1_800_000_000).unwrap()),
                expiry,
                protocol: Some("https".into()),
            },
        )
        .unwrap();
        assert_eq!(sas_expiry(&sas), Some(expiry.as_second()));
        assert_eq!(sas_expiry(&format!("?{sas}")), Some(expiry.as_second()));
        assert_eq!(sas_expiry("sv=2026-04-06&se=soon"), None);
        assert_eq!(sas_expiry("sv=2026-04-06"), None);
    }
}
