//! Where each field of the inventory sits in the file. serde gives us typed
//! values without positions, so we read the same text once more with a YAML
//! event parser and index every node by the field path that serde reports
//! (`hosts[2].address`), which is how errors get a line and column.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A position in the source: 1-based line and column, and the byte range of
/// the node's first token (for underlining in snippets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub line: usize,
    pub col: usize,
    pub start: usize,
    pub end: usize,
}

/// A syntax error found while indexing.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

/// Every node of the file in document order (pre-order), each knowing its
/// parent and where its subtree ends. A lookup walks down the tree along the
/// path it is given: most inventories load without a single problem to point
/// at, and a path-keyed map of every node was a fifth of loading a large
/// one, or of validating it when one warning needed a position.
#[derive(Debug, Default)]
pub struct SpanIndex {
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    step: PathStep,
    span: Span,
    /// Where the key of a mapping value is.
    key: Option<Span>,
    /// One past the last node of this node's subtree: its next sibling.
    end: usize,
}

#[derive(Debug)]
enum PathStep {
    Root,
    Key(String),
    Index(usize),
}

impl SpanIndex {
    pub fn build(source: &str) -> Result<SpanIndex, SyntaxError> {
        let lines = LineTable::new(source);
        let mut builder = Builder {
            lines: &lines,
            nodes: Vec::new(),
            stack: Vec::new(),
        };
        let mut parser = Parser::new_from_str(source);
        match parser.load(&mut builder, false) {
            Ok(()) => Ok(SpanIndex { nodes: builder.nodes }),
            Err(e) => Err(SyntaxError {
                message: e.info().to_string(),
                span: lines.span(e.marker(), 1),
            }),
        }
    }

    /// The nodes whose path (as `push_key` / `push_index` spell it) is
    /// exactly `path`, in document order. A depth-first walk keeps only the
    /// children whose path is a prefix of `path`, so each level scans the
    /// children of the few nodes matched so far.
    fn exact(&self, path: &str) -> Vec<usize> {
        let mut found = Vec::new();
        // (node, length of its path: how much of `path` it matched)
        let mut todo: Vec<(usize, usize)> = Vec::new();
        let mut root = 0;
        while root < self.nodes.len() {
            todo.push((root, 0));
            root = self.nodes[root].end;
        }
        while let Some((node, matched)) = todo.pop() {
            if matched == path.len() {
                found.push(node);
                // A child's path is longer than its parent's: none can match.
                continue;
            }
            let rest = &path[matched..];
            let mut child = node + 1;
            while child < self.nodes[node].end {
                if let Some(len) = step_prefix(&self.nodes[child].step, matched == 0, rest) {
                    todo.push((child, matched + len));
                }
                child = self.nodes[child].end;
            }
        }
        found.sort_unstable();
        found
    }

    /// The node at `path`, or the nearest ancestor that exists (a missing
    /// field is reported at the object that should hold it). A path that
    /// appears twice keeps its last node.
    pub fn value(&self, path: &str) -> Option<Span> {
        let mut p = path;
        loop {
            if let Some(&last) = self.exact(p).last() {
                return Some(self.nodes[last].span);
            }
            p = parent_path(p)?;
        }
    }

    /// The key of the field at `path` (for "unknown field" errors), falling
    /// back to its value or ancestors.
    pub fn key(&self, path: &str) -> Option<Span> {
        self.exact(path)
            .iter()
            .rev()
            .find_map(|&n| self.nodes[n].key)
            .or_else(|| self.value(path))
    }
}

