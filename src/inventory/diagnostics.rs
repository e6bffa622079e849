//! Problems found in an inventory, each tied to a field path and a place in
//! the file, rendered with source snippets for people or as JSON for tools.

use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic as Snippet, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};
use serde::Serialize;

use super::spans::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Field path in the inventory (`hosts[2].address`); empty for the whole file.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip)]
    pub span: Option<Span>,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            path: path.into(),
            hint: None,
            span: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn at(mut self, span: Option<Span>) -> Self {
        self.span = span;
        self
    }
}

/// All diagnostics for one inventory file, with the text they point into.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: PathBuf,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    #[serde(flatten)]
    diagnostic: &'a Diagnostic,
    file: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == severity).count()
    }

    /// Sorted by position so the output reads top to bottom like the file.
    pub fn sort(&mut self) {
        self.diagnostics
            .sort_by_key(|d| (d.span.map(|s| (s.line, s.col)).unwrap_or((0, 0)), d.path.clone()));
    }

    pub fn to_json(&self) -> serde_json::Value {
        let items: Vec<_> = self
            .diagnostics
            .iter()
            .map(|d| JsonDiagnostic {
                diagnostic: d,
                file: &self.file,
                line: d.span.map(|s| s.line),
                column: d.span.map(|s| s.col),
            })
            .collect();
        serde_json::json!({
            "file": self.file,
            "errors": self.errors(),
            "warnings": self.warnings(),
            "diagnostics": items,
        })
    }

    /// Human rendering: a source snippet per problem plus a closing count.
    pub fn render(&self, color: bool) -> String {
        let name = self.file.display().to_string();
        let file = SimpleFile::new(name.as_str(), self.source.as_str());
        let config = term::Config::default();
        let mut buf = if color {
            termcolor::Buffer::ansi()
        } else {
            termcolor::Buffer::no_color()
        };
        for d in &self.diagnostics {
            // Rendering into memory fails only for a span outside the file,
            // which would be our bug; fall back to a plain line then.
            if term::emit(&mut buf, &config, &file, &self.snippet(d, &name)).is_err() {
                let line = format!("{}: {}: {}: {}\n", name, severity_word(d.severity), d.path, d.message);
                std::io::Write::write_all(&mut buf, line.as_bytes()).ok();
            }
        }
        let mut text = String::from_utf8_lossy(buf.as_slice()).into_owned();
        text.push_str(&format!(
            "{}: {} error(s), {} warning(s)\n",
            name,
            self.errors(),
            self.warnings()
        ));
        text
    }

    fn snippet(&self, d: &Diagnostic, name: &str) -> Snippet<()> {
        let mut snippet = match d.severity {
            Severity::Error => Snippet::error(),
            Severity::Warning => Snippet::warning(),
        }
        .with_message(&d.message);
        let mut notes = Vec::new();
        match d.span {
            Some(span) => {
                let text = if d.path.is_empty() {
                    String::new()
                } else {
                    format!("at {}", d.path)
                };
                snippet = snippet.with_labels(vec![Label::primary((), span.start..span.end).with_message(text)]);
            }
            None if !d.path.is_empty() => notes.push(format!("at {} in {}", d.path, name)),
            None => notes.push(format!("in {name}")),
        }
        if let Some(hint) = &d.hint {
            notes.push(format!("hint: {hint}"));
        }
        snippet.with_notes(notes)
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}
