//! The HTTP plumbing the REST drivers of Harbor, Nexus and SonarQube share:
//! HTTP Basic credentials, TLS verified against the CA we are given (or the
//! system roots), JSON, text or form bodies, reads retried while a server is
//! still starting, and the products' error shapes turned into sentences.
//! Credentials travel only in headers and bodies; neither a request body nor
//! a header ever reaches an error message. Knows nothing of Nautes.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::secret::Secret;

/// Who a request is from.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Anonymous,
    /// HTTP Basic: a user and a password (or, for SonarQube, a token as the
    /// user and an empty password).
    Basic(&'a str, &'a Secret),
}

/// What a request carries.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// `text/plain` (Nexus takes a new password this way).
    Text(&'a Secret),
    /// `application/x-www-form-urlencoded`: SonarQube's web services. The
    /// values may be secrets, so they are `Secret`s.
    Form(&'a [(&'a str, Secret)]),
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{method} {url}: {reason}")]
    Transport {
        method: Method,
        url: String,
        reason: String,
    },
    #[error("{product} answered {status} to {method} {path}: {message}")]
    Status {
        product: &'static str,
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
}

impl RestError {
    pub fn status(&self) -> Option<u16> {
        match self {
            RestError::Status { status, .. } => Some(*status),
            RestError::Transport { .. } => None,
        }
    }
}

/// An answer: status, headers (lower-case names) and the body.
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub text: String,
}

impl Reply {
    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.text.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// A server's base URL (`https://harbor.example/api/v2.0`) and a client.
pub struct Rest {
    product: &'static str,
    base: String,
    client: reqwest::Client,
}

/// Percent-encodes a path segment or a form/query value.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The products' error shapes: Harbor `{"errors":[{"code","message"}]}`,
/// SonarQube `{"errors":[{"msg"}]}`, Nexus `[{"id","message"}]` or plain
/// text; anything else is cut to 200 characters. HTML pages (a servlet's
/// 500) become their title.
pub fn error_text(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        if let Some(start) = body.find("<title>") {
            let rest = &body[start + 7..];
            return rest[..rest.find("</title>").unwrap_or(rest.len())].trim().to_string();
        }
        return body.trim().chars().take(200).collect();
    };
    let items = match (&v, v.get("errors")) {
        (_, Some(Value::Array(errors))) => errors.clone(),
        (Value::Array(items), _) => items.clone(),
        _ => vec![v.clone()],
    };
    items
        .iter()
        .map(|e| {
            let text = e
                .get("message")
                .or_else(|| e.get("msg"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string());
            match e.get("id").and_then(Value::as_str) {
                Some(id) => format!("{id}: {text}"),
                None => text,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Rest {
    /// `ca_pem`: the only CA trusted for this server; `None` uses the system roots.
    pub fn new(product: &'static str, base: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Rest, String> {
        Rest::new_at(product, base, ca_pem, timeout, None)
    }

    /// As `new`, reaching the base URL's host at `address` (a server behind
    /// an ingress whose name no DNS here resolves).
    pub fn new_at(
        product: &'static str,
        base: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        address: Option<std::net::SocketAddr>,
    ) -> Result<Rest, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| format!("the {product} CA is not PEM: {e}"))?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        if let Some(addr) = address {
            let host = reqwest::Url::parse(base)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .ok_or_else(|| format!("{base} has no host name"))?;
            builder = builder.resolve(&host, addr);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Rest {
            product,
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request to `<base>/<path>`, whatever the status. Reads are
    /// retried on 5xx and transport errors (a server still starting answers
    /// 502 or refuses the connection); writes are not.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Body<'_>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, RestError> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let attempts = if method == Method::GET { 4 } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last_try = attempt == attempts;
            let mut req = self.client.request(method.clone(), &url);
            if let Auth::Basic(user, password) = auth {
                req = req.basic_auth(user, Some(password.expose()));
            }
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            req = match &body {
                Body::Empty => req,
                Body::Json(v) => req.json(v),
                Body::Text(t) => req.header("Content-Type", "text/plain").body(t.expose().to_string()),
                Body::Form(fields) => req.header("Content-Type", "application/x-www-form-urlencoded").body(
                    fields
                        .iter()
                        .map(|(k, v)| format!("{}={}", encode(k), encode(v.expose())))
                        .collect::<Vec<_>>()
                        .join("&"),
                ),
            };
            match req.send().await {
                Ok(resp) if last_try || !resp.status().is_server_error() => {
                    let status = resp.status().as_u16();
                    let headers = resp
                        .headers()
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string())))
                        .collect();
                    let text = resp.text().await.unwrap_or_default();
                    return Ok(Reply { status, headers, text });
                }
                Ok(_) => {}
                Err(e) if last_try => {
                    return Err(RestError::Transport {
                        method,
                        url,
                        reason: e.to_string(),
                    })
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
    }

    /// Like [`Rest::send`], with any status outside 2xx an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Body<'_>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, RestError> {
        let reply = self.send(method.clone(), path, auth, body, headers).await?;
        if !StatusCode::from_u16(reply.status).is_ok_and(|s| s.is_success()) {
            return Err(self.refused(method, path, &reply));
        }
        Ok(reply)
    }

    /// The error for an answer the caller did not expect.
    pub fn refused(&self, method: Method, path: &str, reply: &Reply) -> RestError {
        RestError::Status {
            product: self.product,
            method,
            // The query may name things but never carries credentials.
            path: path.to_string(),
            status: reply.status,
            message: error_text(&reply.text),
        }
    }

    /// Whether `auth` is accepted at `path`, a GET every valid user may
    /// make: `Ok(false)` on 401, an error on any other refusal.
    pub async fn accepts(&self, path: &str, auth: Auth<'_>) -> Result<bool, RestError> {
        let reply = self.send(Method::GET, path, auth, Body::Empty, &[]).await?;
        match reply.status {
            200 => Ok(true),
            401 => Ok(false),
            _ => Err(self.refused(Method::GET, path, &reply)),
        }
    }

    /// GET as JSON; `None` on 404.
    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Result<Option<Value>, RestError> {
        match self.call(Method::GET, path, auth, Body::Empty, &[]).await {
            Ok(r) => Ok(Some(r.json())),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_products_error_shapes_become_sentences() {
        assert_eq!(
            error_text(r#"{"errors":[{"code":"CONFLICT","message":"project a already exists"}]}"#),
            "project a already exists"
        );
        assert_eq!(
            error_text(r#"{"errors":[{"msg":"A user token for login 'admin' and name 't1' already exists"}]}"#),
            "A user token for login 'admin' and name 't1' already exists"
        );
        assert_eq!(
            error_text(r#"[{"id":"PARAMETER name","message":"Name is already used"}]"#),
            "PARAMETER name: Name is already used"
        );
        assert_eq!(
            error_text("<!doctype html><html><head><title>HTTP Status 500 – Internal Server Error</title>"),
            "HTTP Status 500 – Internal Server Error"
        );
    }

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(encode("a b&c=d+é"), "a%20b%26c%3Dd%2B%C3%A9");
    }
}
