//! File watch with inotify (reference §2.10): `POST /api/watch` (SSE: `watching` once the
//! kernel watches are in place, then coalesced `event`s, ending with `stopped` or `error`)
//! and `POST /api/watch/check` (change tracking with version tokens).
//!
//! One [`Watch`] per distinct set of options, shared by its subscribers: a task owns the
//! inotify instance and hands changes to every subscriber's [`Pending`] queue; each SSE
//! stream has a task that flushes its queue once per coalescing window. A watch ends when its
//! last subscriber goes (unless `check` retains it, then after 10 idle minutes), or when the
//! watched path disappears. Closing the inotify descriptor removes every kernel watch.

pub mod coalesce;
pub mod filter;
pub mod tracking;
pub mod tree;

use std::collections::HashMap;
use std::io::{PipeReader, PipeWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::inotify::Inotify;
use sandpit_protocol::container::{
    ChangeStatus, CheckChangesRequest, CheckChangesResult, WatchEvent, WatchEventType, WatchRequest,
};
use sandpit_protocol::{ErrorCode, time};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::AgentConfig;
use crate::error::{ApiError, io_error};
use crate::{files, sse};
use coalesce::{Change, Pending};
use filter::{DEFAULT_EXCLUDES, Filter};
use tree::{End, Options, Tree};

/// How long a watch retained by `check` lives without checks or subscribers.
pub const RETAINED_IDLE_TTL: Duration = Duration::from_secs(600);

/// How often idle retained watches are looked at (milliseconds, a poll timeout).
const EXPIRY_CHECK_MS: u16 = 30_000;

/// Events reported when the request names none.
const DEFAULT_EVENTS: [WatchEventType; 5] = [
    WatchEventType::Create,
    WatchEventType::Modify,
    WatchEventType::Delete,
    WatchEventType::MoveFrom,
    WatchEventType::MoveTo,
];

/// Live watches per agent unless `SANDPIT_MAX_WATCHES` says otherwise. Each holds an inotify
/// instance, and the kernel's per-user limit (`fs.inotify.max_user_instances`, often 128) is
/// shared by every sandbox mapped to the same host uid.
pub const DEFAULT_MAX_WATCHES: usize = 32;

/// Longest accepted glob pattern, and most patterns per request.
const MAX_PATTERN_CHARS: usize = 1024;
const MAX_PATTERNS: usize = 256;

/// The agent's watches.
#[derive(Debug)]
pub struct Watches {
    workspace: PathBuf,
    max_watches: usize,
    /// Random per agent process: tokens of an earlier agent are told apart.
    instance: String,
    next_id: AtomicU64,
    live: Mutex<HashMap<Options, Arc<Watch>>>,
}

/// One shared watch.
#[derive(Debug)]
struct Watch {
    id: String,
    options: Options,
    /// Changes seen so far (the version cursor).
    cursor: AtomicU64,
    /// Kept alive without subscribers (by `check`).
    retained: AtomicBool,
    last_check: Mutex<Instant>,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    /// Requests to the watch's thread, and the pipe that wakes it for them.
    commands: Mutex<(std_mpsc::Sender<Command>, PipeWriter)>,
}

/// A request to a watch's thread.
#[derive(Debug)]
enum Command {
    /// Process everything the kernel has queued, then answer.
    Sync(oneshot::Sender<()>),
    /// Stop (the last subscriber left).
    Stop,
}

/// One SSE stream of a watch.
#[derive(Debug, Default)]
struct Subscriber {
    pending: Mutex<Pending>,
    wake: Notify,
    /// The final event, once the watch has ended.
    end: Mutex<Option<WatchEvent>>,
}

/// How a caller holds on to a watch.
enum Attach {
    Subscriber(Arc<Subscriber>),
    Retain,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Watches {
    /// Watches resolving relative paths against the workspace, with the limit from
    /// `SANDPIT_MAX_WATCHES` in the agent's environment.
    pub fn new(config: &AgentConfig) -> Arc<Self> {
        let max_watches = config
            .env
            .get("SANDPIT_MAX_WATCHES")
            .and_then(|v| v.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_WATCHES);
        Arc::new(Watches {
            workspace: config.workspace.clone(),
            max_watches,
            instance: format!("{:08x}", rand::random::<u32>()),
            next_id: AtomicU64::new(1),
            live: Mutex::default(),
        })
    }

    /// Number of live watches.
    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts (or joins) a watch; the returned channel carries the SSE frames, `watching`
    /// first. A missing path or bad options are errors before the stream starts.
    pub async fn subscribe(
        self: &Arc<Self>,
        req: &WatchRequest,
    ) -> Result<mpsc::Receiver<Bytes>, ApiError> {
        let options = self.options(req)?;
        let subscriber = Arc::new(Subscriber::default());
        let watch = self
            .attach(options, Attach::Subscriber(subscriber.clone()))
            .await?;
        let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
        let watching = WatchEvent::Watching {
            path: watch.options.path.to_string_lossy().into_owned(),
            watch_id: watch.id.clone(),
        };
        let _ = tx.try_send(sse::frame(&watching));
        tokio::spawn(pump(self.clone(), watch, subscriber, tx));
        Ok(rx)
    }

    /// `check`: whether anything changed since the `since` version.
    pub async fn check(
        self: &Arc<Self>,
        req: &CheckChangesRequest,
    ) -> Result<CheckChangesResult, ApiError> {
        let options = self.options(&req.watch)?;
        let since = req.since.as_deref().map(tracking::parse).transpose()?;
        let watch = self.attach(options, Attach::Retain).await?;
        // Changes made before this request are queued in the kernel by now; count them.
        let (tx, rx) = oneshot::channel();
        if watch.command(Command::Sync(tx)) {
            let _ = rx.await;
        }
        let cursor = watch.cursor.load(Ordering::SeqCst);
        let (status, reason) = match &since {
            None => (ChangeStatus::Unchanged, None),
            Some(v) => tracking::compare(v, &watch.id, &self.id_prefix(), cursor)?,
        };
        *lock(&watch.last_check) = Instant::now();
        Ok(CheckChangesResult {
            success: true,
            status,
            version: tracking::token(&watch.id, cursor),
            reason,
            timestamp: time::now(),
        })
    }

    fn id_prefix(&self) -> String {
        format!("watch-{}-", self.instance)
    }

    /// The request, validated and normalised.
    fn options(&self, req: &WatchRequest) -> Result<Options, ApiError> {
        let path = files::resolve(req.path.trim(), &self.workspace, "path")?;
        let include = patterns(req.include.as_deref(), "include")?;
        let exclude = patterns(req.exclude.as_deref(), "exclude")?;
        let filter = match (include, exclude) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "include",
                    "include and exclude cannot be used together",
                ));
            }
            (Some(include), None) => Filter::Include(include),
            (None, Some(exclude)) => Filter::Exclude(exclude),
            (None, None) => Filter::Exclude(DEFAULT_EXCLUDES.map(String::from).into()),
        };
        let mut events = match req.events.as_deref() {
            Some(events) if !events.is_empty() => events.to_vec(),
            _ => DEFAULT_EVENTS.to_vec(),
        };
        events.sort();
        events.dedup();
        Ok(Options {
            path,
            recursive: req.recursive.unwrap_or(true),
            events,
            filter,
        })
    }

    /// The live watch for `options`, or a new one; `how` is registered before anyone else
    /// can decide the watch is unused.
    async fn attach(
        self: &Arc<Self>,
        options: Options,
        how: Attach,
    ) -> Result<Arc<Watch>, ApiError> {
        {
            let live = lock(&self.live);
            if let Some(watch) = live.get(&options) {
                watch.hold(how);
                return Ok(watch.clone());
            }
        }
        let shown = options.path.to_string_lossy().into_owned();
        std::fs::metadata(&options.path).map_err(|e| io_error(&e, &shown, "watch.start"))?;
        self.make_room()?;
        let (wake_rx, wake_tx) = std::io::pipe().map_err(|e| start_failed(&e))?;
        let (commands_tx, commands_rx) = std_mpsc::channel();
        let id = format!(
            "{}{}",
            self.id_prefix(),
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let watch = Arc::new(Watch {
            id,
            options: options.clone(),
            cursor: AtomicU64::new(0),
            retained: AtomicBool::new(false),
            last_check: Mutex::new(Instant::now()),
            subscribers: Mutex::default(),
            commands: Mutex::new((commands_tx, wake_tx)),
        });
        watch.hold(how);
        // A thread per watch: the inotify descriptor is polled with plain `poll` (registering
        // it with tokio's reactor needs `unsafe`), and setup walks the tree blocking.
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = WatchThread {
            registry: self.clone(),
            watch: watch.clone(),
            commands: commands_rx,
            wake: wake_rx,
        };
        std::thread::Builder::new()
            .name("watch".into())
            .stack_size(256 * 1024)
            .spawn(move || thread.run(ready_tx))
            .map_err(|e| start_failed(&e))?;
        match ready_rx.await {
            Ok(Ok(dirs)) => {
                tracing::debug!(watch = %watch.id, path = %shown, dirs, "watch started");
            }
            Ok(Err(errno)) => return Err(start_error(errno, &shown)),
            Err(_) => return Err(ApiError::internal("watch setup failed")),
        }
        // A concurrent identical request may have won the race; both work, the newer is shared.
        lock(&self.live).insert(options, watch.clone());
        Ok(watch)
    }

    /// Below the watch limit, evicting the longest-idle retained watch without subscribers if
    /// need be (its tokens then answer `resync`/`expired`); 409 RESOURCE_BUSY when every watch
    /// is in use.
    fn make_room(&self) -> Result<(), ApiError> {
        let mut live = lock(&self.live);
        if live.len() < self.max_watches {
            return Ok(());
        }
        let idle = live
            .values()
            .filter(|w| w.retained.load(Ordering::SeqCst) && lock(&w.subscribers).is_empty())
            .min_by_key(|w| *lock(&w.last_check))
            .cloned();
        let Some(victim) = idle else {
            return Err(ApiError::new(
                ErrorCode::ResourceBusy,
                format!(
                    "Too many file watches ({} live); close a watch stream first",
                    self.max_watches
                ),
            )
            .operation("watch.start"));
        };
        self.forget(&mut live, &victim);
        drop(live);
        victim.command(Command::Stop);
        Ok(())
    }

    /// A subscriber left: the watch stops when nobody holds it any more.
    fn unsubscribe(&self, watch: &Arc<Watch>, subscriber: &Arc<Subscriber>) {
        let mut live = lock(&self.live);
        let mut subscribers = lock(&watch.subscribers);
        subscribers.retain(|s| !Arc::ptr_eq(s, subscriber));
        if subscribers.is_empty() && !watch.retained.load(Ordering::SeqCst) {
            self.forget(&mut live, watch);
            watch.command(Command::Stop);
        } else if subscribers.is_empty() {
            *lock(&watch.last_check) = Instant::now();
        }
    }

    /// Whether a retained watch has been idle too long (and is then unregistered).
    fn expired(&self, watch: &Arc<Watch>) -> bool {
        let mut live = lock(&self.live);
        let idle = lock(&watch.subscribers).is_empty()
            && lock(&watch.last_check).elapsed() >= RETAINED_IDLE_TTL;
        if idle {
            self.forget(&mut live, watch);
        }
        idle
    }

    fn forget(&self, live: &mut HashMap<Options, Arc<Watch>>, watch: &Arc<Watch>) {
        if live
            .get(&watch.options)
            .is_some_and(|w| Arc::ptr_eq(w, watch))
        {
            live.remove(&watch.options);
        }
    }
}

