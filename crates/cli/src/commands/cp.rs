//! `sandpit cp`: copies files and, with `-r`, directories between this machine and a sandbox,
//! as `cp` does: an existing directory as the target receives the source under its own name.
//! `-` as the local side is stdin (upload) or stdout (download), byte for byte.
//!
//! Single files stream through the raw file route ([`file`]); directories as one tar stream
//! ([`tree`]). What a sandbox path is (directory or not) is asked with [`remote::probe`].

mod file;
mod remote;
mod tree;

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::control::validate_sandbox_id;
use sandpit_client::{Client, ClientError, SandboxHandle};

use crate::cli::CpArgs;
use remote::RemoteKind;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `-`: stdin as a source, stdout as a destination.
    Std,
    Sandbox {
        id: String,
        path: String,
    },
}

impl Location {
    /// `ID:/path` is a sandbox path; anything starting with `/` or `.`, or whose part before
    /// `:` is not a valid sandbox id, is local.
    pub fn parse(s: &str) -> anyhow::Result<Location> {
        if s == "-" {
            return Ok(Location::Std);
        }
        let local = s.starts_with('/') || s.starts_with('.');
        if let Some((id, path)) = s.split_once(':')
            && !local
            && validate_sandbox_id(id).is_ok()
        {
            if path.is_empty() {
                bail!("missing path after {id}: (use {id}:/path)");
            }
            return Ok(Location::Sandbox {
                id: id.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(Location::Local(PathBuf::from(s)))
    }
}

pub async fn run(client: &Client, args: &CpArgs) -> anyhow::Result<()> {
    let recursive = args.recursive;
    match (Location::parse(&args.src)?, Location::parse(&args.dst)?) {
        (Location::Local(from), Location::Sandbox { id, path }) => {
            upload(&client.sandbox(&id), &from, &path, recursive).await
        }
        (Location::Sandbox { id, path }, Location::Local(to)) => {
            download(&client.sandbox(&id), &path, &to, recursive).await
        }
        (Location::Std, Location::Sandbox { id, path }) => {
            if path.ends_with('/') {
                bail!("stdin has no file name: give the full destination path");
            }
            file::upload_stdin(&client.sandbox(&id), &path).await
        }
        (Location::Sandbox { id, path }, Location::Std) => {
            file::download_to_stdout(&client.sandbox(&id), &path).await
        }
        _ => {
            bail!("one of SRC and DST must be a sandbox path (ID:/path) and the other a local path")
        }
    }
}

async fn upload(
    sandbox: &SandboxHandle,
    from: &Path,
    dest: &str,
    recursive: bool,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(from).map_err(|e| local_error("cannot read", from, &e))?;
    let name = source_name(from)?;
    let shown = format!("{}:{dest}", sandbox.id());
    if meta.is_dir() {
        if !recursive {
            bail!(
                "{} is a directory (use -r to copy directories)",
                from.display()
            );
        }
        // `cp -r DIR ID:/x`: into /x when it is a directory (or named as one), else as /x.
        let target = if dest.ends_with('/') {
            join_remote(dest, &name)
        } else {
            match remote::probe(sandbox, dest, false).await? {
                RemoteKind::Directory { .. } => join_remote(dest, &name),
                RemoteKind::Missing => dest.to_owned(),
                RemoteKind::Other => bail!("{shown} exists and is not a directory"),
            }
        };
        return tree::upload(sandbox, from, &target).await;
    }
    // A name ending in `/` is a directory (created if missing); otherwise only an existing
    // directory receives the file under its own name.
    let target = if dest.ends_with('/') {
        join_remote(dest, &name)
    } else {
        match remote::probe(sandbox, dest, false).await? {
            RemoteKind::Directory { .. } => join_remote(dest, &name),
            RemoteKind::Missing | RemoteKind::Other => dest.to_owned(),
        }
    };
    file::upload(sandbox, from, meta.len(), &target).await
}

async fn download(
    sandbox: &SandboxHandle,
    src: &str,
    to: &Path,
    recursive: bool,
) -> anyhow::Result<()> {
    let shown = format!("{}:{src}", sandbox.id());
    let name = Path::new(src)
        .file_name()
        .map(|n| n.to_os_string())
        .with_context(|| format!("{shown} has no file name; name the local target"))?;
    if recursive && let RemoteKind::Directory { size } = remote::probe(sandbox, src, true).await? {
        let target = local_target(to, &name, true)?;
        return tree::download(sandbox, src, size, &target).await;
    }
    let target = local_target(to, &name, false)?;
    match file::download(sandbox, src, &target).await {
        Err(e) if is_code(&e, ErrorCode::IsDirectory) => {
            bail!("{shown} is a directory (use -r to copy directories)")
        }
        other => other,
    }
}

/// The local path a download of `name` to `to` writes: inside `to` when it is a directory,
/// else `to` itself, whose parent must exist (as with `cp`, no directories are made up).
fn local_target(to: &Path, name: &std::ffi::OsStr, directory: bool) -> anyhow::Result<PathBuf> {
    match std::fs::metadata(to) {
        Ok(meta) if meta.is_dir() => return Ok(to.join(name)),
        Ok(_) if directory => bail!("{} exists and is not a directory", to.display()),
        Ok(_) => return Ok(to.to_path_buf()),
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(local_error("cannot write", to, &e));
        }
        Err(_) => {}
    }
    if to.as_os_str().to_string_lossy().ends_with('/') {
        bail!("{}: no such directory", to.display());
    }
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot create {}: no such directory {}",
            to.display(),
            parent.display()
        );
    }
    Ok(to.to_path_buf())
}

