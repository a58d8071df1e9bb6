//! Bounds on what Azure (or whatever answers at an endpoint a tenant chose) may hand the operator:
//! bodies are read up to a size, `Retry-After` is capped, and a credential's expiry must lie
//! between now and a day ahead — a token that is already expired, or claims to live for years,
//! is refused as an error instead of being scheduled.

use std::time::Duration;

use super::error::AzureError;

/// The largest response body read; Azure's answers here are a few kilobytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// The longest `Retry-After` honoured; beyond it the answer is treated as this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The longest lifetime a token or refresh token may claim (Entra issues at most 24 h).
pub const MAX_LIFETIME: i64 = 24 * 3600 + 300;

/// The body of `response`, refused when it is larger than [`MAX_BODY`].
pub async fn body(mut response: reqwest::Response) -> Result<String, AzureError> {
    let too_large = || {
        AzureError::Unexpected(format!(
            "the response body is larger than {MAX_BODY} bytes; not read"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| AzureError::Transport(e.without_url().to_string()))?
    {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `Retry-After` in seconds (the HTTP-date form counts as 10 s), capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(header: Option<&str>) -> Duration {
    let seconds = header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(10);
    Duration::from_secs(seconds).min(MAX_RETRY_AFTER)
}

/// The shortest life a new credential may have left: anything less would be renewed in a loop.
pub const MIN_LIFETIME: i64 = 10;

/// `expires_on` of a credential obtained `now`, if it is plausible: more than [`MIN_LIFETIME`]
/// ahead and no more than [`MAX_LIFETIME`].
pub fn expiry(expires_on: i64, now: i64, what: &str) -> Result<i64, AzureError> {
    let left = expires_on.saturating_sub(now);
    if left <= MIN_LIFETIME {
        return Err(AzureError::Unexpected(format!(
            "{what} expires {} s from now (at {expires_on}): refused as already expired",
            left
        )));
    }
    if left > MAX_LIFETIME {
        return Err(AzureError::Unexpected(format!(
            "{what} claims to live {left} s (until {expires_on}), more than a day: refused"
        )));
    }
    Ok(expires_on)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded() {
        assert_eq!(retry_after(Some("7")), Duration::from_secs(7));
        assert_eq!(retry_after(Some("18446744073709551615")), MAX_RETRY_AFTER);
        assert_eq!(retry_after(Some("60000000")), MAX_RETRY_AFTER);
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::from_secs(10)
        );
        assert_eq!(retry_after(None), Duration::from_secs(10));
    }

    #[test]
    fn expiries_must_be_ahead_and_within_a_day() {
        let now = 1_800_000_000;
        assert_eq!(expiry(now + 3599, now, "t").unwrap(), now + 3599);
        assert!(expiry(now - 1, now, "t").is_err());
        assert!(expiry(now + 5, now, "t").is_err());
        assert!(
            expiry(now + 30, now, "t").is_ok(),
            "short-lived, but not dead"
        );
        assert!(expiry(16_725_225_600, now, "t").is_err(), "year 2500");
        assert!(expiry(i64::MAX, now, "t").is_err());
        assert!(expiry(i64::MIN, now, "t").is_err());
    }
}
