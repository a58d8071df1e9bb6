//! `kubectl amlid inspect secret`: what a Secret the operator wrote holds, decoded — audiences,
//! expiry, principal, SAS permissions — and never a token, signature or key.

use base64::Engine;
use serde::Serialize;
use serde_json::Value;

/// What one data key of a Secret holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Decoded {
    /// A JWT (an Entra ID access token, an ACR refresh token): its claims, not the token.
    #[serde(rename_all = "camelCase")]
    Jwt {
        /// Selected claims (aud, iss, tid, oid, appid/azp, sub, scp, roles, access, iat, nbf, exp).
        claims: serde_json::Map<String, Value>,
        /// Seconds until `exp` (negative once expired).
        expires_in_seconds: Option<i64>,
    },
    /// A shared access signature: its fields, without `sig`.
    #[serde(rename_all = "camelCase")]
    Sas {
        /// Every field but the signature (sv, st, se, sp, sr, spr, sip, skoid…).
        fields: std::collections::BTreeMap<String, String>,
        /// Seconds until `se`.
        expires_in_seconds: Option<i64>,
    },
    /// A docker config: per registry, the user name and what the password decodes to.
    #[serde(rename_all = "camelCase")]
    DockerConfig {
        /// Registry host → (username, decoded password).
        registries: std::collections::BTreeMap<String, RegistryLogin>,
    },
    /// A value that is not a credential (a client id, a URL without query, a time), shown.
    Plain {
        /// The value.
        value: String,
    },
    /// A value that may be secret and is none of the above: only its length.
    Redacted {
        /// Its length in bytes.
        bytes: usize,
    },
}

/// One registry of a docker config.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegistryLogin {
    /// The user name (ACR's token user is the zero GUID).
    pub username: String,
    /// What the password is.
    pub password: Box<Decoded>,
}

/// Claims worth showing; anything else in a token stays unshown.
const CLAIMS: [&str; 15] = [
    "aud",
    "iss",
    "tid",
    "oid",
    "appid",
    "azp",
    "sub",
    "scp",
    "roles",
    "access",
    "iat",
    "nbf",
    "exp",
    "xms_mirid",
    "grant_type",
];

/// Keys whose values are not secret and help to read the rest.
const PLAIN_KEYS: [&str; 9] = [
    "AZURE_CLIENT_ID",
    "DEFAULT_IDENTITY_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_STORAGE_ACCOUNT_URL",
    "AZURE_STORAGE_CONTAINER",
    "AZUREML_DATASTORE_URI",
    "config.json",
    "expires-on",
];

/// Decodes one value of key `key` at time `now` (Unix seconds).
pub fn decode(key: &str, value: &[u8], now: i64) -> Decoded {
    let Ok(text) = std::str::from_utf8(value) else {
        return Decoded::Redacted { bytes: value.len() };
    };
    let text = text.trim();
    if let Some(jwt) = jwt(text, now) {
        return jwt;
    }
    if let Some(sas) = sas(text, now) {
        return sas;
    }
    if key == ".dockerconfigjson"
        && let Some(config) = docker_config(text, now)
    {
        return config;
    }
    if PLAIN_KEYS.contains(&key) || key.ends_with(".expires-on") {
        // A URL is shown without its query, where a SAS would sit.
        let value = text.split('?').next().unwrap_or_default().to_owned();
        return Decoded::Plain { value };
    }
    Decoded::Redacted { bytes: value.len() }
}

fn jwt(text: &str, now: i64) -> Option<Decoded> {
    let mut parts = text.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let Value::Object(all) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    let claims: serde_json::Map<String, Value> = all
        .into_iter()
        .filter(|(k, _)| CLAIMS.contains(&k.as_str()))
        .collect();
    let expires_in_seconds = claims.get("exp").and_then(Value::as_i64).map(|e| e - now);
    Some(Decoded::Jwt {
        claims,
        expires_in_seconds,
    })
}

fn sas(text: &str, now: i64) -> Option<Decoded> {
    let query = text.split_once('?').map_or(text, |(_, q)| q);
    let mut fields = std::collections::BTreeMap::new();
    let mut signed = false;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=')?;
        if k == "sig" {
            signed = true;
            continue;
        }
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .ok()?
            .into_owned();
        fields.insert(k.to_owned(), v);
    }
    if !signed || !fields.contains_key("sv") {
        return None;
    }
    let expires_in_seconds = crate::azure::storage::sas_expiry(query).map(|e| e - now);
    Some(Decoded::Sas {
        fields,
        expires_in_seconds,
    })
}

fn docker_config(text: &str, now: i64) -> Option<Decoded> {
    let config: Value = serde_json::from_str(text).ok()?;
    let mut registries = std::collections::BTreeMap::new();
    for (host, entry) in config["auths"].as_object()? {
        let (username, password) = match (entry["username"].as_str(), entry["password"].as_str()) {
            (Some(u), Some(p)) => (u.to_owned(), p.to_owned()),
            _ => {
                let auth = base64::engine::general_purpose::STANDARD
                    .decode(entry["auth"].as_str()?)
                    .ok()?;
                let auth = String::from_utf8(auth).ok()?;
                let (u, p) = auth.split_once(':')?;
                (u.to_owned(), p.to_owned())
            }
        };
        let password = Box::new(jwt(&password, now).unwrap_or(Decoded::Redacted {
            bytes: password.len(),
        }));
        registries.insert(host.clone(), RegistryLogin { username, password });
    }
    Some(Decoded::DockerConfig { registries })
}

