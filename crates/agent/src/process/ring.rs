//! A bounded byte log: keeps the newest `cap` bytes of a stream and counts what it dropped.
//! Positions are absolute (bytes written since the start), so readers can follow the log with
//! a cursor and notice when they fell behind.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct RingBuffer {
    buf: VecDeque<u8>,
    cap: usize,
    dropped: u64,
}

impl RingBuffer {
    pub fn new(cap: usize) -> Self {
        RingBuffer {
            buf: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Appends `bytes`, dropping the oldest bytes beyond the cap.
    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.cap {
            let skip = bytes.len() - self.cap;
            self.dropped += skip as u64;
            &bytes[skip..]
        } else {
            bytes
        };
        let over = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.dropped += over as u64;
        self.buf.extend(bytes);
    }

    /// Bytes dropped from the front so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes kept.
    pub fn kept(&self) -> usize {
        self.buf.len()
    }

    /// Bytes written so far (kept and dropped): the position of the end of the log.
    pub fn end(&self) -> u64 {
        self.dropped + self.buf.len() as u64
    }

    /// The bytes from position `from` to the end (from the oldest kept byte if `from` was
    /// dropped already).
    pub fn since(&self, from: u64) -> Vec<u8> {
        let start = from.saturating_sub(self.dropped).min(self.buf.len() as u64) as usize;
        self.buf.range(start..).copied().collect()
    }

    /// Everything kept, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_and_counts_the_rest() {
        let mut r = RingBuffer::new(4);
        r.push(b"ab");
        assert_eq!((r.text().as_str(), r.dropped(), r.end()), ("ab", 0, 2));
        r.push(b"cde");
        assert_eq!((r.text().as_str(), r.dropped(), r.end()), ("bcde", 1, 5));
        r.push(b"0123456");
        assert_eq!((r.text().as_str(), r.dropped(), r.end()), ("3456", 8, 12));
    }

    #[test]
    fn cursors_follow_and_skip_dropped_bytes() {
        let mut r = RingBuffer::new(4);
        r.push(b"abc");
        assert_eq!(r.since(0), b"abc");
        assert_eq!(r.since(2), b"c");
        assert_eq!(r.since(3), b"");
        r.push(b"defg");
        // Position 1 was dropped: the reader resumes at the oldest kept byte.
        assert_eq!(r.since(1), b"defg");
        assert_eq!(r.since(5), b"fg");
    }
}
