//! What a principal shared by several namespaces may touch on their behalf: ARM ids parsed strictly
//! into segments, a ceiling of allowed scopes an id must equal or lie below (segment by segment and
//! case-insensitively, never a string prefix: `rg-a` does not admit `rg-ab`), and token audiences
//! normalised so that `https://storage.azure.com`, `…/` and `…/.default` are one audience.

use std::fmt;

/// An ARM id (or a request path below one) as lower-cased segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmPath(Vec<String>);

impl ArmPath {
    /// Parses `/subscriptions/{guid}[/…]`. Refused: empty or dot-only segments (a URL parser would
    /// resolve `..` and land elsewhere than the check looked), percent-escapes, whitespace, query or
    /// fragment characters, and anything but letters, digits and `-_.()`.
    pub fn parse(id: &str) -> Result<ArmPath, String> {
        let rest = id.strip_prefix('/').ok_or_else(|| {
            format!("{id:?} is not an ARM id: it must start with /subscriptions/")
        })?;
        let segments: Vec<&str> = rest.split('/').collect();
        for segment in &segments {
            let allowed = |c: char| c.is_alphanumeric() || "-_.()".contains(c);
            if segment.is_empty()
                || segment.chars().all(|c| c == '.')
                || !segment.chars().all(allowed)
            {
                return Err(format!(
                    "{id:?} is not a well-formed ARM id: segment {segment:?} is empty, dot-only or has characters other than letters, digits and -_.()"
                ));
            }
        }
        let guid = segments.get(1).copied().unwrap_or_default();
        if !segments[0].eq_ignore_ascii_case("subscriptions")
            || uuid::Uuid::parse_str(guid).is_err()
        {
            return Err(format!(
                "{id:?} is not an ARM id: it must start with /subscriptions/<subscription id>"
            ));
        }
        // ASCII case only: Unicode folding would make the Kelvin sign a `k`, which ARM does not.
        Ok(ArmPath(
            segments.iter().map(|s| s.to_ascii_lowercase()).collect(),
        ))
    }

    /// Whether `self` equals `other` or lies below it.
    pub fn is_within(&self, other: &ArmPath) -> bool {
        other.0.len() <= self.0.len() && other.0.iter().zip(&self.0).all(|(a, b)| a == b)
    }
}

/// The scopes an object may touch: every ARM id the operator reads or writes for it must equal or
/// lie below one of them. `Unlimited` for a namespaced credential, whose own principal's Azure RBAC
/// is the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ceiling {
    /// Anything the principal can reach.
    Unlimited,
    /// Only these scopes (as written, `{namespace}` expanded) and what lies below them.
    Scopes(Vec<(String, ArmPath)>),
}

/// The placeholder in `allowedScopes` that stands for the object's namespace.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

impl Ceiling {
    /// The ceiling of `templates` for an object in `namespace`.
    pub fn for_namespace(templates: &[String], namespace: &str) -> Result<Ceiling, String> {
        let scopes = templates
            .iter()
            .map(|t| {
                let scope = t.replace(NAMESPACE_PLACEHOLDER, namespace);
                ArmPath::parse(&scope).map(|p| (scope, p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ceiling::Scopes(scopes))
    }

    /// Whether `id` may be touched: a well-formed ARM id equal to or below an allowed scope.
    pub fn admits(&self, id: &str) -> bool {
        let Ok(path) = ArmPath::parse(id) else {
            return false;
        };
        match self {
            Ceiling::Unlimited => true,
            Ceiling::Scopes(scopes) => scopes.iter().any(|(_, s)| path.is_within(s)),
        }
    }
}

impl fmt::Display for Ceiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ceiling::Unlimited => f.write_str("any scope"),
            Ceiling::Scopes(scopes) => {
                let list: Vec<&str> = scopes.iter().map(|(s, _)| s.as_str()).collect();
                f.write_str(&list.join(", "))
            }
        }
    }
}

/// One audience for every form the SDKs send: no `/.default`, no trailing `/`, scheme and host in
/// lower case (`https://Storage.azure.com/.default` → `https://storage.azure.com`).
pub fn normalize_audience(audience: &str) -> String {
    // Until nothing changes: `…/.default/` and `…/ /.default` are the same audience too.
    let mut trimmed = audience.trim();
    loop {
        let next = trimmed.trim_end_matches('/').trim_end();
        let next = next.strip_suffix("/.default").unwrap_or(next);
        if next == trimmed {
            break;
        }
        trimmed = next;
    }
    match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!(
                "{}://{}{path}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            )
        }
        None => trimmed.to_owned(),
    }
}

/// The token audiences objects may mint for pods; `None` allows any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audiences(Option<Vec<String>>);

impl Audiences {
    /// `allowed` as written in a credential (`None`: unrestricted).
    pub fn new(allowed: Option<&[String]>) -> Self {
        Self(allowed.map(|a| a.iter().map(|s| normalize_audience(s)).collect()))
    }

    /// Whether `audience`, in any of its forms, is allowed.
    pub fn admits(&self, audience: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&normalize_audience(audience)))
    }
}

