//! Arbitrary bytes and arbitrary inventory-shaped YAML into load, validate
//! and plan: any outcome is fine except a panic.

use std::path::Path;

use nautes_install::inventory::{load_bytes, validate::validate};
use proptest::prelude::*;

fn check(bytes: &[u8]) {
    if let Ok(loaded) = load_bytes(Path::new("fuzz.yaml"), bytes) {
        let report = validate(&loaded);
        let _ = report.render(false);
        let _ = report.to_json();
        if report.errors() == 0 {
            let _ = nautes_install::components::plan(&loaded);
        }
    } else if let Err(report) = load_bytes(Path::new("fuzz.yaml"), bytes) {
        // Rendering must also survive whatever positions the error carries.
        let _ = report.render(false);
    }
}

/// Keys the inventory knows, so generated documents get deep into the types.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "hosts",
    "address",
    "port",
    "clusters",
    "type",
    "k3s",
    "servers",
    "agents",
    "version",
    "networking",
    "podCidr",
    "serviceCidr",
    "virtualClusters",
    "hostCluster",
    "tenants",
    "cluster",
    "namespaces",
    "children",
    "components",
    "vault",
    "placement",
    "host",
    "hooks",
    "run",
    "after",
    "before",
    "ssh",
    "identityFile",
    "artifacts",
    "mode",
    "bundle",
    "settings",
    "timeouts",
    "nodeReady",
    "sudoPassword",
    "env",
    "file",
    "external",
    "url",
];

fn scalar() -> impl Strategy<Value = serde_yaml::Value> {
    prop_oneof![
        Just(serde_yaml::Value::Null),
        any::<bool>().prop_map(serde_yaml::Value::from),
        any::<i64>().prop_map(serde_yaml::Value::from),
        prop::sample::select(vec![
            "install.nautes.io/v1alpha1",
            "Inventory",
            "k3s",
            "node-1",
            "10.0.0.1",
            "10.42.0.0/16",
            "v1.27.4+k3s1",
            "10m",
            "host",
            "external",
            "k3s/*",
            "hook/a",
            "",
            "-",
            "a\u{0}b",
            "ü",
        ])
        .prop_map(serde_yaml::Value::from),
        "[a-z0-9./*:-]{0,12}".prop_map(serde_yaml::Value::from),
    ]
}

fn document() -> impl Strategy<Value = serde_yaml::Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_yaml::Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                let mut m = serde_yaml::Mapping::new();
                for (k, v) in pairs {
                    m.insert(serde_yaml::Value::from(k), v);
                }
                serde_yaml::Value::Mapping(m)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[ -~\n\t:\\-\\[\\]{}#&*!|>'\"%@`é]{0,300}") {
        check(text.as_bytes());
    }

    #[test]
    fn arbitrary_inventory_shaped_yaml_never_panics(doc in document()) {
        let text = serde_yaml::to_string(&doc).unwrap_or_default();
        check(text.as_bytes());
    }
}

#[test]
fn known_tricky_inputs_never_panic() {
    for input in [
        "",
        "---",
        "...",
        "- a",
        "a: &x [*x]",
        "a: *undefined",
        "? [a]\n: b",
        "hosts: [[]]",
        "metadata: {name: [1]}",
        "hosts:\n  - {name: a, address: 1.2.3.4}\n  - {}\n  - 7",
        "\u{feff}apiVersion: x",
        "hosts: !!binary aGVsbG8=",
        "a: b\na: c",
        "hooks:\n - name: a\n   run: x\n   after: ['*']\n - name: b\n   run: y\n   after: ['*']",
    ] {
        check(input.as_bytes());
    }
    check(&[0xff, 0xfe, 0x00]);
    // Valid up to planning, where every hook runs after every other: a cycle.
    check(
        b"apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata: {name: x}\nhooks:\n - {name: a, run: x, after: ['*']}\n - {name: b, run: y, after: ['*']}\n",
    );
}
