//! SAS strings from the operator are byte-identical to what the official azure-storage-blob and
//! azure-storage-file-share compute for the same key, times and permissions: blob service, file
//! service (share and file), account and user-delegation SAS.

use std::process::Command;

use aml_identity_operator::azure::storage::*;

const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn python(args: serde_json::Value) -> String {
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let out = Command::new(python)
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sas.py"),
            &args.to_string(),
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn times() -> (jiff::Timestamp, jiff::Timestamp) {
    (
        "2026-11-26T08:00:00Z".parse().unwrap(),
        "2026-11-26T09:30:00Z".parse().unwrap(),
    )
}

#[test]
fn container_and_blob_service_sas_match_the_python_sdk() {
    let (start, expiry) = times();
    for (blob, permissions, protocol) in [
        (None, "rl", Some("https")),
        (Some("data/train.csv"), "r", None),
        (None, "racwdl", Some("https,http")),
    ] {
        let sas = ServiceSas {
            account: "stmlwteama".into(),
            container: "training-data".into(),
            blob: blob.map(String::from),
            permissions: permissions.into(),
            start: Some(start),
            expiry,
            protocol: protocol.map(String::from),
        };
        let ours = service_sas(KEY, &sas).unwrap();
        let theirs = python(serde_json::json!({
            "kind": "service", "account": "stmlwteama", "key": KEY, "container": "training-data", "blob": blob,
            "permissions": permissions, "start": sas_time(start), "expiry": sas_time(expiry), "protocol": protocol, "version": SAS_VERSION,
        }));
        assert_eq!(ours, theirs, "blob {blob:?}, permissions {permissions}");
    }
}

#[test]
fn account_sas_matches_the_python_sdk() {
    let (start, expiry) = times();
    for resource_types in ["sco", "o", "s"] {
        let sas = AccountSas {
            account: "stmlwteama".into(),
            services: "b".into(),
            resource_types: resource_types.into(),
            permissions: "rl".into(),
            start: Some(start),
            expiry,
            protocol: Some("https".into()),
        };
        let theirs = python(serde_json::json!({
            "kind": "account", "account": "stmlwteama", "key": KEY, "resource_types": resource_types,
            "permissions": "rl", "start": sas_time(start), "expiry": sas_time(expiry), "protocol": "https", "version": SAS_VERSION,
        }));
        assert_eq!(account_sas(KEY, &sas).unwrap(), theirs);
    }
}

#[test]
fn user_delegation_sas_matches_the_python_sdk() {
    let (start, expiry) = times();
    let key = UserDelegationKey {
        signed_oid: "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a".into(),
        signed_tid: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        signed_start: "2026-11-26T07:55:00Z".into(),
        signed_expiry: "2026-11-27T07:55:00Z".into(),
        signed_service: "b".into(),
        signed_version: SAS_VERSION.into(),
        value: KEY.into(),
    };
    let sas = ServiceSas {
        account: "stmlwteama".into(),
        container: "training-data".into(),
        blob: None,
        permissions: "rl".into(),
        start: Some(start),
        expiry,
        protocol: Some("https".into()),
    };
    let theirs = python(serde_json::json!({
        "kind": "user_delegation", "account": "stmlwteama", "container": "training-data", "permissions": "rl",
        "start": sas_time(start), "expiry": sas_time(expiry), "protocol": "https", "version": SAS_VERSION,
        "udk": {
            "signed_oid": key.signed_oid, "signed_tid": key.signed_tid, "signed_start": key.signed_start,
            "signed_expiry": key.signed_expiry, "signed_service": key.signed_service, "signed_version": key.signed_version,
            "value": key.value,
        },
    }));
    assert_eq!(user_delegation_sas(&key, &sas).unwrap(), theirs);
}

#[test]
fn share_and_file_sas_match_the_python_sdk() {
    let (start, expiry) = times();
    // (file, permissions, start, ip, protocol): each field present and absent at least once.
    for (file, permissions, start, ip, protocol) in [
        (None, "rl", Some(start), None, Some("https")),
        (None, "rcwdl", None, Some("10.1.0.4"), Some("https,http")),
        (None, "l", Some(start), Some("10.1.0.0-10.1.255.255"), None),
        (Some("train.csv"), "r", Some(start), None, Some("https")),
        (
            Some("runs/2026/metrics.json"),
            "rcwd",
            None,
            Some("10.1.0.4"),
            None,
        ),
    ] {
        let sas = FileSas {
            account: "stmlwteama".into(),
            share: "training-share".into(),
            file: file.map(String::from),
            permissions: permissions.into(),
            start,
            expiry,
            ip: ip.map(String::from),
            protocol: protocol.map(String::from),
        };
        let ours = file_sas(KEY, &sas).unwrap();
        let theirs = python(serde_json::json!({
            "kind": "file", "account": "stmlwteama", "key": KEY, "share": "training-share", "file": file,
            "permissions": permissions, "start": start.map(sas_time), "expiry": sas_time(expiry), "ip": ip,
            "protocol": protocol, "version": SAS_VERSION,
        }));
        assert_eq!(
            ours, theirs,
            "file {file:?}, permissions {permissions}, ip {ip:?}"
        );
        let resource = if file.is_some() { "sr=f" } else { "sr=s" };
        assert!(ours.contains(resource), "{ours}");
    }
}
