//! Credentials in the query string of WebSocket routes (`/v1/sandboxes/{id}/ws`, `/ws/*`):
//! browsers cannot put an `Authorization` header on a WebSocket, so these routes also take
//! `?access_token=KEY` or, better, `?ticket=T` — a single-use ticket that lives 60 s, issued by
//! `POST /v1/sandboxes/{id}/ws-ticket`. Both parameters are removed from the URI before
//! anything else sees it (the agent, logs); an `Authorization` header wins over them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Extension;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, StatusCode, Uri, header};
use sandpit_protocol::control::{WsTicket, validate_sandbox_id};
use sandpit_protocol::{ErrorCode, ErrorResponse, time};

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::routes::ApiJson;
use crate::routes::sandboxes::ApiPath;

/// How long a ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

const ACCESS_TOKEN: &str = "access_token";
const TICKET: &str = "ticket";

/// Issued, not yet used tickets.
#[derive(Debug, Default)]
pub struct Tickets {
    map: Mutex<HashMap<String, Ticket>>,
}

#[derive(Debug)]
struct Ticket {
    tenant: Tenant,
    sandbox: String,
    expires: Instant,
}

impl Tickets {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new ticket for `tenant` to open one WebSocket of `sandbox`.
    pub fn issue(&self, tenant: Tenant, sandbox: &str) -> WsTicket {
        let ticket = format!("wst_{}", hex::encode(rand::random::<[u8; 24]>()));
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, t| t.expires > now);
        map.insert(
            ticket.clone(),
            Ticket {
                tenant,
                sandbox: sandbox.to_owned(),
                expires: now + TICKET_TTL,
            },
        );
        WsTicket {
            ticket,
            expires_at: time::timestamp(SystemTime::now() + TICKET_TTL),
        }
    }

    /// Uses up `ticket`: the tenant it was issued to, if it is valid for `sandbox`.
    pub fn redeem(&self, ticket: &str, sandbox: &str) -> Option<Tenant> {
        let found = self.map().remove(ticket)?;
        (found.sandbox == sandbox && found.expires > Instant::now()).then_some(found.tenant)
    }
}

/// Issue a single-use WebSocket ticket.
///
/// The ticket opens one WebSocket of this sandbox (`/v1/sandboxes/{id}/ws` or `/ws/*`) as
/// `?ticket=<ticket>`, within 60 seconds, without an `Authorization` header.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/ws-ticket", operation_id = "createWsTicket", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 201, description = "Issued", body = WsTicket),
        (status = 400, description = "Invalid id", body = ErrorResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn issue(
    State(tickets): State<Arc<Tickets>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<WsTicket>)> {
    validate_sandbox_id(&id).map_err(|m| ApiError::validation(m).context("id", id.as_str()))?;
    Ok((StatusCode::CREATED, ApiJson(tickets.issue(tenant, &id))))
}

/// The sandbox id of a WebSocket route path.
fn websocket_sandbox(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/sandboxes/")?;
    let (id, tail) = rest.split_once('/')?;
    (tail == "ws" || tail.starts_with("ws/")).then_some(id)
}

/// Middleware (outside the key check): moves query credentials of WebSocket routes out of the
/// URI, turning `access_token` into a bearer header and a valid `ticket` into the [`Tenant`].
pub async fn query_credentials(
    State(tickets): State<Arc<Tickets>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(sandbox) = websocket_sandbox(request.uri().path()).map(str::to_owned) else {
        return Ok(next.run(request).await);
    };
    let Some((access_token, ticket, rest)) = request.uri().query().and_then(take_credentials)
    else {
        return Ok(next.run(request).await);
    };
    let mut parts = request.uri().clone().into_parts();
    let path_and_query = match rest {
        Some(q) => format!("{}?{q}", request.uri().path()),
        None => request.uri().path().to_owned(),
    };
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ApiError::validation("invalid request path"))?,
    );
    *request.uri_mut() =
        Uri::from_parts(parts).map_err(|_| ApiError::validation("invalid request path"))?;
    if !request.headers().contains_key(header::AUTHORIZATION) {
        if let Some(key) = access_token {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "invalid API key"))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
        } else if let Some(ticket) = ticket {
            let tenant = tickets.redeem(&ticket, &sandbox).ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "invalid, used or expired ticket")
            })?;
            request.extensions_mut().insert(tenant);
        }
    }
    Ok(next.run(request).await)
}

/// Takes `access_token` and `ticket` out of a raw query: `None` if neither is there, else
/// their decoded values and the remaining query (untouched, `None` if empty).
fn take_credentials(query: &str) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let (mut access_token, mut ticket) = (None, None);
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            ACCESS_TOKEN => access_token = Some(percent_decode(value)),
            TICKET => ticket = Some(percent_decode(value)),
            _ => rest.push(pair),
        }
    }
    if access_token.is_none() && ticket.is_none() {
        return None;
    }
    let rest = (!rest.is_empty()).then(|| rest.join("&"));
    Some((access_token, ticket, rest))
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_paths_are_recognised() {
        assert_eq!(websocket_sandbox("/v1/sandboxes/a/ws"), Some("a"));
        assert_eq!(websocket_sandbox("/v1/sandboxes/a/ws/pty"), Some("a"));
        assert_eq!(websocket_sandbox("/v1/sandboxes/a/wsx"), None);
        assert_eq!(websocket_sandbox("/v1/sandboxes/a/api/ws"), None);
        assert_eq!(websocket_sandbox("/v1/sandboxes/a"), None);
    }

    #[test]
    fn credentials_are_taken_out_of_the_query() {
        assert_eq!(take_credentials("sessionId=s&cols=80"), None);
        assert_eq!(
            take_credentials("sessionId=s&access_token=sp_a%2Bb&cols=80"),
            Some((
                Some("sp_a+b".into()),
                None,
                Some("sessionId=s&cols=80".into())
            ))
        );
        assert_eq!(
            take_credentials("ticket=wst_1"),
            Some((None, Some("wst_1".into()), None))
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }

    #[test]
    fn tickets_are_single_use_and_bound_to_a_sandbox() {
        let tickets = Tickets::default();
        let tenant = Tenant {
            name: "t".into(),
            admin: false,
            key_id: "k".into(),
        };
        let t = tickets.issue(tenant.clone(), "box");
        assert!(t.ticket.starts_with("wst_"));
        assert_eq!(tickets.redeem(&t.ticket, "box"), Some(tenant.clone()));
        assert_eq!(tickets.redeem(&t.ticket, "box"), None);
        let t = tickets.issue(tenant, "box");
        assert_eq!(tickets.redeem(&t.ticket, "other"), None);
        // A ticket tried on the wrong sandbox is used up too.
        assert_eq!(tickets.redeem(&t.ticket, "box"), None);
        assert_eq!(tickets.redeem("wst_unknown", "box"), None);
    }
}
