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

/// `sleepAfter`: how long a sandbox may be idle before it sleeps. Accepted on the wire as a
/// number of seconds (`90`) or a duration string (`"90"`, `"30s"`, `"5m"`, `"1h 30m"`), written
/// back as whole seconds (an integer). At least one second: fractions are rounded down to whole
/// seconds with a floor of 1 s (`"500ms"` is 1 s); zero and negative values are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SleepAfter(u64);

impl SleepAfter {
    /// Ten minutes, the seed's default.
    pub const DEFAULT: SleepAfter = SleepAfter(crate::control::DEFAULT_SLEEP_AFTER_SECS);

    /// `secs` seconds (at least 1: `0` is raised to 1, as a stored value may be).
    pub const fn from_secs(secs: u64) -> Self {
        SleepAfter(if secs == 0 { 1 } else { secs })
    }

    /// Whole seconds (at least 1).
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// The idle time.
    pub const fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// Parses a wire value: seconds or a duration string.
    pub fn parse(value: &serde_json::Value) -> Result<Self, String> {
        parse_duration(value).map(|d| SleepAfter::from_secs(d.as_secs()))
    }
}

impl Default for SleepAfter {
    fn default() -> Self {
        SleepAfter::DEFAULT
    }
}

/// The string form (`"90"`, `"5m"`), as a CLI flag takes it.
impl std::str::FromStr for SleepAfter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SleepAfter::parse(&serde_json::Value::String(s.to_owned()))
    }
}

impl std::fmt::Display for SleepAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}s", self.0)
    }
}

impl Serialize for SleepAfter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for SleepAfter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        // serde_json's errors do not name the field; the message does.
        SleepAfter::parse(&value).map_err(|e| serde::de::Error::custom(format!("sleepAfter: {e}")))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for SleepAfter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        seconds_or_duration_schema(
            1,
            "Idle time before the sandbox sleeps: seconds or a duration string \
             (at least 1 s); answers carry whole seconds",
        )
    }
}

/// `oneOf` an integer of seconds (at least `minimum`) or a duration string: the wire form of
/// [`SleepAfter`] and [`Ttl`].
#[cfg(feature = "openapi")]
fn seconds_or_duration_schema(
    minimum: u64,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(minimum))
                .description(Some("seconds")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "seconds, or a duration such as \"30s\", \"5m\", \"1h 30m\"",
                ))
                .examples(["5m"]),
        )
        .description(Some(description))
        .into()
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for SleepAfter {}

/// `ttl`: how long a sandbox may live, counted from the request that sets it. Accepted on the
/// wire as seconds (`3600`) or a duration string (`"1h"`); `0` (or `"0"`) means no expiry.
/// At most [`Ttl::MAX_SECS`] (about ten years, so `now + ttl` cannot overflow). Written back as
/// whole seconds, rounded up (`0`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ttl(Option<Duration>);

impl Ttl {
    /// No expiry.
    pub const NONE: Ttl = Ttl(None);
    /// The longest time to live.
    pub const MAX_SECS: u64 = 10 * 366 * 24 * 3600;

    /// Parses a wire value: `0`, seconds or a duration string.
    pub fn parse(value: &serde_json::Value) -> Result<Self, String> {
        let zero = match value {
            serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
            serde_json::Value::String(s) => s.trim() == "0",
            _ => false,
        };
        if zero {
            return Ok(Ttl::NONE);
        }
        let duration = parse_duration(value)?;
        if duration.as_secs() >= Self::MAX_SECS {
            return Err(format!("at most {} seconds", Self::MAX_SECS));
        }
        Ok(Ttl(Some(duration)))
    }

    /// How long the sandbox may live; `None`: no expiry.
    pub const fn duration(self) -> Option<Duration> {
        self.0
    }
}

/// The string form (`"0"`, `"3600"`, `"30m"`), as a CLI flag takes it.
impl std::str::FromStr for Ttl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ttl::parse(&serde_json::Value::String(s.to_owned()))
    }
}

