//! Process records: identity, status and bounded logs of each background process, and the
//! store that keeps them (running ones always, finished ones up to a limit, oldest evicted).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::sys::signal::Signal;
use sandpit_protocol::container::{ExitReason, ProcessInfo, ProcessStatus};
use sandpit_protocol::time;
use tokio::sync::watch;

use super::ring::RingBuffer;
use crate::exec::StreamKind;

/// One background process.
#[derive(Debug)]
pub struct Record {
    pub id: String,
    pub command: String,
    pub session_id: Option<String>,
    /// Pid and process-group id.
    pub pid: i32,
    pub start_time: String,
    /// Order of creation, for listing.
    pub seq: u64,
    state: Mutex<State>,
    /// Bumped on every change of output or status; streams wait on it.
    changed: watch::Sender<u64>,
    /// The write end of the process's stdin when it was started with `stdin: true`; `None`
    /// once closed. An async lock: writes may wait for the process to read.
    pub stdin: tokio::sync::Mutex<Option<tokio::net::unix::pipe::Sender>>,
}

/// The mutable part of a record.
#[derive(Debug)]
pub struct State {
    pub status: ProcessStatus,
    pub exit_code: Option<i32>,
    pub end_time: Option<String>,
    pub stdout: RingBuffer,
    pub stderr: RingBuffer,
    /// The signal a kill asked for, so its exit code (128 + n) reads as `killed`.
    pub kill_signal: Option<Signal>,
    /// Set when the OOM killer ended the process.
    pub reason: Option<ExitReason>,
}

impl Record {
    pub fn new(
        id: String,
        command: String,
        session_id: Option<String>,
        pid: i32,
        seq: u64,
        log_cap: usize,
    ) -> Self {
        Record {
            id,
            command,
            session_id,
            pid,
            start_time: time::now(),
            seq,
            state: Mutex::new(State {
                status: ProcessStatus::Running,
                exit_code: None,
                end_time: None,
                stdout: RingBuffer::new(log_cap),
                stderr: RingBuffer::new(log_cap),
                kill_signal: None,
                reason: None,
            }),
            changed: watch::Sender::new(0),
            stdin: tokio::sync::Mutex::new(None),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn append(&self, kind: StreamKind, bytes: &[u8]) {
        {
            let mut state = self.state();
            match kind {
                StreamKind::Stdout => state.stdout.push(bytes),
                StreamKind::Stderr => state.stderr.push(bytes),
            }
        }
        self.bump();
    }

    /// Records the end: `exit_code` is `None` when it could not be learnt.
    pub fn finish(&self, exit_code: Option<i32>) {
        {
            let mut state = self.state();
            state.status = match exit_code {
                Some(code) => status_for(code, state.kill_signal),
                None => ProcessStatus::Error,
            };
            state.exit_code = exit_code;
            state.end_time = Some(time::now());
        }
        self.bump();
    }

    /// Records the end of a process the OOM killer ended: status `killed`, exit code 137.
    pub fn finish_oom(&self, exit_code: i32) {
        {
            let mut state = self.state();
            state.status = ProcessStatus::Killed;
            state.exit_code = Some(exit_code);
            state.reason = Some(ExitReason::Oom);
            state.end_time = Some(time::now());
        }
        self.bump();
    }

    /// Records the end of a process killed at its deadline: status `killed`, exit code 124.
    pub fn finish_timed_out(&self) {
        {
            let mut state = self.state();
            state.status = ProcessStatus::Killed;
            state.exit_code = Some(sandpit_protocol::time::TIMEOUT_EXIT_CODE);
            state.end_time = Some(time::now());
        }
        self.bump();
    }

    /// Bytes of log kept.
    pub fn log_bytes(&self) -> usize {
        let state = self.state();
        state.stdout.kept() + state.stderr.kept()
    }

    pub fn is_finished(&self) -> bool {
        self.state().status.is_finished()
    }

    pub fn info(&self) -> ProcessInfo {
        let state = self.state();
        ProcessInfo {
            id: self.id.clone(),
            pid: u32::try_from(self.pid).ok(),
            command: self.command.clone(),
            status: state.status,
            start_time: self.start_time.clone(),
            end_time: state.end_time.clone(),
            exit_code: state.exit_code,
            session_id: self.session_id.clone(),
            reason: state.reason,
        }
    }
}

/// 0 → completed; 137/143 (SIGKILL/SIGTERM) or the signal a kill sent → killed; else failed.
pub fn status_for(code: i32, kill_signal: Option<Signal>) -> ProcessStatus {
    match code {
        0 => ProcessStatus::Completed,
        137 | 143 => ProcessStatus::Killed,
        c if kill_signal.is_some_and(|s| c == 128 + s as i32) => ProcessStatus::Killed,
        _ => ProcessStatus::Failed,
    }
}

/// Why [`Store::insert_with`] refused a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A running process has the id.
    Busy,
    /// `running` processes run: the cap.
    Full { running: usize },
}

/// All records. At most `max_running` run at once; running records are never evicted;
/// finished ones are, oldest first, beyond `max_finished` records or `max_finished_bytes` of
/// logs (the newest one always stays).
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    max_running: usize,
    max_finished: usize,
    max_finished_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Arc<Record>>,
    finished: VecDeque<Arc<Record>>,
    next_seq: u64,
}

