//! `GET /v1/events`: the tenant's sandbox changes as they happen.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use sandpit_protocol::control::{EVENT_LAGGED, EVENT_SANDBOX, EventsLagged, SandboxEvent};

use crate::client::{Client, percent_encode};
use crate::error::{ClientError, Result};
use crate::sse::EventStream;

/// One item of [`Client::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A sandbox of the tenant changed.
    Sandbox(SandboxEvent),
    /// The stream fell behind and missed events: list the sandboxes again to catch up.
    Lagged(EventsLagged),
}

impl Client {
    /// Follows the sandbox changes of the key's tenant (or, with the admin key, `tenant`'s):
    /// every change made after this returns arrives, in order, until the stream is dropped or
    /// the server shuts down. Events are not stored: list the sandboxes after subscribing to
    /// know the starting point.
    pub async fn events(&self, tenant: Option<&str>) -> Result<EventStream<Event>> {
        let path = match tenant {
            Some(t) => format!("/v1/events?tenant={}", percent_encode(t)),
            None => "/v1/events".to_owned(),
        };
        let response = self.send(self.request(Method::GET, &path)).await?;
        let events = response
            .bytes_stream()
            .eventsource()
            .filter_map(|item| async move {
                match item {
                    Ok(e) if e.event == EVENT_SANDBOX => Some(
                        serde_json::from_str(&e.data)
                            .map(Event::Sandbox)
                            .map_err(|err| ClientError::Decode(format!("bad event: {err}"))),
                    ),
                    Ok(e) if e.event == EVENT_LAGGED => Some(
                        serde_json::from_str(&e.data)
                            .map(Event::Lagged)
                            .map_err(|err| ClientError::Decode(format!("bad event: {err}"))),
                    ),
                    // `ready`, comments, and event kinds of newer servers.
                    Ok(_) => None,
                    Err(eventsource_stream::EventStreamError::Transport(e)) => Some(Err(e.into())),
                    Err(e) => Some(Err(ClientError::Decode(e.to_string()))),
                }
            });
        Ok(Box::pin(events))
    }
}
