//! Builds (or reuses) the default image: `cargo run -p sandpit-image --example build-default
//! [-- <store root>]` (default root /var/lib/sandpit/images). Prints stages and messages.

use std::sync::Mutex;
use std::time::Instant;

use sandpit_image::{ImageStore, Progress};

struct Log {
    start: Instant,
    last_percent: Mutex<Option<u64>>,
}

impl Progress for Log {
    fn stage(&self, name: &str, total: Option<u64>) {
        println!(
            "[{:>6.1}s] == {name} (total {total:?})",
            self.start.elapsed().as_secs_f64()
        );
    }
    fn advance(&self, done: u64) {
        if let Ok(mut last) = self.last_percent.lock() {
            *last = Some(done);
        }
    }
    fn message(&self, msg: &str) {
        let done = self.last_percent.lock().ok().and_then(|l| *l);
        let done = done.map(|d| format!(" {d}")).unwrap_or_default();
        println!("[{:>6.1}s]{done} {msg}", self.start.elapsed().as_secs_f64());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/var/lib/sandpit/images".to_owned());
    let store = ImageStore::open(root)?;
    let log = Log {
        start: Instant::now(),
        last_percent: Mutex::new(None),
    };
    match store.build_default(&log) {
        Ok(info) => {
            println!("{}", serde_json::to_string_pretty(&info)?);
            println!("rootfs: {}", store.rootfs(&info.name)?.display());
            println!("took {:.1}s", log.start.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                msg.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Err(msg.into())
        }
    }
}
