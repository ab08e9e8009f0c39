//! A mock Kubernetes API server for tests, at the HTTP level (kube.rs's "ApiServerVerifier"
//! pattern): kube-client talks to a `tower_test` mock service, and the test plays the server —
//! it takes each request, checks method, path and query, and answers with the JSON object or
//! the `Status` object the Kubernetes API reference describes, or leaves it unanswered (a
//! timeout). Every request is also recorded as an RBAC [`Call`] (verb, resource, namespace),
//! so a test can check them against deploy/rbac.yaml ([`rbac`]).
//!
//! Must not: be used outside tests (it is behind the `testing` feature), or answer anything
//! by itself — every answer is written by the test, from the API reference.
//!
//! ```text
//! let (api, mut server) = testing::mock_api();
//! let task = tokio::spawn(async move {
//!     server.expect("GET", "/api/v1/namespaces/kube-system/configmaps/kube-proxy", &[])
//!         .await
//!         .respond_json(200, &configmap_json);
//!     server
//! });
//! let text = read_something(&api).await?;
//! task.await?.finish().await;
//! ```

// A failed expectation must fail the test that set it: the harness asserts and panics.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod rbac;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{Handle, SendResponse};

use crate::client::ApiClient;
use crate::error::Call;

/// The server URL the mock client reports in messages.
pub const MOCK_SERVER: &str = "https://mock-apiserver:6443/";

/// The mock server's side of the connection.
pub struct MockApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// A client talking to a new mock server, with a 2 s deadline per request.
pub fn mock_api() -> (ApiClient, MockApiServer) {
    mock_api_with_timeout(Duration::from_secs(2))
}

/// A client with the given per-request deadline (short, for timeout scenarios).
pub fn mock_api_with_timeout(timeout: Duration) -> (ApiClient, MockApiServer) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    (
        ApiClient::from_client(client, MOCK_SERVER, timeout),
        MockApiServer {
            handle,
            calls: Arc::new(Mutex::new(Vec::new())),
        },
    )
}

/// One request the client sent, waiting for its answer.
pub struct Exchange {
    /// HTTP method (`GET`, `PATCH`, ...).
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query parameters, decoded, in the order sent.
    pub query: Vec<(String, String)>,
    /// `Content-Type` header, if any (a patch's type: merge, strategic, apply).
    pub content_type: Option<String>,
    /// The request body.
    pub body: Vec<u8>,
    /// The request as RBAC sees it.
    pub call: Call,
    send: SendResponse<Response<Body>>,
}

/// A request left unanswered; dropping it closes the connection.
pub struct Pending(#[allow(dead_code)] SendResponse<Response<Body>>);

impl MockApiServer {
    /// Every call received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The next request; panics if the client has gone (no request came).
    pub async fn next(&mut self) -> Exchange {
        let (request, send) = self
            .handle
            .next_request()
            .await
            .expect("the client sent no further request");
        let (parts, body) = request.into_parts();
        let body = body
            .collect_bytes()
            .await
            .expect("request body readable")
            .to_vec();
        let path = parts.uri.path().to_owned();
        let query = parse_query(parts.uri.query().unwrap_or(""));
        let method = parts.method.as_str().to_owned();
        let call = classify(&method, &path, &query);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call.clone());
        }
        Exchange {
            method,
            path,
            query,
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            call,
            send,
        }
    }

    /// The next request, asserting its method, path and query parameters (each `(key, value)`
    /// must be present; other parameters are allowed).
    pub async fn expect(&mut self, method: &str, path: &str, query: &[(&str, &str)]) -> Exchange {
        let ex = self.next().await;
        assert_eq!(
            (ex.method.as_str(), ex.path.as_str()),
            (method, path),
            "unexpected request (query {:?})",
            ex.query
        );
        for (k, v) in query {
            assert!(
                ex.query.iter().any(|(qk, qv)| qk == k && qv == v),
                "{method} {path}: query parameter {k}={v} missing in {:?}",
                ex.query
            );
        }
        ex
    }

    /// Asserts the client sends nothing more (it must have been dropped first), and returns
    /// the calls received.
    pub async fn finish(mut self) -> Vec<Call> {
        if let Some((req, _)) = self.handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
        self.calls()
    }
}

