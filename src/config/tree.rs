//! A YAML document as nodes with exact spans, read from the event stream of `granit-parser`
//! (serde-saphyr's own parser, which it re-exports), for [`structure`](super::structure): the
//! mapping entry or sequence item a position is in, its field path, every duplicate key, and
//! how to neutralise a node in a copy of the text without moving anything else.
//!
//! It reads no values and judges nothing; it never fails (a text it cannot look at gives
//! `None`) and bounds what it builds (depth and events).

use serde_saphyr::granit_parser::{Event, Marker, Parser, StructureStyle};

/// Trees deeper than this are not built (serde's own budget stops at 32).
const MAX_DEPTH: usize = 64;

/// Events read at most for one tree (serde's own budget stops at 200,000 nodes).
const MAX_EVENTS: usize = 400_000;

/// A position: 1-based line and column (in characters), as serde-saphyr reports them, and the
/// byte offset in the text the tree was read from. Positions are equal when their line and
/// column are: those stay the same in a neutralised copy, byte offsets need not.
#[derive(Debug, Clone, Copy)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
    byte: usize,
}

impl PartialEq for Pos {
    fn eq(&self, other: &Self) -> bool {
        (self.line, self.col) == (other.line, other.col)
    }
}

impl Pos {
    /// A position as an error gives it.
    pub fn at(line: u64, col: u64) -> Self {
        Self { line, col, byte: 0 }
    }

    pub fn before(&self, other: &Pos) -> bool {
        (self.line, self.col) < (other.line, other.col)
    }
}

/// What an error at a position is about, which decides the node it is in.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A key (an unknown field): the entry whose key is at the position.
    Key,
    /// A missing field: the mapping around the position (serde-saphyr points at its last key).
    Missing(String),
    /// A value (wrong type, unknown variant, bad scalar): the outermost node at the position.
    Value,
}

/// Where an error is.
#[derive(Debug)]
pub struct Found {
    /// `rules[2].limit.rate`.
    pub path: String,
    /// The key, when the unit is a mapping entry.
    pub key: Option<String>,
    /// Where the unit starts (an entry's key, a block item's dash); it does not move when
    /// siblings or children are neutralised.
    pub owner: Pos,
    /// The owner of the collection the unit is in (`None`: the document's root).
    pub parent_owner: Option<Pos>,
    /// The unit, then the units around it: where a unit cannot be neutralised on its own (a
    /// block sequence's only item on a line of its own), the next one is.
    units: Vec<Unit>,
}

/// A key given again in the same mapping.
pub struct Duplicate {
    pub key: String,
    pub path: String,
    /// This occurrence.
    pub at: Pos,
    /// The first one.
    pub first: Pos,
    unit: Unit,
}

/// One YAML node: where it starts and ends in the text, and what it holds.
#[derive(Debug)]
struct Node {
    start: Pos,
    /// Exclusive; for a block collection, where the next token starts.
    end: Pos,
    /// Where the node starts as a sequence item: its dash in a block sequence, else `start`.
    lead: Pos,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// A scalar (or an alias), with its value.
    Scalar(String),
    Map {
        flow: bool,
        entries: Vec<(Node, Node)>,
    },
    Seq {
        flow: bool,
        items: Vec<Node>,
    },
}

impl Node {
    fn new(start: Pos, end: Pos, body: Body) -> Self {
        Self {
            start,
            end,
            lead: start,
            body,
        }
    }

    fn contains(&self, p: Pos) -> bool {
        self.start == p || (!p.before(&self.start) && p.before(&self.end))
    }

    fn is_block_collection(&self) -> bool {
        matches!(
            self.body,
            Body::Map { flow: false, .. } | Body::Seq { flow: false, .. }
        )
    }

    fn is_map(&self) -> bool {
        matches!(self.body, Body::Map { .. })
    }
}

