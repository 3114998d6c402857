//! A stateful fake of Stripe's meter-events and customers API on loopback, for billing tests:
//! it records accepted events, refuses a repeated identifier the way Stripe does, replays
//! answers per Idempotency-Key, and injects 500s, 429s, timeouts, outages and lost responses.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Form;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const SECRET_KEY: &str = "sk_test_fake";
pub const METER_CREATED: &str = "alt_text_description_created";
pub const METER_RETRIEVED: &str = "alt_text_description_retrieved";

/// A scripted behaviour for the next request to the meter-events endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refuse before executing (nothing stored, as Stripe's rate limiter does).
    RateLimited,
    /// A Stripe-side failure after execution started: the 500 is stored under the
    /// Idempotency-Key and replayed for that key, as Stripe does.
    ServerError,
    /// Record the event, then answer 500 (stored under the key): the client cannot know.
    AcceptThenServerError,
    /// Answer only after this long, without recording: the client's timeout fires first.
    Slow(Duration),
    /// Record the event and store the answer, then never send it: the response is lost.
    AcceptThenHang,
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub identifier: String,
    pub event_name: String,
    pub customer: String,
    pub value: i64,
    pub timestamp: i64,
}

#[derive(Default)]
struct FakeState {
    customers: Vec<String>,
    events: Vec<Accepted>,
    /// Idempotency-Key → (the sorted parameters, status, body).
    idempotency: HashMap<String, (String, u16, Value)>,
    faults: VecDeque<Fault>,
    /// Every meter-event request answers 503 while set (Stripe unreachable).
    down: bool,
    /// Meter-event requests seen, and how many of them were refused as repeated identifiers.
    requests: u64,
    duplicates: u64,
    failed_while_down: u64,
    hanging: u64,
    created_customers: u64,
}

/// The handle tests hold; the server runs on the test's runtime.
#[derive(Clone)]
pub struct StripeFake {
    pub base: String,
    state: Arc<Mutex<FakeState>>,
}

impl StripeFake {
    /// Serves on 127.0.0.1 with these customers known.
    pub async fn start(customers: &[&str]) -> StripeFake {
        let state = Arc::new(Mutex::new(FakeState {
            customers: customers.iter().map(|c| c.to_string()).collect(),
            ..FakeState::default()
        }));
        let app = axum::Router::new()
            .route("/v1/billing/meter_events", post(meter_event))
            .route("/v1/customers", post(create_customer))
            .fallback(|| async {
                stripe_error(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    None,
                    "Unrecognized request URL.",
                )
            })
            .with_state(state.clone());
        let base = super::server::serve_on_loopback(app).await;
        StripeFake { base, state }
    }

    pub fn add_customer(&self, customer: &str) {
        self.state.lock().unwrap().customers.push(customer.into());
    }

    pub fn push_faults(&self, faults: &[Fault]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().copied());
    }

    pub fn faults_left(&self) -> usize {
        self.state.lock().unwrap().faults.len()
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// The sum Stripe's meter would show for one customer and event name.
    pub fn total(&self, customer: &str, event_name: &str) -> i64 {
        let state = self.state.lock().unwrap();
        state
            .events
            .iter()
            .filter(|e| e.customer == customer && e.event_name == event_name)
            .map(|e| e.value)
            .sum()
    }

    pub fn events(&self) -> Vec<Accepted> {
        self.state.lock().unwrap().events.clone()
    }

    /// How many events each identifier was accepted as (must be 1 each).
    pub fn identifier_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for event in self.events() {
            *counts.entry(event.identifier).or_default() += 1;
        }
        counts
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    pub fn duplicates(&self) -> u64 {
        self.state.lock().unwrap().duplicates
    }

    pub fn failed_while_down(&self) -> u64 {
        self.state.lock().unwrap().failed_while_down
    }

    /// Requests accepted whose answer is being withheld.
    pub fn hanging(&self) -> u64 {
        self.state.lock().unwrap().hanging
    }

    pub fn created_customers(&self) -> u64 {
        self.state.lock().unwrap().created_customers
    }
}

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    let retry = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        "true"
    } else {
        "false"
    };
    (
        status,
        [("stripe-should-retry", retry)],
        axum::Json(json!({ "error": error })),
    )
        .into_response()
}

/// A POST as Stripe admits it: the secret key checked first (401 otherwise); then its form
/// parameters, its Idempotency-Key and the fingerprint of the parameters.
struct Admitted {
    form: HashMap<String, String>,
    key: Option<String>,
    params: String,
}

impl<S: Send + Sync> FromRequest<S> for Admitted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Admitted, Response> {
        let headers = request.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if header("authorization") != Some(format!("Bearer {SECRET_KEY}").as_str()) {
            return Err(stripe_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                "Invalid API Key provided.",
            ));
        }
        let key = header("idempotency-key").map(str::to_string);
        let Form(form) = Form::<HashMap<String, String>>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let params = fingerprint(&form);
        Ok(Admitted { form, key, params })
    }
}

