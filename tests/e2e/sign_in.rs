//! Unified sign-in, the Kubernetes half (issue 19): the real Dex on the
//! config the installer renders, its GitLab connector signing users in
//! through the GitLab stand-in's OAuth endpoints, and the real
//! kube-apiserver with the OIDC flags the installer renders for K3s.

use serde_json::json;

use crate::support::dex::{self, Dex};
use crate::support::gitlab::GitlabStandin;

/// The id_token Dex issues after the whole login carries the user's GitLab
/// groups as GitLab's userinfo reports them, for the client that asked.
#[test]
fn dex_issues_an_id_token_with_the_gitlab_groups_of_the_user() {
    if dex::skip_unless_available() {
        return;
    }
    let gitlab = GitlabStandin::start();
    let dex = Dex::start(&gitlab, "sso.test");
    let login = dex.login("kubernetes", "alice", &["acme-dev"]);
    let c = &login.claims;
    assert_eq!(c["iss"], json!("https://dex.sso.test"));
    assert_eq!(c["aud"], json!("kubernetes"));
    assert_eq!(c["groups"], json!(["acme-dev"]));
    assert_eq!(c["email"], json!("alice@example.com"));
    assert_eq!(c["email_verified"], json!(true));
    assert_eq!(c["name"], json!("User alice"));

    // A confidential client (Argo CD's) gets its own token the same way;
    // a subgroup of a group the user is in is in the claim too.
    dex.gitlab_user("carol", &["acme/web"]);
    let login = dex.login("argocd", "bob", &["acme"]);
    assert_eq!(login.claims["aud"], json!("argocd"));
    assert_eq!(login.claims["groups"], json!(["acme", "acme/web"]));

    // Dex asked GitLab for exactly what its connector reads.
    let paths: Vec<String> = gitlab
        .requests()
        .iter()
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    for expected in ["POST /oauth/token", "GET /api/v4/user", "GET /oauth/userinfo"] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not in {paths:?}");
    }
}
