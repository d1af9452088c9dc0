//! Progress display: indicatif bars on a terminal, plain lines otherwise (CI logs).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sandpit_image::Progress;

/// Files at least this large get a progress bar in `cp`.
pub const BAR_THRESHOLD: u64 = 1 << 20;

const BYTES: &str = "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
const STAGE_BAR: &str = "{spinner} {prefix:>10} [{bar:30}] {percent:>3}% {wide_msg}";
const STAGE_SPINNER: &str = "{spinner} {prefix:>10} {elapsed} {wide_msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A byte-counting bar for transfers of `total` bytes; hidden for small transfers.
pub fn bytes_bar(total: u64, label: &str) -> ProgressBar {
    if total < BAR_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_style(style(BYTES));
    bar.set_prefix(label.to_owned());
    bar
}

/// A spinner with the elapsed time for a call whose bytes move inside the server (backups,
/// snapshot export and import); without a terminal, `message` once as a plain line.
pub fn spinner(message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        eprintln!("{message}");
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {wide_msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Shows the stages of an image build or import.
pub struct StageProgress {
    bar: ProgressBar,
    /// Without a terminal: the stage and last printed tenth, to print one line per 10 %.
    plain: Option<Mutex<(String, Option<u64>, u64)>>,
}

impl StageProgress {
    pub fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            StageProgress { bar, plain: None }
        } else {
            StageProgress {
                bar: ProgressBar::hidden(),
                plain: Some(Mutex::new((String::new(), None, 0))),
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for StageProgress {
    fn stage(&self, name: &str, total: Option<u64>) {
        if let Some(plain) = &self.plain {
            if let Ok(mut state) = plain.lock() {
                *state = (name.to_owned(), total, 0);
            }
            eprintln!("==> {name}");
            return;
        }
        match total {
            Some(total) => {
                self.bar.set_style(style(STAGE_BAR));
                self.bar.set_length(total);
            }
            None => self.bar.set_style(style(STAGE_SPINNER)),
        }
        self.bar.set_position(0);
        self.bar.set_prefix(name.to_owned());
    }

    fn advance(&self, done: u64) {
        let Some(plain) = &self.plain else {
            self.bar.set_position(done);
            return;
        };
        let Ok(mut state) = plain.lock() else { return };
        let (name, Some(total), printed) = &mut *state else {
            return;
        };
        if *total == 0 {
            return;
        }
        let tenth = done.min(*total) * 10 / *total;
        if tenth > *printed {
            *printed = tenth;
            eprintln!("    {name}: {}%", tenth * 10);
        }
    }

    fn message(&self, msg: &str) {
        if self.plain.is_none() {
            self.bar.set_message(msg.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for template in [BYTES, STAGE_BAR, STAGE_SPINNER] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn small_transfers_get_no_bar() {
        assert!(bytes_bar(BAR_THRESHOLD - 1, "x").is_hidden());
    }
}