fn fingerprint(form: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = form.iter().collect();
    format!("{sorted:?}")
}

/// Stripe's idempotency layer: the answer stored for `key`, or a refusal when `params` are not
/// those it was first used with; `None` for a request without a key or with a new one.
fn replay(s: &FakeState, key: Option<&str>, params: &str) -> Option<Response> {
    let (stored, status, body) = s.idempotency.get(key?)?;
    if stored != params {
        return Some(stripe_error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            None,
            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
        ));
    }
    Some(respond(*status, body))
}

fn respond(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    let retry = if status.is_server_error() {
        "true"
    } else {
        "false"
    };
    (
        status,
        [("stripe-should-retry", retry)],
        axum::Json(body.clone()),
    )
        .into_response()
}

async fn meter_event(
    State(state): State<Arc<Mutex<FakeState>>>,
    Admitted { form, key, params }: Admitted,
) -> Response {
    let (fault, now) = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        if s.down {
            s.failed_while_down += 1;
            drop(s);
            return stripe_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                None,
                "Stripe is unavailable.",
            );
        }
        (s.faults.pop_front(), unix_now())
    };
    match fault {
        Some(Fault::RateLimited) => {
            return stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly.",
            );
        }
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            return stripe_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                None,
                "too slow",
            );
        }
        _ => {}
    }
    if let Some(replayed) = replay(&state.lock().unwrap(), key.as_deref(), &params) {
        return replayed;
    }
    let (status, body) = {
        let mut s = state.lock().unwrap();
        let (status, body) = execute(&mut s, &form, now, fault);
        if let Some(key) = &key {
            s.idempotency
                .insert(key.clone(), (params, status, body.clone()));
        }
        if fault == Some(Fault::AcceptThenHang) && status == 200 {
            s.hanging += 1;
        }
        (status, body)
    };
    if fault == Some(Fault::AcceptThenHang) && status == 200 {
        // The answer is lost: the client gives up on its own (timeout) or dies.
        std::future::pending::<()>().await;
    }
    respond(status, &body)
}

/// Stripe's rules for one meter event; records it when accepted.
fn execute(
    s: &mut FakeState,
    form: &HashMap<String, String>,
    now: i64,
    fault: Option<Fault>,
) -> (u16, Value) {
    let invalid = |message: String| {
        (
            400,
            json!({"error": {"type": "invalid_request_error", "message": message}}),
        )
    };
    let server_error = || {
        (
            500,
            json!({"error": {"type": "api_error", "message": "An unknown error occurred"}}),
        )
    };
    if fault == Some(Fault::ServerError) {
        return server_error();
    }
    let event_name = form.get("event_name").cloned().unwrap_or_default();
    if event_name != METER_CREATED && event_name != METER_RETRIEVED {
        return invalid(format!(
            "No active meter found with this event name: {event_name}"
        ));
    }
    let Some(customer) = form.get("payload[stripe_customer_id]").cloned() else {
        return invalid("Missing required param: payload[stripe_customer_id].".into());
    };
    let Some(value) = form
        .get("payload[value]")
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return invalid("payload[value] must be a number.".into());
    };
    let timestamp = form
        .get("timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(now);
    if timestamp < now - 35 * 86_400 || timestamp > now + 300 {
        return invalid(
            "Timestamp must be within the past 35 days and not more than 5 minutes in the future."
                .into(),
        );
    }
    if !s.customers.contains(&customer) {
        return invalid(format!("No such customer: '{customer}'"));
    }
    let identifier = form
        .get("identifier")
        .cloned()
        .unwrap_or_else(|| format!("auto_{}", s.events.len()));
    if s.events.iter().any(|e| e.identifier == identifier) {
        s.duplicates += 1;
        return invalid(format!(
            "An event already exists with identifier {identifier}."
        ));
    }
    s.events.push(Accepted {
        identifier: identifier.clone(),
        event_name: event_name.clone(),
        customer: customer.clone(),
        value,
        timestamp,
    });
    if fault == Some(Fault::AcceptThenServerError) {
        return server_error();
    }
    (
        200,
        json!({
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": false,
            "payload": {"stripe_customer_id": customer, "value": value.to_string()},
            "timestamp": timestamp,
        }),
    )
}

async fn create_customer(
    State(state): State<Arc<Mutex<FakeState>>>,
    Admitted { form, key, params }: Admitted,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(replayed) = replay(&s, key.as_deref(), &params) {
        return replayed;
    }
    s.created_customers += 1;
    let id = format!("cus_fake{}", s.created_customers);
    s.customers.push(id.clone());
    let metadata: BTreeMap<String, String> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    let body = json!({
        "id": id,
        "object": "customer",
        "created": unix_now(),
        "livemode": false,
        "email": form.get("email"),
        "name": form.get("name"),
        "metadata": metadata,
    });
    if let Some(key) = key {
        s.idempotency.insert(key, (params, 200, body.clone()));
    }
    respond(200, &body)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
