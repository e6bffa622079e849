//! Templates are compiled into the binary, so an installed binary renders
//! the same files anywhere, with no templates/ directory beside it.

use std::sync::OnceLock;

use tera::{Context, Tera};

/// (name, source) of every template under templates/.
const TEMPLATES: &[(&str, &str)] = &[
    ("k3s/config.yaml", include_str!("../templates/k3s/config.yaml.tera")),
    (
        "k3s/registries.yaml",
        include_str!("../templates/k3s/registries.yaml.tera"),
    ),
    (
        "kubespray/hosts.yaml",
        include_str!("../templates/kubespray/hosts.yaml.tera"),
    ),
    (
        "kubespray/group_vars.yml",
        include_str!("../templates/kubespray/group_vars.yml.tera"),
    ),
    (
        "gitlab/tenant-repo/README.md",
        include_str!("../templates/gitlab/tenant-repo/README.md.tera"),
    ),
    (
        "gitlab/tenant-repo/tenants.yaml",
        include_str!("../templates/gitlab/tenant-repo/tenants.yaml.tera"),
    ),
    (
        "gitlab/tenant-repo/clusters.yaml",
        include_str!("../templates/gitlab/tenant-repo/clusters.yaml.tera"),
    ),
    (
        "gitlab/update-oauth-app.rb",
        include_str!("../templates/gitlab/update-oauth-app.rb.tera"),
    ),
    (
        "vault/policies.yaml",
        include_str!("../templates/vault/policies.yaml.tera"),
    ),
    (
        "vcluster/values.yaml",
        include_str!("../templates/vcluster/values.yaml.tera"),
    ),
];

fn engine() -> Result<&'static Tera, String> {
    static ENGINE: OnceLock<Result<Tera, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut tera = Tera::default();
            tera.autoescape_on(vec![]);
            tera.add_raw_templates(TEMPLATES.iter().copied())
                .map_err(|e| format!("{e:?}"))?;
            Ok(tera)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Render the embedded template `name` with `context` (anything Serialize).
pub fn render(name: &str, context: &impl serde::Serialize) -> Result<String, String> {
    let ctx = Context::from_serialize(context).map_err(|e| format!("template {name}: bad context: {e}"))?;
    engine()?.render(name, &ctx).map_err(|e| {
        // tera hides the useful part in the source chain.
        let mut msg = format!("template {name}: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_embedded_template_parses() {
        assert!(super::engine().is_ok(), "{:?}", super::engine().err());
    }
}
