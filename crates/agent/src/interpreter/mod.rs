//! The code interpreter (reference §1.5, §2.9, §3.2): code contexts, each a long-lived
//! executor process (IPython for Python, a Node `vm` context for JavaScript and TypeScript)
//! taken from a per-runtime warm pool; runs stream their output live as SSE.
//!
//! * [`Interpreters`]: contexts and pools, independent of HTTP.
//!
//! Their HTTP routes (`/api/contexts`, `/api/execute/code`, `/api/interpreter/health`) are in
//! `crate::routes::interpreter`.

mod executor;
mod pool;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use sandpit_protocol::container::{CodeEvent, CodeResult, EnvMap};
use sandpit_protocol::time::TimeoutMs;
use sandpit_protocol::{ErrorCode, time};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::reaper::Reaper;
use crate::sse;
use executor::{Event, Executor, SpawnError, Spec, Wire};
use pool::Pool;

/// The Python executor (IPython shell). It travels in an environment variable the bootstrap
/// below removes at once, so `ps` shows a short command line and the code never sees it.
const PYTHON_SCRIPT: &str = include_str!("executors/python.py");
const PYTHON_SCRIPT_VAR: &str = "SANDPIT_PYTHON_EXECUTOR";
const PYTHON_BOOTSTRAP: &str = "import os; exec(compile(os.environ.pop('SANDPIT_PYTHON_EXECUTOR'), '<sandpit-executor>', 'exec'))";
/// The Node executor (persistent `vm` context), run with `node -e`.
const NODE_SCRIPT: &str = include_str!("executors/node.js");

/// How long a finished run waits for its sync markers on the output pipes (they only fail to
/// come when the code closed or redirected its fd 1/2).
const SYNC_WAIT: Duration = Duration::from_millis(200);

/// How long an interrupted run may take to finish before its context is restarted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// A context's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
}

/// Which executor program runs a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Python,
    Node,
}

impl Language {
    /// Parses a language name or alias (`python3`, `js`, `node`, `ts`).
    pub fn parse(name: &str) -> Option<Language> {
        match name.to_ascii_lowercase().as_str() {
            "python" | "python3" | "py" => Some(Language::Python),
            "javascript" | "js" | "node" => Some(Language::JavaScript),
            "typescript" | "ts" => Some(Language::TypeScript),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
        }
    }

    fn runtime(self) -> Runtime {
        match self {
            Language::Python => Runtime::Python,
            Language::JavaScript | Language::TypeScript => Runtime::Node,
        }
    }
}

impl Runtime {
    fn not_available(self, message: &str) -> ApiError {
        let (code, what) = match self {
            Runtime::Python => (ErrorCode::PythonNotAvailable, "Python"),
            Runtime::Node => (ErrorCode::JavascriptNotAvailable, "JavaScript (Node.js)"),
        };
        ApiError::new(
            code,
            format!("{what} is not available in this sandbox: {message}"),
        )
        .operation("code.execute")
    }
}

/// A code context: an executor process with its own state, cwd and environment.
#[derive(Debug)]
pub struct Context {
    pub id: String,
    pub language: Language,
    pub cwd: String,
    pub created_at: String,
    env: EnvMap,
    /// `None` after the executor died and could not be restarted. The lock serializes runs.
    executor: tokio::sync::Mutex<Option<Executor>>,
    deleted: watch::Sender<bool>,
}

/// Every context of the sandbox and the warm pools.
#[derive(Debug)]
pub struct Interpreters {
    config: Arc<AgentConfig>,
    contexts: Mutex<HashMap<String, Arc<Context>>>,
    python: Arc<Pool>,
    node: Arc<Pool>,
    /// `INTERPRETER_EXECUTION_TIMEOUT_MS`: applies to runs that name no timeout.
    default_timeout: TimeoutMs,
}

