//! Include/exclude glob patterns of a watch. A pattern matches a path (relative to the watched
//! root) when it matches one or more whole consecutive segments of it, like the seed's
//! `(^|/)<glob>(/|$)` regular expression: `*` and `?` stay within a segment, `**` crosses
//! segments. So `node_modules` excludes everything below any `node_modules` directory and
//! `*.ts` includes every TypeScript file.

/// Excluded when the request names neither `include` nor `exclude`.
pub const DEFAULT_EXCLUDES: [&str; 3] = [".git", "node_modules", ".DS_Store"];

/// Which paths a watch reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Only paths matching one of these.
    Include(Vec<String>),
    /// Every path except those matching one of these.
    Exclude(Vec<String>),
}

impl Filter {
    /// Whether a change at `rel` (relative to the root; empty for the root) is reported.
    pub fn reports(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return true;
        }
        match self {
            Filter::Include(patterns) => patterns.iter().any(|p| matches_segments(p, rel)),
            Filter::Exclude(patterns) => !patterns.iter().any(|p| matches_segments(p, rel)),
        }
    }

    /// Whether directory `rel` gets a watch of its own (excluded trees are not watched at all;
    /// include patterns do not prune, files below any directory may match).
    pub fn descends(&self, rel: &str) -> bool {
        match self {
            Filter::Include(_) => true,
            Filter::Exclude(_) => self.reports(rel),
        }
    }
}

/// Whether `pattern` matches a run of whole segments of `path`.
pub fn matches_segments(pattern: &str, path: &str) -> bool {
    let text = path.as_bytes();
    std::iter::once(0)
        .chain(path.match_indices('/').map(|(i, _)| i + 1))
        .any(|start| {
            let ends = reachable(pattern.as_bytes(), text, start);
            (start..=text.len()).any(|j| ends[j] && (j == text.len() || text[j] == b'/'))
        })
}

/// The text positions where a match of `pattern` starting at `start` can end: `**` any bytes,
/// `*` any bytes but `/`, `?` one byte but `/`. A set simulation, linear in the pattern length
/// times the text length (no backtracking blow-up on patterns like `*a*a*a*b`).
fn reachable(pattern: &[u8], text: &[u8], start: usize) -> Vec<bool> {
    let n = text.len();
    let mut set = vec![false; n + 1];
    set[start] = true;
    let mut i = 0;
    while i < pattern.len() {
        let mut next = vec![false; n + 1];
        match pattern[i] {
            b'*' if pattern.get(i + 1) == Some(&b'*') => {
                if let Some(first) = set.iter().position(|&s| s) {
                    next[first..].iter_mut().for_each(|s| *s = true);
                }
                i += 1;
            }
            b'*' => {
                let mut open = false;
                for j in 0..=n {
                    open |= set[j];
                    next[j] = open;
                    if j < n && text[j] == b'/' {
                        open = false;
                    }
                }
            }
            c => {
                for j in 0..n {
                    if set[j] && (text[j] == c || (c == b'?' && text[j] != b'/')) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        set = next;
        i += 1;
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        assert!(matches_segments(".git", ".git"));
        assert!(matches_segments(".git", ".git/objects/ab"));
        assert!(matches_segments(".git", "sub/.git/HEAD"));
        assert!(!matches_segments(".git", ".gitignore"));
        assert!(!matches_segments(".git", "a.git"));
        assert!(matches_segments("*.txt", "a.txt"));
        assert!(matches_segments("*.txt", "d/e/a.txt"));
        assert!(!matches_segments("*.txt", "a.txt.bak"));
        assert!(matches_segments("src/*.rs", "src/a.rs"));
        assert!(!matches_segments("src/*.rs", "src/x/a.rs"));
        assert!(matches_segments("src/**/*.rs", "src/x/y/a.rs"));
        assert!(matches_segments("a?c", "x/abc"));
        assert!(!matches_segments("a?c", "a/c"));
    }

    #[test]
    fn include_and_exclude() {
        let ex = Filter::Exclude(DEFAULT_EXCLUDES.map(String::from).into());
        assert!(ex.reports("src/main.rs"));
        assert!(!ex.reports("node_modules/x/index.js"));
        assert!(!ex.reports(".DS_Store"));
        assert!(!ex.descends("node_modules"));
        assert!(ex.reports(""));
        let inc = Filter::Include(vec!["*.md".into()]);
        assert!(inc.reports("docs/a.md"));
        assert!(!inc.reports("docs"));
        assert!(inc.descends("docs"));
    }
}
