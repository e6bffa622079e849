//! One blocking HTTP call for test code, from sync and async tests alike
//! (each call runs on a thread of its own with its own runtime), so tests
//! talk to servers from Rust rather than through `python3 -c`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

pub struct Call<'a> {
    pub method: &'a str,
    pub url: String,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<String>,
    /// A PEM CA to trust besides nothing else (https only).
    pub ca_pem: Option<String>,
    /// Follow redirects (the default), or answer with the redirect itself.
    pub follow_redirects: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, url: impl Into<String>) -> Call<'a> {
        Call {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            ca_pem: None,
            follow_redirects: true,
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Answer with a redirect instead of following it (a browser step a
    /// test makes itself).
    pub fn no_redirects(mut self) -> Self {
        self.follow_redirects = false;
        self
    }

    pub fn trust(mut self, ca_pem: impl Into<String>) -> Self {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// (status, body text), or why no answer came.
    pub fn send(self) -> Result<(u16, String), String> {
        self.exchange().map(|(code, _, body)| (code, body))
    }

    /// (status, headers with lower-case names, body text), or why no
    /// answer came. Redirects are followed, as a browser or urllib would.
    pub fn exchange(self) -> Result<(u16, BTreeMap<String, String>, String), String> {
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
                    if !self.follow_redirects {
                        builder = builder.redirect(reqwest::redirect::Policy::none());
                    }
                    if let Some(ca) = &self.ca_pem {
                        builder = builder.add_root_certificate(
                            reqwest::Certificate::from_pem(ca.as_bytes()).map_err(|e| e.to_string())?,
                        );
                    }
                    let client = builder.build().map_err(|e| e.to_string())?;
                    let method = reqwest::Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
                    let mut req = client.request(method, &self.url);
                    for (k, v) in &self.headers {
                        req = req.header(*k, v);
                    }
                    if let Some(b) = self.body {
                        req = req.body(b);
                    }
                    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
                    let code = resp.status().as_u16();
                    let headers = resp
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    Ok((code, headers, resp.text().await.map_err(|e| e.to_string())?))
                })
            })
            .join()
            .unwrap()
        })
    }

    /// (status, JSON body or null).
    pub fn json(self) -> (u16, serde_json::Value) {
        let what = format!("{} {}", self.method, self.url);
        let (code, text) = self.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        (code, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}