/// If `rest` starts with the path segment `step` adds to its parent's path
/// (`first`: the parent's path is empty), how long that segment is.
fn step_prefix(step: &PathStep, first: bool, rest: &str) -> Option<usize> {
    match step {
        PathStep::Root => None,
        PathStep::Key(key) => {
            let rest = if first { rest } else { rest.strip_prefix('.')? };
            let dot = usize::from(!first);
            if is_plain_key(key) {
                rest.starts_with(key.as_str()).then(|| dot + key.len())
            } else {
                let quoted = format!("{key:?}");
                rest.starts_with(quoted.as_str()).then(|| dot + quoted.len())
            }
        }
        PathStep::Index(i) => {
            let digits = rest.strip_prefix('[')?;
            let close = digits.find(']')?;
            let text = &digits[..close];
            // `[007]` is not how push_index spells 7.
            let same = text.parse::<usize>().ok() == Some(*i) && (text == "0" || !text.starts_with(['0', '+']));
            same.then_some(close + 2)
        }
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Append a map key to a path. Keys that would be ambiguous in the dotted
/// form (label keys like `app.kubernetes.io/name`) are quoted.
pub fn push_key(parent: &str, key: &str) -> String {
    use std::fmt::Write;
    let plain = is_plain_key(key);
    let mut path = String::with_capacity(parent.len() + key.len() + 3);
    if !parent.is_empty() {
        path.push_str(parent);
        path.push('.');
    }
    if plain {
        path.push_str(key);
    } else {
        let _ = write!(path, "{key:?}");
    }
    path
}

pub fn push_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// `a.b[3].c` -> `a.b[3]` -> `a.b` -> `a` -> ``; None above the root.
pub fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let bytes = path.as_bytes();
    let mut in_quote = false;
    let mut cut = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => in_quote = !in_quote,
            b'.' | b'[' if !in_quote => cut = i,
            _ => {}
        }
    }
    Some(&path[..cut])
}

struct LineTable<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineTable<'a> {
    fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineTable { source, starts }
    }

    /// The parser counts columns in characters from 0; snippets need bytes.
    fn span(&self, mark: &Marker, len_chars: usize) -> Span {
        let line = mark.line().max(1);
        let line_start = self.starts.get(line - 1).copied().unwrap_or(self.source.len());
        let line_text = &self.source[line_start..];
        let line_text = line_text.split('\n').next().unwrap_or("");
        let byte_col = |chars: usize| {
            line_text
                .char_indices()
                .nth(chars)
                .map(|(i, _)| i)
                .unwrap_or(line_text.len())
        };
        let start = line_start + byte_col(mark.col());
        let end = (line_start + byte_col(mark.col() + len_chars.max(1))).max(start);
        Span {
            line,
            col: mark.col() + 1,
            start,
            end,
        }
    }
}

enum Frame {
    Map {
        node: usize,
        /// The key just read, with where it is, until its value arrives.
        pending_key: Option<(String, Span)>,
        located: bool,
    },
    Seq {
        node: usize,
        next: usize,
    },
    /// A complex (non-scalar) mapping key: indexed as nothing.
    Ignored,
}

struct Builder<'a, 'b> {
    lines: &'a LineTable<'b>,
    nodes: Vec<Node>,
    stack: Vec<Frame>,
}

/// What the next node in the event stream is.
enum Slot {
    Value { step: PathStep, key: Option<Span> },
    Key,
    Ignored,
}

impl Builder<'_, '_> {
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Value {
                step: PathStep::Root,
                key: None,
            },
            Some(Frame::Ignored) => Slot::Ignored,
            Some(Frame::Seq { next, .. }) => {
                let step = PathStep::Index(*next);
                *next += 1;
                Slot::Value { step, key: None }
            }
            Some(Frame::Map { pending_key, .. }) => match pending_key.take() {
                Some((k, span)) => Slot::Value {
                    step: PathStep::Key(k),
                    key: Some(span),
                },
                None => Slot::Key,
            },
        }
    }

    /// Add a node; its index.
    fn push(&mut self, step: PathStep, key: Option<Span>, span: Span) -> usize {
        let index = self.nodes.len();
        self.nodes.push(Node {
            step,
            span,
            key,
            end: index + 1,
        });
        index
    }

    fn record_key(&mut self, key: String, mark: &Marker) {
        let span = self.lines.span(mark, key.chars().count());
        if let Some(Frame::Map {
            node,
            pending_key,
            located,
        }) = self.stack.last_mut()
        {
            // Block mappings report their start at the first value; the first
            // key is where a reader sees the mapping begin.
            if !*located {
                *located = true;
                self.nodes[*node].span = span;
            }
            *pending_key = Some((key, span));
        }
    }
}

