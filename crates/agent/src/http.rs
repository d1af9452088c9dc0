//! The agent's HTTP surface: the routes of every area (`crate::routes`) merged into one router,
//! plus what applies to all of them: the body limit, CORS headers, the unknown-route answer.
//!
//! No handler lives here. A new route goes into the `routes()` of its area (see the crate
//! README, "Where does a new route go").

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use sandpit_protocol::ErrorResponse;

use crate::agent::Agent;
use crate::error::ApiError;
use crate::routes;

/// The agent's router.
pub fn router(agent: Arc<Agent>) -> Router {
    let limit = agent.config.max_body_bytes;
    Router::new()
        .merge(routes::status::routes())
        .merge(routes::exec::routes())
        .merge(routes::sessions::routes())
        .merge(routes::files::routes())
        .merge(routes::files_raw::routes())
        .merge(routes::backup::routes())
        .merge(routes::env::routes())
        .merge(routes::process::routes())
        .merge(routes::port_watch::routes())
        .merge(routes::interpreter::routes())
        .merge(routes::git::routes())
        .merge(routes::watch::routes())
        // `/ws` requests are answered by this same router, built anew per connection.
        .merge(routes::ws::routes(router))
        .merge(routes::pty::routes())
        .merge(routes::tunnel::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::map_request(refresh_meminfo))
        .layer(middleware::map_response(cors))
        .with_state(agent)
}

/// A request may start a command: its `/proc/meminfo` view must be current first.
async fn refresh_meminfo(request: axum::extract::Request) -> axum::extract::Request {
    crate::meminfo::refresh_now();
    request
}

/// Headers the seed puts on every response (reference §2.1).
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Content-Type, Authorization, X-Session-Id, X-Sandbox-Id, X-Trace-Id",
        ),
    );
    response
}

async fn unknown_route(method: Method) -> Response {
    if method == Method::OPTIONS {
        // CORS preflight.
        let mut response = StatusCode::OK.into_response();
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        return response;
    }
    ApiError::from(ErrorResponse::unknown_route()).into_response()
}
