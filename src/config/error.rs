//! Config errors that name the file, line, column and field, and say what is accepted.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config or list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in (the YAML file or a list file it names).
    pub file: PathBuf,
    /// 1-based line; 0 when unknown.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
    /// The field, as a path: `rules[2].limit.rate`.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl ConfigError {
    /// `FILE:LINE:COL: field: ` then `tag` then the message; without a position (line 0),
    /// `FILE: field: `; a whole-file error ([`ConfigErrors::whole_file`]) is its message alone.
    fn write(&self, f: &mut fmt::Formatter<'_>, tag: &str) -> fmt::Result {
        let field = if self.field.is_empty() {
            "(top level)"
        } else {
            &self.field
        };
        match (self.line, self.field.is_empty()) {
            (0, true) => write!(f, "{tag}{}", self.message),
            (0, false) => write!(f, "{}: {field}: {tag}{}", self.file.display(), self.message),
            _ => write!(
                f,
                "{}:{}:{}: {field}: {tag}{}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            ),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, "")
    }
}

/// Something a valid config says that is almost never meant (a deny rule that matches every
/// request, a list entry covering every address): the config loads, `sekisho check` prints it
/// as `FILE:LINE:COL: field: warning: message`, `check --strict` fails on it, and `run` and
/// every reload log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub ConfigError);

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write(f, "warning: ")
    }
}

/// Every error found in one load, in file order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// One error about the whole file, not tied to a position or field (it cannot be read);
    /// its message names the file, as it is printed alone.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self(vec![ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: message.into(),
        }])
    }

    /// Whether this is one [`whole_file`](Self::whole_file) error: the file was not read, so
    /// there is nothing to count.
    pub fn is_whole_file(&self) -> bool {
        matches!(&self.0[..], [e] if e.line == 0 && e.field.is_empty())
    }
}

/// The field path at a position of a YAML text, for errors serde reports with a position only.
///
/// Works on block-style YAML (the shape of every shipped example) and on one level of flow
/// mapping (`match: { path_prefix: /x }`); it is a best effort that never fails, returning what
/// it could find.
pub fn field_path_at(text: &str, line: u64, column: u64) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(line_idx) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return String::new();
    };
    let Some(current) = lines.get(line_idx) else {
        return String::new();
    };
    let col0 = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
    let mut segments: Vec<String> = Vec::new();

    // The error's own line: its block key, and the flow keys before the column.
    let info = LineInfo::of(current);
    let mut threshold = col0 + 1;
    if let Some((k, key)) = info.key {
        if k <= col0 {
            // The last flow key before the column (one level of `{ }`), then the block key.
            if let Some((_, fkey)) = flow_keys(current)
                .into_iter()
                .rev()
                .find(|(fk, _)| *fk > k && *fk <= col0)
            {
                segments.push(fkey.to_string());
            }
            segments.push(key.to_string());
            threshold = k;
        }
    }
    if let Some(d) = info.dash {
        if d < threshold {
            segments.push(format!("[{}]", list_index(&lines, line_idx, d)));
            threshold = d;
        }
    }
    let mut same_col_key_ok = info.dash.is_some() && info.dash == Some(threshold);

    for idx in (0..line_idx).rev() {
        let info = LineInfo::of(lines[idx]);
        if info.blank {
            continue;
        }
        if let Some((k, key)) = info.key {
            let parent =
                k < threshold || (same_col_key_ok && info.dash.is_none() && k == threshold);
            if parent
                && info.dash.is_none_or(|d| d < threshold)
                && (info.dash.is_none() || k < threshold)
            {
                segments.push(key.to_string());
                threshold = k;
                same_col_key_ok = false;
            }
        }
        if let Some(d) = info.dash {
            if d < threshold {
                segments.push(format!("[{}]", list_index(&lines, idx, d)));
                threshold = d;
                same_col_key_ok = true;
            }
        }
        if threshold == 0 && !same_col_key_ok {
            break;
        }
    }
    segments.reverse();
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && !s.starts_with('[') {
            out.push('.');
        }
        out.push_str(&s);
    }
    out
}

