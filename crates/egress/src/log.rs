//! The egress log: what each sandbox asked its proxy for, the decision and the bytes that
//! flowed, in a bounded ring per sandbox (memory only; the newest [`LOG_CAPACITY`] entries).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use sandpit_protocol::control::{EgressDecision, EgressLogEntry, EgressLogPage};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::decision::Refusal;

/// Entries kept per sandbox; older ones are dropped (and counted).
pub const LOG_CAPACITY: usize = 256;

/// One request or connection through the proxy. Byte counters grow while it is open.
#[derive(Debug)]
pub struct Entry {
    at: SystemTime,
    host: String,
    port: u16,
    kind: &'static str,
    decision: EgressDecision,
    rule: Option<&'static str>,
    reason: Option<String>,
    up: AtomicU64,
    down: AtomicU64,
    /// The sandbox's totals, counted along with this entry's.
    totals: Arc<ByteTotals>,
}

/// Bytes through a sandbox's proxy over all its connections, dropped log entries included.
#[derive(Debug, Default)]
pub struct ByteTotals {
    pub up: AtomicU64,
    pub down: AtomicU64,
}

/// The ring of one sandbox.
#[derive(Debug, Default)]
pub struct EgressLog {
    inner: Mutex<Ring>,
    totals: Arc<ByteTotals>,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Arc<Entry>>,
    dropped: u64,
}

impl EgressLog {
    fn push(&self, entry: Entry) -> Arc<Entry> {
        let entry = Arc::new(entry);
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if ring.entries.len() >= LOG_CAPACITY {
            ring.entries.pop_front();
            ring.dropped += 1;
        }
        ring.entries.push_back(entry.clone());
        entry
    }

    /// Records a connection the policy allowed and that was opened; its bytes are counted
    /// through the returned entry.
    pub fn allowed(&self, host: &str, port: u16, kind: &'static str) -> Arc<Entry> {
        let entry = Entry::new(host, port, kind, EgressDecision::Allowed, None);
        self.push(entry.counting_into(self.totals.clone()))
    }

    /// `(up, down)` bytes over every connection since the log was made.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.totals.up.load(Ordering::Relaxed),
            self.totals.down.load(Ordering::Relaxed),
        )
    }

    /// Records a refusal: denied by the policy, or allowed but unreachable.
    pub fn refused(&self, host: &str, port: u16, kind: &'static str, refusal: &Refusal) {
        let decision = match refusal.denial() {
            Some(_) => EgressDecision::Denied,
            None => EgressDecision::Failed,
        };
        let mut entry = Entry::new(host, port, kind, decision, Some(refusal.reason()));
        entry.rule = refusal.denial().map(|d| d.rule());
        self.push(entry);
    }

    /// The entries, oldest first, and how many were dropped before them.
    pub fn page(&self) -> EgressLogPage {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        EgressLogPage {
            entries: ring.entries.iter().map(|e| e.view()).collect(),
            dropped: ring.dropped,
        }
    }
}

impl Entry {
    fn new(
        host: &str,
        port: u16,
        kind: &'static str,
        decision: EgressDecision,
        reason: Option<String>,
    ) -> Self {
        Entry {
            at: SystemTime::now(),
            host: host.to_owned(),
            port,
            kind,
            decision,
            rule: None,
            reason,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            totals: Arc::default(),
        }
    }

    fn counting_into(mut self, totals: Arc<ByteTotals>) -> Self {
        self.totals = totals;
        self
    }

    fn view(&self) -> EgressLogEntry {
        EgressLogEntry {
            time: sandpit_protocol::time::timestamp(self.at),
            host: self.host.clone(),
            port: self.port,
            kind: self.kind.to_owned(),
            decision: self.decision,
            rule: self.rule.map(str::to_owned),
            reason: self.reason.clone(),
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
        }
    }
}

/// An upstream connection that counts the bytes written to it (up) and read from it (down)
/// into its log entry, as they flow.
pub struct Counted<S> {
    pub inner: S,
    entry: Arc<Entry>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, entry: Arc<Entry>) -> Self {
        Counted { inner, entry }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        self.entry.down.fetch_add(n, Ordering::Relaxed);
        self.entry.totals.down.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.entry.up.fetch_add(*n as u64, Ordering::Relaxed);
            self.entry.totals.up.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Denial;

    #[test]
    fn the_ring_keeps_the_newest_entries() {
        let log = EgressLog::default();
        for i in 0..LOG_CAPACITY + 3 {
            log.refused(
                &format!("h{i}"),
                80,
                "http",
                &Refusal::denied("x", Denial::NotAllowed),
            );
        }
        let page = log.page();
        assert_eq!(page.entries.len(), LOG_CAPACITY);
        assert_eq!(page.dropped, 3);
        assert_eq!(page.entries[0].host, "h3");
        assert_eq!(page.entries[0].rule.as_deref(), Some("allow-list"));
        assert_eq!(page.entries[0].decision, EgressDecision::Denied);
    }

    #[tokio::test]
    async fn totals_outlive_dropped_entries() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let log = EgressLog::default();
        let (near, mut far) = tokio::io::duplex(64);
        let mut counted = Counted::new(near, log.allowed("example.com", 443, "connect"));
        counted.write_all(b"hello").await.unwrap();
        far.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        counted.read_exact(&mut buf).await.unwrap();
        // The entry leaves the ring; the sandbox's totals keep its bytes.
        for _ in 0..LOG_CAPACITY {
            log.refused("x", 80, "http", &Refusal::denied("x", Denial::NotAllowed));
        }
        assert!(log.page().entries.iter().all(|e| e.host == "x"));
        assert_eq!(log.totals(), (5, 2));
    }
}