/// A mapping entry (key start to value end) or a sequence item (from its dash in a block
/// sequence), as a byte range of the text the tree was read from.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    /// The value (or item) is a block collection: its end is where the next token starts.
    block_collection: bool,
    /// In a flow collection (`{ }` or `[ ]`): its comma goes with it.
    flow: bool,
    /// The only child of its collection; in a block collection it is replaced by `fill`.
    only: bool,
    /// `{}` for an entry, `[]` for an item.
    fill: &'static str,
}

/// The document's root node.
pub struct Tree {
    root: Node,
}

enum Frame {
    Map {
        start: Pos,
        flow: bool,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
    Seq {
        start: Pos,
        flow: bool,
        items: Vec<Node>,
    },
}

fn pos(m: &Marker) -> Option<Pos> {
    Some(Pos {
        line: u64::try_from(m.line()).ok()?,
        col: u64::try_from(m.col()).ok()?.checked_add(1)?,
        byte: m.byte_offset()?,
    })
}

impl Tree {
    /// The one document of `text`; `None` when it is not YAML (see [`syntax_error`]), is
    /// empty, holds more than one document, or is deeper or larger than this module looks at.
    pub fn parse(text: &str) -> Option<Tree> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<Node> = None;
        let mut documents = 0;
        for (n, ev) in Parser::new_from_str(text).enumerate() {
            if n > MAX_EVENTS {
                return None;
            }
            let (event, span) = ev.ok()?;
            let node = match event {
                Event::DocumentStart(..) => {
                    documents += 1;
                    if documents > 1 {
                        return None;
                    }
                    continue;
                }
                Event::Scalar(v, ..) => Node::new(
                    pos(&span.start)?,
                    pos(&span.end)?,
                    Body::Scalar(v.into_owned()),
                ),
                Event::Alias(..) => Node::new(
                    pos(&span.start)?,
                    pos(&span.end)?,
                    Body::Scalar(String::new()),
                ),
                Event::MappingStart(style, ..) | Event::SequenceStart(style, ..) => {
                    if stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    let start = pos(&span.start)?;
                    let flow = style == StructureStyle::Flow;
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map {
                            start,
                            flow,
                            entries: Vec::new(),
                            key: None,
                        }
                    } else {
                        Frame::Seq {
                            start,
                            flow,
                            items: Vec::new(),
                        }
                    });
                    continue;
                }
                Event::MappingEnd => match stack.pop()? {
                    Frame::Map {
                        start,
                        flow,
                        entries,
                        key: None,
                    } => Node::new(start, pos(&span.end)?, Body::Map { flow, entries }),
                    _ => return None,
                },
                Event::SequenceEnd => match stack.pop()? {
                    Frame::Seq { start, flow, items } => {
                        Node::new(start, pos(&span.end)?, Body::Seq { flow, items })
                    }
                    _ => return None,
                },
                _ => continue,
            };
            match stack.last_mut() {
                None if root.is_none() => root = Some(node),
                None => return None,
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                },
                Some(Frame::Seq { items, flow, .. }) => {
                    let mut node = node;
                    if !*flow {
                        node.lead = dash_before(text, &node)?;
                    }
                    items.push(node);
                }
            }
        }
        if !stack.is_empty() {
            return None;
        }
        root.map(|root| Tree { root })
    }

    /// The entry or item an error of `kind` at `p` is in; `None` when it is the root's own.
    pub fn locate(&self, p: Pos, kind: &Kind) -> Option<Found> {
        locate_in(&self.root, None, "", p, kind, 0)
    }

    /// Every key given again in its mapping, in document order.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut out = Vec::new();
        duplicates_in(&self.root, "", &mut out, 0);
        out
    }
}

/// The YAML parser's error for `text`, if it has one: where and what.
pub fn syntax_error(text: &str) -> Option<(Pos, String)> {
    for ev in Parser::new_from_str(text).take(MAX_EVENTS) {
        if let Err(e) = ev {
            let m = e.marker();
            let at = Pos::at(
                u64::try_from(m.line()).ok()?,
                u64::try_from(m.col()).ok()? + 1,
            );
            return Some((at, e.info()));
        }
    }
    None
}

