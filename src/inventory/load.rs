//! Turning inventory text into a typed [`Inventory`], collecting every
//! structural problem (unknown field, wrong type, missing field) rather than
//! stopping at the first, each pointing at its place in the file.
//!
//! serde stops at the first error, so we deserialize, record the error, cut
//! the offending node out of the YAML tree, and try again. Cutting a sequence
//! element shifts later indices, so we keep a table of what was cut to map
//! the paths serde reports back to the paths of the user's file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::diagnostics::{Diagnostic, Report};
use super::spans::{push_index, push_key, SpanIndex};
use super::types::{Inventory, SecretRef, API_VERSION, KIND};
use crate::secret::Secret;

/// Enough to find every problem a person makes in one sitting; a file with
/// more than this is not worth listing exhaustively.
const MAX_STRUCTURAL_ERRORS: usize = 50;

/// A loaded inventory with what is needed to point back into the file.
#[derive(Debug)]
pub struct Loaded {
    pub inventory: Inventory,
    pub spans: SpanIndex,
    pub file: PathBuf,
    pub source: String,
    /// Relative paths in the inventory are relative to this directory.
    pub base_dir: PathBuf,
}

impl Loaded {
    /// An empty report for this file, to which validation adds findings.
    pub fn report(&self) -> Report {
        Report {
            file: self.file.clone(),
            source: self.source.clone(),
            diagnostics: Vec::new(),
        }
    }

    /// Resolve a path from the inventory: `~` is the home directory, a
    /// relative path is relative to the inventory file.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve_path(&self.base_dir, path)
    }
}

pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if path.is_absolute() || base == Path::new(".") {
        return path.to_path_buf();
    }
    base.join(path)
}

impl SecretRef {
    /// Read the secret this reference points at. Relative files are
    /// relative to `base_dir` (the inventory's directory). Errors name the
    /// reference, never the value.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(Secret::new)
                .map_err(|_| format!("environment variable `{var}` is not set (it should hold a secret)")),
            (None, Some(file)) => {
                let path = resolve_path(base_dir, file);
                let path = if path.is_relative() { base_dir.join(path) } else { path };
                std::fs::read_to_string(&path)
                    .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
            }
            _ => Err("a secret reference needs exactly one of `env` or `file`".to_string()),
        }
    }
}

/// Read and parse an inventory file. Errors come back as a [`Report`] that
/// names every structural problem found.
pub fn load_file(file: &Path) -> Result<Loaded, Report> {
    if file == Path::new("-") {
        // `-i -`: the inventory comes on stdin; its relative paths are
        // relative to the current directory.
        use std::io::Read;
        let mut bytes = Vec::new();
        let name = Path::new("<stdin>");
        std::io::stdin().read_to_end(&mut bytes).map_err(|e| Report {
            file: name.to_path_buf(),
            source: String::new(),
            diagnostics: vec![Diagnostic::error(
                "",
                format!("cannot read the inventory from stdin: {e}"),
            )],
        })?;
        return load_bytes(name, &bytes);
    }
    let bytes = std::fs::read(file).map_err(|e| Report {
        file: file.to_path_buf(),
        source: String::new(),
        diagnostics: vec![Diagnostic::error("", format!("cannot read the inventory: {e}"))
            .with_hint("pass the inventory with -i FILE; `nautes-install init` prints a starter")],
    })?;
    load_bytes(file, &bytes)
}

pub fn load_bytes(file: &Path, bytes: &[u8]) -> Result<Loaded, Report> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(file, text),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Report {
                file: file.to_path_buf(),
                source: String::new(),
                diagnostics: vec![Diagnostic::error(
                    "",
                    format!(
                        "the inventory is not valid UTF-8 (line {line}, byte {})",
                        e.valid_up_to()
                    ),
                )
                .with_hint("save the file as UTF-8")],
            })
        }
    }
}

