//! `GET /v1/events`: sandbox changes as server-sent events, per tenant.
//!
//! [`Events`] is a [`LifecycleListener`]: lifecycle tells it about every change and it
//! broadcasts them to the open streams, each of which passes on its tenant's only. Nothing is
//! stored: a stream sees the changes that happen while it is open (a client lists the sandboxes
//! after `ready` to know where it starts, and again after `lagged`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::control::{
    EVENT_LAGGED, EVENT_READY, EVENT_SANDBOX, EventsLagged, SandboxEvent, SandboxEventKind,
    SandboxState,
};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

use crate::auth::Tenant;
use crate::error::ApiResult;
use crate::lifecycle::{LifecycleListener, SandboxRef};
use crate::routes::sandboxes::ApiQuery;

/// Events kept for streams that read slowly; one further behind gets `lagged`.
const BUFFER: usize = 1024;

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The broadcaster of sandbox changes (one per server).
pub struct Events {
    sender: broadcast::Sender<Arc<(String, SandboxEvent)>>,
    seq: AtomicU64,
    /// Cancelled at shutdown: open streams end (they would hold up the graceful shutdown).
    closed: CancellationToken,
}

impl Events {
    pub fn new(closed: CancellationToken) -> Self {
        Events {
            sender: broadcast::channel(BUFFER).0,
            seq: AtomicU64::new(0),
            closed,
        }
    }

    /// The events of `tenant` from now on: `ready` first, then its sandboxes' changes.
    fn stream(&self, tenant: String) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
        let mut receiver = self.sender.subscribe();
        let closed = self.closed.clone();
        async_stream::stream! {
            yield Ok(Event::default().event(EVENT_READY).data("{}"));
            loop {
                let next = tokio::select! {
                    next = receiver.recv() => next,
                    () = closed.cancelled() => break,
                };
                match next {
                    Ok(event) if event.0 == tenant => {
                        let (_, event) = &*event;
                        if let Ok(sse) = Event::default()
                            .event(EVENT_SANDBOX)
                            .id(event.seq.to_string())
                            .json_data(event)
                        {
                            yield Ok(sse);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        if let Ok(sse) = Event::default()
                            .event(EVENT_LAGGED)
                            .json_data(EventsLagged { missed })
                        {
                            yield Ok(sse);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }
}

impl LifecycleListener for Events {
    fn changed(&self, sandbox: SandboxRef<'_>, kind: SandboxEventKind, state: SandboxState) {
        // No stream open: nothing to number or send.
        if self.sender.receiver_count() == 0 {
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let event = SandboxEvent {
            seq,
            sandbox_id: sandbox.id.to_owned(),
            kind,
            state,
            at: sandpit_protocol::time::timestamp(SystemTime::now()),
        };
        let _ = self
            .sender
            .send(Arc::new((sandbox.tenant.to_owned(), event)));
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Whose sandboxes (another tenant than the caller's needs the admin key).
    pub tenant: Option<String>,
}

/// Follow the tenant's sandbox changes (server-sent events).
///
/// A `text/event-stream`: first `event: ready` (data `{}`: changes from here on will arrive;
/// list the sandboxes now to know the starting point), then one `event: sandbox` per change of
/// one of the tenant's sandboxes, its data a `SandboxEvent` and its SSE `id` the event's `seq`:
/// `created`, `started`, `stopped`, `updated`, `destroyed`. A reader too slow to keep up gets
/// `event: lagged` (data `EventsLagged`) and should list the sandboxes again. Comment lines keep
/// a quiet stream open. Events are not stored: `Last-Event-ID` is ignored.
#[utoipa::path(
    get, path = "/v1/events", operation_id = "streamEvents", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "The event stream (`ready`, then `sandbox` events)", content_type = "text/event-stream", body = SandboxEvent),
        (status = 403, description = "Another tenant without the admin key (PERMISSION_DENIED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(events): State<Arc<Events>>,
    Extension(caller): Extension<Tenant>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let tenant = caller.scope(q.tenant.as_deref())?;
    Ok(Sse::new(events.stream(tenant)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
