//! File operations of the container API. Blocking functions: call them from `spawn_blocking`.
//!
//! The sandbox is the boundary, so paths follow normal filesystem semantics (absolute, or
//! relative to the session's cwd) with only basic validation.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use nix::unistd::{AccessFlags, access};
use sandpit_protocol::ErrorCode;
use sandpit_protocol::container::{
    FILE_STREAM_CHUNK, FileInfo, FilePermissions, FileStreamEvent, FileType, MAX_READ_BYTES,
};
use sandpit_protocol::time;

use crate::error::{ApiError, io_error};
use crate::exec::output::complete_prefix_len;

/// Longest accepted path, in characters.
const MAX_PATH_CHARS: usize = 4096;

/// Checks `path` and resolves it against `base` if relative.
pub fn resolve(path: &str, base: &Path, field: &str) -> Result<PathBuf, ApiError> {
    if path.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if path.contains('\0') {
        return Err(ApiError::validation(
            field,
            format!("{field} must not contain NUL bytes"),
        ));
    }
    if path.chars().count() > MAX_PATH_CHARS {
        return Err(ApiError::validation(
            field,
            format!("{field} is longer than {MAX_PATH_CHARS} characters"),
        ));
    }
    Ok(base.join(path))
}

/// A file's content as the read endpoints return it.
#[derive(Debug)]
pub struct ReadResult {
    pub content: String,
    pub encoding: &'static str,
    pub is_binary: bool,
    pub mime_type: String,
    pub size: u64,
}

/// Checks that `path` is a readable regular file no bigger than `limit`; returns its size.
pub(crate) fn regular_file(path: &Path, shown: &str, limit: Option<u64>) -> Result<u64, ApiError> {
    let meta = fs::metadata(path).map_err(|e| io_error(&e, shown, "file.read"))?;
    if meta.is_dir() {
        return Err(ApiError::new(
            ErrorCode::IsDirectory,
            format!("Path is a directory: {shown}"),
        )
        .context("path", shown)
        .operation("file.read"));
    }
    if let Some(limit) = limit
        && meta.len() > limit
    {
        return Err(ApiError::new(
            ErrorCode::FileTooLarge,
            format!(
                "File too large: {shown} is {} bytes, the limit is {limit}",
                meta.len()
            ),
        )
        .context("path", shown)
        .context("size", meta.len())
        .context("limit", limit)
        .operation("file.read"));
    }
    Ok(meta.len())
}

/// `/api/read`. `encoding` `base64` forces base64, `utf-8`/`utf8` forces (lossy) text.
pub fn read(path: &Path, shown: &str, encoding: Option<&str>) -> Result<ReadResult, ApiError> {
    regular_file(path, shown, Some(MAX_READ_BYTES))?;
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_READ_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| io_error(&e, shown, "file.read"))?;
    if bytes.len() as u64 > MAX_READ_BYTES {
        return Err(
            ApiError::new(ErrorCode::FileTooLarge, format!("File too large: {shown}"))
                .context("path", shown),
        );
    }
    let (mime_type, is_binary) = detect(path, &bytes, true);
    let as_base64 = match encoding {
        Some("base64") => true,
        Some("utf-8" | "utf8") => false,
        _ => is_binary,
    };
    let content = if as_base64 {
        BASE64.encode(&bytes)
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(ReadResult {
        content,
        encoding: if as_base64 { "base64" } else { "utf-8" },
        is_binary,
        mime_type,
        size: bytes.len() as u64,
    })
}

/// `/api/read/stream`: sends metadata, chunks and completion through `send` (which returns
/// false when the client went away). Failures become an `error` event.
pub fn read_stream(path: &Path, shown: &str, mut send: impl FnMut(FileStreamEvent) -> bool) {
    if let Err(e) = stream_file(path, shown, &mut send) {
        send(FileStreamEvent::Error { error: e.0.message });
    }
}