pub fn load_str(file: &Path, source: &str) -> Result<Loaded, Report> {
    // Windows editors often start UTF-8 files with a byte-order mark; YAML
    // allows it, and to the parser it looked like a second document.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut report = Report {
        file: file.to_path_buf(),
        source: source.to_string(),
        diagnostics: Vec::new(),
    };
    let spans = match SpanIndex::build(source) {
        Ok(s) => s,
        Err(e) => {
            let (span, hint) = match e.message.contains("tab") {
                // The parser names the token it was reading, not the tab.
                true => (
                    first_tab_from(source, e.span.start).unwrap_or(e.span),
                    "YAML does not allow tabs for indentation: indent with spaces",
                ),
                false => (
                    e.span,
                    "check indentation and that every `key: value` pair has a space after the colon",
                ),
            };
            report.diagnostics.push(
                Diagnostic::error("", format!("YAML syntax error: {}", e.message))
                    .at(Some(span))
                    .with_hint(hint),
            );
            return Err(report);
        }
    };
    let mut value: Value = match serde_yaml::from_str(source) {
        Ok(v) => v,
        Err(e) => {
            let mut span = e.location().map(|l| span_at(source, l.line(), l.column()));
            let message = strip_location(&e.to_string());
            let mut d = Diagnostic::error("", format!("YAML error: {message}"));
            // serde_yaml points at the mapping; the user needs the second key.
            let duplicate = message
                .split_once("duplicate entry with key \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(key, _)| key.to_string());
            if let (Some(key), Some(at)) = (duplicate, span) {
                if let Some(second) = second_key(source, at.start, &key) {
                    span = Some(second);
                    d = Diagnostic::error("", format!("`{key}` appears twice in the same mapping"))
                        .with_hint("a key may appear once per mapping: remove or merge one of them");
                }
            }
            report.diagnostics.push(d.at(span));
            return Err(report);
        }
    };
    if value.is_null() {
        report.diagnostics.push(
            Diagnostic::error("", "the inventory is empty")
                .with_hint("`nautes-install init > inventory.yaml` writes a commented starter"),
        );
        return Err(report);
    }
    if !value.is_mapping() {
        report.diagnostics.push(
            Diagnostic::error(
                "",
                "the inventory must be a mapping with apiVersion, kind, metadata, ...",
            )
            .at(spans.value("")),
        );
        return Err(report);
    }

    // The tree as written, kept only once a cut is about to change `value`:
    // most inventories deserialise on the first attempt, and cloning the
    // whole tree twice was a tenth of loading a large one.
    let mut original: Option<Value> = None;
    let mut cuts = Cuts::default();
    loop {
        match serde_path_to_error::deserialize::<_, Inventory>(&value) {
            Ok(inventory) => {
                let base_dir = file
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."));
                let base_dir = if base_dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    base_dir
                };
                let loaded = Loaded {
                    inventory,
                    spans,
                    file: file.to_path_buf(),
                    source: source.to_string(),
                    base_dir,
                };
                if report.diagnostics.is_empty() {
                    return Ok(loaded);
                }
                // What did parse is still checked, so one run shows every
                // problem; findings that only follow from a cut are dropped.
                for d in super::validate::validate(&loaded).diagnostics {
                    if let Some(d) = cuts.keep(d, original.as_ref().unwrap_or(&value), &loaded.spans) {
                        report.diagnostics.push(d);
                    }
                }
                report.sort();
                return Err(report);
            }
            Err(err) => {
                let segments = segments_of(err.path());
                let message = err.into_inner().to_string();
                if original.is_none() {
                    original = Some(value.clone());
                }
                let progressed = cuts.record(&mut value, &segments, &message, &spans, &mut report);
                if !progressed || report.errors() >= MAX_STRUCTURAL_ERRORS {
                    report.sort();
                    return Err(report);
                }
            }
        }
    }
}

/// The place serde_yaml reports (1-based line and column) as a span.
fn span_at(source: &str, line: usize, column: usize) -> super::spans::Span {
    let line_start: usize = source
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let start = (line_start + column.saturating_sub(1)).min(source.len());
    super::spans::Span {
        line,
        col: column,
        start,
        end: (start + 1).min(source.len()).max(start),
    }
}

