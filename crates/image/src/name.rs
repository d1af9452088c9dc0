//! Image name validation.

use crate::ImageError;

/// Checks an image name: `[a-z0-9][a-z0-9._-]{0,62}`. Names become directory names, so this
/// is what keeps `..`, `/` and hidden (`.tmp-*`) names out of the store.
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let invalid = |reason| {
        Err(ImageError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return invalid("must not be empty");
    };
    if name.len() > 63 {
        return invalid("must be at most 63 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return invalid("must start with a lowercase letter or digit");
    }
    let ok =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
    if !name.bytes().all(ok) {
        return invalid("may contain only a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn accepts_good_names() {
        for name in ["default", "a", "0", "py3.11", "my_image-2", &"a".repeat(63)] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "",
            ".",
            "..",
            ".tmp-x",
            "-a",
            "_a",
            "A",
            "a/b",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(validate_name(name).is_err(), "{name}");
        }
    }
}