fn stream_file(
    path: &Path,
    shown: &str,
    send: &mut impl FnMut(FileStreamEvent) -> bool,
) -> Result<(), ApiError> {
    let size = regular_file(path, shown, None)?;
    let mut file = File::open(path).map_err(|e| io_error(&e, shown, "file.read"))?;
    let mut buf = vec![0u8; FILE_STREAM_CHUNK];
    let mut filled =
        read_full(&mut file, &mut buf).map_err(|e| io_error(&e, shown, "file.read"))?;
    // Decide on text or binary from the first chunk.
    let (mime_type, is_binary) = detect(path, &buf[..filled], filled < FILE_STREAM_CHUNK);
    let encoding = if is_binary { "base64" } else { "utf-8" };
    if !send(FileStreamEvent::Metadata {
        mime_type,
        size,
        is_binary,
        encoding: encoding.into(),
    }) {
        return Ok(());
    }
    let mut total = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    while filled > 0 {
        total += filled as u64;
        let data = if is_binary {
            // 65535 is a multiple of 3, so every full chunk encodes without padding.
            BASE64.encode(&buf[..filled])
        } else {
            carry.extend_from_slice(&buf[..filled]);
            let cut = complete_prefix_len(&carry);
            let rest = carry.split_off(cut);
            let text = String::from_utf8_lossy(&carry).into_owned();
            carry = rest;
            text
        };
        if !data.is_empty() && !send(FileStreamEvent::Chunk { data }) {
            return Ok(());
        }
        filled = read_full(&mut file, &mut buf).map_err(|e| io_error(&e, shown, "file.read"))?;
    }
    if !carry.is_empty()
        && !send(FileStreamEvent::Chunk {
            data: String::from_utf8_lossy(&carry).into_owned(),
        })
    {
        return Ok(());
    }
    send(FileStreamEvent::Complete { bytes_read: total });
    Ok(())
}

/// Reads until `buf` is full or EOF.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// MIME type and binary-ness of `bytes` (the file's content, or its first chunk when
/// `complete` is false).
pub fn detect(path: &Path, bytes: &[u8], complete: bool) -> (String, bool) {
    let valid_utf8 = match std::str::from_utf8(bytes) {
        Ok(_) => true,
        // A multi-byte character cut at the end of a partial sample still counts as text.
        Err(e) => !complete && e.error_len().is_none(),
    };
    let has_nul = bytes.contains(&0);
    let mime = if bytes.is_empty() {
        mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("text/plain")
            .to_owned()
    } else if let Some(kind) = infer::get(bytes) {
        kind.mime_type().to_owned()
    } else if let Some(guess) = mime_guess::from_path(path).first_raw() {
        guess.to_owned()
    } else if valid_utf8 && !has_nul {
        "text/plain".to_owned()
    } else {
        "application/octet-stream".to_owned()
    };
    let is_text = valid_utf8 && (is_text_mime(&mime) || !has_nul);
    (mime, !is_text)
}

fn is_text_mime(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or(mime).trim();
    if essence.starts_with("text/") || essence.ends_with("+json") || essence.ends_with("+xml") {
        return true;
    }
    let sub = essence.split('/').nth(1).unwrap_or("");
    let sub = sub.strip_prefix("x-").unwrap_or(sub);
    matches!(
        sub,
        "json"
            | "javascript"
            | "ecmascript"
            | "typescript"
            | "sh"
            | "shellscript"
            | "yaml"
            | "toml"
            | "sql"
            | "xml"
            | "empty"
    )
}

/// `/api/write`: decodes `content` and writes it, creating missing parent directories.
/// Regular files are replaced atomically (temp file + rename) keeping their permissions.
pub fn write(
    path: &Path,
    shown: &str,
    content: &str,
    encoding: Option<&str>,
) -> Result<(), ApiError> {
    let bytes = match encoding {
        Some("base64") => BASE64.decode(content.trim()).map_err(|e| {
            ApiError::validation("content", format!("content is not valid base64: {e}"))
        })?,
        _ => content.as_bytes().to_vec(),
    };
    let err = |e: io::Error| io_error(&e, shown, "file.write");
    let (target, existing) = match write_target(path, shown)? {
        WriteTarget::InPlace(target) => return fs::write(&target, &bytes).map_err(err),
        WriteTarget::Replace { target, existing } => (target, existing),
    };
    let temp = temp_beside(&target, shown)?;
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(&bytes)?;
        if let Some(meta) = &existing {
            file.set_permissions(meta.permissions())?;
        }
        drop(file);
        fs::rename(&temp, &target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(err)
}

/// Where a write to `path` lands.
pub(crate) enum WriteTarget {
    /// Devices, FIFOs: written in place.
    InPlace(PathBuf),
    /// A regular file (or a new one) replaced atomically; `existing` keeps its permissions.
    Replace {
        target: PathBuf,
        existing: Option<fs::Metadata>,
    },
}

/// Resolves a write destination: through symlinks, like a plain open() would; a directory is
/// `IS_DIRECTORY`.
pub(crate) fn write_target(path: &Path, shown: &str) -> Result<WriteTarget, ApiError> {
    let target = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(_) => path.to_path_buf(),
    };
    let existing = fs::metadata(&target).ok();
    if let Some(meta) = &existing {
        if meta.is_dir() {
            return Err(ApiError::new(
                ErrorCode::IsDirectory,
                format!("Path is a directory: {shown}"),
            )
            .context("path", shown)
            .operation("file.write"));
        }
        if !meta.is_file() {
            return Ok(WriteTarget::InPlace(target));
        }
    }
    Ok(WriteTarget::Replace { target, existing })
}

