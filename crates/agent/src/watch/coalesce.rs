//! Per-subscriber coalescing: changes wait for one window (75 ms) and the same change (path,
//! type, directory flag) seen again within it is merged into the first, keeping first-seen
//! order. At most [`MAX_PENDING`] distinct changes wait; beyond that the subscriber has lost
//! events and must resync.

use std::collections::HashMap;
use std::time::Duration;

use sandpit_protocol::container::WatchEventType;

/// How long a change waits for duplicates before it is sent.
pub const WINDOW: Duration = Duration::from_millis(75);

/// Distinct changes a subscriber may have waiting.
pub const MAX_PENDING: usize = 1000;

/// One file-system change as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub event_type: WatchEventType,
    pub path: String,
    pub is_directory: bool,
    pub timestamp: String,
}

type Key = (WatchEventType, String, bool);

/// Changes waiting to be sent to one subscriber.
#[derive(Debug, Default)]
pub struct Pending {
    order: Vec<Change>,
    index: HashMap<Key, usize>,
    /// Changes dropped because the queue was full.
    dropped: u64,
}

impl Pending {
    /// Queues `change`, merging it into an identical waiting one (which takes the newer
    /// timestamp). Returns false when it had to be dropped.
    pub fn push(&mut self, change: Change) -> bool {
        let key = (change.event_type, change.path.clone(), change.is_directory);
        if let Some(&i) = self.index.get(&key) {
            self.order[i].timestamp = change.timestamp;
            return true;
        }
        if self.order.len() >= MAX_PENDING {
            self.dropped += 1;
            return false;
        }
        self.index.insert(key, self.order.len());
        self.order.push(change);
        true
    }

    /// Takes the waiting changes in first-seen order, and how many were dropped.
    pub fn take(&mut self) -> (Vec<Change>, u64) {
        self.index.clear();
        (
            std::mem::take(&mut self.order),
            std::mem::take(&mut self.dropped),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty() && self.dropped == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(t: WatchEventType, path: &str, ts: &str) -> Change {
        Change {
            event_type: t,
            path: path.into(),
            is_directory: false,
            timestamp: ts.into(),
        }
    }

    #[test]
    fn duplicates_merge_in_first_seen_order() {
        let mut p = Pending::default();
        assert!(p.push(change(WatchEventType::Create, "/a", "1")));
        assert!(p.push(change(WatchEventType::Modify, "/a", "2")));
        assert!(p.push(change(WatchEventType::Modify, "/b", "3")));
        assert!(p.push(change(WatchEventType::Modify, "/a", "4")));
        let (changes, dropped) = p.take();
        assert_eq!(dropped, 0);
        let got: Vec<_> = changes
            .iter()
            .map(|c| (c.event_type, c.path.as_str(), c.timestamp.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (WatchEventType::Create, "/a", "1"),
                (WatchEventType::Modify, "/a", "4"),
                (WatchEventType::Modify, "/b", "3"),
            ]
        );
        assert!(p.is_empty());
    }

    #[test]
    fn overflow_is_counted() {
        let mut p = Pending::default();
        for i in 0..MAX_PENDING + 5 {
            p.push(change(WatchEventType::Create, &format!("/f{i}"), "t"));
        }
        // A duplicate of a waiting change still merges.
        assert!(p.push(change(WatchEventType::Create, "/f0", "u")));
        let (changes, dropped) = p.take();
        assert_eq!(changes.len(), MAX_PENDING);
        assert_eq!(dropped, 5);
    }
}