impl fmt::Display for Audiences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("any audience"),
            Some(a) if a.is_empty() => f.write_str("no audience"),
            Some(a) => f.write_str(&a.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "/subscriptions/3fa85f64-5717-4562-b3fc-2c963f66afa6";

    fn ceiling(templates: &[&str], ns: &str) -> Ceiling {
        let t: Vec<String> = templates.iter().map(|s| s.to_string()).collect();
        Ceiling::for_namespace(&t, ns).unwrap()
    }

    #[test]
    fn scopes_compare_whole_segments_case_insensitively() {
        let c = ceiling(
            &[&format!("{SUB}/resourceGroups/rg-aml-{{namespace}}")],
            "team-a",
        );
        let id =
            |rg: &str| format!("{SUB}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/kv");
        assert!(c.admits(&id("rg-aml-team-a")));
        assert!(
            c.admits(&id("RG-AML-TEAM-A")),
            "ARM ids are case-insensitive"
        );
        assert!(c.admits(&format!("{SUB}/resourcegroups/rg-aml-team-a")));
        assert!(
            !c.admits(&id("rg-aml-team-ab")),
            "no prefix match inside a segment"
        );
        assert!(!c.admits(&id("rg-aml-team-b")));
        assert!(!c.admits(SUB), "the subscription is above the scope");
        let other = ceiling(
            &[&format!("{SUB}/resourceGroups/rg-aml-{{namespace}}")],
            "team-ab",
        );
        assert!(other.admits(&id("rg-aml-team-ab")) && !other.admits(&id("rg-aml-team-a")));
    }

    #[test]
    fn ids_that_a_url_parser_would_rewrite_are_refused() {
        let c = ceiling(&[&format!("{SUB}/resourceGroups/rg-a")], "x");
        for id in [
            format!(
                "{SUB}/resourceGroups/rg-a/providers/Microsoft.Storage/storageAccounts/../../rg-b"
            ),
            format!("{SUB}/resourceGroups/rg-a/providers/Microsoft.Storage/storageAccounts/%2e%2e"),
            format!("{SUB}/resourceGroups/rg-a/providers/Microsoft.Storage/storageAccounts/s?x=1"),
            format!("{SUB}/resourceGroups/rg-a/providers/Microsoft.Storage/storageAccounts/s "),
            format!("{SUB}/resourceGroups/rg-a//providers"),
            format!("{SUB}/resourceGroups/rg-a/"),
            format!("{SUB}/resourceGroups/rg-a/./x"),
            "subscriptions/3fa85f64-5717-4562-b3fc-2c963f66afa6/resourceGroups/rg-a".into(),
            "/subscriptions/not-a-guid/resourceGroups/rg-a".into(),
            "/tenants/x".into(),
            String::new(),
        ] {
            assert!(!c.admits(&id), "{id:?} admitted");
            assert!(
                !Ceiling::Unlimited.admits(&id),
                "{id:?} admitted without a ceiling"
            );
        }
        assert!(c.admits(&format!(
            "{SUB}/resourceGroups/rg-a/providers/Microsoft.Insights/components/appi.(x)"
        )));
    }

    #[test]
    fn a_subscription_or_resource_scope_admits_what_lies_below() {
        let c = ceiling(
            &[
                SUB,
                "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/shared/providers/Microsoft.ContainerRegistry/registries/cr",
            ],
            "x",
        );
        assert!(c.admits(&format!("{SUB}/resourceGroups/any")));
        assert!(c.admits("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/shared/providers/Microsoft.ContainerRegistry/registries/cr/listCredentials"));
        assert!(!c.admits("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/shared/providers/Microsoft.ContainerRegistry/registries/cr2"));
        assert!(
            !c.admits("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/shared")
        );
        assert_eq!(c.to_string().matches(", ").count(), 1);
    }

    #[test]
    fn a_placeholder_cannot_widen_a_scope() {
        // A namespace name is a DNS label: it cannot carry `/` or `..` into the expanded scope.
        assert!(
            Ceiling::for_namespace(&[format!("{SUB}/resourceGroups/{{namespace}}")], "..").is_err()
        );
        let c = ceiling(&[&format!("{SUB}/resourceGroups/{{namespace}}")], "team-a");
        assert!(!c.admits(&format!("{SUB}/resourceGroups/team-b")));
    }

    #[test]
    fn audiences_have_one_form() {
        for form in [
            "https://storage.azure.com",
            "https://storage.azure.com/",
            "https://storage.azure.com/.default",
            "HTTPS://Storage.Azure.com/.default",
            " https://storage.azure.com ",
        ] {
            assert_eq!(
                normalize_audience(form),
                "https://storage.azure.com",
                "{form}"
            );
        }
        assert_eq!(normalize_audience("api://MyApp/Path/"), "api://myapp/Path");
        let allowed = Audiences::new(Some(&["https://storage.azure.com/".to_string()]));
        assert!(allowed.admits("https://storage.azure.com/.default"));
        assert!(!allowed.admits("https://vault.azure.net"));
        assert!(!allowed.admits("https://storage.azure.com.evil.example"));
        assert!(Audiences::new(None).admits("https://management.azure.com"));
        assert!(!Audiences::new(Some(&[])).admits("https://storage.azure.com"));
    }
}