/// `text` (the text the tree was read from) with `found`'s unit neutralised: its characters
/// turned into spaces, line breaks kept, so every other node keeps its line and column.
/// `None` when neither it nor a unit around it can be.
pub fn neutralise(text: &str, found: &Found) -> Option<String> {
    let c = found.units.iter().find_map(|u| cut(text, *u))?;
    Some(blank(text, &[c]))
}

/// `text` with every duplicate neutralised; `None` when one cannot be.
pub fn neutralise_duplicates(text: &str, duplicates: &[Duplicate]) -> Option<String> {
    let cuts = duplicates
        .iter()
        .map(|d| cut(text, d.unit))
        .collect::<Option<Vec<_>>>()?;
    Some(blank(text, &cuts))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn key_text(k: &Node) -> String {
    match &k.body {
        Body::Scalar(s) => s.clone(),
        _ => "?".into(),
    }
}

/// A block sequence item's dash: before the node, over whitespace.
fn dash_before(text: &str, node: &Node) -> Option<Pos> {
    let before = text.get(..node.start.byte)?;
    let byte = before
        .trim_end_matches([' ', '\t', '\n', '\r'])
        .strip_suffix('-')?
        .len();
    let line_start = text[..byte].rfind('\n').map_or(0, |i| i + 1);
    Some(Pos {
        line: text[..byte].matches('\n').count() as u64 + 1,
        col: text[line_start..byte].chars().count() as u64 + 1,
        byte,
    })
}

fn entry_unit(flow: bool, only: bool, k: &Node, v: &Node) -> Unit {
    Unit {
        start: k.start.byte,
        end: v.end.byte.max(k.end.byte),
        block_collection: v.is_block_collection(),
        flow,
        only,
        fill: "{}",
    }
}

fn item_unit(flow: bool, only: bool, item: &Node) -> Unit {
    Unit {
        start: item.lead.byte,
        end: item.end.byte,
        block_collection: item.is_block_collection(),
        flow,
        only,
        fill: "[]",
    }
}

/// Searches the children of `node` (whose unit starts at `owner`, at `path`).
fn locate_in(
    node: &Node,
    owner: Option<Pos>,
    path: &str,
    p: Pos,
    kind: &Kind,
    depth: usize,
) -> Option<Found> {
    if depth > MAX_DEPTH {
        return None;
    }
    // (the child that holds `p`, its unit, owner, path and key)
    let (child, unit, child_owner, child_path, key, at_key) = match &node.body {
        Body::Scalar(_) => return None,
        Body::Map { flow, entries } => {
            let (k, v) = entries
                .iter()
                .find(|(k, v)| k.contains(p) || v.contains(p))?;
            let key = key_text(k);
            (
                v,
                entry_unit(*flow, entries.len() == 1, k, v),
                k.start,
                join(path, &key),
                Some(key),
                k.contains(p),
            )
        }
        Body::Seq { flow, items } => {
            let (i, item) = items.iter().enumerate().find(|(_, it)| it.contains(p))?;
            (
                item,
                item_unit(*flow, items.len() == 1, item),
                item.lead,
                format!("{path}[{i}]"),
                None,
                false,
            )
        }
    };
    let here = |path: String, key: Option<String>| Found {
        path,
        key,
        owner: child_owner,
        parent_owner: owner,
        units: vec![unit],
    };
    if at_key {
        // a key of this mapping; for a missing field, the mapping is the caller's
        return (!matches!(kind, Kind::Missing(_))).then(|| here(child_path, key));
    }
    if *kind == Kind::Value && child.start == p {
        return Some(here(child_path, key));
    }
    match locate_in(child, Some(child_owner), &child_path, p, kind, depth + 1) {
        Some(mut f) => {
            f.units.push(unit);
            Some(f)
        }
        None => match kind {
            Kind::Key => None,
            Kind::Value => Some(here(child_path, key)),
            Kind::Missing(_) => child.is_map().then(|| here(child_path, key)),
        },
    }
}

fn duplicates_in(node: &Node, path: &str, out: &mut Vec<Duplicate>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match &node.body {
        Body::Scalar(_) => {}
        Body::Map { flow, entries } => {
            let mut seen: Vec<(&str, Pos)> = Vec::new();
            for (k, v) in entries {
                let key = key_text(k);
                let child = join(path, &key);
                if let Body::Scalar(s) = &k.body {
                    match seen.iter().find(|(name, _)| *name == s.as_str()) {
                        Some((_, first)) => out.push(Duplicate {
                            key: key.clone(),
                            path: child.clone(),
                            at: k.start,
                            first: *first,
                            unit: entry_unit(*flow, false, k, v),
                        }),
                        None => seen.push((s.as_str(), k.start)),
                    }
                }
                duplicates_in(v, &child, out, depth + 1);
            }
        }
        Body::Seq { items, .. } => {
            for (i, item) in items.iter().enumerate() {
                duplicates_in(item, &format!("{path}[{i}]"), out, depth + 1);
            }
        }
    }
}

/// A byte range to blank, and what to write at its start.
#[derive(Debug, Clone, Copy)]
struct Cut {
    start: usize,
    end: usize,
    fill: Option<&'static str>,
}

/// The range of `text` that neutralises `unit`; `None` when it cannot be neutralised alone.
fn cut(text: &str, unit: Unit) -> Option<Cut> {
    let bytes = text.as_bytes();
    let Unit {
        mut start,
        mut end,
        block_collection,
        flow,
        only,
        fill,
    } = unit;
    if start > end || end > text.len() {
        return None;
    }
    if flow {
        // its comma: the one after it, or else the one before it
        let after = bytes[end..]
            .iter()
            .position(|b| !b" \t\r\n".contains(b))
            .map(|i| end + i);
        let before = bytes[..start].iter().rposition(|b| !b" \t\r\n".contains(b));
        match (after, before) {
            (Some(a), _) if bytes[a] == b',' => end = a + 1,
            (_, Some(b)) if bytes[b] == b',' => start = b,
            _ => {}
        }
    } else if !block_collection {
        // a block entry or item ends with its line (an empty value is at the colon)
        end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    }
    if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
        return None;
    }
    let fill = if only && !flow {
        // the collection stays one, written on the unit's first line
        let first_line = text[start..end].find('\n').unwrap_or(end - start);
        if first_line < fill.len() {
            return None;
        }
        Some(fill)
    } else {
        None
    };
    Some(Cut { start, end, fill })
}

