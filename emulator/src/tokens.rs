//! Access tokens the emulator issues (ES256 JWTs shaped like Entra's v1 tokens) and verification of
//! the tokens presented back to it.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::state::Principal;

/// Claims of an issued access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Resource the token is for.
    pub aud: String,
    /// `https://sts.windows.net/{tid}/`: Azure resources get v1 tokens.
    pub iss: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Object id of the principal.
    pub oid: String,
    /// Subject (the object id for app tokens).
    pub sub: String,
    /// Tenant.
    pub tid: String,
    /// Client id.
    pub appid: String,
    /// `1` for a secret, `2` for an assertion or managed identity.
    pub appidacr: String,
    /// Always `app`.
    pub idtyp: String,
    /// Token format version.
    pub ver: String,
    /// Resource id of a managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_mirid: Option<String>,
}

/// The emulator's token signing key.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// Certificate of the signing key (DER, base64) for `x5c` headers, as the ACR token service
    /// presents its key to registries.
    certificate: String,
    /// PEM of the CA that issued that certificate: a registry's `rootcertbundle`.
    pub token_ca_pem: String,
    /// Every token signed so far, so tests can search logs, Events and status for them.
    issued: std::sync::Mutex<Vec<String>>,
}

impl Signer {
    /// A fresh P-256 signing key.
    pub fn generate() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let key = rcgen::KeyPair::generate()?;
        let private = key.serialize_pem();
        let public = key.public_key_pem();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "aml-identity-emulator token CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name.push(
            rcgen::DnType::CommonName,
            "aml-identity-emulator token signer",
        );
        let certificate = leaf.signed_by(&key, &ca)?;
        use base64::Engine;
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(private.as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public.as_bytes())?,
            kid: uuid::Uuid::new_v4().simple().to_string(),
            certificate: base64::engine::general_purpose::STANDARD.encode(certificate.der()),
            token_ca_pem: ca.pem(),
            issued: Default::default(),
        })
    }

    /// Issues an access token for `principal` and `resource`, valid `lifetime` seconds from `now`.
    pub fn issue(
        &self,
        principal: &Principal,
        resource: &str,
        now: i64,
        lifetime: i64,
        by_secret: bool,
    ) -> (String, AccessClaims) {
        let claims = AccessClaims {
            aud: resource.to_owned(),
            iss: format!("https://sts.windows.net/{}/", principal.tenant_id),
            iat: now,
            nbf: now - 300,
            exp: now + lifetime,
            oid: principal.object_id.clone(),
            sub: principal.object_id.clone(),
            tid: principal.tenant_id.clone(),
            appid: principal.client_id.clone(),
            appidacr: if by_secret { "1" } else { "2" }.into(),
            idtyp: "app".into(),
            ver: "1.0".into(),
            xms_mirid: principal.resource_id.clone(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("signing with a valid key");
        (self.remember(token), claims)
    }

    /// Signs arbitrary claims with the emulator key (ACR tokens), naming the key by its certificate
    /// (`x5c`) so a registry that trusts the token CA can verify it.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.x5c = Some(vec![self.certificate.clone()]);
        self.remember(
            jsonwebtoken::encode(&header, claims, &self.encoding)
                .expect("signing with a valid key"),
        )
    }

    fn remember(&self, token: String) -> String {
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token.clone());
        token
    }

    /// Every token signed so far.
    pub fn issued(&self) -> Vec<String> {
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verifies signature and `exp` of a token of this emulator with any claims shape.
    pub fn verify_as<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        now: i64,
    ) -> Result<T, TokenProblem> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let value = jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &validation)
            .map_err(|_| TokenProblem::Invalid)?
            .claims;
        if value["exp"].as_i64().is_none_or(|exp| exp <= now) {
            return Err(TokenProblem::Expired);
        }
        serde_json::from_value(value).map_err(|_| TokenProblem::Invalid)
    }

    /// Verifies a token this emulator issued: signature and time window (against `now`). The
    /// audience is the caller's to check, since resources accept several spellings.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, TokenProblem> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map_err(|_| TokenProblem::Invalid)?;
        let claims = data.claims;
        if claims.exp <= now {
            return Err(TokenProblem::Expired);
        }
        if claims.nbf > now {
            return Err(TokenProblem::NotYetValid);
        }
        Ok(claims)
    }
}

/// Why a presented token is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not a token of this emulator, or tampered.
    Invalid,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
}

/// Whether a token audience names `resource` (with or without a trailing slash, as Azure accepts).
pub fn audience_matches(aud: &str, resource: &str) -> bool {
    aud.trim_end_matches('/')
        .eq_ignore_ascii_case(resource.trim_end_matches('/'))
}
