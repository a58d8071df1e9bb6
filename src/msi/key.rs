//! The installation's endpoint key and the `MSI_SECRET` of each ComputeIdentity derived from it.
//!
//! A secret is `HMAC(key, uid, force-refresh value)`: every replica computes it from the
//! ComputeIdentity alone, so the endpoint never believes a value read from a tenant's Secret (a
//! tenant who edits `MSI_SECRET` there only locks out its own pods), and a force-refresh rotates it
//! without any state to keep. The key lives in one Secret of the operator's namespace, created by
//! the first replica that finds none.

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::ComputeIdentity;
use crate::outputs::{self, MANAGED_BY};

/// The data key of the key Secret.
const KEY_FIELD: &str = "key";
/// Bytes of a generated key (and the least a key Secret may hold).
const KEY_BYTES: usize = 32;

/// The HMAC key every replica derives `MSI_SECRET`s with.
pub struct EndpointKey {
    key: hmac::Key,
    /// A short public digest of the key: part of each token Secret's fingerprint, so a new key
    /// rewrites every `MSI_SECRET`.
    pub id: String,
}

impl EndpointKey {
    /// A key from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= KEY_BYTES).then(|| {
            let id = digest::digest(&digest::SHA256, bytes);
            Self {
                key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
                id: id.as_ref()[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            }
        })
    }

    /// The `MSI_SECRET` of the ComputeIdentity with `uid` while its force-refresh annotation reads
    /// `rotation`: 43 URL-safe characters.
    pub fn secret(&self, uid: &str, rotation: &str) -> String {
        let message = format!("aml-identity-operator/msi-secret/v1\n{uid}\n{rotation}");
        let tag = hmac::sign(&self.key, message.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// The `MSI_SECRET` of `ci` now.
    pub fn secret_of(&self, ci: &ComputeIdentity) -> String {
        self.secret(
            ci.meta().uid.as_deref().unwrap_or_default(),
            &outputs::force_refresh(ci),
        )
    }

    /// The key in Secret `namespace/name`, created with a random key when there is none (the
    /// replica that loses the race to create it reads the winner's).
    pub async fn load_or_create(
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        let api = Api::<Secret>::namespaced(client.clone(), namespace);
        for _ in 0..3 {
            if let Some(found) = api.get_opt(name).await? {
                return Self::from_secret(&found).ok_or_else(|| {
                    anyhow::anyhow!(
                        "Secret {namespace}/{name} does not hold a key of at least {KEY_BYTES} bytes under data.{KEY_FIELD}: delete it and the operator creates a new one (every MSI_SECRET then changes)"
                    )
                });
            }
            let mut bytes = [0u8; KEY_BYTES];
            rand::fill(&mut bytes);
            let mut secret = Secret {
                data: Some([(KEY_FIELD.to_owned(), ByteString(bytes.to_vec()))].into()),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            secret.metadata.name = Some(name.to_owned());
            secret
                .labels_mut()
                .insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
            match api.create(&PostParams::default(), &secret).await {
                Ok(created) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), "created the managed identity endpoint's key");
                    return Self::from_secret(&created)
                        .ok_or_else(|| anyhow::anyhow!("the created key Secret reads back empty"));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("Secret {namespace}/{name} kept changing while the endpoint key was read")
    }

    fn from_secret(secret: &Secret) -> Option<Self> {
        let bytes = secret.data.as_ref()?.get(KEY_FIELD)?;
        Self::from_bytes(&bytes.0)
    }
}

/// Whether `presented` is `expected`, in time that does not depend on where they differ.
pub fn same(expected: &str, presented: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), presented.as_bytes())
        .is_ok()
}

/// The lookup digest of a secret (the endpoint's index is keyed by it, never by the secret).
pub fn digest_of(secret: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_per_object_rotate_with_force_refresh_and_need_the_key() {
        let key = EndpointKey::from_bytes(&[7u8; 32]).unwrap();
        let other = EndpointKey::from_bytes(&[8u8; 32]).unwrap();
        let a = key.secret("uid-a", "");
        assert_eq!(a, key.secret("uid-a", ""), "stable for one object");
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, key.secret("uid-b", ""), "per object");
        assert_ne!(
            a,
            key.secret("uid-a", "2026-12-02"),
            "rotated by force-refresh"
        );
        assert_ne!(a, other.secret("uid-a", ""), "unknowable without the key");
        assert_ne!(key.id, other.id);
        assert!(
            EndpointKey::from_bytes(&[1u8; 31]).is_none(),
            "short keys refused"
        );
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &a[..42]));
        assert!(!same(&a, &key.secret("uid-b", "")));
    }
}
