//! The structure of a config file, before its values: every structural error of a file at
//! once (unknown keys, wrong types, unknown variants, missing fields) and every duplicate key
//! with both of its positions. The values are checked afterwards, by the
//! [`Validator`](super::Validator), and only when the structure is sound.
//!
//! serde stops at its first error. So on an error, the node it is in (a mapping entry or a
//! sequence item, found in the YAML event stream by [`tree`](super::tree)) is *neutralised*
//! in a copy of the text: turned into spaces, every line break kept, so that every other
//! position stays where it was. The copy is read again, up to [`MAX_ERRORS`] errors; where a
//! node cannot be neutralised, reading stops there. Duplicate keys come from the same event
//! stream, all of them, before serde reads anything.
//!
//! Why this and not a pre-pass checking keys against the structs' field names (taken from
//! serde by a capturing `Deserializer`)? A pre-pass finds unknown keys only: a wrong type or an
//! unknown variant would still come one per run, and it needs a second model of the schema
//! (`Option`, `Vec`, `Spanned`, renames) beside serde's. Here serde stays the only judge of the
//! schema and its messages; this module only decides where to look next.
//!
//! This module must not judge values: that is the validator's job.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::tree::{self, Kind, Pos, Tree};
use super::{field_path_at, suggest, ConfigError};

/// Structural errors reported at most; past this, reading stops.
pub const MAX_ERRORS: usize = 50;

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_depth: 32, max_nodes: 200_000 },
    }
}

