//! Embeds the web console's built assets (`console/dist`, made by `npm run build` in
//! `console/`; scripts/serve.sh and scripts/test.sh do it before `cargo build`). Without them the
//! server still builds and `/console` says how to build the console. Nothing is downloaded here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest.join("console/dist");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let mut files = Vec::new();
    if dist.is_dir() {
        println!("cargo:rerun-if-changed={}", dist.display());
        collect(&dist, &dist, &mut files);
    } else {
        // Appears when the console is built.
        println!(
            "cargo:rerun-if-changed={}",
            manifest.join("console").display()
        );
    }
    files.sort();
    let mut code = String::from("/// The console's files: (path under /console/, bytes).\n");
    code.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (name, path) in &files {
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            path.display()
        );
    }
    code.push_str("];\n");
    if let Err(e) = std::fs::write(out.join("console_assets.rs"), code) {
        panic!("writing console_assets.rs: {e}");
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(rel) = path.strip_prefix(root) {
            files.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
}