/// A fresh temp file name next to `target` (for a write-then-rename), after creating missing
/// parent directories.
pub(crate) fn temp_beside(target: &Path, shown: &str) -> Result<PathBuf, ApiError> {
    let (Some(dir), Some(_)) = (target.parent(), target.file_name()) else {
        return Err(ApiError::validation(
            "path",
            format!("not a file path: {shown}"),
        ));
    };
    fs::create_dir_all(dir).map_err(|e| io_error(&e, shown, "file.write"))?;
    // A short name: the target's name may already be close to NAME_MAX.
    Ok(dir.join(format!(".sandpit-write-{:016x}.tmp", rand::random::<u64>())))
}

/// `/api/delete`: files (and symlinks) only.
pub fn delete(path: &Path, shown: &str) -> Result<(), ApiError> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_error(&e, shown, "file.delete"))?;
    if meta.is_dir() {
        return Err(ApiError::new(
            ErrorCode::IsDirectory,
            format!("Cannot delete a directory: {shown} (only files can be deleted)"),
        )
        .context("path", shown)
        .operation("file.delete"));
    }
    fs::remove_file(path).map_err(|e| io_error(&e, shown, "file.delete"))
}

/// `/api/rename` and `/api/move`: like `mv` (into an existing directory; across filesystems
/// by copy and remove).
pub fn rename(from: &Path, from_shown: &str, to: &Path, operation: &str) -> Result<(), ApiError> {
    fs::symlink_metadata(from).map_err(|e| io_error(&e, from_shown, operation))?;
    let dest = match (fs::metadata(to), from.file_name()) {
        (Ok(meta), Some(name)) if meta.is_dir() => to.join(name),
        _ => to.to_path_buf(),
    };
    let dest_shown = dest.to_string_lossy().into_owned();
    match fs::rename(from, &dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_tree(from, &dest).map_err(|e| io_error(&e, &dest_shown, operation))?;
            remove_tree(from).map_err(|e| io_error(&e, from_shown, operation))
        }
        Err(e) => {
            let shown = if e.kind() == io::ErrorKind::NotFound {
                &dest_shown
            } else {
                from_shown
            };
            Err(io_error(&e, shown, operation))
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
    } else if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions())
    } else {
        fs::copy(from, to).map(|_| ())
    }
}

fn remove_tree(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// `/api/mkdir`.
pub fn mkdir(path: &Path, shown: &str, recursive: bool) -> Result<(), ApiError> {
    let result = if recursive {
        match fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => Err(io::Error::from_raw_os_error(libc::EEXIST)),
            _ => fs::create_dir_all(path),
        }
    } else {
        fs::create_dir(path)
    };
    result.map_err(|e| io_error(&e, shown, "directory.create"))
}

/// `/api/exists`: follows symlinks (a dangling link does not exist).
pub fn exists(path: &Path) -> bool {
    fs::metadata(path).is_ok()
}

/// `/api/list-files`. `absolute` is the listed directory as given, made absolute.
pub fn list(
    dir: &Path,
    shown: &str,
    recursive: bool,
    include_hidden: bool,
) -> Result<Vec<FileInfo>, ApiError> {
    let meta = fs::metadata(dir).map_err(|e| io_error(&e, shown, "directory.list"))?;
    if !meta.is_dir() {
        return Err(
            ApiError::new(ErrorCode::NotDirectory, format!("Not a directory: {shown}"))
                .context("path", shown)
                .operation("directory.list"),
        );
    }
    let walker = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .max_depth(if recursive { usize::MAX } else { 1 })
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        // Hidden directories are pruned, not just hidden themselves.
        .filter_entry(|e| include_hidden || !e.file_name().to_string_lossy().starts_with('.'));
    let mut files = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            // An unreadable subdirectory or a racing delete: skip it, like `find` goes on.
            Err(_) => continue,
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        files.push(file_info(dir, entry.path(), &meta));
    }
    Ok(files)
}

