//! One pipeline for every Secret of expiring credentials (ComputeIdentity tokens, a Datastore's SAS
//! or token, a RegistryConnection's pull secret): decide with the freshness rules, mint only when a
//! rule says why, write the Secret with its expiry recorded, and hand the kind what to report.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::{Context, Error, Outcome};
use crate::api::HasCommonStatus;
use crate::api::conditions::{ConditionType, Reason};
use crate::freshness::Renew;
use crate::outputs::{self, Expiry};
use crate::renewal::{self, Policy};

/// The first retry of an object whose Secret name is taken by someone else's (doubling from there).
pub const CONFLICT_RETRY: Duration = Duration::from_secs(10);

/// The Secret an object keeps of expiring credentials.
pub struct Output<'a, O> {
    /// The object that owns it.
    pub owner: &'a O,
    /// Its name, in the owner's namespace.
    pub secret_name: &'a str,
    /// Its `type`.
    pub secret_type: &'a str,
    /// A hash of what the credentials are made for.
    pub fingerprint: String,
    /// When to renew them.
    pub policy: Policy,
}

/// Credentials just minted.
pub struct Minted {
    /// The Secret's data.
    pub data: BTreeMap<String, ByteString>,
    /// When they were obtained (Unix seconds).
    pub obtained: i64,
    /// When the earliest of them expires (Unix seconds).
    pub expires: i64,
    /// What they are, for the `TokenIssued` note ("a read/list SAS", "tokens for …").
    pub what: String,
}

/// What the pipeline did.
pub enum Written {
    /// The Secret was still good and stays as it is.
    Kept(Expiry),
    /// It was written, for `why`; `note` is the `TokenIssued` Event's note.
    Issued {
        /// What it records now.
        expiry: Expiry,
        /// The freshness rule that failed.
        why: Renew,
        /// For the Event.
        note: String,
    },
}

impl Written {
    /// The recorded expiry either way.
    pub fn expiry(&self) -> &Expiry {
        match self {
            Written::Kept(e) | Written::Issued { expiry: e, .. } => e,
        }
    }

    /// `outcome`, with the `TokenIssued` Event when the Secret was written.
    pub fn report(self, outcome: Outcome) -> Outcome {
        match self {
            Written::Kept(_) => outcome,
            Written::Issued { why, note, .. } => outcome.issued(why, note),
        }
    }
}