impl Interpreters {
    pub fn new(config: Arc<AgentConfig>, reaper: Arc<Reaper>) -> Self {
        let explicit = |name: &str| {
            config
                .env
                .get(name)
                .and_then(|v| v.trim().parse::<usize>().ok())
                .map(|n| n.min(16))
        };
        let size = |name: &str| explicit(name).unwrap_or(1);
        let python = {
            let config = config.clone();
            Pool::new(size("PYTHON_POOL_MIN_SIZE"), reaper.clone(), move || {
                spec(&config, Runtime::Python)
            })
        };
        let node = {
            let config = config.clone();
            Pool::new(size("JAVASCRIPT_POOL_MIN_SIZE"), reaper, move || {
                spec(&config, Runtime::Node)
            })
        };
        // A pool size set explicitly (an image made for code, say) is filled at start; by
        // default a pool starts with the first context of its runtime, so sandboxes that never
        // run code pay nothing.
        if tokio::runtime::Handle::try_current().is_ok() {
            for (name, pool) in [
                ("PYTHON_POOL_MIN_SIZE", &python),
                ("JAVASCRIPT_POOL_MIN_SIZE", &node),
            ] {
                if explicit(name).is_some_and(|n| n > 0) {
                    pool.refill();
                }
            }
        }
        let default_timeout = config
            .env
            .get("INTERPRETER_EXECUTION_TIMEOUT_MS")
            .and_then(|v| TimeoutMs::parse_env(v))
            .unwrap_or(TimeoutMs::NONE);
        Interpreters {
            config,
            contexts: Mutex::default(),
            python,
            node,
            default_timeout,
        }
    }

