//! Sessionless commands (`sessionId: "__DISABLE_SESSION__"`) and background processes:
//! `bash -c <cmd>` started by the one runner ([`super::runner`]), stdin `/dev/null` or a pipe.

use std::collections::BTreeMap;
use std::path::Path;

use super::runner::{self, Child};
use crate::reaper::Reaper;

/// Starts `shell -c command` in its own process group. With `piped_stdin` the command's stdin
/// is a pipe (else `/dev/null`).
pub fn spawn(
    shell: &Path,
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    piped_stdin: bool,
    reaper: &Reaper,
) -> std::io::Result<Child> {
    let mut cmd = runner::command(shell, cwd, env);
    cmd.arg("-c").arg(command);
    runner::spawn(cmd, piped_stdin, reaper)
}
