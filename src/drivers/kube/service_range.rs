//! The cluster's Service IP range, which the API does not publish directly
//! before Kubernetes 1.31 (no ServiceCIDR objects): what a virtual cluster's
//! own API server must be started with, or the Services it syncs to the host
//! cannot keep their addresses.
//!
//! Read, in order: the `kubernetes` ServiceCIDR object (networking.k8s.io
//! v1 or v1beta1, served where the multi-CIDR allocator is on), then the
//! range the API server names when it refuses a Service address outside it
//! — asked with a server-side dry run, so nothing is created. The vcluster
//! CLI finds it the second way too.

use kube::api::{DynamicObject, PostParams};
use serde_json::json;

use super::{with_retries, KubeClient, KubeError, ObjectRef};

/// An address no cluster hands out to Services in practice (public,
/// outside every private range), asked for only in a dry run.
const PROBE_ADDRESS: &str = "4.4.4.4";

/// What the API server says before the range when it refuses an address
/// (kube-apiserver's single-range ipallocator; the real 1.30 apiserver of
/// the tests answers this way).
const RANGE_PREFIX: &str = "The range of valid IPs is ";

/// The Service range(s), comma-separated for a dual-stack cluster.
pub async fn service_cidr(client: &KubeClient) -> Result<String, KubeError> {
    if let Some(cidrs) = from_service_cidr_object(client).await? {
        return Ok(cidrs);
    }
    from_refused_address(client).await
}

async fn from_service_cidr_object(client: &KubeClient) -> Result<Option<String>, KubeError> {
    for api_version in ["networking.k8s.io/v1", "networking.k8s.io/v1beta1"] {
        let Some(served) = client.served(api_version, "ServiceCIDR").await? else {
            continue;
        };
        let r = ObjectRef {
            api_version: api_version.into(),
            kind: "ServiceCIDR".into(),
            namespace: None,
            name: "kubernetes".into(),
        };
        if let Some(object) = client.get(&served, &r).await? {
            let cidrs: Vec<String> = object.data["spec"]["cidrs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            if !cidrs.is_empty() {
                return Ok(Some(cidrs.join(",")));
            }
        }
    }
    Ok(None)
}

async fn from_refused_address(client: &KubeClient) -> Result<String, KubeError> {
    let served = client
        .served("v1", "Service")
        .await?
        .ok_or_else(|| KubeError::Config("the cluster serves no Services".into()))?;
    let api = client.api(&served, Some("default"));
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "nautes-service-range-probe", "namespace": "default"},
        "spec": {"clusterIP": PROBE_ADDRESS, "ports": [{"port": 443}]},
    }))
    .map_err(|e| KubeError::Config(e.to_string()))?;
    let params = PostParams {
        dry_run: true,
        field_manager: Some("nautes-install".into()),
    };
    match with_retries(|| api.create(&params, &probe)).await {
        Err(KubeError::Api { message, .. }) if message.contains(RANGE_PREFIX) => range_in(&message)
            .ok_or_else(|| KubeError::Config(format!("cannot read the Service range from: {message}"))),
        Err(e) => Err(e),
        Ok(_) => Err(KubeError::Config(format!(
            "the cluster would give a Service {PROBE_ADDRESS}, so its Service range cannot be found out this way"
        ))),
    }
}

/// The range in the API server's refusal: the word after [`RANGE_PREFIX`].
fn range_in(message: &str) -> Option<String> {
    let (_, rest) = message.split_once(RANGE_PREFIX)?;
    let range: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/' | ','))
        .collect();
    let range = range.trim_end_matches('.');
    range.contains('/').then(|| range.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_read_from_the_refusal_of_each_apiserver_wording() {
        // kube-apiserver 1.30's answer, as the real one gives it.
        let msg = "Service \"nautes-service-range-probe\" is invalid: spec.clusterIPs: Invalid value: \
                   []string{\"4.4.4.4\"}: failed to allocate IP 4.4.4.4: provided IP is not in the valid \
                   range. The range of valid IPs is 10.43.0.0/16";
        assert_eq!(range_in(msg).as_deref(), Some("10.43.0.0/16"));
        assert_eq!(
            range_in("... The range of valid IPs is fd00:10:96::/108.").as_deref(),
            Some("fd00:10:96::/108")
        );
        assert_eq!(range_in("The range of valid IPs is unknown"), None);
        assert_eq!(range_in("something else entirely"), None);
    }
}