/// The first tab at or after byte `from`.
fn first_tab_from(source: &str, from: usize) -> Option<super::spans::Span> {
    let at = from + source.get(from..)?.find('\t')?;
    let line = source[..at].matches('\n').count() + 1;
    let col = at - source[..at].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    Some(span_at(source, line, col))
}

/// The second `key:` of the mapping that starts at byte `start` (same
/// indentation as its first key), for duplicate-key errors.
fn second_key(source: &str, start: usize, key: &str) -> Option<super::spans::Span> {
    let line_start = source[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let indent = start - line_start;
    let mut offset = line_start;
    let mut seen = 0;
    for (n, line) in source[line_start..].split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let content = body.get(indent..).unwrap_or("");
        let leading = body.len() - body.trim_start_matches([' ', '-']).len();
        if n > 0 && !body.trim().is_empty() && !body.trim_start().starts_with('#') && leading < indent {
            break;
        }
        let bare = content.trim_start_matches(['"', '\'']);
        if (n == 0 || leading == indent)
            && bare.starts_with(key)
            && bare[key.len()..].trim_start_matches(['"', '\'']).starts_with(':')
        {
            seen += 1;
            if seen == 2 {
                let line_no = source[..offset].matches('\n').count() + 1;
                return Some(span_at(source, line_no, indent + 1));
            }
        }
        offset += line.len();
    }
    None
}

/// serde's wording for numbers, said the way people say it.
fn humanize(message: &str) -> String {
    let what = |ty: &str| match ty {
        "u16" => "a port number from 1 to 65535",
        "u8" => "a whole number from 0 to 255",
        "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)",
        "i32" | "i64" => "a whole number",
        "f64" | "f32" => "a number",
        _ => "",
    };
    for ty in ["u16", "u8", "u32", "u64", "u128", "usize", "i32", "i64", "f64", "f32"] {
        if let Some(got) = message.strip_suffix(&format!(", expected {ty}")) {
            let got = got
                .trim_start_matches("invalid type: ")
                .trim_start_matches("invalid value: ")
                .replace("integer `", "`")
                .replace("string \"", "`")
                .replace('"', "`");
            let got = match got.strip_prefix('`').and_then(|g| g.strip_suffix('`')) {
                Some(inner) => format!("`{}`", shorten(inner)),
                None => shorten(&got),
            };
            return format!("{got} is not {}", what(ty));
        }
    }
    shorten(message)
}

/// Long values (a pasted key) are cut in messages.
fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

/// serde_yaml appends "at line X column Y"; we show the place as a snippet.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments_of(path: &serde_path_to_error::Path) -> Vec<Segment> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .filter_map(|s| match s {
            S::Seq { index } => Some(Segment::Index(*index)),
            S::Map { key } => Some(Segment::Key(key.clone())),
            S::Enum { .. } | S::Unknown => None,
        })
        .collect()
}

/// What has been cut out of the tree so far, by original path.
#[derive(Default)]
struct Cuts {
    /// Original sequence path -> original indices removed from it.
    removed_indices: BTreeMap<String, BTreeSet<usize>>,
    /// Original paths of every node removed (their own errors are reported).
    removed: BTreeSet<String>,
}

impl Cuts {
    /// A finding on the cut tree, moved to its place in the user's file; or
    /// nothing if it is about a part that was cut (already reported) or
    /// names something that was cut (a reference to a removed host).
    fn keep(&self, mut d: Diagnostic, original: &Value, spans: &SpanIndex) -> Option<Diagnostic> {
        let mut path = d.path.clone();
        // Shallow sequences first: their indices prefix the deeper ones.
        let mut seqs: Vec<(&String, &BTreeSet<usize>)> = self.removed_indices.iter().collect();
        seqs.sort_by_key(|(p, _)| p.len());
        for (seq, gone) in seqs {
            let Some(rest) = path.strip_prefix(&format!("{seq}[")) else {
                continue;
            };
            let Some((index, tail)) = rest.split_once(']') else {
                continue;
            };
            let Ok(i) = index.parse::<usize>() else { continue };
            let moved = (0..).filter(|j| !gone.contains(j)).nth(i).unwrap_or(i);
            path = format!("{seq}[{moved}]{tail}");
        }
        let under_cut = |p: &str| {
            self.removed
                .iter()
                .any(|r| p == r || p.starts_with(&format!("{r}.")) || p.starts_with(&format!("{r}[")))
        };
        if under_cut(&path) {
            return None;
        }
        for (seq, gone) in &self.removed_indices {
            for i in gone {
                let name = lookup(original, &push_index(seq, *i))
                    .and_then(|v| v.get("name"))
                    .and_then(Value::as_str);
                if name.is_some_and(|n| d.message.contains(&format!("`{n}`"))) {
                    return None;
                }
            }
        }
        if path != d.path {
            d.span = spans.value(&path);
            d.path = path;
        }
        Some(d)
    }

