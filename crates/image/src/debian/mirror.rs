//! Reading the host's apt configuration: which mirror to bootstrap from and which sources the
//! image's own apt should use. Nothing is hardcoded: with no matching host entry we fall back to
//! debootstrap's built-in default mirror and the sources.list it writes.

use std::fs;
use std::path::Path;

/// One `deb` source (a deb822 paragraph or a one-line `deb` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// A keyring path, when given as one (embedded keys are not carried over).
    pub signed_by: Option<String>,
}

impl AptSource {
    /// Keeps only the suites of release `codename` (`bookworm`, `bookworm-updates`,
    /// `bookworm-security`, `bookworm/updates`); `None` if none is left.
    fn for_release(&self, codename: &str) -> Option<Self> {
        let suites: Vec<String> = self
            .suites
            .iter()
            .filter(|s| {
                s.as_str() == codename
                    || s.strip_prefix(codename)
                        .is_some_and(|r| r.starts_with(['-', '/']))
            })
            .cloned()
            .collect();
        let uris: Vec<String> = self
            .uris
            .iter()
            .filter(|u| usable_uri(u))
            .cloned()
            .collect();
        (!suites.is_empty() && !uris.is_empty()).then(|| Self {
            suites,
            uris,
            ..self.clone()
        })
    }
}

/// Schemes debootstrap and a plain apt can use without extra methods installed.
fn usable_uri(uri: &str) -> bool {
    ["http://", "https://", "file:/"]
        .iter()
        .any(|scheme| uri.starts_with(scheme))
}

/// Parses deb822 `.sources` text. Paragraphs whose `Types` lack `deb` or with `Enabled: no`
/// are skipped.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    for paragraph in text.split("\n\n").flat_map(|p| p.split("\r\n\r\n")) {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in paragraph.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // Continuation of a multi-line field (e.g. an embedded key).
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(line.trim());
                }
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                fields.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let words = |key: &str| -> Vec<String> {
            get(key)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        if !words("types").iter().any(|t| t == "deb") || get("enabled") == Some("no") {
            continue;
        }
        let signed_by = get("signed-by").filter(|v| v.starts_with('/') && !v.contains('\n'));
        sources.push(AptSource {
            uris: words("uris"),
            suites: words("suites"),
            components: words("components"),
            signed_by: signed_by.map(str::to_owned),
        });
    }
    sources
}

/// Parses one-line `sources.list` text (`deb [options] uri suite component...`).
pub fn parse_sources_list(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((options, rest)) => (options, rest),
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        let signed_by = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by="))
            .filter(|v| v.starts_with('/'))
            .map(str::to_owned);
        sources.push(AptSource {
            uris: vec![uri.to_owned()],
            suites: vec![suite.to_owned()],
            components: words.map(str::to_owned).collect(),
            signed_by,
        });
    }
    sources
}

/// The host's sources for release `codename`, from `/etc/apt/sources.list` and
/// `/etc/apt/sources.list.d/*.{list,sources}` under `etc_apt`.
pub(crate) fn host_sources(etc_apt: &Path, codename: &str) -> Vec<AptSource> {
    let mut all = Vec::new();
    if let Ok(text) = fs::read_to_string(etc_apt.join("sources.list")) {
        all.extend(parse_sources_list(&text));
    }
    let mut files: Vec<_> = fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => all.extend(parse_deb822(&text)),
            Some("list") => all.extend(parse_sources_list(&text)),
            _ => {}
        }
    }
    all.iter().filter_map(|s| s.for_release(codename)).collect()
}

/// The mirror to bootstrap `codename` from: the first URI of a source carrying the plain suite.
pub(crate) fn bootstrap_mirror(sources: &[AptSource], codename: &str) -> Option<String> {
    sources
        .iter()
        .find(|s| s.suites.iter().any(|suite| suite == codename))
        .and_then(|s| s.uris.first().cloned())
}

/// Renders sources as a deb822 file for the image. A `Signed-By` keyring is kept only if it
/// exists inside the image (`rootfs`), otherwise apt's default keyring applies.
pub(crate) fn render_deb822(sources: &[AptSource], rootfs: &Path) -> String {
    let mut out = String::new();
    for source in sources {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("Types: deb\n");
        out.push_str(&format!("URIs: {}\n", source.uris.join(" ")));
        out.push_str(&format!("Suites: {}\n", source.suites.join(" ")));
        let components = if source.components.is_empty() {
            "main".to_owned()
        } else {
            source.components.join(" ")
        };
        out.push_str(&format!("Components: {components}\n"));
        if let Some(keyring) = &source.signed_by
            && rootfs.join(keyring.trim_start_matches('/')).is_file()
        {
            out.push_str(&format!("Signed-By: {keyring}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: https://thirdparty.example/node
Suites: nodistro
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 abc
";

    #[test]
    fn parses_deb822_paragraphs() {
        let sources = parse_deb822(DEB822);
        assert_eq!(sources.len(), 3);
        assert_eq!(sources[0].uris, ["http://mirror.example/debian"]);
        assert_eq!(sources[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(sources[0].components, ["main", "contrib"]);
        assert_eq!(
            sources[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(sources[1].suites, ["bookworm-security"]);
        assert_eq!(sources[2].signed_by, None, "embedded keys are not a path");
    }

    #[test]
    fn parses_one_line_sources() {
        let text = "\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main non-free
deb-src http://mirror.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main # trailing
deb http://broken.example
";
        let sources = parse_sources_list(text);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].uris, ["http://mirror.example/debian"]);
        assert_eq!(sources[0].components, ["main", "non-free"]);
        assert_eq!(sources[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(sources[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn picks_release_sources_and_mirror() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(dir.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "deb http://other.example/ubuntu jammy main\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/x.list.disabled"),
            "deb http://no bookworm main\n",
        )
        .unwrap();
        let sources = host_sources(dir.path(), "bookworm");
        assert_eq!(sources.len(), 2, "{sources:?}");
        assert_eq!(
            bootstrap_mirror(&sources, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert!(host_sources(dir.path(), "trixie").is_empty());
    }

    #[test]
    fn security_only_hosts_have_no_mirror() {
        let sources = parse_deb822(
            "Types: deb\nURIs: http://security.example/x\nSuites: bookworm-security\nComponents: main\n",
        );
        let sources: Vec<_> = sources
            .iter()
            .filter_map(|s| s.for_release("bookworm"))
            .collect();
        assert_eq!(sources.len(), 1);
        assert_eq!(bootstrap_mirror(&sources, "bookworm"), None);
    }

    #[test]
    fn skips_unusable_uri_schemes() {
        let sources = parse_sources_list("deb cdrom:[Debian]/ bookworm main\n");
        assert!(
            sources
                .iter()
                .filter_map(|s| s.for_release("bookworm"))
                .next()
                .is_none()
        );
    }

    #[test]
    fn renders_deb822_with_existing_keyrings_only() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("usr/share/keyrings")).unwrap();
        std::fs::write(
            rootfs
                .path()
                .join("usr/share/keyrings/debian-archive-keyring.gpg"),
            "",
        )
        .unwrap();
        let mut sources = parse_deb822(DEB822);
        sources[1].signed_by = Some("/missing.gpg".into());
        let text = render_deb822(&sources[..2], rootfs.path());
        assert_eq!(
            text,
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
             Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             \nTypes: deb\nURIs: http://security.example/debian-security\n\
             Suites: bookworm-security\nComponents: main\n"
        );
        // The rendered file parses back to the same sources (minus the dropped keyring).
        assert_eq!(parse_deb822(&text)[0], sources[0]);
    }
}
