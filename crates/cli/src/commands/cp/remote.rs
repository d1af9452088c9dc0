//! What a path in a sandbox is. The file API has no `stat`, so one short shell command asks:
//! a directory (with its size in bytes when asked, for a progress bar), something else, or
//! nothing.

use anyhow::{Context, bail};
use sandpit_client::protocol::DISABLE_SESSION;
use sandpit_client::{ExecOptions, SandboxHandle};

use crate::shell::quote;

/// The kind of a sandbox path (symlinks followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// A directory; `size` is what `du -sb` counts (0 unless measured).
    Directory {
        size: u64,
    },
    /// Exists and is not a directory.
    Other,
    Missing,
}

/// Asks the sandbox what `path` is; `measure` also sums a directory's size.
pub async fn probe(
    sandbox: &SandboxHandle,
    path: &str,
    measure: bool,
) -> anyhow::Result<RemoteKind> {
    let size = if measure {
        r#"$(du -sb -- "$p" 2>/dev/null | cut -f1)"#
    } else {
        "0"
    };
    let script = format!(
        r#"p={}; if [ -d "$p" ]; then echo "dir {size}"; elif [ -e "$p" ]; then echo other; else echo missing; fi"#,
        quote(path)
    );
    let options = ExecOptions::default().session(DISABLE_SESSION);
    let answer = sandbox
        .exec(&script, &options)
        .await
        .with_context(|| format!("looking up {}:{path}", sandbox.id()))?;
    if answer.exit_code != 0 {
        bail!(
            "looking up {}:{path} failed: {}",
            sandbox.id(),
            answer.stderr.trim()
        );
    }
    parse(answer.stdout.trim())
}

fn parse(line: &str) -> anyhow::Result<RemoteKind> {
    match line.split_once(' ') {
        Some(("dir", size)) => Ok(RemoteKind::Directory {
            size: size.trim().parse().unwrap_or(0),
        }),
        _ if line == "other" => Ok(RemoteKind::Other),
        _ if line == "missing" => Ok(RemoteKind::Missing),
        _ => bail!("unexpected answer while looking up a sandbox path: {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(
            parse("dir 4096").unwrap(),
            RemoteKind::Directory { size: 4096 }
        );
        assert_eq!(parse("dir ").unwrap(), RemoteKind::Directory { size: 0 });
        assert_eq!(parse("other").unwrap(), RemoteKind::Other);
        assert_eq!(parse("missing").unwrap(), RemoteKind::Missing);
        assert!(parse("").is_err());
    }
}