impl Watch {
    /// Sends a request to the watch's thread; false when the thread is gone.
    fn command(&self, command: Command) -> bool {
        let guard = lock(&self.commands);
        let (tx, wake) = &*guard;
        if tx.send(command).is_err() {
            return false;
        }
        let _ = (&*wake).write(&[1]);
        true
    }

    fn hold(&self, how: Attach) {
        match how {
            Attach::Subscriber(s) => lock(&self.subscribers).push(s),
            Attach::Retain => {
                self.retained.store(true, Ordering::SeqCst);
                *lock(&self.last_check) = Instant::now();
            }
        }
    }

    /// Hands a batch of changes to every subscriber.
    fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.cursor
            .fetch_add(changes.len() as u64, Ordering::SeqCst);
        for subscriber in lock(&self.subscribers).iter() {
            let mut pending = lock(&subscriber.pending);
            for change in &changes {
                pending.push(change.clone());
            }
            drop(pending);
            subscriber.wake.notify_one();
        }
    }

    /// Ends every subscriber's stream with `event`.
    fn end(&self, event: WatchEvent) {
        for subscriber in lock(&self.subscribers).drain(..) {
            *lock(&subscriber.end) = Some(event.clone());
            subscriber.wake.notify_one();
        }
    }
}

/// The thread that owns a watch's inotify instance.
struct WatchThread {
    registry: Arc<Watches>,
    watch: Arc<Watch>,
    commands: std_mpsc::Receiver<Command>,
    wake: PipeReader,
}

