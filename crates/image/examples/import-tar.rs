//! Imports an OCI layout or `docker save` tarball: `cargo run -p sandpit-image --example
//! import-tar -- <tarball> <name> [<store root>]` (default root /var/lib/sandpit/images).

use std::path::Path;
use std::time::Instant;

use sandpit_image::{ImageStore, Progress};

struct Log(Instant);

impl Progress for Log {
    fn stage(&self, name: &str, total: Option<u64>) {
        println!(
            "[{:>6.1}s] == {name} (total {total:?})",
            self.0.elapsed().as_secs_f64()
        );
    }
    fn advance(&self, _done: u64) {}
    fn message(&self, msg: &str) {
        println!("[{:>6.1}s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tarball, name, rest @ ..] = args.as_slice() else {
        return Err("usage: import-tar <tarball> <name> [<store root>]".into());
    };
    let root = rest
        .first()
        .map_or("/var/lib/sandpit/images", String::as_str);
    let store = ImageStore::open(root)?;
    let log = Log(Instant::now());
    let info = store
        .import_tar(Path::new(tarball), name, &log)
        .map_err(|e| {
            let source = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("{e}{source}")
        })?;
    println!("{}", serde_json::to_string_pretty(&info)?);
    println!("took {:.1}s", log.0.elapsed().as_secs_f64());
    Ok(())
}
