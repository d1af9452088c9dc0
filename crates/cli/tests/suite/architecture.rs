//! docs/ARCHITECTURE.md's crate dependency table is the map new contributors read first; this
//! keeps it equal to what the manifests say, so a new edge between crates cannot land unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `crate -> sandpit crates it depends on` from the table under "| crate | depends on |".
fn documented_edges(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    architecture
        .lines()
        .skip_while(|line| !line.starts_with("| crate | depends on |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let name = cells[0].trim_matches('`').to_string();
            let deps = cells[1]
                .split(',')
                .map(str::trim)
                .filter(|dep| !dep.is_empty() && *dep != "—")
                .map(String::from)
                .collect();
            (name, deps)
        })
        .collect()
}

/// The `sandpit-*` crates in a manifest's normal dependency sections (dev- and build-
/// dependencies are not part of the architecture).
fn manifest_edges(manifest: &str) -> BTreeSet<String> {
    let mut in_dependencies = false;
    let mut deps = BTreeSet::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            let section = line.trim_matches(|c| c == '[' || c == ']');
            in_dependencies = section == "dependencies" || section.ends_with(".dependencies");
            continue;
        }
        if let (true, Some(rest)) = (in_dependencies, line.strip_prefix("sandpit-")) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            deps.insert(name);
        }
    }
    deps
}

#[test]
fn the_architecture_table_lists_every_crate_and_its_dependencies() {
    let root = workspace_root();
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let documented = documented_edges(&architecture);
    assert!(
        documented.len() > 5,
        "dependency table not found: {documented:?}"
    );

    let mut actual = BTreeMap::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        actual.insert(name, manifest_edges(&manifest));
    }
    assert_eq!(
        documented, actual,
        "docs/ARCHITECTURE.md's dependency table (left) differs from the manifests (right)"
    );
}

#[test]
fn manifest_edges_skip_dev_dependencies() {
    let manifest = "[package]\nname = \"sandpit-x\"\n[dependencies]\nsandpit-protocol.workspace = true\n\
                    serde = \"1\"\n[target.'cfg(unix)'.dependencies]\nsandpit-isolation = { path = \"..\" }\n\
                    [dev-dependencies]\nsandpit-server = { path = \"..\" }\n";
    let expected: BTreeSet<String> = ["protocol", "isolation"].map(String::from).into();
    assert_eq!(manifest_edges(manifest), expected);
}
