//! Change tracking across disconnects (`POST /api/watch/check`): version tokens
//! `"<watchId>:<cursor>"`, where the cursor counts the changes a retained watch has seen.
//! Watch ids carry the agent's random instance id, so a token from before an agent restart is
//! told apart from one of an expired watch.

use sandpit_protocol::container::{ChangeStatus, ResyncReason};

use crate::error::ApiError;

/// A parsed version token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    pub watch_id: &'a str,
    pub cursor: u64,
}

/// Formats a token.
pub fn token(watch_id: &str, cursor: u64) -> String {
    format!("{watch_id}:{cursor}")
}

/// Parses a token; anything else is 400 VALIDATION_FAILED.
pub fn parse(since: &str) -> Result<Version<'_>, ApiError> {
    let invalid = || {
        ApiError::validation(
            "since",
            "since must be a version returned by checkChanges()",
        )
        .context("since", since)
    };
    let (watch_id, cursor) = since.rsplit_once(':').ok_or_else(invalid)?;
    if watch_id.is_empty() || cursor.is_empty() || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let cursor = cursor.parse().map_err(|_| invalid())?;
    Ok(Version { watch_id, cursor })
}

/// The answer for `since` against the watch `watch_id` (of agent `instance`) now at `cursor`.
pub fn compare(
    since: &Version<'_>,
    watch_id: &str,
    instance_prefix: &str,
    cursor: u64,
) -> Result<(ChangeStatus, Option<ResyncReason>), ApiError> {
    if since.watch_id != watch_id {
        let reason = if since.watch_id.starts_with(instance_prefix) {
            ResyncReason::Expired
        } else {
            ResyncReason::Restarted
        };
        return Ok((ChangeStatus::Resync, Some(reason)));
    }
    if since.cursor > cursor {
        return Err(ApiError::validation(
            "since",
            "since refers to a newer version than the current watch state",
        )
        .context("currentVersion", token(watch_id, cursor)));
    }
    let status = if since.cursor == cursor {
        ChangeStatus::Unchanged
    } else {
        ChangeStatus::Changed
    };
    Ok((status, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_protocol::ErrorCode;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_rejected() {
        let t = token("watch-ab12-3", 17);
        assert_eq!(
            parse(&t).unwrap(),
            Version {
                watch_id: "watch-ab12-3",
                cursor: 17
            }
        );
        for bad in [
            "",
            "x",
            ":1",
            "w:",
            "w:-1",
            "w:1a",
            "w:99999999999999999999999",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().code(),
                ErrorCode::ValidationFailed,
                "{bad}"
            );
        }
    }

    #[test]
    fn statuses() {
        let v = |c| Version {
            watch_id: "watch-i-1",
            cursor: c,
        };
        assert_eq!(
            compare(&v(3), "watch-i-1", "watch-i-", 3).unwrap(),
            (ChangeStatus::Unchanged, None)
        );
        assert_eq!(
            compare(&v(2), "watch-i-1", "watch-i-", 3).unwrap(),
            (ChangeStatus::Changed, None)
        );
        assert!(compare(&v(4), "watch-i-1", "watch-i-", 3).is_err());
        assert_eq!(
            compare(&v(0), "watch-i-2", "watch-i-", 0).unwrap(),
            (ChangeStatus::Resync, Some(ResyncReason::Expired))
        );
        assert_eq!(
            compare(&v(0), "watch-j-1", "watch-j-", 0).unwrap(),
            (ChangeStatus::Resync, Some(ResyncReason::Restarted))
        );
    }
}
