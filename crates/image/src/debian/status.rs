//! Parsing the machine-readable progress of debootstrap and apt.

/// One line of apt's `APT::Status-Fd` output.
#[derive(Debug, Clone, PartialEq)]
pub enum AptStatus {
    /// `dlstatus:<n>:<percent>:<description>`: downloading.
    Download { percent: f64, message: String },
    /// `pmstatus:<package>:<percent>:<description>`: dpkg unpacking/configuring.
    Install {
        package: String,
        percent: f64,
        message: String,
    },
    /// `pmerror:<package>:<percent>:<error>`.
    Error { package: String, message: String },
}

/// Parses one status-fd line; `None` for other lines (`pmconffile`, `media-change`, noise).
/// Package names may themselves contain ':' (`libc6:amd64`), so the percent field is found as
/// the first numeric field.
pub fn parse_apt_status(line: &str) -> Option<AptStatus> {
    let (kind, rest) = line.trim_end().split_once(':')?;
    let parts: Vec<&str> = rest.split(':').collect();
    let at = (1..parts.len()).find(|&i| parts[i].parse::<f64>().is_ok())?;
    let subject = parts[..at].join(":");
    let percent: f64 = parts[at].parse().ok()?;
    let percent = if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let message = parts[at + 1..].join(":");
    match kind {
        "dlstatus" => Some(AptStatus::Download { percent, message }),
        "pmstatus" => Some(AptStatus::Install {
            package: subject,
            percent,
            message,
        }),
        "pmerror" => Some(AptStatus::Error {
            package: subject,
            message,
        }),
        _ => None,
    }
}

/// Turns a debootstrap output line into a progress message: `I: Retrieving libc6 2.36` →
/// `Retrieving libc6 2.36`; warnings and errors are prefixed. Other lines give `None`.
pub fn parse_debootstrap_line(line: &str) -> Option<String> {
    let line = line.trim_end();
    if let Some(info) = line.strip_prefix("I: ") {
        Some(info.trim_end_matches("...").to_owned())
    } else if let Some(warning) = line.strip_prefix("W: ") {
        Some(format!("warning: {warning}"))
    } else {
        line.strip_prefix("E: ")
            .map(|error| format!("error: {error}"))
    }
}

/// Folds the status of several apt runs into one monotonic 0..=100 figure. Each run is a phase
/// owning a slice of the range (see [`AptProgress::phase`]); inside it downloads count for the
/// first 30%, dpkg's work for the rest.
#[derive(Debug)]
pub(crate) struct AptProgress {
    done: u64,
    range: (f64, f64),
}

impl Default for AptProgress {
    fn default() -> Self {
        Self {
            done: 0,
            range: (0.0, 100.0),
        }
    }
}

impl AptProgress {
    /// The following status lines belong to a run spanning `from..to` percent overall.
    pub(crate) fn phase(&mut self, from: f64, to: f64) -> u64 {
        self.range = (from, to);
        self.advance_to(from)
    }

    pub(crate) fn update(&mut self, status: &AptStatus) -> u64 {
        let within = match status {
            AptStatus::Download { percent, .. } => percent * 0.3,
            AptStatus::Install { percent, .. } => 30.0 + percent * 0.7,
            AptStatus::Error { .. } => return self.done,
        };
        let (from, to) = self.range;
        self.advance_to(from + (to - from) * within / 100.0)
    }

    fn advance_to(&mut self, overall: f64) -> u64 {
        // Truncation is intended: a whole-percent progress figure.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let overall = overall.clamp(0.0, 100.0) as u64;
        self.done = self.done.max(overall);
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pmstatus_with_arch_qualified_package() {
        assert_eq!(
            parse_apt_status("pmstatus:libc6:amd64:42.8571:Unpacking libc6:amd64 (2.36)"),
            Some(AptStatus::Install {
                package: "libc6:amd64".into(),
                percent: 42.8571,
                message: "Unpacking libc6:amd64 (2.36)".into()
            })
        );
        assert_eq!(
            parse_apt_status("pmstatus:git:10:Installing git"),
            Some(AptStatus::Install {
                package: "git".into(),
                percent: 10.0,
                message: "Installing git".into()
            })
        );
    }

    #[test]
    fn parses_dlstatus_and_errors() {
        assert_eq!(
            parse_apt_status("dlstatus:3:12.5:Retrieving file 3 of 24\n"),
            Some(AptStatus::Download {
                percent: 12.5,
                message: "Retrieving file 3 of 24".into()
            })
        );
        assert_eq!(
            parse_apt_status("pmerror:/var/cache/apt/archives/x.deb:50:trying to overwrite"),
            Some(AptStatus::Error {
                package: "/var/cache/apt/archives/x.deb".into(),
                message: "trying to overwrite".into()
            })
        );
        assert_eq!(
            parse_apt_status("dlstatus:1:250:x"),
            Some(AptStatus::Download {
                percent: 100.0,
                message: "x".into()
            })
        );
    }

    #[test]
    fn ignores_other_lines() {
        for line in [
            "",
            "Reading package lists...",
            "pmconffile:/etc/x:1:'a' 'b' 1",
            "pmstatus:x",
        ] {
            assert_eq!(parse_apt_status(line), None, "{line}");
        }
    }

    #[test]
    fn parses_debootstrap_lines() {
        assert_eq!(
            parse_debootstrap_line("I: Retrieving libc6 2.36-9+deb12u10"),
            Some("Retrieving libc6 2.36-9+deb12u10".into())
        );
        assert_eq!(
            parse_debootstrap_line("I: Configuring apt..."),
            Some("Configuring apt".into())
        );
        assert_eq!(
            parse_debootstrap_line("W: Failure trying to run: chroot"),
            Some("warning: Failure trying to run: chroot".into())
        );
        assert_eq!(
            parse_debootstrap_line("E: boom"),
            Some("error: boom".into())
        );
        assert_eq!(parse_debootstrap_line("dpkg: warning: noise"), None);
    }

    #[test]
    fn apt_progress_is_monotonic() {
        let mut progress = AptProgress::default();
        let dl = |p| AptStatus::Download {
            percent: p,
            message: String::new(),
        };
        let pm = |p| AptStatus::Install {
            package: "x".into(),
            percent: p,
            message: String::new(),
        };
        assert_eq!(progress.update(&dl(50.0)), 15);
        assert_eq!(progress.update(&dl(100.0)), 30);
        assert_eq!(
            progress.update(&dl(10.0)),
            30,
            "a second download pass does not go back"
        );
        assert_eq!(progress.update(&pm(50.0)), 65);
        assert_eq!(progress.update(&pm(100.0)), 100);
    }

    #[test]
    fn apt_progress_phases_split_the_range() {
        let mut progress = AptProgress::default();
        let pm = |p| AptStatus::Install {
            package: "x".into(),
            percent: p,
            message: String::new(),
        };
        assert_eq!(progress.phase(0.0, 20.0), 0);
        assert_eq!(progress.update(&pm(100.0)), 20);
        assert_eq!(progress.phase(20.0, 100.0), 20);
        assert_eq!(
            progress.update(&pm(0.0)),
            44,
            "30% of the phase is downloading"
        );
        assert_eq!(progress.update(&pm(100.0)), 100);
    }
}