impl WatchThread {
    /// Sets the watch up (answering `ready` with the number of kernel watches or the error),
    /// then handles events until the watch ends.
    fn run(mut self, ready: oneshot::Sender<Result<usize, Errno>>) {
        let (inotify, mut tree) = match Tree::open(self.watch.options.clone()) {
            Ok(opened) => opened,
            Err(errno) => {
                let _ = ready.send(Err(errno));
                return;
            }
        };
        let _ = ready.send(Ok(tree.watch_count()));
        let end = self.serve(&inotify, &mut tree);
        self.registry
            .forget(&mut lock(&self.registry.live), &self.watch);
        let event = match end {
            Some(End::Stopped(reason)) => WatchEvent::Stopped { reason },
            Some(End::Overflow) => WatchEvent::Error {
                error: "The kernel's event queue overflowed and events were lost; resync required"
                    .into(),
            },
            None => WatchEvent::Stopped {
                reason: "Watch stopped".into(),
            },
        };
        self.watch.end(event);
        tracing::debug!(watch = %self.watch.id, "watch ended");
        // Dropping `inotify` closes the instance: the kernel removes all its watches.
    }

    /// Polls the inotify descriptor and the wake pipe; `None` when asked to stop.
    fn serve(&mut self, inotify: &Inotify, tree: &mut Tree) -> Option<End> {
        let watch = self.watch.clone();
        loop {
            let mut fds = [
                PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, EXPIRY_CHECK_MS) {
                Ok(0) => {
                    if watch.retained.load(Ordering::SeqCst) && self.registry.expired(&watch) {
                        return None;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Some(failed(e)),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            let (events_ready, woken) = (ready(&fds[0]), ready(&fds[1]));
            if events_ready && let Some(end) = drain(&watch, tree, inotify) {
                return Some(end);
            }
            if woken {
                let mut buf = [0u8; 64];
                let _ = self.wake.read(&mut buf);
            }
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    Command::Sync(reply) => {
                        let end = drain(&watch, tree, inotify);
                        let _ = reply.send(());
                        if end.is_some() {
                            return end;
                        }
                    }
                    Command::Stop => return None,
                }
            }
        }
    }
}

/// Handles every event the kernel has queued; `Some` when the watch ended.
fn drain(watch: &Watch, tree: &mut Tree, inotify: &Inotify) -> Option<End> {
    loop {
        match inotify.read_events() {
            Ok(events) => {
                if let Some(end) = handle(watch, tree, inotify, events) {
                    return Some(end);
                }
            }
            Err(Errno::EAGAIN) => return None,
            Err(Errno::EINTR) => {}
            Err(e) => return Some(failed(e)),
        }
    }
}

/// Translates a batch of kernel events and publishes the changes; `Some` when the watch ended.
fn handle(
    watch: &Watch,
    tree: &mut Tree,
    inotify: &Inotify,
    events: Vec<nix::sys::inotify::InotifyEvent>,
) -> Option<End> {
    let mut changes = Vec::new();
    let mut end = None;
    for event in events {
        end = tree.handle(inotify, event, &mut changes);
        if end.is_some() {
            break;
        }
    }
    if end == Some(End::Overflow) {
        // Something changed, even if we cannot say what.
        watch.cursor.fetch_add(1, Ordering::SeqCst);
    }
    watch.publish(changes);
    end
}

fn failed(e: Errno) -> End {
    End::Stopped(format!("Watch failed: {e}"))
}

fn start_failed(e: &std::io::Error) -> ApiError {
    ApiError::new(
        ErrorCode::WatchStartError,
        format!("Failed to start file watcher: {e}"),
    )
    .operation("watch.start")
}

/// Sends one subscriber's changes, a window at a time, until the watch ends or the client
/// goes away.
async fn pump(
    registry: Arc<Watches>,
    watch: Arc<Watch>,
    subscriber: Arc<Subscriber>,
    tx: mpsc::Sender<Bytes>,
) {
    'stream: loop {
        tokio::select! {
            () = subscriber.wake.notified() => {}
            () = tx.closed() => break,
        }
        if lock(&subscriber.end).is_none() {
            tokio::select! {
                () = tokio::time::sleep(coalesce::WINDOW) => {}
                () = tx.closed() => break,
            }
        }
        let (changes, dropped) = lock(&subscriber.pending).take();
        for change in changes {
            let event = WatchEvent::Event {
                event_type: change.event_type,
                path: change.path,
                is_directory: change.is_directory,
                timestamp: change.timestamp,
            };
            if tx.send(sse::frame(&event)).await.is_err() {
                break 'stream;
            }
        }
        if dropped > 0 {
            let error = format!(
                "{dropped} events were dropped because the client fell behind (more than {} pending); resync required",
                coalesce::MAX_PENDING
            );
            let _ = tx.send(sse::frame(&WatchEvent::Error { error })).await;
            break;
        }
        let end = lock(&subscriber.end).take();
        if let Some(end) = end {
            let _ = tx.send(sse::frame(&end)).await;
            break;
        }
    }
    registry.unsubscribe(&watch, &subscriber);
}