    /// Creates a context: takes an executor from the pool and moves it to `cwd` and `env`.
    pub async fn create(
        &self,
        language: Language,
        cwd: Option<String>,
        env: EnvMap,
    ) -> Result<Arc<Context>, ApiError> {
        let cwd = cwd
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| self.config.workspace.to_string_lossy().into_owned());
        if cwd.contains('\0') {
            return Err(ApiError::validation(
                "cwd",
                "cwd must not contain NUL bytes",
            ));
        }
        crate::exec::validate_env(&env)?;
        let mut context = Context {
            id: new_id(),
            language,
            cwd,
            created_at: time::now(),
            env,
            executor: tokio::sync::Mutex::new(None),
            deleted: watch::Sender::new(false),
        };
        let executor = self.fresh_executor(&context).await?;
        context.executor = tokio::sync::Mutex::new(Some(executor));
        let context = Arc::new(context);
        self.lock().insert(context.id.clone(), context.clone());
        Ok(context)
    }

    /// Every context, oldest first.
    pub fn list(&self) -> Vec<Arc<Context>> {
        let mut contexts: Vec<_> = self.lock().values().cloned().collect();
        contexts.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        contexts
    }

    pub fn get(&self, id: &str) -> Option<Arc<Context>> {
        self.lock().get(id).cloned()
    }

    /// Deletes a context and kills its executor; a run in progress ends with an `error` event.
    pub fn delete(&self, id: &str) -> Option<Arc<Context>> {
        let context = self.lock().remove(id)?;
        context.deleted.send_replace(true);
        if let Ok(mut executor) = context.executor.try_lock() {
            // Idle: dropping the executor kills it. A busy one is killed by its run.
            executor.take();
        }
        Some(context)
    }

    /// Starts a run of `code` in `context`; its events arrive framed on the returned channel,
    /// ending with `execution_complete` or `error`. `timeout` absent: the default
    /// (`INTERPRETER_EXECUTION_TIMEOUT_MS`); `0`: none.
    pub fn execute(
        self: &Arc<Self>,
        context: Arc<Context>,
        code: String,
        language: Option<Language>,
        timeout: Option<TimeoutMs>,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
        let this = self.clone();
        let timeout = timeout.unwrap_or(self.default_timeout).limit();
        tokio::spawn(async move {
            let mut run = Run {
                tx,
                timeout,
                errored: false,
            };
            match prepare(context.language, language, code) {
                Ok(request) => this.run(&context, request, &mut run).await,
                Err(event) => run.send(*event).await,
            }
        });
        rx
    }

    async fn run(&self, context: &Context, request: Value, run: &mut Run) {
        let mut slot = context.executor.lock().await;
        let mut deleted = context.deleted.subscribe();
        if *deleted.borrow() {
            slot.take();
            return run.send(deleted_error()).await;
        }
        let alive = slot.as_mut().is_some_and(Executor::discard_pending);
        if !alive {
            slot.take();
            match self.fresh_executor(context).await {
                Ok(executor) => *slot = Some(executor),
                Err(e) => {
                    return run
                        .send(error_event("InterpreterError", &e.0.message))
                        .await;
                }
            }
        }
        let Some(executor) = slot.as_mut() else {
            return;
        };
        if let Err(e) = executor.send(&request).await {
            slot.take();
            return run
                .send(error_event(
                    "InterpreterError",
                    &format!("could not send the code to the interpreter: {e}"),
                ))
                .await;
        }
        let mut deadline = run.timeout.map(|t| Instant::now() + t);
        let mut interrupted = false;
        // The deadline (not a gone client) interrupted the run: its error says so.
        let mut timed_out = false;
        let mut client_gone = false;
        // After `done`: the sync markers still expected on the output pipes, and how long to
        // wait for them (code may have closed or redirected fd 1/2).
        let sync = request.get("sync").and_then(Value::as_u64);
        let mut finished: Option<u64> = None;
        let mut syncs_left = 2;
        let mut finish_by: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = async { let _ = deleted.wait_for(|d| *d).await; } => {
                    slot.take();
                    return run.send(deleted_error()).await;
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if !interrupted {
                        interrupted = true;
                        timed_out = true;
                        executor.interrupt();
                        deadline = Some(Instant::now() + INTERRUPT_GRACE);
                    } else {
                        let message = match run.timeout.filter(|_| !client_gone) {
                            Some(t) => format!(
                                "Execution timed out after {} ms and did not stop when interrupted; \
                                 the context was restarted and its state is lost",
                                t.as_millis()
                            ),
                            None => "The run did not stop when interrupted; the context was \
                                     restarted and its state is lost".to_owned(),
                        };
                        slot.take();
                        self.restart(context, &mut slot).await;
                        let mut event = error_event("TimeoutError", &message);
                        if timed_out {
                            set_timed_out(&mut event, run.timeout);
                        }
                        return run.send(event).await;
                    }
                }
                () = sleep_until(finish_by.unwrap_or_else(Instant::now)), if finish_by.is_some() => {
                    return run.complete(finished.unwrap_or(0)).await;
                }
                () = run.tx.closed(), if !client_gone => {
                    // Nobody listens any more: stop the run instead of letting it hold the
                    // context forever.
                    client_gone = true;
                    if !interrupted {
                        interrupted = true;
                        executor.interrupt();
                        deadline = Some(Instant::now() + INTERRUPT_GRACE);
                    }
                }
                event = executor.next() => match event {
                    Some(Event::Stdout(text) | Event::Wire(Wire::Stdout { text })) => {
                        run.send(CodeEvent::Stdout { text }).await;
                    }
                    Some(Event::Stderr(text) | Event::Wire(Wire::Stderr { text })) => {
                        run.send(CodeEvent::Stderr { text }).await;
                    }
                    Some(Event::Wire(Wire::Result { data, metadata })) => {
                        run.send(CodeEvent::Result(to_result(data, metadata))).await;
                    }
                    Some(Event::Wire(Wire::Error { ename, mut evalue, traceback })) => {
                        if let Some(t) = run.timeout.filter(|_| interrupted && evalue.is_empty()) {
                            evalue = format!("Execution timed out after {} ms", t.as_millis());
                        }
                        run.errored = true;
                        let mut event = CodeEvent::Error {
                            ename,
                            evalue,
                            traceback,
                            timed_out_after_ms: None,
                        };
                        if timed_out {
                            set_timed_out(&mut event, run.timeout);
                        }
                        run.send(event).await;
                    }
                    Some(Event::Wire(Wire::Done { execution_count })) => {
                        if sync.is_none() || syncs_left == 0 {
                            return run.complete(execution_count).await;
                        }
                        finished = Some(execution_count);
                        deadline = None;
                        finish_by = Some(Instant::now() + SYNC_WAIT);
                    }
                    Some(Event::Sync(id)) => {
                        if Some(id) == sync {
                            syncs_left -= 1;
                            if syncs_left == 0 && finished.is_some() {
                                return run.complete(finished.unwrap_or(0)).await;
                            }
                        }
                    }
                    Some(Event::Exited(_) ) | None => {
                        let code = match event {
                            Some(Event::Exited(code)) => code,
                            _ => -1,
                        };
                        slot.take();
                        self.restart(context, &mut slot).await;
                        let message = format!(
                            "The interpreter exited (code {code}); the context was restarted and its state is lost"
                        );
                        return run.send(error_event("InterpreterExited", &message)).await;
                    }
                    Some(Event::Wire(Wire::Ready | Wire::Unavailable { .. } | Wire::Unknown)) => {}
                },
            }
        }
    }

    /// Gives `context` a new executor after its old one was killed (state is lost).
    async fn restart(&self, context: &Context, slot: &mut Option<Executor>) {
        if *context.deleted.borrow() {
            return;
        }
        match self.fresh_executor(context).await {
            Ok(executor) => *slot = Some(executor),
            Err(e) => tracing::warn!(context = %context.id, error = %e, "restart failed"),
        }
    }

    /// An executor from the pool, configured for `context`.
    async fn fresh_executor(&self, context: &Context) -> Result<Executor, ApiError> {
        let runtime = context.language.runtime();
        let pool = match runtime {
            Runtime::Python => &self.python,
            Runtime::Node => &self.node,
        };
        let mut executor = pool.take().await.map_err(|e| match e {
            SpawnError::NotAvailable(message) => runtime.not_available(&message),
            SpawnError::Failed(message) => {
                ApiError::new(ErrorCode::CodeExecutionError, message).operation("code.execute")
            }
        })?;
        let mut env = crate::exec::child_env(&self.config, Some(&context.env));
        env.entry("MPLBACKEND".into())
            .or_insert_with(|| "Agg".into());
        let request = json!({"op": "configure", "cwd": context.cwd, "env": env, "replace": true});
        executor
            .send(&request)
            .await
            .map_err(|e| ApiError::internal(format!("could not configure the interpreter: {e}")))?;
        loop {
            match executor.next().await {
                Some(Event::Wire(Wire::Done { .. })) => return Ok(executor),
                Some(Event::Wire(Wire::Error { evalue, .. })) => {
                    return Err(ApiError::validation(
                        "cwd",
                        format!("cannot use cwd {:?}: {evalue}", context.cwd),
                    ));
                }
                Some(Event::Exited(_) | Event::Wire(Wire::Unavailable { .. })) | None => {
                    return Err(ApiError::new(
                        ErrorCode::CodeExecutionError,
                        "the interpreter exited while it was being configured",
                    ));
                }
                Some(_) => {}
            }
        }
    }

    /// Idle executors per runtime (python, node).
    pub fn idle(&self) -> (usize, usize) {
        (self.python.idle(), self.node.idle())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Context>>> {
        self.contexts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The state of one run's event stream.
struct Run {
    tx: mpsc::Sender<Bytes>,
    timeout: Option<Duration>,
    errored: bool,
}

impl Run {
    /// The end of a run that finished: `execution_complete`, unless an error was reported.
    async fn complete(&mut self, execution_count: u64) {
        if !self.errored {
            self.send(CodeEvent::ExecutionComplete { execution_count })
                .await;
        }
    }

    async fn send(&mut self, event: CodeEvent) {
        // A gone client is noticed by the run loop (`tx.closed()`).
        let _ = self.tx.send(sse::frame(&event)).await;
    }
}

/// The executor request for a run; JavaScript and TypeScript are rewritten first (a syntax
/// error becomes the run's `error` event).
fn prepare(
    context: Language,
    requested: Option<Language>,
    code: String,
) -> Result<Value, Box<CodeEvent>> {
    let language = match (context, requested) {
        (
            Language::JavaScript | Language::TypeScript,
            Some(l @ (Language::JavaScript | Language::TypeScript)),
        ) => l,
        _ => context,
    };
    match language {
        Language::Python => Ok(json!({"op": "run", "code": code, "sync": next_run_id()})),
        Language::JavaScript | Language::TypeScript => {
            match sandpit_interpreter::prepare_javascript(&code, language == Language::TypeScript) {
                Ok(prepared) => Ok(json!({
                    "op": "run",
                    "code": prepared.code,
                    "async": prepared.is_async,
                    "sync": next_run_id(),
                })),
                Err(e) => {
                    let sandpit_interpreter::PrepareError::Syntax { message, .. } = &e;
                    Err(Box::new(CodeEvent::Error {
                        ename: "SyntaxError".into(),
                        evalue: message.clone(),
                        traceback: vec![e.to_string()],
                        timed_out_after_ms: None,
                    }))
                }
            }
        }
    }
}

/// The executor's MIME bundle as the seed's result fields.
fn to_result(mut data: Map<String, Value>, metadata: Map<String, Value>) -> CodeResult {
    let json = data.remove("application/json");
    let mut text = |mime: &str| match data.remove(mime) {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    CodeResult {
        metadata,
        text: text("text/plain"),
        html: text("text/html"),
        png: text("image/png"),
        jpeg: text("image/jpeg"),
        svg: text("image/svg+xml"),
        latex: text("text/latex"),
        markdown: text("text/markdown"),
        javascript: text("application/javascript"),
        json,
    }
}

/// A process-wide run number: the sync markers of a run carry it.
fn next_run_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn error_event(ename: &str, evalue: &str) -> CodeEvent {
    CodeEvent::Error {
        ename: ename.into(),
        evalue: evalue.into(),
        traceback: Vec::new(),
        timed_out_after_ms: None,
    }
}

/// Marks an error event as the end of a run stopped at its deadline `limit`.
fn set_timed_out(event: &mut CodeEvent, limit: Option<Duration>) {
    if let (
        CodeEvent::Error {
            timed_out_after_ms, ..
        },
        Some(limit),
    ) = (event, limit)
    {
        *timed_out_after_ms = Some(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
    }
}

fn deleted_error() -> CodeEvent {
    error_event(
        "ContextDeleted",
        "The context was deleted while the code was running",
    )
}

/// How an executor of `runtime` is started.
fn spec(config: &AgentConfig, runtime: Runtime) -> Spec {
    let mut env: BTreeMap<String, String> = crate::exec::child_env(config, None);
    env.entry("MPLBACKEND".into())
        .or_insert_with(|| "Agg".into());
    let (program, args) = match runtime {
        Runtime::Python => {
            env.insert(PYTHON_SCRIPT_VAR.into(), PYTHON_SCRIPT.into());
            (
                "python3",
                vec!["-u".into(), "-c".into(), PYTHON_BOOTSTRAP.into()],
            )
        }
        Runtime::Node => ("node", vec!["-e".into(), NODE_SCRIPT.into()]),
    };
    Spec {
        program: program.into(),
        args,
        env,
        cwd: config.workspace.to_string_lossy().into_owned(),
    }
}

/// A random UUID-shaped id.
fn new_id() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_aliases() {
        assert_eq!(Language::parse("Python3"), Some(Language::Python));
        assert_eq!(Language::parse("node"), Some(Language::JavaScript));
        assert_eq!(Language::parse("ts"), Some(Language::TypeScript));
        assert_eq!(Language::parse("ruby"), None);
        assert_eq!(Language::TypeScript.runtime(), Runtime::Node);
    }

    #[test]
    fn mime_bundles_become_result_fields() {
        let data = json!({
            "text/plain": "df",
            "text/html": "<table/>",
            "image/png": "iVBO",
            "application/json": {"a": [1]},
            "image/svg+xml": "<svg/>",
        });
        let Value::Object(data) = data else {
            unreachable!()
        };
        let r = to_result(data, Map::new());
        assert_eq!(r.text.as_deref(), Some("df"));
        assert_eq!(r.html.as_deref(), Some("<table/>"));
        assert_eq!(r.png.as_deref(), Some("iVBO"));
        assert_eq!(r.svg.as_deref(), Some("<svg/>"));
        assert_eq!(r.json, Some(json!({"a": [1]})));
        assert_eq!(r.jpeg, None);
    }

    #[test]
    fn typescript_runs_are_prepared_and_syntax_errors_are_events() {
        let request = prepare(Language::Python, None, "1 +".into()).unwrap();
        assert_eq!(request["code"], "1 +", "Python is sent as is");
        let request = prepare(
            Language::JavaScript,
            Some(Language::TypeScript),
            "const x: number = 1; x".into(),
        )
        .unwrap();
        assert!(!request["code"].as_str().unwrap().contains(": number"));
        // Every run carries its own sync number, to be echoed on the executor's pipes.
        let python = prepare(Language::Python, None, "1".into()).unwrap();
        let javascript = prepare(Language::JavaScript, None, "1".into()).unwrap();
        let numbers = [&request, &python, &javascript].map(|r| r["sync"].as_u64().unwrap());
        assert!(
            numbers[0] < numbers[1] && numbers[1] < numbers[2],
            "{numbers:?}"
        );
        let Err(event) = prepare(Language::JavaScript, None, "let = = 1".into()) else {
            panic!("a syntax error must not reach the executor");
        };
        assert!(matches!(*event, CodeEvent::Error { ref ename, .. } if ename == "SyntaxError"));
    }

    #[test]
    fn ids_look_like_uuids() {
        let id = new_id();
        let parts: Vec<&str> = id.split('-').collect();
        let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
        assert_ne!(new_id(), id);
    }
}
