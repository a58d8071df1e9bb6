//! The emulator's own certificate authority and a serving certificate for every host it answers as.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM material of a freshly generated CA and leaf.
pub struct TlsMaterial {
    /// The CA certificate clients must trust.
    pub ca_pem: String,
    /// Leaf certificate chain (leaf then CA).
    pub chain_pem: String,
    /// Leaf private key (PKCS#8).
    pub key_pem: String,
}

/// Hosts the serving certificate covers: loopback plus the real Azure host names, so clients can keep
/// real URLs and only override name resolution.
pub fn default_hosts() -> Vec<String> {
    [
        "localhost",
        "127.0.0.1",
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "management.azure.com",
        "management.usgovcloudapi.net",
        "management.chinacloudapi.cn",
        "*.vault.azure.net",
        "*.vault.usgovcloudapi.net",
        "*.vault.azure.cn",
        "*.azurecr.io",
        "*.azurecr.us",
        "*.azurecr.cn",
        "*.blob.core.windows.net",
        "*.blob.core.usgovcloudapi.net",
        "*.blob.core.chinacloudapi.cn",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Generates a CA and a serving certificate for `hosts`.
pub fn generate(hosts: &[String]) -> Result<TlsMaterial, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "aml-identity-emulator CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut leaf_params = CertificateParams::new(hosts.to_vec())?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "aml-identity-emulator");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    Ok(TlsMaterial {
        ca_pem: ca.pem(),
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: leaf_key.serialize_pem(),
    })
}
