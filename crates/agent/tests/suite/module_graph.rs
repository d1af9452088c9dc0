//! The agent's module graph, read from its sources: which module uses which (`crate::…`,
//! `super::…` and child-module paths, in `use` items and inline). It must have no cycle, and
//! only the top-level router may use the route modules (crate README, "Where does a new route
//! go").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`exec::session`; `""` for the crate root) → source text.
fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let rel = rel.to_str().unwrap();
            // main.rs is the binary, a crate of its own.
            if path.extension().is_none_or(|e| e != "rs") || rel == "main" {
                continue;
            }
            let name = match rel {
                "lib" => String::new(),
                _ => rel.trim_end_matches("/mod").replace('/', "::"),
            };
            modules.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    modules
}

/// The text without comments (line comments only; the sources use no block comments) and
/// without its unit tests (from `#[cfg(test)]` on: they close every file that has them, and
/// their `use super::*` means the file itself, not its parent).
fn code(text: &str) -> String {
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path in `code` that starts at one of `roots` (identifier → absolute segments), with
/// `{…}` groups expanded: `crate::{a, b::{c, d}}` gives `a`, `b::c`, `b::d`.
fn paths(code: &str, roots: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_ident(chars[i]) || (i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if let Some(base) = roots.get(&word)
            && chars.get(i..i + 2) == Some(&[':', ':'])
        {
            i = tail(&chars, i + 2, base.clone(), &mut found);
        }
    }
    found
}

/// Reads the rest of a path after `prefix::` from `i`; pushes each complete path; returns where
/// it stopped.
fn tail(chars: &[char], mut i: usize, prefix: Vec<String>, found: &mut Vec<Vec<String>>) -> usize {
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    i = skip_space(i);
    if chars.get(i) == Some(&'{') {
        i += 1;
        loop {
            i = skip_space(i);
            match chars.get(i) {
                None => return i,
                Some('}') => return i + 1,
                Some(',') => i += 1,
                Some(_) => {
                    let before = i;
                    i = tail(chars, i, prefix.clone(), found);
                    if i == before {
                        i += 1;
                    }
                }
            }
        }
    }
    let start = i;
    while i < chars.len() && is_ident(chars[i]) {
        i += 1;
    }
    let word: String = chars[start..i].iter().collect();
    let mut path = prefix;
    if !word.is_empty() && word != "self" && word != "*" {
        path.push(word);
    }
    if chars.get(i..i + 2) == Some(&[':', ':']) {
        return tail(chars, i + 2, path, found);
    }
    found.push(path);
    i
}

fn segments(module: &str) -> Vec<String> {
    module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The modules of the library: the crate root's `mod` items, theirs, and so on (a file no
/// `mod` item names, like the binary's own modules, is not part of it).
fn library() -> BTreeMap<String, String> {
    let files = sources();
    let mut modules = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(module) = todo.pop() {
        let Some(text) = files.get(&module) else {
            continue;
        };
        let code = code(text);
        for line in code.lines() {
            let line = line.trim_start().trim_start_matches("pub(crate) ");
            let line = line.trim_start_matches("pub ");
            if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                let mut child = segments(&module);
                child.push(name.to_owned());
                todo.push(child.join("::"));
            }
        }
        modules.insert(module, code);
    }
    modules
}

/// Module → the modules it uses (for each path it names, the longest prefix that is a module;
/// an item the crate root re-exports counts as its own module's).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = library();
    let resolve = |path: &[String]| -> String {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains_key(m))
            .unwrap_or_default()
    };
    // `pub use agent::Agent;` in lib.rs: `crate::Agent` is a use of `agent`.
    let children = |here: &[String]| -> BTreeMap<String, Vec<String>> {
        modules
            .keys()
            .map(|m| segments(m))
            .filter(|m| m.len() == here.len() + 1 && m.starts_with(here))
            .map(|m| (m[here.len()].clone(), m))
            .collect()
    };
    let root_items: BTreeMap<String, String> = paths(&modules[""], &children(&[]))
        .into_iter()
        .filter_map(|path| Some((path.last()?.clone(), resolve(&path))))
        .collect();
    let mut edges = BTreeMap::new();
    for (module, code) in modules.iter().filter(|(m, _)| !m.is_empty()) {
        let here = segments(module);
        let mut roots = children(&here);
        roots.insert("crate".to_owned(), Vec::new());
        roots.insert("self".to_owned(), here.clone());
        roots.insert("super".to_owned(), here[..here.len() - 1].to_vec());
        // A module brought into scope by name (`use crate::routes;`) roots paths too; repeat
        // until no new name appears.
        let found = loop {
            let found = paths(code, &roots);
            let before = roots.len();
            for path in &found {
                if let Some(name) = path
                    .last()
                    .filter(|_| modules.contains_key(&path.join("::")))
                {
                    roots.entry(name.clone()).or_insert_with(|| path.clone());
                }
            }
            if roots.len() == before {
                break found;
            }
        };
        let mut used = BTreeSet::new();
        for path in found {
            let mut target = resolve(&path);
            if target.is_empty() {
                match path.first().and_then(|item| root_items.get(item)) {
                    Some(owner) => target = owner.clone(),
                    None => continue,
                }
            }
            if target != *module {
                used.insert(target);
            }
        }
        edges.insert(module.clone(), used);
    }
    edges
}

/// A cycle through `module`, if one is reachable from it.
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    module: &str,
    stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = stack.iter().position(|m| m == module) {
        let mut cycle = stack[at..].to_vec();
        cycle.push(module.to_owned());
        return Some(cycle);
    }
    if done.contains(module) {
        return None;
    }
    stack.push(module.to_owned());
    for next in graph.get(module).into_iter().flatten() {
        if let Some(cycle) = find_cycle(graph, next, stack, done) {
            return Some(cycle);
        }
    }
    stack.pop();
    done.insert(module.to_owned());
    None
}

#[test]
fn the_module_graph_reads_the_sources() {
    let graph = graph();
    // Edges the sources are known to have, in each way of writing a path.
    for (from, to) in [
        ("http", "routes::exec"), // `routes::exec::routes()` through `use crate::routes`
        ("routes::files", "files"), // `use crate::{files, sse}`
        ("routes::files", "handler"), // `use crate::handler::{…}`
        ("watch", "watch::tree"), // `use tree::{…}` (a child)
        ("watch::tree", "watch::coalesce"), // `use super::coalesce::…`
        ("serve", "http"),
    ] {
        assert!(
            graph[from].contains(to),
            "{from} -> {to}: {:?}",
            graph[from]
        );
    }
}

#[test]
fn the_agent_has_no_module_cycle() {
    let graph = graph();
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let cycle = find_cycle(&graph, module, &mut Vec::new(), &mut done);
        assert_eq!(cycle, None, "module cycle");
    }
}

#[test]
fn only_the_router_uses_route_modules() {
    let is_route = |m: &str| m == "routes" || m.starts_with("routes::");
    for (from, used) in graph() {
        for to in used.iter().filter(|to| is_route(to)) {
            assert!(
                from == "http" || (from == "routes" && to.starts_with("routes::")),
                "{from} uses {to}: route modules are used by `http` only"
            );
        }
    }
}
