//! Whether a Secret of expiring credentials (ComputeIdentity tokens, a Datastore's SAS or token, a
//! RegistryConnection's pull secret) can stay as it is: a chain of small pure rules over what is
//! wanted, what the Secret holds and the time. The first rule that fails says why the Secret is
//! written again, which becomes the `TokenIssued` Event's action and note.
//!
//! Annotations anyone with edit rights in the namespace can change are hints: the credentials' own
//! expiry (a JWT `exp`, a SAS `se`) decides, and annotations that disagree with it are repaired.

use std::fmt;

use crate::outputs::Expiry;

/// Why a Secret must be written again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renew {
    /// There is no such Secret yet.
    Missing,
    /// A Secret of that name belongs to someone else (the writer then reports `TargetConflict`).
    NotOurs,
    /// Its annotations are missing or do not parse.
    AnnotationsUnreadable,
    /// It was made for another spec (identity, audiences, permissions…).
    SpecChanged,
    /// The object's force-refresh annotation has a value these credentials did not answer.
    ForceRefresh,
    /// The credentials in its data are missing or do not parse.
    CredentialsUnreadable,
    /// The credentials have expired.
    Expired,
    /// The credentials claim a longer life than any the operator writes (a forged expiry).
    ImplausibleLife,
    /// The expires-at annotation is not the credentials' own expiry.
    ExpiryMismatch,
    /// The renewal-time annotation lies outside the credentials' life.
    RenewalOutsideLife,
    /// Renewal time has come.
    Due,
}

impl Renew {
    /// The `TokenIssued` Event action: first issue, renewal, refresh, update after a spec change,
    /// or repair of a Secret that was edited or damaged.
    pub fn action(self) -> &'static str {
        match self {
            Renew::Missing => "Issue",
            Renew::Expired | Renew::Due => "Renew",
            Renew::ForceRefresh => "Refresh",
            Renew::SpecChanged => "Update",
            Renew::NotOurs
            | Renew::AnnotationsUnreadable
            | Renew::CredentialsUnreadable
            | Renew::ImplausibleLife
            | Renew::ExpiryMismatch
            | Renew::RenewalOutsideLife => "Repair",
        }
    }
}

impl fmt::Display for Renew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Renew::Missing => "the Secret does not exist",
            Renew::NotOurs => "the Secret is not this object's",
            Renew::AnnotationsUnreadable => "the Secret's annotations are missing or unreadable",
            Renew::SpecChanged => "the spec changed",
            Renew::ForceRefresh => "a force-refresh was asked for",
            Renew::CredentialsUnreadable => "the Secret's credentials are missing or unreadable",
            Renew::Expired => "the Secret's credentials have expired",
            Renew::ImplausibleLife => {
                "the Secret's credentials claim a longer life than any the operator writes"
            }
            Renew::ExpiryMismatch => {
                "the Secret's expires-at annotation does not match its credentials"
            }
            Renew::RenewalOutsideLife => {
                "the Secret's renewal-time annotation lies outside its credentials' life"
            }
            Renew::Due => "renewal is due",
        })
    }
}

/// What the object asks for now.
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'a> {
    /// Hash of what the credentials are made for.
    pub fingerprint: &'a str,
    /// The object's current force-refresh value.
    pub force: &'a str,
}

/// What the current Secret holds, read once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// A Secret of that name exists.
    pub exists: bool,
    /// It is owned by the object.
    pub ours: bool,
    /// Its annotations, when they parse.
    pub expiry: Option<Expiry>,
    /// The earliest expiry of the credentials in its data, read from them (Unix seconds).
    pub credentials_expire: Option<i64>,
}

type Rule = fn(&Wanted, &Observed, i64) -> Result<(), Renew>;

fn exists(_: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    o.exists.then_some(()).ok_or(Renew::Missing)
}

fn ours(_: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    o.ours.then_some(()).ok_or(Renew::NotOurs)
}

fn annotations_read(_: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    o.expiry
        .as_ref()
        .map(|_| ())
        .ok_or(Renew::AnnotationsUnreadable)
}

fn made_for_this_spec(w: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    match &o.expiry {
        Some(e) if e.fingerprint != w.fingerprint => Err(Renew::SpecChanged),
        _ => Ok(()),
    }
}

fn answered_force_refresh(w: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    match &o.expiry {
        Some(e) if e.force != w.force => Err(Renew::ForceRefresh),
        _ => Ok(()),
    }
}

fn credentials_read(_: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    o.credentials_expire
        .map(|_| ())
        .ok_or(Renew::CredentialsUnreadable)
}

fn not_expired(_: &Wanted, o: &Observed, now: i64) -> Result<(), Renew> {
    match o.credentials_expire {
        Some(real) if real <= now => Err(Renew::Expired),
        _ => Ok(()),
    }
}

/// Nothing the operator writes lives longer than a day, so an expiry further ahead was written by
/// someone else (a SAS or token with a made-up expiry and matching annotations).
fn plausible_life(_: &Wanted, o: &Observed, now: i64) -> Result<(), Renew> {
    match o.credentials_expire {
        Some(real) if real > now.saturating_add(crate::azure::limits::MAX_LIFETIME) => {
            Err(Renew::ImplausibleLife)
        }
        _ => Ok(()),
    }
}

fn annotation_tells_the_truth(_: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    match (&o.expiry, o.credentials_expire) {
        (Some(e), Some(real)) if e.expires != real => Err(Renew::ExpiryMismatch),
        _ => Ok(()),
    }
}

