//! Where the lines and columns of a prepared cell come from, so that stack traces can name
//! the user's positions.
//!
//! The REPL rewrite keeps every line where it was but moves columns (the prefix on line 1,
//! removed keywords, inserted assignments); TypeScript output has lines of its own. The maps
//! travel inside the prepared code as a last-line comment the Node executor reads:
//! `//# sandpitLines={"r":MAP,"t":MAP}`, first `r` (prepared code → JavaScript), then `t`
//! (JavaScript → TypeScript, TypeScript cells only). A MAP is `{"LINE":[SOURCE_LINE, COL,
//! SHIFT, COL, SHIFT, ...]}`: on 1-based line LINE, from 0-based column COL on, a position
//! comes from line SOURCE_LINE, SHIFT columns (UTF-16 units, V8's) further left. Lines a map
//! does not list are unchanged.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Marker the executor looks for on the last line of the code.
pub(crate) const MARKER: &str = "//# sandpitLines=";

/// Segments per generated line (0-based): its source line (0-based) and `(from, shift)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LineMap {
    lines: BTreeMap<u32, (u32, Vec<(u32, i64)>)>,
}

impl LineMap {
    /// From column `from` of generated line `line` on, positions come from `source_line`,
    /// `shift` columns to the left. Segments of a line are added left to right.
    pub(crate) fn segment(&mut self, line: u32, from: u32, source_line: u32, shift: i64) {
        let (_, segments) = self
            .lines
            .entry(line)
            .or_insert_with(|| (source_line, Vec::new()));
        match segments.last_mut() {
            Some((last_from, last_shift)) if *last_from == from => *last_shift = shift,
            Some((_, last_shift)) if *last_shift == shift => {}
            _ => segments.push((from, shift)),
        }
    }

    /// Gives generated lines without segments (lines of punctuation) the line after the
    /// source line of the line before them.
    pub(crate) fn fill_gaps(&mut self) {
        let Some(&last) = self.lines.keys().next_back() else {
            return;
        };
        let mut previous = None;
        for line in 0..=last {
            match self.lines.get(&line) {
                Some((source_line, _)) => previous = Some(*source_line),
                None => {
                    let source_line = previous.map_or(line, |p| p + 1);
                    self.lines.insert(line, (source_line, vec![(0, 0)]));
                    previous = Some(source_line);
                }
            }
        }
    }

    /// A map that changes no position.
    fn is_identity(&self) -> bool {
        self.lines.iter().all(|(line, (source_line, segments))| {
            line == source_line && segments.iter().all(|(_, shift)| *shift == 0)
        })
    }

    fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (line, (source_line, segments))) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\":[{}", line + 1, source_line + 1);
            for (from, shift) in segments {
                let _ = write!(out, ",{from},{shift}");
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// The comment for code rewritten by `repl` (and transpiled by `typescript`), or `None`
/// when every position is already the user's.
pub(crate) fn comment(repl: &LineMap, typescript: Option<&LineMap>) -> Option<String> {
    if repl.is_identity() && typescript.is_none_or(LineMap::is_identity) {
        return None;
    }
    let mut out = format!("{MARKER}{{\"r\":{}", repl.to_json());
    if let Some(typescript) = typescript {
        let _ = write!(out, ",\"t\":{}", typescript.to_json());
    }
    out.push('}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_positions_need_no_comment() {
        let mut map = LineMap::default();
        map.segment(0, 0, 0, 0);
        assert_eq!(comment(&map, None), None);
        map.segment(0, 5, 0, 3);
        assert_eq!(
            comment(&map, None).as_deref(),
            Some("//# sandpitLines={\"r\":{\"1\":[1,0,0,5,3]}}")
        );
    }

    #[test]
    fn gaps_follow_the_line_before() {
        let mut map = LineMap::default();
        map.segment(0, 1, 2, -1);
        map.segment(0, 9, 2, -1);
        map.segment(2, 2, 5, 2);
        map.fill_gaps();
        assert_eq!(
            map.to_json(),
            "{\"1\":[3,1,-1],\"2\":[4,0,0],\"3\":[6,2,2]}"
        );
    }
}
