//! Decoding of the SSE streams the agent sends: every event is one `data: <json>` line.

use std::pin::Pin;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use sandpit_protocol::ErrorResponse;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, Result};

/// A boxed stream of decoded events.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// Turns a streaming response body into typed events. Events without data (comments,
/// keep-alives) are skipped. An event named `error` carries an error envelope (the server ends
/// a stream its sandbox's stop or destroy cut short with one, `OPERATION_INTERRUPTED`): it
/// becomes [`ClientError::Api`].
pub(crate) fn decode<T, S, B, E>(body: S) -> EventStream<T>
where
    T: DeserializeOwned + Send + 'static,
    S: Stream<Item = std::result::Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: Into<ClientError> + std::fmt::Display + Send + 'static,
{
    let events = body.eventsource().filter_map(|item| async move {
        match item {
            Ok(event) if event.data.trim().is_empty() => None,
            Ok(event) if event.event == "error" => Some(Err(
                match serde_json::from_str::<ErrorResponse>(&event.data) {
                    Ok(envelope) => ClientError::Api(Box::new(envelope)),
                    Err(_) => ClientError::Stream(truncate(&event.data)),
                },
            )),
            Ok(event) => Some(serde_json::from_str::<T>(&event.data).map_err(|e| {
                ClientError::Decode(format!("bad event {:?}: {e}", truncate(&event.data)))
            })),
            Err(eventsource_stream::EventStreamError::Transport(e)) => Some(Err(e.into())),
            Err(e) => Some(Err(ClientError::Decode(e.to_string()))),
        }
    });
    Box::pin(events)
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_protocol::container::ExecEvent;

    fn chunks(
        parts: &[&'static str],
    ) -> impl Stream<Item = std::result::Result<&'static [u8], ClientError>> {
        futures::stream::iter(parts.iter().map(|p| Ok(p.as_bytes())).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_joined() {
        let body = chunks(&[
            "data: {\"type\":\"start\",\"command\":\"x\",\"timestamp\":\"t\"}\n\nda",
            "ta: {\"type\":\"stdout\",\"data\":\"hi\\n\",\"timestamp\":\"t\"}\n",
            "\n: keep-alive\n\ndata: {\"type\":\"complete\",\"exitCode\":3,\"timestamp\":\"t\"}\n\n",
        ]);
        let events: Vec<ExecEvent> = decode(body).map(|e| e.unwrap()).collect::<Vec<_>>().await;
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[1],
            ExecEvent::Stdout {
                data: "hi\n".into(),
                timestamp: "t".into(),
                encoding: None,
            }
        );
        assert_eq!(
            events[2],
            ExecEvent::Complete {
                exit_code: 3,
                timestamp: "t".into(),
                timed_out: false,
                reason: None,
            }
        );
    }

    #[tokio::test]
    async fn error_events_carry_the_envelope() {
        let body = chunks(&[
            "data: {\"type\":\"stdout\",\"data\":\"hi\",\"timestamp\":\"t\"}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":\"sandbox a was stopped\",\
             \"code\":\"OPERATION_INTERRUPTED\",\"message\":\"sandbox a was stopped\",\
             \"context\":{\"reason\":\"stopped\"},\"httpStatus\":409,\"timestamp\":\"t\"}\n\n",
        ]);
        let mut events = decode::<ExecEvent, _, _, _>(body);
        assert!(events.next().await.unwrap().is_ok());
        let err = events.next().await.unwrap().unwrap_err();
        assert_eq!(
            err.code(),
            Some(sandpit_protocol::ErrorCode::OperationInterrupted)
        );
        assert_eq!(
            err.to_string(),
            "OPERATION_INTERRUPTED: sandbox a was stopped"
        );
    }

    #[tokio::test]
    async fn garbage_is_a_decode_error() {
        let body = chunks(&["data: {not json}\n\n"]);
        let mut events = decode::<ExecEvent, _, _, _>(body);
        let err = events.next().await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err}");
    }
}