impl Exchange {
    /// The body as JSON.
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// The value of a query parameter.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Answers with a JSON body.
    pub fn respond_json(self, code: u16, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.respond_raw(code, "application/json", bytes);
    }

    /// Answers with any body.
    pub fn respond_raw(self, code: u16, content_type: &str, body: Vec<u8>) {
        let response = Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("response");
        self.send.send_response(response);
    }

    /// Answers with a failure `Status` object (API reference: "Status", meta/v1), as the API
    /// server does for errors: `kind: Status`, `status: Failure`, `code`, `reason`, `message`,
    /// and `details` naming the object.
    pub fn respond_status(self, code: u16, reason: &str, message: &str, details: Value) {
        let body = status_body(code, reason, message, details);
        self.respond_json(code, &body);
    }

    /// Fails the request at the transport, as a refused connection does (no HTTP answer).
    pub fn refuse(self) {
        self.send.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
    }

    /// Leaves the request unanswered (keep the value alive while the client waits).
    pub fn hang(self) -> Pending {
        Pending(self.send)
    }
}

/// A failure `Status` object.
pub fn status_body(code: u16, reason: &str, message: &str, details: Value) -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    })
}

/// Decodes `a=b&c=d` (percent-encoding and `+` for space, as URL-encoded forms).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The RBAC view of a request, from the URL layout of the API reference ("API Concepts:
/// resource URIs"): `/api/v1/...` is the core group, `/apis/GROUP/VERSION/...` the others;
/// `namespaces/NS/` scopes a namespaced resource; the verb is get/list/watch for GET (watch
/// when `watch=true`), create for POST, update for PUT, patch for PATCH, delete (or
/// deletecollection without a name) for DELETE.
pub fn classify(method: &str, path: &str, query: &[(String, String)]) -> Call {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => ("?", &segs[..0]),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [res] => (*res, None, None),
        [res, name] => (*res, Some(*name), None),
        [res, name, sub, ..] => (*res, Some(*name), Some(*sub)),
        [] => ("?", None, None),
    };
    let watch = query
        .iter()
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let verb = match (method, name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "?",
    };
    Call {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource: match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_owned(),
        },
        namespace,
        name: name.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, query: &str, expect: &str) {
        let call = classify(method, path, &parse_query(query));
        assert_eq!(call.to_string(), expect, "{method} {path}?{query}");
    }

    #[test]
    fn requests_are_classified_as_rbac_sees_them() {
        check(
            "GET",
            "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
            "",
            "get configmaps kube-system/kube-proxy",
        );
        check(
            "GET",
            "/apis/discovery.k8s.io/v1/endpointslices",
            "limit=500",
            "list endpointslices.discovery.k8s.io (all namespaces or cluster-scoped)",
        );
        check(
            "GET",
            "/api/v1/services",
            "watch=true&resourceVersion=5",
            "watch services (all namespaces or cluster-scoped)",
        );
        check("PATCH", "/api/v1/nodes/n1", "", "patch nodes n1");
        check(
            "POST",
            "/api/v1/namespaces/default/events",
            "",
            "create events in namespace default",
        );
        check(
            "PUT",
            "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations/m/status",
            "",
            "update ipvsmigrations.ipvs-migrate.io/status m",
        );
        check("GET", "/api/v1/namespaces/web", "", "get namespaces web");
    }

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            parse_query("labelSelector=k8s-app%3Dkube-proxy&x=a+b&bad=%zz"),
            vec![
                ("labelSelector".to_owned(), "k8s-app=kube-proxy".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("bad".to_owned(), "%zz".to_owned()),
            ]
        );
    }
}
