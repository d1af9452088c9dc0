//! The error of [`crate::prepare_javascript`] and its source positions.

use oxc::diagnostics::OxcDiagnostic;

/// Why a cell cannot be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The source does not parse (or the TypeScript transform rejects it).
    /// `line` and `column` are 1-based; the column counts characters.
    #[error("SyntaxError: {message}{}", position(*line, *column))]
    Syntax {
        message: String,
        line: Option<u32>,
        column: Option<u32>,
    },
}

fn position(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        (Some(line), None) => format!(" (line {line})"),
        _ => String::new(),
    }
}

impl PrepareError {
    /// The first error among `diagnostics`, positioned in `source`.
    pub(crate) fn from_diagnostics<'d>(
        source: &str,
        diagnostics: impl IntoIterator<Item = &'d OxcDiagnostic>,
    ) -> Option<Self> {
        let first = diagnostics.into_iter().next()?;
        let offset = first
            .labels
            .iter()
            .find(|label| label.primary())
            .or_else(|| first.labels.first())
            .map(|label| label.offset());
        let (line, column) = match offset {
            Some(offset) => {
                let (line, column) = line_column(source, offset);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        let mut message = first.message.to_string();
        if let Some(help) = &first.help {
            message.push_str(". ");
            message.push_str(help);
        }
        Some(Self::Syntax {
            message,
            line,
            column,
        })
    }
}

/// 1-based line and character column of the byte `offset` in `source`.
pub(crate) fn line_column(source: &str, offset: u32) -> (u32, u32) {
    let mut end = (offset as usize).min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let source = "a\nbé c\n";
        assert_eq!(line_column(source, 0), (1, 1));
        assert_eq!(line_column(source, 2), (2, 1));
        // 'c' sits after the two-byte 'é' and a space: character column 4.
        assert_eq!(line_column(source, 6), (2, 4));
        assert_eq!(line_column(source, 999), (3, 1));
    }

    #[test]
    fn display_mentions_the_position() {
        let error = PrepareError::Syntax {
            message: "Unexpected token".into(),
            line: Some(3),
            column: Some(7),
        };
        assert_eq!(
            error.to_string(),
            "SyntaxError: Unexpected token (line 3, column 7)"
        );
    }
}