fn file_info(root: &Path, path: &Path, meta: &fs::Metadata) -> FileInfo {
    let ft = meta.file_type();
    let file_type = if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Directory
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    };
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    FileInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        absolute_path: path.to_string_lossy().into_owned(),
        relative_path: path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file_type,
        size: meta.size(),
        modified_at: time::timestamp(modified),
        mode: symbolic_mode(meta.permissions().mode()),
        permissions: FilePermissions {
            readable: access(path, AccessFlags::R_OK).is_ok(),
            writable: access(path, AccessFlags::W_OK).is_ok(),
            executable: access(path, AccessFlags::X_OK).is_ok(),
        },
    }
}

/// `rwxr-xr-x` for the permission bits of `mode`.
pub fn symbolic_mode(mode: u32) -> String {
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    bits.iter()
        .map(|&(bit, c)| if mode & bit != 0 { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_symbolic() {
        assert_eq!(symbolic_mode(0o755), "rwxr-xr-x");
        assert_eq!(symbolic_mode(0o100640), "rw-r-----");
    }

    #[test]
    fn detection_classifies_text_and_binary() {
        let png = [
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d,
        ];
        assert_eq!(
            detect(Path::new("x"), &png, true),
            ("image/png".into(), true)
        );
        assert_eq!(
            detect(Path::new("a.json"), b"{}", true),
            ("application/json".into(), false)
        );
        assert_eq!(
            detect(Path::new("noext"), "héllo".as_bytes(), true),
            ("text/plain".into(), false)
        );
        assert!(detect(Path::new("noext"), &[0xff, 0xfe, 0x00], true).1);
        assert!(!detect(Path::new("run.sh"), b"echo", true).1);
        assert!(!detect(Path::new("empty"), b"", true).1);
    }

    #[test]
    fn paths_are_validated() {
        let base = Path::new("/w");
        assert_eq!(
            resolve("a/b", base, "path").unwrap(),
            PathBuf::from("/w/a/b")
        );
        assert_eq!(
            resolve("/etc", base, "path").unwrap(),
            PathBuf::from("/etc")
        );
        assert!(resolve("", base, "path").is_err());
        assert!(resolve("a\0b", base, "path").is_err());
        assert!(resolve(&"a".repeat(4097), base, "path").is_err());
    }

    mod props {
        use std::path::Component;

        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        /// Paths built from components that matter to resolution (`..`, `.`, empty, a NUL,
        /// multi-byte characters), absolute or relative.
        fn user_path() -> impl Strategy<Value = String> {
            let component = prop_oneof![
                Just("a".to_owned()),
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just(String::new()),
                Just("é ß".to_owned()),
                Just("x\0y".to_owned()),
                "[a-z]{1,8}",
            ];
            (any::<bool>(), prop::collection::vec(component, 0..12)).prop_map(
                |(absolute, parts)| {
                    format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
                },
            )
        }

        fn named_components(path: &Path) -> Vec<Component<'_>> {
            path.components()
                .filter(|c| *c != Component::CurDir)
                .collect()
        }

        proptest! {
            #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

            /// The contract of the file API's paths: the sandbox is the boundary, so any
            /// non-empty path without NUL up to 4096 characters is accepted and means exactly
            /// what it means to the kernel (absolute, or relative to the session's cwd); the
            /// rest is a VALIDATION_FAILED naming the field, never a panic.
            #[test]
            fn resolve_accepts_exactly_valid_paths(path in prop_oneof![user_path(), any::<String>()]) {
                let base = Path::new("/workspace/sub");
                let valid = !path.is_empty()
                    && !path.contains('\0')
                    && path.chars().count() <= MAX_PATH_CHARS;
                match resolve(&path, base, "path") {
                    Ok(resolved) => {
                        prop_assert!(valid, "accepted {path:?}");
                        prop_assert_eq!(&resolved, &base.join(&path));
                        if path.starts_with('/') {
                            prop_assert_eq!(resolved, PathBuf::from(&path));
                        } else {
                            // Relative paths are the cwd's: same prefix, the user's components
                            // after it, nothing dropped or added (so no `..` is invented).
                            prop_assert!(resolved.starts_with(base));
                            let rest = resolved.strip_prefix(base).unwrap();
                            // (A leading `.` is the only one `Path` keeps; joined, it goes.)
                            let ours = named_components(rest);
                            let theirs = named_components(Path::new(&path));
                            prop_assert_eq!(ours, theirs);
                        }
                    }
                    Err(e) => {
                        prop_assert!(!valid, "refused {path:?}");
                        prop_assert_eq!(e.code(), ErrorCode::ValidationFailed);
                    }
                }
            }
        }
    }
}
