//! Where each field of the inventory sits in the file. serde gives us typed
//! values without positions, so we read the same text once more with a YAML
//! event parser and index every node by the field path that serde reports
//! (`hosts[2].address`), which is how errors get a line and column.

use std::collections::HashMap;
use std::sync::OnceLock;

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

/// Every node of the file in document order, each knowing its parent; the
/// path-keyed maps the lookups use are made from it on the first lookup.
/// Most inventories load without a single problem to point at, and making
/// a path string per node up front was a fifth of loading a large one.
#[derive(Debug, Default)]
pub struct SpanIndex {
    nodes: Vec<Node>,
    maps: OnceLock<Maps>,
}

#[derive(Debug)]
struct Node {
    /// Index of the enclosing node; `None` for the document root.
    parent: Option<usize>,
    step: PathStep,
    span: Span,
    /// Where the key of a mapping value is.
    key: Option<Span>,
}

#[derive(Debug)]
enum PathStep {
    Root,
    Key(String),
    Index(usize),
}

#[derive(Debug, Default)]
struct Maps {
    values: HashMap<String, Span>,
    keys: HashMap<String, Span>,
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
            Ok(()) => Ok(SpanIndex {
                nodes: builder.nodes,
                maps: OnceLock::new(),
            }),
            Err(e) => Err(SyntaxError {
                message: e.info().to_string(),
                span: lines.span(e.marker(), 1),
            }),
        }
    }

    /// Path -> span for values and keys, inserted in document order so a
    /// repeated path keeps its last node.
    fn maps(&self) -> &Maps {
        self.maps.get_or_init(|| {
            let mut maps = Maps {
                values: HashMap::with_capacity(self.nodes.len()),
                keys: HashMap::new(),
            };
            let mut paths: Vec<String> = Vec::with_capacity(self.nodes.len());
            for node in &self.nodes {
                let parent = node.parent.map(|p| paths[p].as_str()).unwrap_or("");
                let path = match &node.step {
                    PathStep::Root => String::new(),
                    PathStep::Key(k) => push_key(parent, k),
                    PathStep::Index(i) => push_index(parent, *i),
                };
                if let Some(key) = node.key {
                    maps.keys.insert(path.clone(), key);
                }
                maps.values.insert(path.clone(), node.span);
                paths.push(path);
            }
            maps
        })
    }

    /// The node at `path`, or the nearest ancestor that exists (a missing
    /// field is reported at the object that should hold it).
    pub fn value(&self, path: &str) -> Option<Span> {
        let values = &self.maps().values;
        let mut p = path;
        loop {
            if let Some(s) = values.get(p) {
                return Some(*s);
            }
            p = parent_path(p)?;
        }
    }

    /// The key of the field at `path` (for "unknown field" errors), falling
    /// back to its value or ancestors.
    pub fn key(&self, path: &str) -> Option<Span> {
        self.maps().keys.get(path).copied().or_else(|| self.value(path))
    }
}

/// Append a map key to a path. Keys that would be ambiguous in the dotted
/// form (label keys like `app.kubernetes.io/name`) are quoted.
pub fn push_key(parent: &str, key: &str) -> String {
    use std::fmt::Write;
    let plain = !key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
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
    Value {
        parent: Option<usize>,
        step: PathStep,
        key: Option<Span>,
    },
    Key,
    Ignored,
}

impl Builder<'_, '_> {
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Value {
                parent: None,
                step: PathStep::Root,
                key: None,
            },
            Some(Frame::Ignored) => Slot::Ignored,
            Some(Frame::Seq { node, next }) => {
                let step = PathStep::Index(*next);
                *next += 1;
                Slot::Value {
                    parent: Some(*node),
                    step,
                    key: None,
                }
            }
            Some(Frame::Map { node, pending_key, .. }) => match pending_key.take() {
                Some((k, span)) => Slot::Value {
                    parent: Some(*node),
                    step: PathStep::Key(k),
                    key: Some(span),
                },
                None => Slot::Key,
            },
        }
    }

    /// Add a node; its index.
    fn push(&mut self, parent: Option<usize>, step: PathStep, key: Option<Span>, span: Span) -> usize {
        self.nodes.push(Node {
            parent,
            step,
            span,
            key,
        });
        self.nodes.len() - 1
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
                Slot::Value { parent, step, key } => {
                    let span = self.lines.span(&mark, text.chars().count());
                    self.push(parent, step, key, span);
                }
                Slot::Ignored => {}
            },
            Event::Alias(_) => {
                if let Slot::Value { parent, step, key } = self.slot() {
                    let span = self.lines.span(&mark, 1);
                    self.push(parent, step, key, span);
                }
            }
            Event::MappingStart(..) => match self.slot() {
                Slot::Value { parent, step, key } => {
                    let span = self.lines.span(&mark, 1);
                    let node = self.push(parent, step, key, span);
                    self.stack.push(Frame::Map {
                        node,
                        pending_key: None,
                        located: false,
                    });
                }
                Slot::Key | Slot::Ignored => self.stack.push(Frame::Ignored),
            },
            Event::SequenceStart(..) => match self.slot() {
                Slot::Value { parent, step, key } => {
                    let span = self.lines.span(&mark, 1);
                    let node = self.push(parent, step, key, span);
                    self.stack.push(Frame::Seq { node, next: 0 });
                }
                Slot::Key | Slot::Ignored => self.stack.push(Frame::Ignored),
            },
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
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
