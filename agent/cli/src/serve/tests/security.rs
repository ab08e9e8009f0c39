//! Who may call what (docs/serve.md#security): read-only routes are open for scraping, every
//! call that could change state needs the bearer token, and the webhook is rate-limited
//! (429 + Retry-After, counted). Through the router, as the server runs it.

use super::*;

/// The read-only routes: open without a token. Add `/` and `/api/v1/report` here when the
/// router serves them.
const READ_ONLY: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/status",
    "/",
    "/api/v1/report",
];
/// The routes that change state: the Alertmanager webhook (rollback triggers).
const STATE_CHANGING: &[&str] = &["/api/v1/alerts"];

fn request(method: &str, path: &str, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    b.body(Body::from(payload("firing", ratio_alert(NODE))))
        .unwrap()
}

#[tokio::test]
async fn read_only_routes_answer_without_a_token() {
    let f = Fixture::new();
    let (app, _rx) = f.app(Some(TOKEN));
    for path in READ_ONLY {
        let (code, headers, _) = call(&app, get(path)).await;
        assert_eq!(code, StatusCode::OK, "GET {path}");
        assert!(
            !headers.contains_key(header::WWW_AUTHENTICATE),
            "GET {path}"
        );
    }
}

#[tokio::test]
async fn no_method_changes_state_on_any_route_without_the_token() {
    let f = Fixture::new();
    // A generous limit: every call must reach the authorization check.
    let (app, mut rx) = f.app_limited(Some(TOKEN), 1000.0, 1000);
    for path in READ_ONLY.iter().chain(STATE_CHANGING) {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            for auth in [
                None,
                Some("Bearer wrong-token"),
                Some("Basic czNjcmV0LXRva2Vu"),
            ] {
                let (code, _, _) = call(&app, request(method, path, auth)).await;
                // 401 (a route that changes state) or 405 (a read-only route): never a success.
                assert!(
                    code == StatusCode::UNAUTHORIZED || code == StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} with {auth:?}: {code}"
                );
                if STATE_CHANGING.contains(path) && method == "POST" {
                    assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
                }
            }
        }
    }
    assert!(drain(&mut rx).is_empty());
    // The same call with the token does change state: the check above is not vacuous.
    let (code, _, _) = call(&app, request("POST", STATE_CHANGING[0], bearer())).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(drain(&mut rx).len(), 1);
}

#[tokio::test]
async fn calls_over_the_burst_get_429_with_retry_after_and_are_counted() {
    let f = Fixture::new();
    // Two calls at once, then one every 4 s.
    let (app, mut rx) = f.app_limited(Some(TOKEN), 0.25, 2);
    for _ in 0..2 {
        let (code, _, _) = call(&app, post(bearer(), payload("firing", ratio_alert(NODE)))).await;
        assert_eq!(code, StatusCode::OK);
    }
    let (code, headers, _) = call(&app, post(bearer(), payload("firing", ratio_alert(NODE)))).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    // RFC 9110 §10.2.3: delay-seconds. The next token is at most 4 s away, at least 1 s.
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&retry), "Retry-After {retry}");
    assert_eq!(drain(&mut rx).len(), 1);
    let series = "ipvs_migrate_webhook_refused_total{node=\"node-a\",reason=\"rate_limited\"}";
    assert_eq!(metric(&app, series).await, "1");
}

#[tokio::test]
async fn an_unauthenticated_flood_does_not_lock_alertmanager_out() {
    let f = Fixture::new();
    let (app, mut rx) = f.app_limited(Some(TOKEN), 0.001, 3);
    let mut codes = Vec::new();
    for _ in 0..5 {
        let (code, _, _) = call(&app, post(Some("Bearer guess"), "{}")).await;
        codes.push(code.as_u16());
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
    let (code, _, _) = call(&app, post(bearer(), payload("firing", ratio_alert(NODE)))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(drain(&mut rx).len(), 1);
    let unauthorized =
        "ipvs_migrate_webhook_refused_total{node=\"node-a\",reason=\"unauthorized\"}";
    assert_eq!(metric(&app, unauthorized).await, "3");
}
