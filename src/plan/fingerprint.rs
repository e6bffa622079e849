//! A step's fingerprint: sha256 over a canonical JSON encoding of its kind
//! and inputs. Canonical means object keys sorted and no insignificant
//! whitespace, so the same inputs always hash the same however they were
//! built or whichever serde_json features some dependency switches on.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::hex;

pub fn fingerprint(kind: &str, spec: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(&Value::String(kind.to_string()), &mut canonical);
    canonical.push('\n');
    write_canonical(spec, &mut canonical);
    hex(&Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
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
}