fn de<T: DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// Reads `text` (from `file`) into `T`, or returns every structural error found, at least one,
/// each at its position in `text`.
pub fn read<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, Vec<ConfigError>> {
    let first = match de::<T>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let error = |at: Pos, field: String, message: String| ConfigError {
        file: file.to_path_buf(),
        line: at.line,
        column: at.col,
        field,
        message,
    };
    let Some(original) = Tree::parse(text) else {
        // Not YAML (or too deep to look at): the parser's one error, and the tabs it trips on.
        return Err(syntax_errors(text, &first)
            .into_iter()
            .map(|(at, message)| error(at, field_path_at(text, at.line, at.col), message))
            .collect());
    };

    let mut errors = Vec::new();
    let duplicates = original.duplicates();
    for d in &duplicates {
        errors.push(error(
            d.at,
            d.path.clone(),
            format!(
                "duplicate key {:?} (first given at line {}, column {})",
                d.key, d.first.line, d.first.col
            ),
        ));
    }
    let (mut work, mut next) = if duplicates.is_empty() {
        (text.to_string(), Some(first))
    } else {
        match tree::neutralise_duplicates(text, &duplicates) {
            Some(w) => {
                let next = de::<T>(&w).err();
                (w, next)
            }
            None => return Err(errors),
        }
    };
    // Keys taken out of a mapping (its owner's position, the key, whether for a bad value): a
    // "missing field" that follows from it (`name:` left empty; `rat:` for `rate:`) is the same
    // mistake, not reported twice.
    let mut removed: Vec<(Option<Pos>, String, bool)> = Vec::new();
    let mut last: Option<(Pos, String)> = None;
    while let Some(e) = next.take() {
        let Some((at, kind)) = problem(&e) else {
            if errors.is_empty() {
                let at = e
                    .location()
                    .map_or(Pos::at(0, 0), |l| Pos::at(l.line(), l.column()));
                errors.push(error(
                    at,
                    field_path_at(text, at.line, at.col),
                    message_of(&e),
                ));
            }
            break; // not a structural error, or one in a copy that stopped being YAML
        };
        let message = message_of(&e);
        if last.as_ref() == Some(&(at, message.clone())) {
            break; // no progress
        }
        last = Some((at, message.clone()));
        let Some(current) = Tree::parse(&work) else {
            break; // the copy stopped being YAML (an alias to a neutralised anchor)
        };
        let Some(found) = current.locate(at, &kind) else {
            errors.push(error(at, field_path_at(text, at.line, at.col), message));
            break; // the root's own (e.g. not a mapping): nothing to neutralise
        };
        let follows = |field: &str| {
            removed.iter().any(|(owner, key, bad_value)| {
                *owner == Some(found.owner)
                    && (key == field || (!bad_value && suggest::close(key, field)))
            })
        };
        if !matches!(&kind, Kind::Missing(field) if follows(field)) {
            // the path as the author wrote it (indices of items neutralised before count)
            let path = original
                .locate(at, &kind)
                .map_or_else(|| found.path.clone(), |f| f.path);
            errors.push(error(at, path, message));
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
        if let (Some(key), Kind::Key | Kind::Value) = (&found.key, &kind) {
            removed.push((found.parent_owner, key.clone(), kind == Kind::Value));
        }
        let Some(w) = tree::neutralise(&work, &found) else {
            break;
        };
        work = w;
        next = de::<T>(&work).err();
    }
    Err(errors)
}

/// Where a structural error is and what it is about; `None` for one that is not structural
/// (syntax, budget, several documents), where reading cannot go on.
fn problem(e: &serde_saphyr::Error) -> Option<(Pos, Kind)> {
    use serde_saphyr::Error as E;
    let l = e.location()?;
    let kind = match e.without_snippet() {
        E::SerdeUnknownField { .. } | E::DuplicateMappingKey { .. } => Kind::Key,
        E::SerdeMissingField { field, .. } => Kind::Missing((*field).to_string()),
        E::Budget { .. }
        | E::Eof { .. }
        | E::MultipleDocuments { .. }
        | E::ExternalMessage { .. }
        | E::InvalidUtf8Input
        | E::IOError { .. } => return None,
        _ => Kind::Value,
    };
    Some((Pos::at(l.line(), l.column()), kind))
}

/// The parser's message without its position, in our words where its own are a developer's.
fn message_of(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    match e.without_snippet() {
        E::NullIntoString { .. } => return "needs a value: it is empty".into(),
        E::DuplicateMappingKey { key: Some(k), .. } => return format!("duplicate key {k:?}"),
        E::DuplicateMappingKey { key: None, .. } => return "duplicate key".into(),
        E::MultipleDocuments { .. } => {
            return "a second YAML document (after `---`): a config is one document".into()
        }
        E::Unexpected { expected, .. } => match *expected {
            "sequence start" => return "expected a list ([a, b], or one `- item` a line)".into(),
            "mapping start" => return "expected a mapping (key: value)".into(),
            "string scalar" => return "expected a string, not a list or a mapping".into(),
            _ => {}
        },
        _ => {}
    }
    let mut message = e.without_snippet().to_string();
    if let Some(cut) = message.rfind(" at line ") {
        message.truncate(cut);
    }
    message
}

/// The errors of a text that is not YAML: serde's first error when it is structural (serde
/// reads as it parses, so it comes before the syntax error), the parser's error, and each tab
/// used for indentation (YAML forbids them, and parsers trip on them somewhere after the tab,
/// in words about something else). The parser's error is kept only when it comes before the
/// first such tab and does not name a tab: otherwise it is most likely about that tab.
fn syntax_errors(text: &str, first: &serde_saphyr::Error) -> Vec<(Pos, String)> {
    let first_at = first
        .location()
        .map_or(Pos::at(0, 0), |l| Pos::at(l.line(), l.column()));
    let mut out = Vec::new();
    let syntax = match tree::syntax_error(text) {
        Some((at, message)) => {
            if problem(first).is_some() && first_at.before(&at) {
                out.push((first_at, message_of(first)));
            }
            (at, message)
        }
        None => (first_at, message_of(first)),
    };
    let tabs = indentation_tabs(text);
    let about_a_tab = syntax.1.contains("tab");
    if !about_a_tab && tabs.first().is_none_or(|t| syntax.0.line < t.line) {
        out.push(syntax);
    }
    for t in tabs {
        out.push((t, "tab character used for indentation: use spaces".into()));
    }
    out
}

/// The first tab in the indentation of each line that has content.
fn indentation_tabs(text: &str) -> Vec<Pos> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let rest = line.trim_start_matches([' ', '\t']);
        if rest.trim().is_empty() {
            continue; // blank, or whitespace only
        }
        let indent = line.len() - rest.len();
        if let Some(col) = line[..indent].find('\t') {
            out.push(Pos::at(i as u64 + 1, col as u64 + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    /// What `sekisho check` would print for the structure of `text`, one line per error.
    fn errors(text: &str) -> Vec<String> {
        match read::<RawConfig>(text, Path::new("t.yaml")) {
            Ok(_) => Vec::new(),
            Err(mut e) => {
                e.sort_by_key(|e| (e.line, e.column));
                e.iter().map(ToString::to_string).collect()
            }
        }
    }

    const UNKNOWN: &str = "expected one of name, match, action, limit, response, mode";

    #[test]
    fn every_unknown_key_at_once() {
        let e = errors(
            "upstreams: [\"127.0.0.1:8000\"]\nlisten_on: x\nrules:\n  - name: a\n    colour: red\n    action: deny\n  - { name: b, action: deny, size: 3 }\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with("t.yaml:2:1: listen_on: unknown field `listen_on`"));
        assert_eq!(
            e[1],
            format!("t.yaml:5:5: rules[0].colour: unknown field `colour`, {UNKNOWN}")
        );
        assert_eq!(
            e[2],
            format!("t.yaml:7:30: rules[1].size: unknown field `size`, {UNKNOWN}")
        );
    }

    #[test]
    fn wrong_types_and_variants_at_once() {
        let e = errors(
            "upstreams: [\"127.0.0.1:8000\"]\nthreads: many\nwork_stealing: maybe\nrules:\n  - name: a\n    action: denny\n    mode: counted\nautoban:\n  - name: b\n    statuses: [404, x, 500]\nbans: off\n",
        );
        assert_eq!(
            e,
            [
                "t.yaml:2:10: threads: invalid u64",
                "t.yaml:3:16: work_stealing: invalid boolean",
                "t.yaml:6:13: rules[0].action: unknown variant `denny`, expected one of deny",
                "t.yaml:7:11: rules[0].mode: unknown variant `counted`, expected one of enforce, count",
                "t.yaml:10:21: autoban[0].statuses[1]: invalid u16",
                "t.yaml:11:7: bans: expected a mapping (key: value)",
            ]
        );
    }

    #[test]
    fn duplicate_keys_name_both_positions_and_are_all_found() {
        let e = errors(
            "upstreams: [\"127.0.0.1:1\"]\nrules:\n  - name: a\n    action: deny\n    name: b\n    response: { status: 403, status: 404 }\nupstreams: [\"127.0.0.1:2\"]\nthreads: x\n",
        );
        assert_eq!(
            e,
            [
                "t.yaml:5:5: rules[0].name: duplicate key \"name\" (first given at line 3, column 5)",
                "t.yaml:6:30: rules[0].response.status: duplicate key \"status\" (first given at line 6, column 17)",
                "t.yaml:7:1: upstreams: duplicate key \"upstreams\" (first given at line 1, column 1)",
                "t.yaml:8:10: threads: invalid u64",
            ]
        );
        // the same key quoted or not is the same key
        let e = errors("upstreams: [\"127.0.0.1:1\"]\n\"upstreams\": []\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.yaml:2:1: upstreams: duplicate key"));
    }

    #[test]
    fn a_missing_field_is_reported_on_its_mapping_once() {
        let e = errors(
            "upstreams: [\"127.0.0.1:1\"]\nrules:\n  - mode: count\n    limit:\n      rate: 1/s\n  - name:\n    action: deny\n  - name: c\n    limit: { rat: 1/s }\ndecision_log: { queue: 5 }\n",
        );
        assert_eq!(
            e,
            [
                "t.yaml:4:5: rules[0]: missing field `name`",
                "t.yaml:6:9: rules[1].name: needs a value: it is empty",
                "t.yaml:9:14: rules[2].limit.rat: unknown field `rat`, expected one of rate, burst, key, scope, consistency",
                "t.yaml:10:17: decision_log: missing field `path`",
            ],
            "the empty name and the misspelt rate are not reported again as missing"
        );
    }

    #[test]
    fn paths_count_items_as_written() {
        // rules[0] is neutralised first; the next error is still in rules[1]
        let e = errors(
            "upstreams: [\"127.0.0.1:1\"]\nrules:\n- colour: 1\n- name: b\n  colour: 2\n-\n  colour: 3\n",
        );
        assert_eq!(
            e,
            [
                format!("t.yaml:3:3: rules[0].colour: unknown field `colour`, {UNKNOWN}"),
                "t.yaml:3:3: rules[0]: missing field `name`".into(),
                format!("t.yaml:5:3: rules[1].colour: unknown field `colour`, {UNKNOWN}"),
                format!("t.yaml:7:3: rules[2].colour: unknown field `colour`, {UNKNOWN}"),
                "t.yaml:7:3: rules[2]: missing field `name`".into(),
            ]
        );
    }

    #[test]
    fn positions_stay_those_of_the_original_text() {
        // multi-byte characters before the error on its line, CRLF line ends
        let e = errors(
            "upstreams: [\"127.0.0.1:1\"]\r\nrules: [{name: \"日本語\", colour: red, bad: 1, action: deny}]\r\nthreads: x\r\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("t.yaml:2:23: rules[0].colour:"),
            "{}",
            e[0]
        );
        assert!(e[1].starts_with("t.yaml:2:36: rules[0].bad:"), "{}", e[1]);
        assert_eq!(e[2], "t.yaml:3:10: threads: invalid u64");
    }

    #[test]
    fn stops_at_the_bound() {
        let mut text = String::from("upstreams: [\"127.0.0.1:1\"]\n");
        for i in 0..80 {
            text.push_str(&format!("typo{i}: 1\n"));
        }
        assert_eq!(errors(&text).len(), MAX_ERRORS);
    }

    #[test]
    fn a_tab_is_reported_where_it_is() {
        let e = errors("upstreams: [\"127.0.0.1:1\"]\nrules:\n  - name: a\n\taction: deny\n");
        assert_eq!(
            e,
            ["t.yaml:4:1: rules: tab character used for indentation: use spaces"]
        );
        // an error before the tab is kept
        let e = errors("upstreams: [\"127.0.0.1:1\"\nrules:\n  - name: a\n  \taction: deny\n");
        assert_eq!(
            e,
            [
                "t.yaml:2:6: rules: illegal placement of ':' indicator",
                "t.yaml:4:3: rules[0]: tab character used for indentation: use spaces",
            ]
        );
        // tabs after the indentation are not indentation
        assert_eq!(indentation_tabs("a: 1\t# x\n  b:\tc\n\t\n"), []);
    }

    #[test]
    fn not_yaml_is_one_error_with_a_position() {
        let e = errors("upstreams: [\"127.0.0.1:1\"]\nrules: [\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.yaml:2:8: rules: "), "{}", e[0]);
        let e = errors("upstreams: []\n---\nthreads: 1\n");
        assert_eq!(
            e,
            ["t.yaml:3:1: threads: a second YAML document (after `---`): a config is one document"]
        );
    }

    #[test]
    fn no_panic_and_an_answer_on_broken_text() {
        // Every prefix of a config, and copies with a character dropped or doubled: structural
        // reading always ends, with errors or a config (values are not checked here).
        let text = include_str!("../../tests/check-errors/rules.yaml");
        let chars: Vec<char> = text.chars().collect();
        let mut variants: Vec<String> = Vec::new();
        for i in (0..chars.len()).step_by(3) {
            variants.push(chars[..i].iter().collect());
            let mut dropped = chars.clone();
            dropped.remove(i);
            variants.push(dropped.into_iter().collect());
            let mut doubled = chars.clone();
            doubled.insert(i, chars[i]);
            variants.push(doubled.into_iter().collect());
        }
        for v in &variants {
            if let Err(e) = read::<RawConfig>(v, Path::new("t.yaml")) {
                assert!(!e.is_empty() && e.len() <= MAX_ERRORS + 64, "{v}");
            }
        }
        // deep nesting is refused by the budget, not by a stack overflow
        let deep = format!("rules: {}{}\n", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(errors(&deep).len(), 1);
    }
}