impl<O: super::Reconciled> Output<'_, O> {
    /// The current Secret, and its expiry when every freshness rule passes at `now` (`truth`
    /// reads its credentials' own expiry) or the first reason to write it again.
    pub async fn check(
        &self,
        ctx: &Context,
        now: i64,
        truth: impl Fn(&Secret) -> Option<i64>,
    ) -> Result<(Option<Secret>, Result<Expiry, Renew>), Error> {
        let namespace = self.owner.namespace().unwrap_or_default();
        let existing = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(self.secret_name)
            .await?;
        let checked = Expiry::still_good(
            existing.as_ref(),
            self.owner,
            &self.fingerprint,
            &outputs::force_refresh(self.owner),
            now,
            truth,
        );
        Ok((existing, checked))
    }

    /// Whether this object has never reached issuing (its `TokenIssued` condition was never
    /// set): its Secret is then presumed absent and created without being read first. A create
    /// fails when one exists after all (a crash between the write and the status, someone
    /// else's), and it is then read and judged as always.
    fn never_issued(&self) -> bool {
        let issued = crate::api::conditions::ConditionType::TokenIssued.as_str();
        self.owner.status().is_none_or(|s| {
            s.common()
                .conditions
                .iter()
                .find(|c| c.type_ == issued)
                .is_none_or(|c| c.status == "Unknown")
        })
    }

    /// Keeps the Secret when every freshness rule passes at `now` (`truth` reads its credentials'
    /// own expiry); otherwise mints (`mint` gets the issue time of what the Secret holds, so a
    /// token cache hands out nothing older) and writes. `Ok(Err(outcome))`: minting failed, or a
    /// Secret of that name belongs to someone else.
    pub async fn refresh<M, F>(
        &self,
        ctx: &Context,
        now: i64,
        truth: impl Fn(&Secret) -> Option<i64>,
        mint: M,
    ) -> Result<Result<Written, Outcome>, Error>
    where
        M: FnOnce(i64) -> F,
        F: Future<Output = Result<Result<Minted, Outcome>, Error>>,
    {
        let (existing, checked) = if self.never_issued() {
            (None, Err(Renew::Missing))
        } else {
            self.check(ctx, now, &truth).await?
        };
        let why = match checked {
            // Still valid: nothing to mint (this is what keeps a restart from re-minting).
            Ok(still) => return Ok(Ok(Written::Kept(still))),
            Err(why) => why,
        };
        let issued_after = existing
            .as_ref()
            .and_then(Expiry::read)
            .map_or(i64::MIN, |e| e.issued);
        let force = outputs::force_refresh(self.owner);
        let minted = match mint(issued_after).await? {
            Ok(m) => m,
            // What the Secret still holds runs out: the next try comes within half of what is
            // left (at least 2 s apart; Retry-After still holds), not after a backoff grown past it.
            Err(failed) => {
                let left = existing.as_ref().and_then(&truth).map(|e| e - now);
                return Ok(Err(match left {
                    Some(left) if left > 0 => {
                        failed.retry_within(Duration::from_secs((left as u64 / 2).max(2)))
                    }
                    _ => failed,
                }));
            }
        };
        let renewal = renewal::renewal_time(
            minted.obtained,
            minted.expires,
            self.policy,
            self.owner.meta().uid.as_deref().unwrap_or_default(),
        );
        let expiry = Expiry {
            expires: minted.expires,
            renewal,
            issued: minted.obtained,
            fingerprint: self.fingerprint.clone(),
            force,
        };
        let (why, written) = match self.write(ctx, &minted, &expiry, existing.as_ref()).await? {
            Err(Refused::Exists(_)) => {
                // Presumed absent, but there is one: judged as any Secret is.
                let (existing, checked) = self.check(ctx, now, &truth).await?;
                match checked {
                    Ok(still) => return Ok(Ok(Written::Kept(still))),
                    Err(why) => (
                        why,
                        self.write(ctx, &minted, &expiry, existing.as_ref()).await?,
                    ),
                }
            }
            written => (why, written),
        };
        match written {
            Ok(()) => {}
            // Gone and made again between the read and the write: the next pass reads it.
            Err(Refused::Exists(e)) => return Err(e.into()),
            // Looked at again, less and less often: the Secret in the way may be removed.
            Err(Refused::NotOurs(conflict)) => {
                return Ok(Err(Outcome::not_ready(
                    Reason::TargetConflict,
                    conflict.clone(),
                )
                .condition(
                    ConditionType::TokenIssued,
                    false,
                    Reason::TargetConflict,
                    conflict,
                )
                .requeue(CONFLICT_RETRY)));
            }
        }
        let note = format!(
            "{} written to Secret {}, valid until {} ({why})",
            minted.what,
            self.secret_name,
            renewal::rfc3339(minted.expires)
        );
        Ok(Ok(Written::Issued { expiry, why, note }))
    }

    /// Writes `minted` with `expiry` over `existing` (as just read; `None`: creates it), expecting
    /// its echo on the Secret watch.
    async fn write(
        &self,
        ctx: &Context,
        minted: &Minted,
        expiry: &Expiry,
        existing: Option<&Secret>,
    ) -> Result<Result<(), Refused>, Error> {
        // Its echo shows the annotations written (when the credentials were issued).
        let namespace = self.owner.namespace().unwrap_or_default();
        let echo = super::own_writes::fingerprint(expiry.annotations());
        ctx.own_writes
            .expect("Secret", &namespace, self.secret_name, echo);
        let written = outputs::write_expiring(
            &ctx.client,
            self.owner,
            self.secret_name,
            self.secret_type,
            minted.data.clone(),
            expiry,
            existing,
        )
        .await;
        let refused = match written {
            Ok(()) => return Ok(Ok(())),
            Err(outputs::WriteError::Exists(e)) => Refused::Exists(e),
            Err(outputs::WriteError::Output(outputs::OutputError::Kube(e))) => {
                ctx.own_writes
                    .withdraw("Secret", &namespace, self.secret_name);
                return Err(e.into());
            }
            Err(outputs::WriteError::Output(conflict)) => Refused::NotOurs(conflict.to_string()),
        };
        ctx.own_writes
            .withdraw("Secret", &namespace, self.secret_name);
        Ok(Err(refused))
    }
}

/// Why a Secret was not written.
enum Refused {
    /// It was to be created, and one exists (the API server's answer).
    Exists(kube::Error),
    /// It is someone else's.
    NotOurs(String),
}
