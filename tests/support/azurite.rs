//! The Azurite the test command started: its endpoint, a client trusting its CA, and a container
//! with one blob to read.

use aml_identity_operator::azure::storage::*;
use jiff::{SignedDuration, Timestamp};

/// Azurite's well-known account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key.
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The blob every prepared container holds.
pub const BLOB: (&str, &str) = ("train.csv", "a,b\n1,2\n");

/// Azurite's blob endpoint and an HTTP client that trusts it.
pub struct Blob {
    pub base: String,
    pub ca: String,
    pub http: reqwest::Client,
}

impl Blob {
    pub fn new() -> Blob {
        let base = std::env::var("AMLID_AZURITE_BLOB").expect(
            "AMLID_AZURITE_BLOB is not set: run the tests with `make test`, which starts Azurite",
        );
        let ca = std::env::var("AMLID_AZURITE_CA").unwrap();
        let pem = std::fs::read(&ca).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        Blob { base, ca, http }
    }

    /// Sends with the pinned service version; returns (status, body).
    pub async fn status(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request
            .header("x-ms-version", SAS_VERSION)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// A new container holding [`BLOB`], made with the account key's SAS.
    pub async fn prepare(&self) -> String {
        let container = format!("sas-{}", super::cluster::unique());
        let now = Timestamp::now();
        let full = account_sas(
            KEY,
            &AccountSas {
                account: ACCOUNT.into(),
                services: "b".into(),
                resource_types: "sco".into(),
                permissions: "rwdlac".into(),
                start: Some(now - SignedDuration::from_mins(5)),
                expiry: now + SignedDuration::from_mins(60),
                protocol: Some("https".into()),
            },
        )
        .unwrap();
        let (status, body) = self
            .status(self.http.put(format!(
                "{}/{container}?restype=container&{full}",
                self.base
            )))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self
            .status(
                self.http
                    .put(format!("{}/{container}/{}?{full}", self.base, BLOB.0))
                    .header("x-ms-blob-type", "BlockBlob")
                    .body(BLOB.1),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        container
    }
}
