//! Sandbox labels: validated changes (set on create, merged on PATCH) within a bounded count,
//! and the `label=k=v` selectors of `GET /v1/sandboxes`.

use std::collections::BTreeMap;

use sandpit_protocol::control::{MAX_LABELS, parse_label_selector, validate_label};

use crate::error::{ApiError, ApiResult};

/// Label changes: `Some` sets a label, `None` removes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelChanges(BTreeMap<String, Option<String>>);

impl LabelChanges {
    /// The labels of a create request (every one set).
    pub fn set(labels: &BTreeMap<String, String>) -> ApiResult<Self> {
        Self::merge(
            &labels
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
        )
    }

    /// The labels of a PATCH (`null` removes).
    pub fn merge(changes: &BTreeMap<String, Option<String>>) -> ApiResult<Self> {
        if changes.len() > 2 * MAX_LABELS {
            return Err(too_many());
        }
        for (key, value) in changes {
            validate_label(key, value.as_deref().unwrap_or(""))
                .map_err(|m| ApiError::validation(format!("labels: {m}")))?;
        }
        Ok(LabelChanges(changes.clone()))
    }

    /// Applies the changes to `labels`; refused when more than [`MAX_LABELS`] would remain.
    pub fn apply(self, labels: &mut BTreeMap<String, String>) -> ApiResult<()> {
        let mut merged = labels.clone();
        for (key, value) in self.0 {
            match value {
                Some(v) => merged.insert(key, v),
                None => merged.remove(&key),
            };
        }
        if merged.len() > MAX_LABELS {
            return Err(too_many());
        }
        *labels = merged;
        Ok(())
    }
}

fn too_many() -> ApiError {
    ApiError::validation(format!("a sandbox may have at most {MAX_LABELS} labels"))
}

/// The `label` query parameters as `(key, value)` pairs (every one must match).
pub fn selectors(raw: &[String]) -> ApiResult<Vec<(String, String)>> {
    if raw.len() > MAX_LABELS {
        return Err(ApiError::validation(format!(
            "at most {MAX_LABELS} label selectors"
        )));
    }
    raw.iter()
        .map(|s| parse_label_selector(s).map_err(|m| ApiError::validation(format!("label: {m}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn patch_merges_and_null_removes() {
        let mut labels = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ]);
        let changes = LabelChanges::merge(&map(&[("a", None), ("c", Some("3"))])).unwrap();
        changes.apply(&mut labels).unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ])
        );
    }

    #[test]
    fn the_count_is_bounded_after_merging() {
        let mut labels: BTreeMap<String, String> = (0..MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        let one_more = LabelChanges::merge(&map(&[("extra", Some("v"))])).unwrap();
        assert!(one_more.apply(&mut labels).is_err());
        assert_eq!(labels.len(), MAX_LABELS, "a refused change changes nothing");
        // Replacing one keeps the count.
        let swap = LabelChanges::merge(&map(&[("k0", None), ("extra", Some("v"))])).unwrap();
        swap.apply(&mut labels).unwrap();
        assert!(labels.contains_key("extra"));
    }

    #[test]
    fn bad_labels_and_selectors_are_refused() {
        assert!(LabelChanges::merge(&map(&[("bad key", Some("v"))])).is_err());
        assert!(selectors(&["env".to_owned()]).is_err());
        assert_eq!(
            selectors(&["env=prod".to_owned()]).unwrap(),
            [("env".to_owned(), "prod".to_owned())]
        );
    }
}