/// Include/exclude patterns, deduplicated and sorted; empty lists count as absent.
fn patterns(list: Option<&[String]>, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if list.len() > MAX_PATTERNS {
        return Err(ApiError::validation(
            field,
            format!("at most {MAX_PATTERNS} patterns are allowed"),
        ));
    }
    if list
        .iter()
        .any(|p| p.is_empty() || p.contains('\0') || p.chars().count() > MAX_PATTERN_CHARS)
    {
        return Err(ApiError::validation(
            field,
            format!(
                "patterns must be non-empty, without NUL, at most {MAX_PATTERN_CHARS} characters"
            ),
        ));
    }
    let mut list = list.to_vec();
    list.sort();
    list.dedup();
    Ok(Some(list))
}

fn start_error(errno: Errno, path: &str) -> ApiError {
    match errno {
        Errno::ENOSPC => ApiError::new(
            ErrorCode::WatchStartError,
            format!(
                "Failed to start file watcher on {path}: inotify watch limit reached (fs.inotify.max_user_watches)"
            ),
        ),
        Errno::EMFILE => ApiError::new(
            ErrorCode::WatchStartError,
            format!(
                "Failed to start file watcher on {path}: too many inotify instances (fs.inotify.max_user_instances)"
            ),
        ),
        other => io_error(&std::io::Error::from(other), path, "watch.start"),
    }
    .context("path", path)
    .operation("watch.start")
}