impl MarkedEventReceiver for Builder<'_, '_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => match self.slot() {
                Slot::Key => self.record_key(text, &mark),
                Slot::Value { step, key } => {
                    let span = self.lines.span(&mark, text.chars().count());
                    self.push(step, key, span);
                }
                Slot::Ignored => {}
            },
            Event::Alias(_) => {
                if let Slot::Value { step, key } = self.slot() {
                    let span = self.lines.span(&mark, 1);
                    self.push(step, key, span);
                }
            }
            Event::MappingStart(..) => match self.slot() {
                Slot::Value { step, key } => {
                    let span = self.lines.span(&mark, 1);
                    let node = self.push(step, key, span);
                    self.stack.push(Frame::Map {
                        node,
                        pending_key: None,
                        located: false,
                    });
                }
                Slot::Key | Slot::Ignored => self.stack.push(Frame::Ignored),
            },
            Event::SequenceStart(..) => match self.slot() {
                Slot::Value { step, key } => {
                    let span = self.lines.span(&mark, 1);
                    let node = self.push(step, key, span);
                    self.stack.push(Frame::Seq { node, next: 0 });
                }
                Slot::Key | Slot::Ignored => self.stack.push(Frame::Ignored),
            },
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Map { node, .. } | Frame::Seq { node, .. }) = self.stack.pop() {
                    self.nodes[node].end = self.nodes.len();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_fields_with_one_based_positions() {
        let src = "é: 1\nhosts:\n  - name: \"a\"\n    labels: {app.io/x: y}\n";
        let idx = SpanIndex::build(src).unwrap();
        let name = idx.value("hosts[0].name").unwrap();
        assert_eq!((name.line, name.col), (3, 11));
        assert_eq!(&src[name.start..name.start + 1], "\"");
        let key = idx.key("hosts[0].name").unwrap();
        assert_eq!((key.line, key.col), (3, 5));
        let label = idx.value(r#"hosts[0].labels."app.io/x""#).unwrap();
        assert_eq!(label.line, 4);
        // A missing field falls back to its parent.
        assert_eq!(idx.value("hosts[0].address").unwrap().line, 3);
    }

    #[test]
    fn lookups_walk_the_tree_like_the_dotted_paths_read() {
        let src = "ab: 1\na: {c: 2}\n\"a.c\": 3\nl:\n  - x\n  - [y, z]\nl: [w]\nk: 4\nk: 5\n";
        let idx = SpanIndex::build(src).unwrap();
        let at = |p: &str| idx.value(p).map(|s| (s.line, s.col));
        // `a` is a prefix of `ab`; the quoted key is not the nested one.
        assert_eq!(at("ab"), Some((1, 5)));
        assert_eq!(at("a.c"), Some((2, 8)));
        assert_eq!(at(r#""a.c""#), Some((3, 8)));
        // A path that appears twice keeps its last node, for keys too.
        assert_eq!(at("k"), Some((9, 4)));
        assert_eq!(idx.key("k").map(|s| (s.line, s.col)), Some((9, 1)));
        assert_eq!(at("l[0]"), Some((7, 5)));
        // Only the first `l` has a second item; `[01]` is not how 1 is spelt.
        assert_eq!(at("l[1][1]"), Some((6, 9)));
        assert_eq!(at("l[01]"), Some((7, 4)));
        assert_eq!(at("l[1].missing"), Some((6, 5)));
        // An index has no key: its value answers.
        assert_eq!(idx.key("l[0]"), idx.value("l[0]"));
        assert_eq!(at("nothing.here"), Some((1, 1)));
    }

    #[test]
    fn parent_paths_respect_quoted_keys() {
        assert_eq!(parent_path(r#"a.b[3]."x.y""#), Some("a.b[3]"));
        assert_eq!(parent_path("a.b[3]"), Some("a.b"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = SpanIndex::build("a: [1\nb: 2\n").unwrap_err();
        assert_eq!(err.span.line, 2);
    }
}
