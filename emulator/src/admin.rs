//! The test-facing admin API under `/_emulator/`: seed, counters, clock and faults. It never
//! returns a secret or a token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::Emulator;
use crate::state::{Fault, Seed};

/// `POST /_emulator/seed`: merges principals, identities, role assignments and IMDS identities.
pub async fn seed(State(emu): State<Emulator>, Json(seed): Json<Seed>) -> Response {
    match emu.state().load(seed) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// `GET /_emulator/counters`: requests per route key.
pub async fn counters(State(emu): State<Emulator>) -> Response {
    Json(emu.state().counters.clone()).into_response()
}

/// Body of `POST /_emulator/clock`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advance {
    /// Seconds to move the clock forward.
    pub advance_seconds: i64,
}

/// `POST /_emulator/clock`: moves the emulator's time.
pub async fn clock(State(emu): State<Emulator>, Json(advance): Json<Advance>) -> Response {
    emu.clock().advance(advance.advance_seconds);
    Json(serde_json::json!({"now": emu.clock().now(), "offsetSeconds": emu.clock().offset()}))
        .into_response()
}

/// `POST /_emulator/faults`: adds a fault; `DELETE` clears them all.
pub async fn add_fault(State(emu): State<Emulator>, Json(fault): Json<Fault>) -> Response {
    emu.state().faults.push(fault);
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /_emulator/faults`.
pub async fn clear_faults(State(emu): State<Emulator>) -> Response {
    emu.state().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_emulator/role-assignments`: what is granted (for tests that assert on grants).
pub async fn role_assignments(State(emu): State<Emulator>) -> Response {
    let list: Vec<_> = emu.state().role_assignments.values().cloned().collect();
    Json(list).into_response()
}
