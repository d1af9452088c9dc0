//! `edit_file`'s exact string replacement: the edit applies only when the string to replace is
//! there, and (unless every occurrence is wanted) only once, so a model never edits a place it
//! did not mean.

use crate::error::ToolError;

/// `content` with `old` replaced by `new`: the one occurrence, or all with `replace_all`.
/// Returns the new content and how many occurrences were replaced.
pub fn replace_exact(
    content: &str,
    old: &str,
    new: &str,
    replace_all: bool,
) -> Result<(String, usize), ToolError> {
    if old.is_empty() {
        return Err(ToolError::Invalid(
            "old_string is empty: give the exact text to replace".into(),
        ));
    }
    if old == new {
        return Err(ToolError::Invalid(
            "old_string and new_string are the same: nothing would change".into(),
        ));
    }
    let count = content.matches(old).count();
    match count {
        0 => Err(ToolError::Invalid(
            "old_string was not found in the file (it must match exactly, including whitespace \
             and indentation; read the file first)"
                .into(),
        )),
        1 => Ok((content.replacen(old, new, 1), 1)),
        n if replace_all => Ok((content.replace(old, new), n)),
        n => Err(ToolError::Invalid(format!(
            "old_string occurs {n} times in the file: add surrounding lines to make it unique, \
             or set replace_all to replace every occurrence"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: ToolError) -> String {
        e.to_string()
    }

    #[test]
    fn one_occurrence_is_replaced() {
        let (out, n) = replace_exact("a = 1\nb = 2\n", "b = 2", "b = 3", false).unwrap();
        assert_eq!((out.as_str(), n), ("a = 1\nb = 3\n", 1));
    }

    #[test]
    fn a_missing_string_fails_clearly() {
        let e = replace_exact("a = 1\n", "a = 2", "a = 3", false).unwrap_err();
        assert!(message(e).contains("not found"));
    }

    #[test]
    fn an_ambiguous_string_fails_unless_all_are_wanted() {
        let e = replace_exact("x\nx\n", "x", "y", false).unwrap_err();
        assert!(message(e).contains("occurs 2 times"));
        let (out, n) = replace_exact("x\nx\n", "x", "y", true).unwrap();
        assert_eq!((out.as_str(), n), ("y\ny\n", 2));
    }

    #[test]
    fn empty_and_no_op_edits_are_refused() {
        assert!(replace_exact("x", "", "y", false).is_err());
        assert!(replace_exact("x", "x", "x", false).is_err());
    }
}
