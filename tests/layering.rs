//! Dependencies point down (`../shared/DESIGN.md`): `config` builds the engine's, the defense's
//! and the geo loader's types, and nothing below it imports `config`; the top-level modules of
//! `src/` form no cycle.
//!
//! Read from the source text: a module depends on another where its non-test code names
//! `crate::other` (in a `use`, a path or a doc link). Test code (`tests.rs`, and everything from
//! a file's `#[cfg(test)]` on) may reach upward: it builds configs to test the engine with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that must never import `config`.
const BELOW_CONFIG: &[&str] = &[
    "engine", "limiter", "iplist", "geo", "defense", "metrics", "conn", "tls", "cluster",
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The non-test part of a source file.
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The modules `text` names as `crate::m` or `crate::{m, n::x}`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let mut depth = 0usize;
            let mut start = 0usize;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// Top-level module → the modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src/");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
            .expect("a file name");
        if top == "lib" || top == "main" || f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("a readable source file");
        let deps = g.entry(top.clone()).or_default();
        for m in named_modules(non_test(&text)) {
            if m != top {
                deps.insert(m);
            }
        }
    }
    g
}

/// A cycle in `g`, if there is one, as the modules along it.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn nothing_below_config_imports_it() {
    let g = graph();
    for m in BELOW_CONFIG {
        let deps = g
            .get(*m)
            .unwrap_or_else(|| panic!("src/{m} is missing: update BELOW_CONFIG"));
        assert!(
            !deps.contains("config"),
            "src/{m} imports crate::config; config builds {m}'s types, so {m} must not know it (deps: {deps:?})"
        );
    }
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(g.len() > 10, "too few modules found: {g:?}");
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn the_reader_sees_grouped_and_nested_imports() {
    let m = named_modules(
        "use crate::{config::{self, Config}, engine::Mode};\nlet x = crate::geo::GeoDb::open(p);",
    );
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        vec!["config".to_string(), "engine".into(), "geo".into()]
    );
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".to_string(), "b".into(), "a".into()])
    );
}
