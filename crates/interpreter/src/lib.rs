//! Code preparation for sandpit's JavaScript/TypeScript interpreter contexts.
//!
//! [`prepare_javascript`] turns one REPL cell into a script that the Node executor
//! (`crates/agent/src/interpreter/executors/node.js`) runs with
//! `new vm.Script(code).runInContext(ctx)` on the context's persistent `vm` context:
//! TypeScript is transpiled with oxc, then the REPL rewrite makes top-level declarations
//! persist (and re-declarable) across runs and wraps code with top-level `await` in an
//! async IIFE that returns the value of the last expression statement.

mod error;
mod lines;
mod repl;
mod transpile;

pub use error::PrepareError;

/// A cell ready to run in the executor's `vm` context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Script source; its completion value is the value of the cell's last expression
    /// statement (`undefined` when the cell does not end with one). Its last line may be a
    /// `//# sandpitLines=` comment that maps its lines back to the cell's (see `node.js`).
    pub code: String,
    /// The completion value is a Promise of that value (the cell uses top-level `await`).
    pub is_async: bool,
}

/// Prepares one cell of JavaScript (or TypeScript when `typescript`, which is transpiled
/// first) for the executor. Syntax errors carry the 1-based line and column in `source`.
pub fn prepare_javascript(source: &str, typescript: bool) -> Result<Prepared, PrepareError> {
    // Like Node's REPL: a cell that is one `{ ... }` is an object literal if it can be one.
    let trimmed = source.trim().trim_end_matches(';').trim_end();
    if trimmed.starts_with('{')
        && trimmed.ends_with('}')
        && let Ok(prepared) = prepare(&format!("({trimmed})"), typescript)
    {
        return Ok(prepared);
    }
    prepare(source, typescript)
}

fn prepare(source: &str, typescript: bool) -> Result<Prepared, PrepareError> {
    let (rewritten, typescript_map) = if typescript {
        let (js, map) = transpile::typescript_to_javascript(source)?;
        (repl::rewrite(&js)?, Some(map))
    } else {
        (repl::rewrite(source)?, None)
    };
    let mut prepared = rewritten.prepared;
    if let Some(comment) = lines::comment(&rewritten.columns, typescript_map.as_ref()) {
        prepared.code.push('\n');
        prepared.code.push_str(&comment);
    }
    Ok(prepared)
}