/// The name a local source is copied under (`.` and `..` are named after what they are).
fn source_name(from: &Path) -> anyhow::Result<String> {
    let name = match from.file_name() {
        Some(name) => name.to_os_string(),
        None => std::fs::canonicalize(from)
            .map_err(|e| local_error("cannot read", from, &e))?
            .file_name()
            .map(|n| n.to_os_string())
            .with_context(|| format!("{} has no name; name the target", from.display()))?,
    };
    Ok(name.to_string_lossy().into_owned())
}

fn join_remote(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A local I/O error as `cp` words it: `cannot read ./x: no such file or directory`.
fn local_error(action: &str, path: &Path, e: &io::Error) -> anyhow::Error {
    let reason = match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    };
    anyhow::anyhow!("{action} {}: {reason}", path.display())
}

/// Whether `error` is a server answer with `code`.
fn is_code(error: &anyhow::Error, code: ErrorCode) -> bool {
    error
        .downcast_ref::<ClientError>()
        .is_some_and(|e| e.code() == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, path: &str) -> Location {
        Location::Sandbox {
            id: id.into(),
            path: path.into(),
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("demo:/w/a.txt").unwrap(),
            sandbox("demo", "/w/a.txt")
        );
        assert_eq!(Location::parse("demo:rel").unwrap(), sandbox("demo", "rel"));
        assert_eq!(
            Location::parse("./demo:x").unwrap(),
            Location::Local("./demo:x".into())
        );
        assert_eq!(
            Location::parse("/tmp/a:b").unwrap(),
            Location::Local("/tmp/a:b".into())
        );
        assert_eq!(
            Location::parse("a_b:c").unwrap(),
            Location::Local("a_b:c".into())
        );
        assert_eq!(
            Location::parse("file.txt").unwrap(),
            Location::Local("file.txt".into())
        );
        assert!(Location::parse("demo:").is_err());
        assert_eq!(Location::parse("-").unwrap(), Location::Std);
    }

    #[test]
    fn remote_names_join_with_one_slash() {
        assert_eq!(join_remote("/w", "a"), "/w/a");
        assert_eq!(join_remote("/w/", "a"), "/w/a");
    }

    #[test]
    fn local_targets_follow_cp() {
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::new("f");
        assert_eq!(
            local_target(dir.path(), name, false).unwrap(),
            dir.path().join("f")
        );
        let new = dir.path().join("new");
        assert_eq!(local_target(&new, name, true).unwrap(), new);
        let err = local_target(&dir.path().join("no/such"), name, false).unwrap_err();
        assert!(err.to_string().contains("no such directory"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(local_target(&file, name, false).unwrap(), file);
        let err = local_target(&file, name, true).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }
}
