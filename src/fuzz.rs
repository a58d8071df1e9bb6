//! Property tests of every reader of untrusted input: ARM ids and scopes, JWT claims, Entra and
//! ARM error bodies, token responses, SAS strings, `Retry-After`, RFC 3339 times, durations and the
//! managed identity endpoint's query. Whatever the input: no panic, bounded output, no value of a
//! response quoted back in an error, and the checks keep their meaning (a scope admits only what
//! lies below it). Each property runs a bounded number of cases (see [`config`]).

use proptest::prelude::*;

use crate::azure::credential::{entra_error, token_response};
use crate::azure::scope::{ArmPath, Audiences, normalize_audience};
use crate::azure::{arm, jwt, limits, storage};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text an attacker would send: any characters, or the separators the readers split on.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[/a-zA-Z0-9._()%&=?#-]{0,80}",
        "(/[a-zA-Z0-9\u{212a}\u{130}\u{17f}.-]{0,12}){0,8}",
    ]
}

/// A segment ARM accepts in ids (ASCII; the readers must not fold anything else into it).
fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_()-][a-zA-Z0-9._()-]{0,15}"
}

fn scope() -> impl Strategy<Value = String> {
    (any::<u128>(), proptest::collection::vec(segment(), 0..6)).prop_map(|(guid, rest)| {
        let mut id = format!("/subscriptions/{}", uuid::Uuid::from_u128(guid));
        for s in rest {
            id.push('/');
            id.push_str(&s);
        }
        id
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arm_ids_parse_without_panic_and_a_scope_admits_only_what_lies_below_it(
        id in hostile(), scope in scope(), other in scope(),
    ) {
        let _ = ArmPath::parse(&id);
        let parent = ArmPath::parse(&scope).unwrap();
        prop_assert!(parent.is_within(&parent));
        let below = ArmPath::parse(&format!("{scope}/providers/X.Y/z")).unwrap();
        prop_assert!(below.is_within(&parent));
        // Within means: segment by segment equal but for ASCII case, never a string prefix.
        if let Ok(candidate) = ArmPath::parse(&other)
            && candidate.is_within(&parent)
        {
            let (o, s) = (other.to_ascii_lowercase(), scope.to_ascii_lowercase());
            prop_assert!(o == s || o.starts_with(&format!("{s}/")), "{other} within {scope}");
        }
    }

    #[test]
    fn a_lookalike_letter_is_not_the_letter_it_folds_to(scope in scope()) {
        // Past /subscriptions/<guid>: K and k become the Kelvin sign, which Unicode lower-cases to
        // k but ARM's ordinal comparison does not.
        let (head, tail) = scope.split_at("/subscriptions/".len() + 36);
        let lookalike = tail.replace(['k', 'K'], "\u{212a}");
        let parent = ArmPath::parse(&scope).unwrap();
        if lookalike != tail
            && let Ok(candidate) = ArmPath::parse(&format!("{head}{lookalike}"))
        {
            prop_assert!(!candidate.is_within(&parent), "{head}{lookalike} within {scope}");
        }
    }

    #[test]
    fn audiences_are_one_in_every_form_and_normalising_twice_changes_nothing(
        text in hostile(), host in "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9-]{1,10}){1,3}",
        suffixes in "(/|/\\.default| ){0,4}",
    ) {
        for text in [text, format!("https://{host}{suffixes}")] {
            let once = normalize_audience(&text);
            prop_assert_eq!(normalize_audience(&once), once.clone(), "{:?}", text);
        }
        let bare = format!("https://{host}");
        let allowed = Audiences::new(Some(std::slice::from_ref(&bare)));
        for form in [bare.clone(), format!("{bare}/"), format!("{bare}/.default"), bare.to_uppercase()] {
            prop_assert!(allowed.admits(&form), "{form}");
        }
        let lookalike = format!("https://{host}.evil.example");
        prop_assert!(!allowed.admits(&lookalike));
    }

    #[test]
    fn jwt_claims_read_anything_and_find_exp(token in hostile(), exp in any::<i64>(), junk in any::<Vec<u8>>()) {
        let _ = jwt::claims(&token);
        let _ = jwt::claims(&format!("a.{}.b", b64(&junk)));
        let payload = b64(format!("{{\"exp\":{exp},\"oid\":\"x\"}}").as_bytes());
        prop_assert_eq!(jwt::claims(&format!("h.{payload}.s")).and_then(|c| c.exp), Some(exp));
    }

    #[test]
    fn entra_error_bodies_of_any_shape_become_one_bounded_line(
        body in hostile(), description in any::<String>(), codes in proptest::collection::vec(any::<i64>(), 0..4),
        status in 100u16..600,
    ) {
        let _ = entra_error(status, &body).to_string();
        let json = serde_json::json!({"error": "invalid_request", "error_description": description, "error_codes": codes});
        let message = entra_error(status, &json.to_string()).to_string();
        prop_assert!(!message.contains('\n'));
        prop_assert!(message.len() <= description.len() + 200 + 21 * codes.len());
    }

    #[test]
    fn a_token_response_never_quotes_what_it_holds(marker in "[A-Za-z0-9]{24,40}", shape in 0usize..6, now in 0i64..4_000_000_000) {
        let bodies = [
            format!("\"{marker}\""),
            format!("{{\"access_token\": 7, \"note\": \"{marker}\"}}"),
            format!("[\"{marker}\"]"),
            format!("{{\"access_token\": [\"{marker}\"]}}"),
            format!("{{\"access_token\": \"{marker}\""),
            format!("{{\"access_token\": \"{marker}\", \"expires_in\": {{\"x\": \"{marker}\"}}}}"),
        ];
        if let Err(e) = token_response(&bodies[shape], now) {
            prop_assert!(!e.to_string().contains(&marker), "{e}");
        }
    }

    #[test]
    fn arm_error_bodies_of_any_shape_parse(body in hostile()) {
        let (code, message) = arm::parse_error(&body);
        prop_assert!(code.len() <= body.len().max(7));
        prop_assert!(message.chars().count() <= body.chars().count().max(200));
    }

    #[test]
    fn sas_expiry_reads_anything_and_finds_se(sas in hostile(), at in 0i64..253_402_300_799) {
        let _ = storage::sas_expiry(&sas);
        let se = jiff::Timestamp::from_second(at).unwrap().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let encoded = se.replace(':', "%3A");
        prop_assert_eq!(storage::sas_expiry(&format!("?sv=2022-11-02&se={encoded}&sig=x")), Some(at));
    }

    #[test]
    fn retry_after_is_bounded_whatever_the_header(header in hostile(), seconds in any::<u64>()) {
        prop_assert!(limits::retry_after(Some(&header)) <= limits::MAX_RETRY_AFTER);
        prop_assert!(limits::retry_after(Some(&seconds.to_string())) <= limits::MAX_RETRY_AFTER);
    }

    #[test]
    fn times_and_durations_parse_without_panic(text in hostile(), number in "[0-9]{1,400}(\\.[0-9]{0,40})?[hms]") {
        let _ = crate::renewal::parse_rfc3339(&text);
        let _ = crate::api::validation::parse_duration(&text);
        if let Some(seconds) = crate::api::validation::parse_duration(&number) {
            prop_assert!(seconds >= 0.0);
        }
    }

    #[test]
    fn the_endpoint_query_is_refused_or_read_and_never_echoes_the_secret(
        pairs in proptest::collection::vec((prop_oneof![Just("api-version".to_string()), Just("resource".to_string()), Just("clientid".to_string()), Just("client_id".to_string()), Just("mi_res_id".to_string()), any::<String>()], hostile()), 0..6),
        secret in "[A-Za-z0-9_-]{43}",
        resource in "https://[a-z]{1,20}\\.azure\\.(net|com)(/|/\\.default)?",
    ) {
        let query: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Err(refusal) = crate::msi::request::parse(query, Some(&secret)) {
            prop_assert!(!refusal.description.contains(&secret));
            prop_assert!(refusal.description.len() <= 2048);
        }
        let good = [("api-version", "2017-09-01"), ("resource", resource.as_str())];
        let request = crate::msi::request::parse(good, Some(&secret)).unwrap();
        prop_assert_eq!(normalize_audience(&request.audience), request.audience.clone());
        prop_assert!(!request.audience.ends_with('/') && !request.audience.ends_with("/.default"));
    }
}
