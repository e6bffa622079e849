//! Where each field of the inventory sits in the file. serde gives us typed
//! values without positions, so we read the same text once more with a YAML
//! event parser and index every node by the field path that serde reports
//! (`hosts[2].address`), which is how errors get a line and column.

use std::collections::HashMap;

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

#[derive(Debug, Default)]
pub struct SpanIndex {
    values: HashMap<String, Span>,
    keys: HashMap<String, Span>,
}

impl SpanIndex {
    pub fn build(source: &str) -> Result<SpanIndex, SyntaxError> {
        let lines = LineTable::new(source);
        let mut builder = Builder {
            lines: &lines,
            index: SpanIndex::default(),
            stack: Vec::new(),
        };
        let mut parser = Parser::new_from_str(source);
        match parser.load(&mut builder, false) {
            Ok(()) => Ok(builder.index),
            Err(e) => Err(SyntaxError {
                message: e.info().to_string(),
                span: lines.span(e.marker(), 1),
            }),
        }
    }

    /// The node at `path`, or the nearest ancestor that exists (a missing
    /// field is reported at the object that should hold it).
    pub fn value(&self, path: &str) -> Option<Span> {
        let mut p = path;
        loop {
            if let Some(s) = self.values.get(p) {
                return Some(*s);
            }
            p = parent_path(p)?;
        }
    }

    /// The key of the field at `path` (for "unknown field" errors), falling
    /// back to its value or ancestors.
    pub fn key(&self, path: &str) -> Option<Span> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }
}

/// Append a map key to a path. Keys that would be ambiguous in the dotted
/// form (label keys like `app.kubernetes.io/name`) are quoted.
pub fn push_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain { key.to_string() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
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
        path: String,
        pending_key: Option<String>,
        located: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A complex (non-scalar) mapping key: indexed as nothing.
    Ignored,
}

struct Builder<'a, 'b> {
    lines: &'a LineTable<'b>,
    index: SpanIndex,
    stack: Vec<Frame>,
}

/// What the next node in the event stream is.
enum Slot {
    Value(String),
    Key,
    Ignored,
}

impl Builder<'_, '_> {
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Value(String::new()),
            Some(Frame::Ignored) => Slot::Ignored,
            Some(Frame::Seq { path, next }) => {
                let p = push_index(path, *next);
                *next += 1;
                Slot::Value(p)
            }
            Some(Frame::Map { path, pending_key, .. }) => match pending_key.take() {
                Some(k) => Slot::Value(push_key(path, &k)),
                None => Slot::Key,
            },
        }
    }

    fn record_key(&mut self, key: &str, mark: &Marker) {
        let span = self.lines.span(mark, key.chars().count());
        if let Some(Frame::Map {
            path,
            pending_key,
            located,
        }) = self.stack.last_mut()
        {
            // Block mappings report their start at the first value; the first
            // key is where a reader sees the mapping begin.
            if !*located {
                *located = true;
                self.index.values.insert(path.clone(), span);
            }
            self.index.keys.insert(push_key(path, key), span);
            *pending_key = Some(key.to_string());
        }
    }
}

impl MarkedEventReceiver for Builder<'_, '_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => match self.slot() {
                Slot::Key => self.record_key(&text, &mark),
                Slot::Value(path) => {
                    let span = self.lines.span(&mark, text.chars().count());
                    self.index.values.insert(path, span);
                }
                Slot::Ignored => {}
            },
            Event::Alias(_) => {
                if let Slot::Value(path) = self.slot() {
                    self.index.values.insert(path, self.lines.span(&mark, 1));
                }
            }
            Event::MappingStart(..) => match self.slot() {
                Slot::Value(path) => {
                    self.index.values.insert(path.clone(), self.lines.span(&mark, 1));
                    self.stack.push(Frame::Map {
                        path,
                        pending_key: None,
                        located: false,
                    });
                }
                Slot::Key | Slot::Ignored => self.stack.push(Frame::Ignored),
            },
            Event::SequenceStart(..) => match self.slot() {
                Slot::Value(path) => {
                    self.index.values.insert(path.clone(), self.lines.span(&mark, 1));
                    self.stack.push(Frame::Seq { path, next: 0 });
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
