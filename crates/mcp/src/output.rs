//! Keeping long output out of a model's context: a clipped view (head and tail, where errors
//! usually are) plus a note saying what was left out.

/// Most bytes of one output stream shown inline in a tool result.
pub const INLINE_LIMIT: usize = 16 * 1024;
/// Of a clipped stream, this many bytes of its start are shown; the rest of the view is its end.
const HEAD: usize = 4 * 1024;

/// Text bounded to [`INLINE_LIMIT`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clipped {
    pub text: String,
    /// Bytes of the middle that are not in `text` (0: nothing was cut).
    pub omitted: usize,
}

/// `text` itself if short, else its first [`HEAD`] and last `INLINE_LIMIT - HEAD` bytes (cut at
/// character boundaries) around a marker line.
pub fn clip(text: &str) -> Clipped {
    if text.len() <= INLINE_LIMIT {
        return Clipped {
            text: text.to_owned(),
            omitted: 0,
        };
    }
    let head_end = floor_boundary(text, HEAD);
    let tail_start = ceil_boundary(text, text.len() - (INLINE_LIMIT - HEAD));
    let omitted = tail_start - head_end;
    Clipped {
        text: format!(
            "{}\n[... {omitted} bytes omitted ...]\n{}",
            &text[..head_end],
            &text[tail_start..]
        ),
        omitted,
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(clip("hello\n").text, "hello\n");
        assert_eq!(clip("hello\n").omitted, 0);
    }

    #[test]
    fn long_text_keeps_head_and_tail_within_the_limit() {
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let clipped = clip(&text);
        assert!(clipped.text.starts_with("line 0\n"));
        assert!(clipped.text.ends_with("line 19999\n"));
        assert!(clipped.text.contains("bytes omitted"));
        assert_eq!(clipped.omitted + INLINE_LIMIT, text.len());
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let text = "é".repeat(INLINE_LIMIT);
        let clipped = clip(&text);
        assert!(clipped.omitted > 0);
        assert!(clipped.text.chars().all(|c| c == 'é' || c.is_ascii()));
    }
}
