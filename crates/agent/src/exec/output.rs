//! Command output at the byte level: which stream bytes came from, the async reader of a
//! child's pipe, finding the end-of-command marker in a pipe stream, capping buffered output,
//! and cutting UTF-8 at character boundaries.

use std::os::fd::OwnedFd;

use tokio::net::unix::pipe;

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Wraps the parent end of a child's output pipe for async reads.
pub fn reader(fd: impl Into<OwnedFd>) -> std::io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd.into())
}

/// Finds `marker` in a byte stream fed in arbitrary chunks. Bytes before the marker are released
/// as soon as they cannot be the start of the marker, so streaming output is not delayed.
#[derive(Debug)]
pub struct MarkerScanner {
    marker: Vec<u8>,
    pending: Vec<u8>,
    found: bool,
}

/// What one [`MarkerScanner::feed`] produced.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    /// Output bytes that are certainly before the marker.
    pub output: Vec<u8>,
    /// Set when the marker was seen; the bytes that followed it in the stream.
    pub after_marker: Option<Vec<u8>>,
}

impl MarkerScanner {
    pub fn new(marker: &[u8]) -> Self {
        MarkerScanner {
            marker: marker.to_vec(),
            pending: Vec::new(),
            found: false,
        }
    }

    /// True once the marker was seen.
    pub fn found(&self) -> bool {
        self.found
    }

    /// Feeds a chunk. After the marker was found, further input is returned as `after_marker`.
    pub fn feed(&mut self, chunk: &[u8]) -> Scan {
        if self.found {
            return Scan {
                output: Vec::new(),
                after_marker: Some(chunk.to_vec()),
            };
        }
        self.pending.extend_from_slice(chunk);
        if let Some(at) = find(&self.pending, &self.marker) {
            self.found = true;
            let after = self.pending.split_off(at + self.marker.len());
            self.pending.truncate(at);
            return Scan {
                output: std::mem::take(&mut self.pending),
                after_marker: Some(after),
            };
        }
        let keep = longest_suffix_prefix(&self.pending, &self.marker);
        let tail = self.pending.split_off(self.pending.len() - keep);
        Scan {
            output: std::mem::replace(&mut self.pending, tail),
            after_marker: None,
        }
    }

    /// Bytes held back because they might start the marker (released when the stream ends
    /// without one).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(pos) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + pos;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        if haystack.len() - at < needle.len() {
            return None;
        }
        from = at + 1;
    }
    None
}

/// Length of the longest proper prefix of `marker` that `data` ends with.
fn longest_suffix_prefix(data: &[u8], marker: &[u8]) -> usize {
    let max = marker.len().saturating_sub(1).min(data.len());
    (1..=max)
        .rev()
        .find(|&k| data.ends_with(&marker[..k]))
        .unwrap_or(0)
}

/// A buffer that keeps at most `cap` bytes and counts what it dropped.
#[derive(Debug)]
pub struct CappedBuffer {
    cap: usize,
    data: Vec<u8>,
    dropped: u64,
}

impl CappedBuffer {
    pub fn new(cap: usize) -> Self {
        CappedBuffer {
            cap,
            data: Vec::new(),
            dropped: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.data.len());
        let take = room.min(bytes.len());
        self.data.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }

    /// The kept bytes as base64 (what was dropped is only reported by [`Self::truncated`]).
    pub fn into_base64(self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.data)
    }

    /// The kept bytes as (lossy) UTF-8, with a note when output was dropped.
    pub fn into_string(self) -> String {
        let mut text = String::from_utf8_lossy(&self.data).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!(
                "\n[sandpit: output truncated, {} bytes dropped]",
                self.dropped
            ));
        }
        text
    }
}

/// Turns a byte stream into UTF-8 text chunks without splitting a character across chunks:
/// an incomplete sequence at the end of a chunk is carried into the next one.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    carry: Vec<u8>,
}

impl Utf8Carry {
    /// Text for `bytes` (invalid sequences replaced), keeping a trailing incomplete character.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let cut = complete_prefix_len(&self.carry);
        let rest = self.carry.split_off(cut);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        text
    }

    /// Whatever is still carried (an incomplete character at end of stream).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

/// Length of `bytes` without a trailing, possibly incomplete UTF-8 sequence (at most 3 bytes).
pub fn complete_prefix_len(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=3.min(len) {
        let b = bytes[len - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return len, // ASCII or invalid lead: nothing to carry
        };
        return if needed > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_split_across_chunks() {
        let mut s = MarkerScanner::new(b"__END__");
        let a = s.feed(b"hello __E");
        assert_eq!(a.output, b"hello ");
        assert!(a.after_marker.is_none());
        let b = s.feed(b"ND__tail");
        assert_eq!(b.output, b"");
        assert_eq!(b.after_marker.as_deref(), Some(&b"tail"[..]));
        assert!(s.found());
    }

    #[test]
    fn false_prefix_is_released() {
        let mut s = MarkerScanner::new(b"__END__");
        assert_eq!(s.feed(b"a__E").output, b"a");
        assert_eq!(s.feed(b"x").output, b"__Ex");
        let end = s.feed(b"no newline__END__");
        assert_eq!(end.output, b"no newline");
    }

    #[test]
    fn capped_buffer_counts_dropped() {
        let mut b = CappedBuffer::new(4);
        b.push(b"abc");
        b.push(b"defg");
        assert!(b.truncated());
        assert_eq!(
            b.into_string(),
            "abcd\n[sandpit: output truncated, 3 bytes dropped]"
        );
    }

    #[test]
    fn utf8_carry_keeps_characters_whole() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut c = Utf8Carry::default();
        assert_eq!(c.push(&[b'a', euro[0]]), "a");
        assert_eq!(c.push(&euro[1..2]), "");
        assert_eq!(c.push(&[euro[2], b'b']), "€b");
        assert_eq!(c.push(&[0xff, b'c']), "\u{fffd}c");
        assert_eq!(c.push(&[0xF0, 0x9F]), "");
        assert_eq!(c.finish(), "\u{fffd}");
    }
}