/// The index of the list item starting at `idx` (a dash at column `d`) among its siblings.
fn list_index(lines: &[&str], idx: usize, d: usize) -> usize {
    let mut n = 0;
    for l in lines[..idx].iter().rev() {
        let info = LineInfo::of(l);
        if info.blank {
            continue;
        }
        match (info.dash, info.indent) {
            (Some(dd), _) if dd == d => n += 1,
            (Some(dd), _) if dd < d => break,
            (None, ind) if ind < d => break,
            (None, ind) if ind == d => break,
            _ => {}
        }
    }
    n
}

struct LineInfo<'a> {
    blank: bool,
    indent: usize,
    dash: Option<usize>,
    key: Option<(usize, &'a str)>,
}

impl<'a> LineInfo<'a> {
    fn of(line: &'a str) -> Self {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if rest.is_empty() || rest.starts_with('#') {
            return Self {
                blank: true,
                indent,
                dash: None,
                key: None,
            };
        }
        let (dash, kpos) = if rest == "-" || rest.starts_with("- ") {
            let after = &rest[1..];
            (
                Some(indent),
                indent + 1 + (after.len() - after.trim_start_matches(' ').len()),
            )
        } else {
            (None, indent)
        };
        Self {
            blank: false,
            indent,
            dash,
            key: key_at(line, kpos).map(|k| (kpos, k)),
        }
    }
}

/// A mapping key (`name:` followed by a space or the end) starting at byte `pos` of `line`.
fn key_at(line: &str, pos: usize) -> Option<&str> {
    let rest = line.get(pos..)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
        .unwrap_or(rest.len());
    if end == 0 {
        return None;
    }
    let after = &rest[end..];
    (after.starts_with(": ") || after == ":").then(|| &rest[..end])
}

/// Keys inside `{ ... }` on a line, with their byte positions.
fn flow_keys(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (i, c) in line.char_indices() {
        if c == '{' || c == ',' {
            let start = i + 1 + (line[i + 1..].len() - line[i + 1..].trim_start().len());
            if let Some(k) = key_at(line, start) {
                out.push((start, k));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listen: [\"0.0.0.0:8080\"]
client_ip:
  trusted_proxies: [\"10.0.0.0/8\"]
  ipv6_prefx: 64
rules:
  - name: login
    match: { path_prefix: /login, methods: [POST] }
    limit: { rate: 5/min, burst: 10 }
  - name: per-ip
    limit:
      rat: 5
lists:
- cidrs: x
";

    #[test]
    fn finds_block_paths() {
        assert_eq!(field_path_at(DOC, 4, 3), "client_ip.ipv6_prefx");
        assert_eq!(field_path_at(DOC, 11, 7), "rules[1].limit.rat");
        assert_eq!(field_path_at(DOC, 9, 11), "rules[1].name");
        assert_eq!(field_path_at(DOC, 1, 9), "listen");
        assert_eq!(field_path_at(DOC, 13, 3), "lists[0].cidrs");
    }

    #[test]
    fn finds_flow_keys() {
        // the value of rate on line 8
        assert_eq!(field_path_at(DOC, 8, 20), "rules[0].limit.rate");
        assert_eq!(field_path_at(DOC, 7, 44), "rules[0].match.methods");
    }

    #[test]
    fn an_error_without_a_position_is_printed_without_one() {
        let e = |line, field: &str| ConfigError {
            file: "s.yaml".into(),
            line,
            column: line,
            field: field.into(),
            message: "m".into(),
        };
        assert_eq!(e(3, "a.b").to_string(), "s.yaml:3:3: a.b: m");
        assert_eq!(e(3, "").to_string(), "s.yaml:3:3: (top level): m");
        assert_eq!(e(0, "rules").to_string(), "s.yaml: rules: m");
        assert_eq!(e(0, "").to_string(), "m");
        let whole = ConfigErrors::whole_file(Path::new("s.yaml"), "cannot read the config s.yaml");
        assert!(whole.is_whole_file());
        assert_eq!(whole.to_string(), "cannot read the config s.yaml");
        assert!(!ConfigErrors(vec![e(0, "rules")]).is_whole_file());
    }

    #[test]
    fn never_fails() {
        assert_eq!(field_path_at(DOC, 0, 0), "");
        assert_eq!(field_path_at(DOC, 99, 1), "");
        assert_eq!(field_path_at("", 1, 1), "");
    }
}
