//! What a command reads on stdin: the request's bytes (`stdin`/`stdinBase64`), or chunks that
//! arrive while it runs (`stdinStream`: `stdin` frames of the WebSocket control transport).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// A command's input.
#[derive(Debug)]
pub enum Input {
    /// All of it, known up front.
    Bytes(Vec<u8>),
    /// Chunks in order; the channel closing is the end of input.
    Stream(mpsc::Receiver<Bytes>),
}

impl Input {
    /// Writes the input into `stdin`, then closes it (the command sees end of input). A command
    /// that exits without reading everything (EPIPE) ends the feed quietly; a stream's sender
    /// then sees its channel closed.
    pub async fn feed(self, mut stdin: pipe::Sender) {
        match self {
            Input::Bytes(data) => {
                let _ = stdin.write_all(&data).await;
            }
            Input::Stream(mut chunks) => {
                while let Some(chunk) = chunks.recv().await {
                    if stdin.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The stdin channel the WebSocket control transport attaches (as a request extension) to
/// every request it routes; a route that streams stdin takes the receiver. Left untaken, it is
/// dropped with the request and the transport answers further `stdin` frames with an error.
#[derive(Debug, Clone)]
pub struct StdinChannel(Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>);

impl StdinChannel {
    pub fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        StdinChannel(Arc::new(Mutex::new(Some(chunks))))
    }

    /// The receiver, once.
    pub fn take(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}