impl Serialize for Ttl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let secs = self
            .0
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        serializer.serialize_u64(secs)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ttl::parse(&value).map_err(|e| serde::de::Error::custom(format!("ttl: {e}")))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Ttl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        seconds_or_duration_schema(
            0,
            "Time to live from this request: seconds or a duration string; 0: no expiry",
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Ttl {}

/// A time limit as it crosses the wire, in milliseconds: `timeoutMs` and `commandTimeoutMs` of
/// the container API, `timeout_ms` of `/api/execute/code`, and the agent's defaults
/// `COMMAND_TIMEOUT_MS` and `INTERPRETER_EXECUTION_TIMEOUT_MS`.
///
/// **`0` means "no limit"** wherever it appears, and a `0` given in a request overrides any
/// default. An *absent* field (`Option<TimeoutMs>::None`) means "the default" (for a command:
/// the session's, then the agent's); pick it with `requested.unwrap_or(default)`. Parsed once
/// here; code past the edge only sees [`TimeoutMs::limit`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u64", into = "u64")]
pub struct TimeoutMs(Option<Duration>);

impl TimeoutMs {
    /// No limit (`0` on the wire).
    pub const NONE: TimeoutMs = TimeoutMs(None);

    /// `ms` milliseconds; `0` is [`TimeoutMs::NONE`].
    pub const fn from_millis(ms: u64) -> Self {
        if ms == 0 {
            TimeoutMs::NONE
        } else {
            TimeoutMs(Some(Duration::from_millis(ms)))
        }
    }

    /// A limit of `limit` (a zero duration is no limit, as on the wire).
    pub fn after(limit: Duration) -> Self {
        TimeoutMs((!limit.is_zero()).then_some(limit))
    }

    /// An environment variable's value (`COMMAND_TIMEOUT_MS=30000`): `None` when it is not a
    /// number of milliseconds (the variable is then ignored, as if unset).
    pub fn parse_env(value: &str) -> Option<Self> {
        value.trim().parse::<u64>().ok().map(TimeoutMs::from_millis)
    }

    /// The time limit; `None`: no limit.
    pub fn limit(self) -> Option<Duration> {
        self.0
    }

    /// The wire value (`0`: no limit).
    pub fn millis(self) -> u64 {
        self.0
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl From<u64> for TimeoutMs {
    fn from(ms: u64) -> Self {
        TimeoutMs::from_millis(ms)
    }
}

impl From<TimeoutMs> for u64 {
    fn from(t: TimeoutMs) -> u64 {
        t.millis()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for TimeoutMs {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <u64 as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for TimeoutMs {}

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
        let default = TimeoutMs::from_millis(9000);
        let pick = |requested: Option<TimeoutMs>| requested.unwrap_or(default).limit();
        assert_eq!(pick(None), Some(Duration::from_secs(9)));
        assert_eq!(pick(Some(TimeoutMs::from_millis(0))), None);
        assert_eq!(
            pick(Some(TimeoutMs::from_millis(5))),
            Some(Duration::from_millis(5))
        );
        let wire: TimeoutMs = serde_json::from_value(json!(250)).unwrap();
        assert_eq!(wire.limit(), Some(Duration::from_millis(250)));
        let zero: TimeoutMs = serde_json::from_value(json!(0)).unwrap();
        assert_eq!(zero, TimeoutMs::NONE);
        assert_eq!(serde_json::to_value(TimeoutMs::NONE).unwrap(), json!(0));
        assert_eq!(serde_json::to_value(wire).unwrap(), json!(250));
        assert!(serde_json::from_value::<TimeoutMs>(json!(-1)).is_err());
        assert!(serde_json::from_value::<TimeoutMs>(json!("5s")).is_err());
        assert_eq!(TimeoutMs::after(Duration::ZERO), TimeoutMs::NONE);
    }

    #[test]
    fn env_defaults_parse_like_the_wire() {
        assert_eq!(
            TimeoutMs::parse_env(" 1500 "),
            Some(TimeoutMs::from_millis(1500))
        );
        assert_eq!(TimeoutMs::parse_env("0"), Some(TimeoutMs::NONE));
        assert_eq!(TimeoutMs::parse_env("soon"), None);
        assert_eq!(TimeoutMs::parse_env(""), None);
    }

    #[test]
    fn ttl_reads_zero_as_no_expiry_and_writes_whole_seconds_rounded_up() {
        for (wire, written) in [
            (json!(0), 0),
            (json!("0"), 0),
            (json!(3600), 3600),
            (json!("30m"), 1800),
            (json!("500ms"), 1),
        ] {
            let ttl: Ttl = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(ttl.duration().is_none(), written == 0, "{wire}");
            assert_eq!(serde_json::to_value(ttl).unwrap(), json!(written), "{wire}");
        }
        for bad in [
            json!("soon"),
            json!(-1),
            json!(1e300),
            json!(true),
            json!(Ttl::MAX_SECS),
        ] {
            let err = serde_json::from_value::<Ttl>(bad.clone()).unwrap_err();
            assert!(err.to_string().starts_with("ttl: "), "{bad}: {err}");
        }
    }

    #[test]
    fn sleep_after_reads_seconds_or_strings_and_writes_seconds() {
        for (wire, secs) in [
            (json!(90), 90),
            (json!("90"), 90),
            (json!("30s"), 30),
            (json!("5m"), 300),
            (json!("1h 30m"), 5400),
            (json!("500ms"), 1),
            (json!(2.7), 2),
        ] {
            let parsed: SleepAfter = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(parsed.as_secs(), secs, "{wire}");
            assert_eq!(serde_json::to_value(parsed).unwrap(), json!(secs));
        }
        for bad in [
            json!(0),
            json!("0"),
            json!(-5),
            json!("soon"),
            json!(null),
            json!(true),
        ] {
            assert!(
                serde_json::from_value::<SleepAfter>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert_eq!(SleepAfter::from_secs(0).as_secs(), 1);
        assert_eq!(SleepAfter::default().duration(), Duration::from_secs(600));
    }

    #[test]
    fn timestamp_is_rfc3339_millis() {
        let ts = timestamp(SystemTime::UNIX_EPOCH);
        assert_eq!(ts, "1970-01-01T00:00:00.000Z");
    }
}
