//! `sandpit run`: runs a file (or stdin) in a code context, printing output live, text results
//! to stdout, and saving images and HTML results to files named on stderr. A run stopped at
//! its deadline exits 124 with `exec`'s timeout message.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use sandpit_client::protocol::container::{CodeEvent, CodeResult};
use sandpit_client::protocol::time::{TIMEOUT_EXIT_CODE, timed_out_message};
use sandpit_client::{
    Client, ContextOptions, EventStream, Language, RunOptions, SandboxHandle, result_files,
};

use crate::cli::RunArgs;
use crate::commands::target;
use crate::interrupted::EndedEarly;

/// Exit code when the run is interrupted with ctrl-c (as a shell reports SIGINT).
const INTERRUPTED_EXIT: i32 = 130;

/// Runs the code; returns the exit code (0, or 1 when the code raised).
pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<i32> {
    let code = read_code(&args.file)?;
    target::ensure(client, &args.id, args.create).await?;
    let sandbox = client.sandbox(&args.id);
    let language = args
        .lang
        .or_else(|| Language::from_file_name(&args.file))
        .unwrap_or_default();
    let (context_id, temporary) = match args.context {
        Some(id) => (id, false),
        None => {
            let mut options = ContextOptions::new(language);
            options.cwd = args.cwd;
            for (k, v) in args.env {
                options = options.env(k, v);
            }
            let context = sandbox.create_context(&options).await?;
            if args.keep_context {
                eprintln!("context: {}", context.id);
            }
            (context.id, !args.keep_context)
        }
    };
    let options = RunOptions {
        // An explicit --lang also applies in an existing context (TypeScript in a JavaScript
        // context is transpiled); otherwise the context's language is used.
        language: args.lang,
        timeout_ms: args.timeout_ms,
    };
    let mut printer = Printer::new(args.out_dir);
    let result = run_in(&sandbox, &context_id, &code, &options, &mut printer).await;
    // A stopped or removed sandbox took the context with it, and a call to delete it would
    // wake or re-create the sandbox.
    let gone = match &result {
        Err(e) => crate::interrupted::cut_by_stop_or_rm(client, &args.id, e)
            .await
            .is_some(),
        Ok(_) => false,
    };
    if temporary
        && !gone
        && let Err(e) = sandbox.delete_context(&context_id).await
    {
        eprintln!("warning: deleting context {context_id}: {e}");
    }
    result
}

async fn run_in(
    sandbox: &SandboxHandle,
    context_id: &str,
    code: &str,
    options: &RunOptions,
    printer: &mut Printer,
) -> anyhow::Result<i32> {
    let events = sandbox.run_code_stream(context_id, code, options).await?;
    // One listener for the whole run, so a ctrl-c between two events is not missed. Deleting
    // the context (temporary ones) stops the interpreter.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    tokio::select! {
        code = printer.print(events) => code,
        _ = &mut ctrl_c => {
            eprintln!("interrupted");
            Ok(INTERRUPTED_EXIT)
        }
    }
}

fn read_code(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut code = String::new();
        std::io::stdin()
            .read_to_string(&mut code)
            .context("reading code from stdin")?;
        return Ok(code);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
}

/// Writes a run's events to the terminal and result files.
struct Printer {
    out_dir: PathBuf,
    /// Number of the next result file (`sandpit-out-N.ext`).
    next: u32,
}

impl Printer {
    fn new(out_dir: PathBuf) -> Self {
        Printer { out_dir, next: 1 }
    }

    async fn print(&mut self, mut events: EventStream<CodeEvent>) -> anyhow::Result<i32> {
        while let Some(event) = events.next().await {
            match event? {
                CodeEvent::Stdout { text } => write_flush(&mut std::io::stdout().lock(), &text)?,
                CodeEvent::Stderr { text } => write_flush(&mut std::io::stderr().lock(), &text)?,
                CodeEvent::Result(result) => self.result(&result)?,
                CodeEvent::ExecutionComplete { .. } => return Ok(0),
                CodeEvent::Error {
                    timed_out_after_ms: Some(ms),
                    ..
                } => {
                    // As `exec` words it; the interrupted code's traceback is noise.
                    eprintln!("{}", timed_out_message(Duration::from_millis(ms)));
                    return Ok(TIMEOUT_EXIT_CODE);
                }
                CodeEvent::Error {
                    ename,
                    evalue,
                    traceback,
                    ..
                } => {
                    let mut err = std::io::stderr().lock();
                    if traceback.is_empty() {
                        writeln!(err, "{ename}: {evalue}")?;
                    } else {
                        let text = traceback.join("\n");
                        writeln!(err, "{}", text.trim_end())?;
                    }
                    return Ok(1);
                }
            }
        }
        Err(EndedEarly("the output stream ended before the run completed").into())
    }

    /// Text forms go to stdout (plain text first; else Markdown, LaTeX, JSON or JavaScript);
    /// images and HTML to files.
    fn result(&mut self, result: &CodeResult) -> anyhow::Result<()> {
        let text = result
            .text
            .clone()
            .or_else(|| result.markdown.clone())
            .or_else(|| result.latex.clone())
            .or_else(|| {
                result
                    .json
                    .as_ref()
                    .and_then(|j| serde_json::to_string_pretty(j).ok())
            })
            .or_else(|| result.javascript.clone());
        if let Some(text) = text {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", text.trim_end_matches('\n'))?;
            out.flush()?;
        }
        for file in result_files(result)? {
            let path = self.save(file.extension, &file.bytes)?;
            eprintln!("saved {}", path.display());
        }
        Ok(())
    }

    /// Writes `bytes` to the first free `sandpit-out-N.ext` of the output directory (never
    /// over an existing file).
    fn save(&mut self, extension: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        loop {
            let path = self
                .out_dir
                .join(format!("sandpit-out-{}.{extension}", self.next));
            self.next += 1;
            match create_new(&path) {
                Ok(mut file) => {
                    file.write_all(bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
    }
}

fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn write_flush(out: &mut impl Write, data: &str) -> std::io::Result<()> {
    out.write_all(data.as_bytes())?;
    out.flush()
}