    /// Map serde's path in the current (cut) tree to the user's file.
    fn original(&self, segments: &[Segment]) -> String {
        let mut path = String::new();
        for seg in segments {
            path = match seg {
                Segment::Key(k) => push_key(&path, k),
                Segment::Index(i) => {
                    let gone = self.removed_indices.get(&path);
                    let original = (0..)
                        .filter(|j| gone.is_none_or(|g| !g.contains(j)))
                        .nth(*i)
                        .unwrap_or(*i);
                    push_index(&path, original)
                }
            };
        }
        path
    }

    /// Record one serde error and cut the tree so the next attempt gets
    /// further. Returns false when no further progress is possible.
    fn record(
        &mut self,
        value: &mut Value,
        segments: &[Segment],
        message: &str,
        spans: &SpanIndex,
        report: &mut Report,
    ) -> bool {
        if let Some(field) = quoted_after(message, "unknown field `") {
            // serde_path_to_error already put the unknown key on the path.
            let mut with_key = segments.to_vec();
            if with_key.last() != Some(&Segment::Key(field.clone())) {
                with_key.push(Segment::Key(field.clone()));
            }
            let key_path = self.original(&with_key);
            let expected = expected_fields(message);
            let mut d = Diagnostic::error(&key_path, format!("unknown field `{field}`")).at(spans.key(&key_path));
            d = match closest(&field, &expected) {
                Some(best) => d.with_hint(format!("did you mean `{best}`?")),
                None if !expected.is_empty() => d.with_hint(format!("allowed here: {}", expected.join(", "))),
                None => d,
            };
            report.diagnostics.push(d);
            return self.cut(value, &with_key);
        }
        let here = self.original(segments);
        if let Some(field) = quoted_after(message, "missing field `") {
            let field_path = push_key(&here, &field);
            if !self.removed.contains(&field_path) {
                report.diagnostics.push(
                    Diagnostic::error(&field_path, format!("missing required field `{field}`"))
                        .at(spans.value(&here))
                        .with_hint(format!("add `{field}:` here (see `nautes-install schema`)")),
                );
            }
            if segments.is_empty() {
                return fill_root_placeholder(value, &field);
            }
            self.removed.insert(field_path);
            return self.cut(value, segments);
        }
        if !self.removed.contains(&here) {
            report.diagnostics.push(
                Diagnostic::error(&here, humanize(message))
                    .at(spans.value(&here))
                    .with_hint("see `nautes-install schema` for the expected shape"),
            );
        }
        if segments.is_empty() {
            return false;
        }
        self.cut(value, segments)
    }

