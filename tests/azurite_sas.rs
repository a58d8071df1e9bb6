//! Azurite (the Storage emulator) accepts the operator's SAS for exactly what they permit, and
//! refuses them after expiry, for operations they do not permit, and for resource types they do not
//! cover; a user-delegation key obtained with an emulator-issued storage token signs a working SAS.

mod support;

use aml_identity_operator::azure::storage::*;
use jiff::{SignedDuration, Timestamp};
use support::azure::*;
use support::azurite::{ACCOUNT, Blob, KEY};

fn window(from_minutes: i64, to_minutes: i64) -> (Timestamp, Timestamp) {
    let now = Timestamp::now();
    (
        now + SignedDuration::from_mins(from_minutes),
        now + SignedDuration::from_mins(to_minutes),
    )
}

fn account(resource_types: &str, permissions: &str) -> String {
    let (start, expiry) = window(-5, 60);
    account_sas(
        KEY,
        &AccountSas {
            account: ACCOUNT.into(),
            services: "b".into(),
            resource_types: resource_types.into(),
            permissions: permissions.into(),
            start: Some(start),
            expiry,
            protocol: Some("https".into()),
        },
    )
    .unwrap()
}

fn container_sas(container: &str, permissions: &str, from: i64, to: i64) -> ServiceSas {
    let (start, expiry) = window(from, to);
    ServiceSas {
        account: ACCOUNT.into(),
        container: container.into(),
        blob: None,
        permissions: permissions.into(),
        start: Some(start),
        expiry,
        protocol: Some("https".into()),
    }
}

#[tokio::test]
async fn a_read_sas_reads_and_cannot_write() {
    let blob = Blob::new();
    let container = blob.prepare().await;
    let read = service_sas(KEY, &container_sas(&container, "rl", -5, 60)).unwrap();
    let (status, body) = blob
        .status(
            blob.http
                .get(format!("{}/{container}/train.csv?{read}", blob.base)),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "a,b\n1,2\n"));
    let (status, body) = blob
        .status(blob.http.get(format!(
            "{}/{container}?restype=container&comp=list&{read}",
            blob.base
        )))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("train.csv"));
    let (status, body) = blob
        .status(
            blob.http
                .put(format!("{}/{container}/new.csv?{read}", blob.base))
                .header("x-ms-blob-type", "BlockBlob")
                .body("x"),
        )
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("AuthorizationPermissionMismatch"), "{body}");
}

#[tokio::test]
async fn an_expired_sas_and_a_tampered_one_are_refused() {
    let blob = Blob::new();
    let container = blob.prepare().await;
    let expired = service_sas(KEY, &container_sas(&container, "rl", -120, -60)).unwrap();
    let (status, body) = blob
        .status(
            blob.http
                .get(format!("{}/{container}/train.csv?{expired}", blob.base)),
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("AuthenticationFailed") || body.contains("AuthorizationFailure"),
        "{body}"
    );

    let valid = service_sas(KEY, &container_sas(&container, "r", -5, 60)).unwrap();
    let tampered = valid.replace("sp=r&", "sp=rw&");
    let (status, _) = blob
        .status(
            blob.http
                .put(format!("{}/{container}/x.csv?{tampered}", blob.base))
                .header("x-ms-blob-type", "BlockBlob")
                .body("x"),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn an_account_sas_without_the_object_type_cannot_read_blobs() {
    let blob = Blob::new();
    let container = blob.prepare().await;
    let service_only = account("s", "rl");
    let (status, body) = blob
        .status(blob.http.get(format!(
            "{}/{container}/train.csv?{service_only}",
            blob.base
        )))
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("AuthorizationResourceTypeMismatch"), "{body}");
    let objects = account("o", "r");
    let (status, _) = blob
        .status(
            blob.http
                .get(format!("{}/{container}/train.csv?{objects}", blob.base)),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_user_delegation_sas_from_an_emulator_token_reads_and_cannot_write() {
    let blob = Blob::new();
    let container = blob.prepare().await;
    let azure = Azure::start(vec![]).await;
    let token = azure
        .app_credential("sp")
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    let (start, expiry) = window(-5, 60);
    let key = user_delegation_key(&blob.http, &blob.base, token.secret(), start, expiry)
        .await
        .unwrap();
    assert_eq!(key.signed_oid, APP_OBJECT_ID);
    let read = user_delegation_sas(&key, &container_sas(&container, "rl", -5, 60)).unwrap();
    let (status, body) = blob
        .status(
            blob.http
                .get(format!("{}/{container}/train.csv?{read}", blob.base)),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "a,b\n1,2\n"));
    let (status, _) = blob
        .status(
            blob.http
                .put(format!("{}/{container}/new.csv?{read}", blob.base))
                .header("x-ms-blob-type", "BlockBlob")
                .body("x"),
        )
        .await;
    assert_eq!(status, 403);
    // Signed with a key the service did not issue, the same SAS is refused.
    let forged = UserDelegationKey {
        value: KEY.into(),
        ..key
    };
    let forged = user_delegation_sas(&forged, &container_sas(&container, "rl", -5, 60)).unwrap();
    let (status, _) = blob
        .status(
            blob.http
                .get(format!("{}/{container}/train.csv?{forged}", blob.base)),
        )
        .await;
    assert_eq!(status, 403);
}
