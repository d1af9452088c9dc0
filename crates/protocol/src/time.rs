//! Timestamps and durations as they appear on the wire.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// RFC 3339 timestamp with milliseconds, e.g. `2026-11-22T10:00:00.123Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The current time as a wire timestamp.
pub fn now() -> String {
    timestamp(SystemTime::now())
}

/// Parses a `sleepAfter`-style duration: a number of seconds (`90`, `"90"`) or a humantime
/// string (`"30s"`, `"5m"`, `"1h"`, `"1h 30m"`). Zero is rejected.
pub fn parse_duration(value: &serde_json::Value) -> Result<Duration, String> {
    let duration = match value {
        serde_json::Value::Number(n) => n
            .as_f64()
            // `try_`: a huge number is a bad value, not a panic.
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("invalid number of seconds: {n}"))?,
        serde_json::Value::String(s) => {
            let trimmed = s.trim();
            if let Ok(secs) = trimmed.parse::<u64>() {
                Duration::from_secs(secs)
            } else {
                humantime::parse_duration(trimmed)
                    .map_err(|e| format!("invalid duration {s:?}: {e}"))?
            }
        }
        other => {
            return Err(format!(
                "expected seconds or a duration string, got {other}"
            ));
        }
    };
    if duration.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    Ok(duration)
}

/// A command timeout as it crosses the wire (`timeoutMs`, `commandTimeoutMs`): milliseconds,
/// where `0` means "no timeout". An absent field means "the default" (the session's, then the
/// agent's), which [`TimeoutMs::resolve`] applies; every route and client uses this one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeoutMs(pub u64);

impl TimeoutMs {
    /// No timeout.
    pub const NONE: TimeoutMs = TimeoutMs(0);

    /// The time limit, `None` for `0` (no timeout).
    pub fn limit(self) -> Option<Duration> {
        (self.0 > 0).then(|| Duration::from_millis(self.0))
    }

    /// The limit of a request that carried `requested`: its own value when present (`0`
    /// disables a default), else `fallback`.
    pub fn resolve(requested: Option<TimeoutMs>, fallback: Option<Duration>) -> Option<Duration> {
        requested.map_or(fallback, TimeoutMs::limit)
    }
}

impl From<Duration> for TimeoutMs {
    fn from(d: Duration) -> Self {
        TimeoutMs(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Exit code of a command killed at its deadline (as `timeout(1)` reports it).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// The message that accompanies [`TIMEOUT_EXIT_CODE`].
pub fn timed_out_message(limit: Duration) -> String {
    format!("Command timed out after {}ms", limit.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_seconds_and_strings() {
        assert_eq!(parse_duration(&json!(30)), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(&json!("30s")), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(&json!("5m")), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(&json!("1h")), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(&json!("45")), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_duration(&json!("soon")).is_err());
        assert!(parse_duration(&json!(0)).is_err());
        assert!(parse_duration(&json!(-3)).is_err());
        assert!(parse_duration(&json!(true)).is_err());
        // Would overflow a Duration (and panicked before).
        assert!(parse_duration(&json!(1e300)).is_err());
    }

    #[test]
    fn zero_timeout_means_none_and_overrides_defaults() {
        let default = Some(Duration::from_secs(9));
        assert_eq!(TimeoutMs::resolve(None, default), default);
        assert_eq!(TimeoutMs::resolve(Some(TimeoutMs(0)), default), None);
        assert_eq!(
            TimeoutMs::resolve(Some(TimeoutMs(5)), default),
            Some(Duration::from_millis(5))
        );
        let wire: TimeoutMs = serde_json::from_value(json!(250)).unwrap();
        assert_eq!(wire, TimeoutMs(250));
        assert_eq!(serde_json::to_value(TimeoutMs(0)).unwrap(), json!(0));
    }

    #[test]
    fn timestamp_is_rfc3339_millis() {
        let ts = timestamp(SystemTime::UNIX_EPOCH);
        assert_eq!(ts, "1970-01-01T00:00:00.000Z");
    }
}