    /// Remove the node at `segments` (current tree) and remember it.
    fn cut(&mut self, value: &mut Value, segments: &[Segment]) -> bool {
        let Some((last, parent_segments)) = segments.split_last() else {
            return false;
        };
        let original_parent = self.original(parent_segments);
        let original_here = self.original(segments);
        let mut node = &mut *value;
        for seg in parent_segments {
            let next = match (seg, node) {
                (Segment::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
                (Segment::Index(i), Value::Sequence(s)) => s.get_mut(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        let removed = match (last, node) {
            (Segment::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
            (Segment::Index(i), Value::Sequence(s)) if *i < s.len() => {
                s.remove(*i);
                let original_index = original_here
                    .rsplit('[')
                    .next()
                    .and_then(|t| t.trim_end_matches(']').parse().ok())
                    .unwrap_or(*i);
                self.removed_indices
                    .entry(original_parent)
                    .or_default()
                    .insert(original_index);
                true
            }
            _ => false,
        };
        if removed {
            self.removed.insert(original_here);
        }
        removed
    }
}

/// The node at a dotted path (`hosts[1]`) of the original tree.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut node = value;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            node = node.get(key)?;
        }
        for index in indices.split(['[', ']']).filter(|x| !x.is_empty()) {
            node = node.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

/// The three required top-level fields have known shapes; filling them lets
/// the rest of the file still be checked.
fn fill_root_placeholder(value: &mut Value, field: &str) -> bool {
    let Value::Mapping(map) = value else {
        return false;
    };
    let placeholder = match field {
        "apiVersion" => Value::from(API_VERSION),
        "kind" => Value::from(KIND),
        "metadata" => {
            let mut m = serde_yaml::Mapping::new();
            m.insert(Value::from("name"), Value::from("placeholder"));
            Value::Mapping(m)
        }
        _ => return false,
    };
    map.insert(Value::from(field), placeholder);
    true
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// serde lists the allowed fields as "expected one of `a`, `b`".
fn expected_fields(message: &str) -> Vec<String> {
    let Some(i) = message.find("expected") else {
        return Vec::new();
    };
    message[i..].split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn closest(word: &str, candidates: &[String]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<(String, String, Option<usize>)> {
        let report = load_str(Path::new("t.yaml"), src).unwrap_err();
        report
            .diagnostics
            .iter()
            .map(|d| (d.path.clone(), d.message.clone(), d.span.map(|s| s.line)))
            .collect()
    }

    const HEAD: &str = "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: demo\n";

    #[test]
    fn collects_several_structural_errors_with_original_positions() {
        let src = format!(
            "{HEAD}hosts:\n  - name: a\n    adress: 10.0.0.1\n  - name: b\n    address: 10.0.0.2\n    port: many\n  - name: c\n    address: 10.0.0.3\n    labelz: {{}}\n"
        );
        let errs = errors(&src);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs.contains(&("hosts[0].adress".into(), "unknown field `adress`".into(), Some(7))));
        assert!(errs
            .iter()
            .any(|e| e.0 == "hosts[0].address" && e.1.contains("missing")));
        assert!(errs.iter().any(|e| e.0 == "hosts[1].port" && e.2 == Some(10)));
        // After hosts[0] and hosts[1] were cut, hosts[2] must still be reported as hosts[2].
        assert!(errs.contains(&("hosts[2].labelz".into(), "unknown field `labelz`".into(), Some(13))));
    }

    #[test]
    fn suggests_the_closest_field() {
        let src = format!("{HEAD}hosts:\n  - name: a\n    adress: x\n    address: y\n");
        let report = load_str(Path::new("t.yaml"), &src).unwrap_err();
        assert_eq!(report.diagnostics[0].hint.as_deref(), Some("did you mean `address`?"));
    }

    #[test]
    fn missing_top_level_fields_do_not_hide_later_errors() {
        let errs = errors("hosts:\n  - name: a\n    address: b\n    bogus: 1\n");
        let paths: Vec<_> = errs.iter().map(|e| e.0.as_str()).collect();
        assert!(paths.contains(&"apiVersion"), "{paths:?}");
        assert!(paths.contains(&"metadata"), "{paths:?}");
        assert!(paths.contains(&"hosts[0].bogus"), "{paths:?}");
    }

    #[test]
    fn syntax_and_empty_files_are_reported() {
        assert!(errors("a: [1\nb: 2\n")[0].1.starts_with("YAML syntax error"));
        assert_eq!(errors("")[0].1, "the inventory is empty");
        assert!(errors("- 1\n- 2\n")[0].1.contains("must be a mapping"));
    }

    #[test]
    fn a_valid_inventory_loads() {
        let loaded = load_str(Path::new("dir/t.yaml"), HEAD).unwrap();
        assert_eq!(loaded.inventory.metadata.name, "demo");
        assert_eq!(loaded.base_dir, PathBuf::from("dir"));
    }
}