/// `text` with every character in `cuts` turned into a space (line breaks kept), and each
/// cut's fill written at its start.
fn blank(text: &str, cuts: &[Cut]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fill = "".chars();
    for (i, c) in text.char_indices() {
        match cuts.iter().find(|k| k.start <= i && i < k.end) {
            Some(k) if c != '\n' && c != '\r' => {
                if k.start == i {
                    fill = k.fill.unwrap_or("").chars();
                }
                out.push(fill.next().unwrap_or(' '));
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` with the entry whose key is at `line:col` neutralised.
    fn without_key(text: &str, line: u64, col: u64) -> String {
        let tree = Tree::parse(text).expect("YAML");
        let found = tree.locate(Pos::at(line, col), &Kind::Key).expect("found");
        neutralise(text, &found).expect("neutralised")
    }

    #[test]
    fn a_flow_entry_goes_with_one_comma() {
        let t = "m: {a: 1, b: 2, c: 3}\n";
        assert_eq!(without_key(t, 1, 5), "m: {      b: 2, c: 3}\n");
        assert_eq!(without_key(t, 1, 11), "m: {a: 1,       c: 3}\n");
        assert_eq!(without_key(t, 1, 17), "m: {a: 1, b: 2      }\n");
        assert_eq!(without_key("m: {a: 1}\n", 1, 5), "m: {    }\n");
    }

    #[test]
    fn a_block_entry_goes_with_its_lines_and_the_rest_stays_in_place() {
        let t = "a: 1\nb:\n  c: 2\n  d: [3]\n# note\ne: 4\n";
        assert_eq!(
            without_key(t, 2, 1),
            "a: 1\n  \n      \n        \n      \ne: 4\n"
        );
        assert_eq!(
            without_key(t, 4, 3),
            "a: 1\nb:\n  c: 2\n        \n# note\ne: 4\n"
        );
        // an empty value is at the colon: the colon goes too
        assert_eq!(without_key("a:\nb: 1\n", 1, 1), "  \nb: 1\n");
    }

    #[test]
    fn an_only_child_leaves_an_empty_collection() {
        assert_eq!(without_key("x:\n  a: 1\n", 2, 3), "x:\n  {}  \n");
        assert_eq!(without_key("x:\n- a: 1\n", 2, 3), "x:\n- {}  \n");
        // a dash alone on its line has no room for `[]`: the entry around it goes instead
        let t = "x:\n  -\n    a: 1\ny: 2\n";
        let tree = Tree::parse(t).unwrap();
        let found = tree
            .locate(Pos::at(3, 5), &Kind::Missing("name".into()))
            .unwrap();
        assert_eq!(found.path, "x[0]");
        assert_eq!(neutralise(t, &found).unwrap(), "  \n   \n        \ny: 2\n");
        let t = "x:\n  -\n    a: 1\n";
        let tree = Tree::parse(t).unwrap();
        let found = tree
            .locate(Pos::at(3, 5), &Kind::Missing("name".into()))
            .unwrap();
        assert_eq!(neutralise(t, &found).unwrap(), "{}\n   \n        \n");
    }

    #[test]
    fn finds_the_outermost_node_at_a_value_error() {
        let t = "a: [1, x]\nb:\n  c: {d: 1}\n";
        let tree = Tree::parse(t).unwrap();
        let path = |l, c| tree.locate(Pos::at(l, c), &Kind::Value).map(|f| f.path);
        assert_eq!(path(1, 8).as_deref(), Some("a[1]"));
        assert_eq!(path(1, 4).as_deref(), Some("a"));
        assert_eq!(path(3, 3).as_deref(), Some("b"), "b's value starts at c");
        assert_eq!(path(3, 6).as_deref(), Some("b.c"));
    }

    #[test]
    fn duplicates_are_found_in_every_mapping() {
        let t = "a: 1\nb: {x: 1, x: 2}\n'a': 3\nc:\n  - {y: 1}\n  - {y: 1, y: 2}\n";
        let d = Tree::parse(t).unwrap().duplicates();
        let got: Vec<(String, u64, u64, u64, u64)> = d
            .iter()
            .map(|d| {
                (
                    d.path.clone(),
                    d.at.line,
                    d.at.col,
                    d.first.line,
                    d.first.col,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("b.x".to_string(), 2, 11, 2, 5),
                ("a".to_string(), 3, 1, 1, 1),
                ("c[1].y".to_string(), 6, 12, 6, 6),
            ]
        );
    }

    #[test]
    fn declines_what_it_does_not_look_at() {
        assert!(Tree::parse("").is_none());
        assert!(Tree::parse("a: [\n").is_none());
        assert!(Tree::parse("a: 1\n---\nb: 2\n").is_none());
        assert!(Tree::parse(&format!("{}{}", "[".repeat(100), "]".repeat(100))).is_none());
        assert!(syntax_error("a: [\n").is_some());
        assert!(syntax_error("a: 1\n").is_none());
    }
}
