//! An error and its causes on one line, for messages that leave a process (API error bodies,
//! log lines, a CLI's last words).
//!
//! Library errors in sandpit say only what failed and mark the cause `#[source]`, so the cause
//! is printed exactly once: here, when the chain is walked. `Display` of the error alone is the
//! short message.

use std::error::Error;
use std::fmt;

/// Displays `error: cause: cause of the cause…`; usable in `format!` and in `tracing` fields
/// (`error = %ErrorChain(&e)`). A cause whose text its parent already ends with is skipped:
/// some third-party errors (seccompiler's, for one) print their source and return it too.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut parent = self.0;
        while let Some(cause) = parent.source() {
            let text = cause.to_string();
            if !parent.to_string().ends_with(&text) {
                write!(f, ": {text}")?;
            }
            parent = cause;
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The whole chain of `error` as a `String` (see [`ErrorChain`]).
pub fn display_chain(error: &(dyn Error + 'static)) -> String {
    ErrorChain(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("reading the key")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once_in_order() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(display_chain(&e), "reading the key: no such file");
        let plain = std::io::Error::other("alone");
        assert_eq!(format!("{}", ErrorChain(&plain)), "alone");
    }

    /// Prints its cause and returns it as its source (what a bad error type does).
    #[derive(Debug)]
    struct Repeats(Outer);
    impl fmt::Display for Repeats {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "starting: {}", self.0)
        }
    }
    impl Error for Repeats {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_its_parent_already_printed_is_skipped() {
        let e = Repeats(Outer(std::io::Error::other("denied")));
        assert_eq!(display_chain(&e), "starting: reading the key: denied");
    }
}