fn renewal_within_life(_: &Wanted, o: &Observed, _: i64) -> Result<(), Renew> {
    match (&o.expiry, o.credentials_expire) {
        (Some(e), Some(real))
            if e.renewal > real
                || e.renewal < real.saturating_sub(crate::azure::limits::MAX_LIFETIME) =>
        {
            Err(Renew::RenewalOutsideLife)
        }
        _ => Ok(()),
    }
}

fn not_due(_: &Wanted, o: &Observed, now: i64) -> Result<(), Renew> {
    match &o.expiry {
        Some(e) if now >= e.renewal => Err(Renew::Due),
        _ => Ok(()),
    }
}

/// The rules, in the order they are asked.
const RULES: &[Rule] = &[
    exists,
    ours,
    annotations_read,
    made_for_this_spec,
    answered_force_refresh,
    credentials_read,
    not_expired,
    plausible_life,
    annotation_tells_the_truth,
    renewal_within_life,
    not_due,
];

/// The Secret's [`Expiry`] when every rule passes at `now`, or the first reason to write it again.
pub fn check(wanted: &Wanted, observed: &Observed, now: i64) -> Result<Expiry, Renew> {
    for rule in RULES {
        rule(wanted, observed, now)?;
    }
    observed.expiry.clone().ok_or(Renew::AnnotationsUnreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn wanted() -> Wanted<'static> {
        Wanted {
            fingerprint: "abc",
            force: "",
        }
    }

    /// A Secret that passes every rule: issued 20 min ago, renewed in 20 min, expires in 40.
    fn good() -> Observed {
        Observed {
            exists: true,
            ours: true,
            expiry: Some(Expiry {
                expires: NOW + 2400,
                renewal: NOW + 1200,
                issued: NOW - 1200,
                fingerprint: "abc".into(),
                force: String::new(),
            }),
            credentials_expire: Some(NOW + 2400),
        }
    }

    fn edited(change: impl FnOnce(&mut Observed)) -> Observed {
        let mut o = good();
        change(&mut o);
        o
    }

    fn expiry(o: &mut Observed) -> &mut Expiry {
        o.expiry.as_mut().unwrap()
    }

    #[test]
    fn a_good_secret_stays() {
        assert_eq!(check(&wanted(), &good(), NOW).unwrap().renewal, NOW + 1200);
    }

    #[test]
    fn each_rule_names_its_reason() {
        let cases: Vec<(Observed, Renew)> = vec![
            (Observed::default(), Renew::Missing),
            (edited(|o| o.ours = false), Renew::NotOurs),
            (edited(|o| o.expiry = None), Renew::AnnotationsUnreadable),
            (
                edited(|o| expiry(o).fingerprint = "other".into()),
                Renew::SpecChanged,
            ),
            (
                edited(|o| expiry(o).force = "2026-01-01".into()),
                Renew::ForceRefresh,
            ),
            (
                edited(|o| o.credentials_expire = None),
                Renew::CredentialsUnreadable,
            ),
            // The credentials expired while the annotations claim they are fine.
            (edited(|o| o.credentials_expire = Some(NOW)), Renew::Expired),
            // A forged SAS or token whose expiry and annotations agree, years ahead.
            (
                edited(|o| {
                    o.credentials_expire = Some(NOW + 10 * 365 * 86_400);
                    expiry(o).expires = NOW + 10 * 365 * 86_400;
                    expiry(o).renewal = NOW + 10 * 365 * 86_400 - 3600;
                }),
                Renew::ImplausibleLife,
            ),
            // An expiry annotation moved to year 9999: believed by nothing.
            (
                edited(|o| expiry(o).expires = 253_402_300_799),
                Renew::ExpiryMismatch,
            ),
            // A renewal time pushed past the credentials' life, or long before it began.
            (
                edited(|o| expiry(o).renewal = NOW + 9999),
                Renew::RenewalOutsideLife,
            ),
            (
                edited(|o| expiry(o).renewal = NOW - 200_000),
                Renew::RenewalOutsideLife,
            ),
            (edited(|o| expiry(o).renewal = NOW), Renew::Due),
        ];
        for (observed, reason) in cases {
            assert_eq!(
                check(&wanted(), &observed, NOW),
                Err(reason),
                "{observed:?}"
            );
        }
    }

    #[test]
    fn the_clock_decides_when_renewal_is_due() {
        let o = good();
        assert!(check(&wanted(), &o, NOW + 1199).is_ok());
        assert_eq!(check(&wanted(), &o, NOW + 1200), Err(Renew::Due));
        assert_eq!(check(&wanted(), &o, NOW + 2400), Err(Renew::Expired));
    }

    #[test]
    fn the_force_refresh_the_object_asks_for_is_compared() {
        let asked = Wanted {
            fingerprint: "abc",
            force: "now",
        };
        assert_eq!(check(&asked, &good(), NOW), Err(Renew::ForceRefresh));
    }

    #[test]
    fn actions_tell_issue_renewal_refresh_update_and_repair_apart() {
        assert_eq!(Renew::Missing.action(), "Issue");
        assert_eq!(Renew::Due.action(), "Renew");
        assert_eq!(Renew::Expired.action(), "Renew");
        assert_eq!(Renew::ForceRefresh.action(), "Refresh");
        assert_eq!(Renew::SpecChanged.action(), "Update");
        assert_eq!(Renew::ExpiryMismatch.action(), "Repair");
    }
}
