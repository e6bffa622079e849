//! A step's fingerprint: sha256 over a canonical JSON encoding of its kind
//! and inputs. Canonical means object keys sorted and no insignificant
//! whitespace, so the same inputs always hash the same however they were
//! built or whichever serde_json features some dependency switches on.

use std::io::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::hex;

pub fn fingerprint(kind: &str, spec: &Value) -> String {
    // The canonical text goes straight into the hasher: the same bytes as
    // building it in a string first, without the string.
    let mut hasher = Sha256::new();
    write_str(kind, &mut hasher);
    hasher.update(b"\n");
    write_canonical(spec, &mut hasher);
    hex(&hasher.finalize())
}

/// A JSON string literal, escaped exactly as serde_json writes it.
fn write_str(s: &str, out: &mut Sha256) {
    serde_json::to_writer(Sink(out), s).expect("hashing never fails");
}

fn write_canonical(value: &Value, out: &mut Sha256) {
    match value {
        Value::Object(map) => {
            out.update(b"{");
            let mut first = true;
            let mut field = |k: &String, v: &Value, out: &mut Sha256| {
                if !std::mem::take(&mut first) {
                    out.update(b",");
                }
                write_str(k, out);
                out.update(b":");
                write_canonical(v, out);
            };
            // serde_json's map is sorted already unless some dependency
            // switches on `preserve_order`; sort only then.
            if map.keys().is_sorted() {
                for (k, v) in map {
                    field(k, v, out);
                }
            } else {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    field(k, &map[k], out);
                }
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                write_canonical(v, out);
            }
            out.update(b"]");
        }
        other => serde_json::to_writer(Sink(out), other).expect("hashing never fails"),
    }
}

/// Feeds what serde_json writes to the hasher.
struct Sink<'a>(&'a mut Sha256);

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter_but_values_do() {
        let a = fingerprint("hook", &json!({"a": 1, "b": {"x": [1, 2], "y": "z"}}));
        let b = fingerprint("hook", &json!({"b": {"y": "z", "x": [1, 2]}, "a": 1}));
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("hook", &json!({"a": 2, "b": {"x": [1, 2], "y": "z"}})));
        assert_ne!(a, fingerprint("other", &json!({"a": 1, "b": {"x": [1, 2], "y": "z"}})));
        assert_eq!(a.len(), 64);
    }

    /// The digest of the canonical text, pinned: every recorded state holds
    /// fingerprints, so a change here would re-run every finished step.
    #[test]
    fn digests_are_those_of_the_canonical_text() {
        let spec = json!({"b": [1, 2.5, null, true], "a": {"k\"ey": "v\u{e9}\n"}, "": -3});
        let text = "\"hook\"\n{\"\":-3,\"a\":{\"k\\\"ey\":\"v\u{e9}\\n\"},\"b\":[1,2.5,null,true]}";
        assert_eq!(fingerprint("hook", &spec), crate::util::sha256_hex(text.as_bytes()));
    }
}