/// Human-readable lines for one decoded value.
pub fn describe(decoded: &Decoded) -> Vec<String> {
    let life = |s: &Option<i64>| match s {
        Some(s) if *s >= 0 => format!("expires in {}", crate::plugin::duration(*s)),
        Some(s) => format!("EXPIRED {} ago", crate::plugin::duration(-*s)),
        None => "no expiry".to_owned(),
    };
    match decoded {
        Decoded::Jwt {
            claims,
            expires_in_seconds,
        } => {
            let mut lines = vec![format!("JWT, {}", life(expires_in_seconds))];
            for (k, v) in claims {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                lines.push(format!("  {k}: {v}"));
            }
            lines
        }
        Decoded::Sas {
            fields,
            expires_in_seconds,
        } => {
            let mut lines = vec![format!("SAS, {}", life(expires_in_seconds))];
            let names = [
                ("sp", "permissions"),
                ("sr", "resource"),
                ("st", "start"),
                ("se", "expiry"),
                ("spr", "protocol"),
                ("sip", "IP range"),
                ("sv", "version"),
                ("skoid", "delegating object id"),
            ];
            for (k, v) in fields {
                let name = names
                    .iter()
                    .find(|(f, _)| f == k)
                    .map_or(k.as_str(), |(_, n)| n);
                lines.push(format!("  {name} ({k}): {v}"));
            }
            lines
        }
        Decoded::DockerConfig { registries } => {
            let mut lines = vec!["docker config".to_owned()];
            for (host, login) in registries {
                lines.push(format!("  {host} as {}:", login.username));
                lines.extend(
                    describe(&login.password)
                        .into_iter()
                        .map(|l| format!("    {l}")),
                );
            }
            lines
        }
        Decoded::Plain { value } => vec![value.clone()],
        Decoded::Redacted { bytes } => vec![format!("<{bytes} bytes, not shown>")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"signature-bytes-that-must-not-show")
        )
    }

    fn shown(decoded: &Decoded) -> String {
        format!(
            "{}\n{}",
            describe(decoded).join("\n"),
            serde_json::to_string(decoded).unwrap()
        )
    }

    #[test]
    fn a_token_shows_its_claims_and_never_itself() {
        let t = token(serde_json::json!({
            "aud": "https://storage.azure.com", "exp": 2000, "oid": "o-1", "tid": "t-1",
            "appid": "a-1", "secret_claim": "hidden-value",
        }));
        let d = decode("storage.token", t.as_bytes(), 1000);
        let out = shown(&d);
        assert!(
            out.contains("https://storage.azure.com")
                && out.contains("o-1")
                && out.contains("expires in 16m 40s"),
            "{out}"
        );
        for part in t.split('.') {
            assert!(!out.contains(part), "a token part was shown: {out}");
        }
        assert!(!out.contains("hidden-value"));
        let late = decode("storage.token", t.as_bytes(), 3000);
        assert!(describe(&late)[0].contains("EXPIRED"));
    }

    #[test]
    fn a_sas_shows_its_fields_and_not_its_signature() {
        let sas = "sv=2025-01-05&st=2026-12-01T00%3A00%3A00Z&se=2026-12-01T01%3A00%3A00Z&sr=c&sp=rl&spr=https&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D";
        let now = jiff::Timestamp::from_second(0).unwrap();
        let d = decode("AZURE_STORAGE_SAS_TOKEN", sas.as_bytes(), now.as_second());
        let out = shown(&d);
        assert!(
            out.contains("permissions (sp): rl") && out.contains("resource (sr): c"),
            "{out}"
        );
        assert!(!out.contains("c2VjcmV0") && !out.contains("sig"), "{out}");
        // A URL with a SAS is shown as its SAS fields, never whole.
        let url = format!("https://acct.blob.core.windows.net/c?{sas}");
        assert!(!shown(&decode("AZUREML_DATASTORE_URI", url.as_bytes(), 0)).contains("c2VjcmV0"));
    }

    #[test]
    fn a_pull_secret_shows_the_refresh_tokens_claims() {
        let t = token(
            serde_json::json!({"aud": "myacr.azurecr.io", "exp": 5000, "grant_type": "refresh_token"}),
        );
        let config = serde_json::json!({"auths": {"myacr.azurecr.io": {
            "username": "00000000-0000-0000-0000-000000000000", "password": t,
            "auth": base64::engine::general_purpose::STANDARD.encode(format!("00000000-0000-0000-0000-000000000000:{t}")),
        }}});
        let d = decode(".dockerconfigjson", config.to_string().as_bytes(), 0);
        let out = shown(&d);
        assert!(
            out.contains("myacr.azurecr.io as 00000000-0000-0000-0000-000000000000"),
            "{out}"
        );
        assert!(out.contains("refresh_token"));
        for part in t.split('.') {
            assert!(!out.contains(part), "{out}");
        }
    }

    #[test]
    fn anything_else_is_only_measured() {
        assert_eq!(
            decode("accountKey", b"c2VjcmV0a2V5", 0),
            Decoded::Redacted { bytes: 12 }
        );
        assert_eq!(
            decode("clientSecret", b"a.b", 0),
            Decoded::Redacted { bytes: 3 }
        );
        assert_eq!(
            decode(
                "AZURE_CLIENT_ID",
                b"8b3f4c2e-1d5a-4e6f-9a7b-0c1d2e3f4a5b",
                0
            ),
            Decoded::Plain {
                value: "8b3f4c2e-1d5a-4e6f-9a7b-0c1d2e3f4a5b".into()
            }
        );
        assert_eq!(
            decode("x", &[0xff, 0xfe], 0),
            Decoded::Redacted { bytes: 2 }
        );
    }
}