impl Store {
    pub fn new(max_running: usize, max_finished: usize, max_finished_bytes: usize) -> Self {
        Store {
            inner: Mutex::default(),
            max_running,
            max_finished,
            max_finished_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Record>> {
        self.lock().map.get(id).cloned()
    }

    /// Every record, oldest first.
    pub fn all(&self) -> Vec<Arc<Record>> {
        let mut records: Vec<Arc<Record>> = self.lock().map.values().cloned().collect();
        records.sort_by_key(|r| r.seq);
        records
    }

    /// Inserts the record `make(seq)` under `id` unless a running process holds that id or
    /// `max_running` processes run; a finished record with the id is replaced. `make` runs
    /// under the store's lock, so two starts with one id (or for the last free place) cannot
    /// both succeed.
    pub fn insert_with<E>(
        &self,
        id: &str,
        make: impl FnOnce(u64) -> Result<Record, E>,
        refused: impl FnOnce(Refused) -> E,
    ) -> Result<Arc<Record>, E> {
        let mut inner = self.lock();
        if let Some(old) = inner.map.get(id) {
            if !old.is_finished() {
                return Err(refused(Refused::Busy));
            }
            let old = old.clone();
            inner.finished.retain(|r| !Arc::ptr_eq(r, &old));
        }
        let running = inner.map.values().filter(|r| !r.is_finished()).count();
        if running >= self.max_running {
            return Err(refused(Refused::Full { running }));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let record = Arc::new(make(seq)?);
        inner.map.insert(id.to_owned(), record.clone());
        Ok(record)
    }

    /// Notes that `record` finished; evicts the oldest finished records beyond the limit.
    pub fn finished(&self, record: &Arc<Record>) {
        let mut inner = self.lock();
        let current = inner
            .map
            .get(&record.id)
            .is_some_and(|r| Arc::ptr_eq(r, record));
        if !current {
            return;
        }
        inner.finished.push_back(record.clone());
        let mut bytes: usize = inner.finished.iter().map(|r| r.log_bytes()).sum();
        while inner.finished.len() > 1
            && (inner.finished.len() > self.max_finished || bytes > self.max_finished_bytes)
        {
            let Some(old) = inner.finished.pop_front() else {
                break;
            };
            bytes -= old.log_bytes();
            if inner.map.get(&old.id).is_some_and(|r| Arc::ptr_eq(r, &old)) {
                inner.map.remove(&old.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, seq: u64) -> Result<Record, ()> {
        Ok(Record::new(id.into(), "true".into(), None, 1, seq, 16))
    }

    #[test]
    fn statuses_follow_exit_codes() {
        assert_eq!(status_for(0, None), ProcessStatus::Completed);
        assert_eq!(status_for(143, None), ProcessStatus::Killed);
        assert_eq!(status_for(137, None), ProcessStatus::Killed);
        assert_eq!(status_for(1, None), ProcessStatus::Failed);
        assert_eq!(status_for(130, None), ProcessStatus::Failed);
        assert_eq!(status_for(130, Some(Signal::SIGINT)), ProcessStatus::Killed);
        assert_eq!(status_for(42, Some(Signal::SIGINT)), ProcessStatus::Failed);
    }

    #[test]
    fn running_ids_are_exclusive_and_finished_records_are_bounded() {
        let store = Store::new(usize::MAX, 2, usize::MAX);
        let a = store.insert_with("a", |s| record("a", s), |_| ()).unwrap();
        assert!(store.insert_with("a", |s| record("a", s), |_| ()).is_err());
        a.finish(Some(0));
        store.finished(&a);
        // A finished id can be reused.
        let a2 = store.insert_with("a", |s| record("a", s), |_| ()).unwrap();
        assert!(!Arc::ptr_eq(&a, &a2));
        for id in ["b", "c", "d"] {
            let r = store.insert_with(id, |s| record(id, s), |_| ()).unwrap();
            r.finish(Some(1));
            store.finished(&r);
        }
        let ids: Vec<String> = store.all().iter().map(|r| r.id.clone()).collect();
        // "b" was evicted; the running "a" stays.
        assert_eq!(ids, ["a", "c", "d"]);
    }

    #[test]
    fn finished_logs_have_a_byte_budget() {
        let store = Store::new(usize::MAX, 100, 30);
        for id in ["a", "b", "c", "d"] {
            let r = store.insert_with(id, |s| record(id, s), |_| ()).unwrap();
            r.append(StreamKind::Stdout, &[b'x'; 16]);
            r.append(StreamKind::Stderr, b"yy");
            r.finish(Some(0));
            store.finished(&r);
        }
        // 18 bytes each: one fits in 30.
        let ids: Vec<String> = store.all().iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, ["d"]);
        // The newest record stays even when it alone is over the budget.
        let big = store.insert_with("e", |s| record("e", s), |_| ()).unwrap();
        big.append(StreamKind::Stdout, &[b'z'; 16]);
        big.append(StreamKind::Stderr, &[b'z'; 16]);
        big.finish(Some(0));
        store.finished(&big);
        let ids: Vec<String> = store.all().iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, ["e"]);
    }

    #[test]
    fn running_processes_are_capped() {
        let store = Store::new(2, 10, usize::MAX);
        let a = store.insert_with("a", |s| record("a", s), |_| ()).unwrap();
        store.insert_with("b", |s| record("b", s), |_| ()).unwrap();
        let mut why = None;
        let full = store.insert_with("c", |s| record("c", s), |r| why = Some(r));
        assert!(full.is_err());
        assert_eq!(why, Some(Refused::Full { running: 2 }));
        // A finished process frees its place.
        a.finish(Some(0));
        store.finished(&a);
        store.insert_with("c", |s| record("c", s), |_| ()).unwrap();
    }
}
