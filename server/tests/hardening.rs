//! Hostile requests to the router in-process: each test is a finding of the hardening review
//! (issue 15) that once crashed a handler, leaked, or let another web page write.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::app::TestApp;

/// A well-formed digest that names nothing.
fn unknown_digest() -> String {
    format!("sha256:{}", "0".repeat(64))
}

/// Finding 13: a cursor past the database's integer range answered a panic in the SQL binder.
#[tokio::test]
async fn list_cursors_beyond_the_database_range_are_400() {
    let app = TestApp::new().await;
    for list in ["/v1/datasets", "/v1/runs", "/v1/commentaries"] {
        for cursor in [
            "9223372036854775808",
            "18446744073709551615",
            "99999999999999999999999",
            "-1",
            "+5",
        ] {
            let answer = app.get(&format!("{list}?cursor={cursor}")).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{list}?cursor={cursor}: {}",
                answer.text
            );
            assert_eq!(answer.error_code(), "bad_request");
        }
        let fine = app.get(&format!("{list}?cursor=9223372036854775000")).await;
        assert_eq!(fine.status, StatusCode::OK, "{list}: {}", fine.text);
    }
}

/// A write as a browser sends it: with a Host and, from a page, an Origin.
fn write(
    method: Method,
    path: &str,
    host: &str,
    origin: Option<&str>,
    body: &str,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.body(Body::from(body.to_string())).expect("request")
}

/// Finding 16: on a loopback bind anonymous writes are allowed, so any page the user visits (a
/// cross-origin POST, or DNS rebinding under the attacker's name) could write.
#[tokio::test]
async fn anonymous_writes_need_the_loopback_host_and_a_matching_origin() {
    let app = TestApp::new().await;
    let run = format!(
        r#"{{"dataset": "{}", "kind": "label-blending"}}"#,
        unknown_digest()
    );
    // From the machine itself (curl, the CLI, our own pages): past auth, to "no such dataset".
    for (host, origin) in [
        ("127.0.0.1:8080", None),
        ("localhost:8080", None),
        ("[::1]:8080", None),
        ("127.0.0.1:8080", Some("http://127.0.0.1:8080")),
        ("localhost:8080", Some("http://localhost:8080")),
    ] {
        let answer = app
            .send(write(Method::POST, "/v1/runs", host, origin, &run))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "Host {host} Origin {origin:?}: {}",
            answer.text
        );
    }
    // From another page or another name.
    for (method, path, host, origin) in [
        (
            Method::POST,
            "/v1/runs",
            "127.0.0.1:8080",
            Some("https://evil.example"),
        ),
        (
            Method::POST,
            "/v1/runs",
            "localhost:8080",
            Some("http://localhost:3000"),
        ),
        (Method::POST, "/v1/runs", "attacker.example:8080", None),
        (
            Method::POST,
            "/v1/runs",
            "attacker.example:8080",
            Some("http://attacker.example:8080"),
        ),
        (Method::POST, "/v1/runs", "127.0.0.1:8080", Some("null")),
        (
            Method::DELETE,
            "/v1/datasets/0000000000000000000000000000000000000000000000000000000000000000",
            "attacker.example",
            None,
        ),
    ] {
        let answer = app
            .send(write(method.clone(), path, host, origin, &run))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {path} Host {host} Origin {origin:?}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), "forbidden");
    }
    // A "simple" cross-origin request (text/plain needs no preflight) is refused before its body
    // is read.
    let simple = Request::post("/v1/runs")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(run.clone()))
        .expect("request");
    assert_eq!(app.send(simple).await.status, StatusCode::FORBIDDEN);
    // Reads stay public.
    let read = Request::get("/v1/runs")
        .header(header::HOST, "attacker.example")
        .body(Body::empty())
        .expect("request");
    assert_eq!(app.send(read).await.status, StatusCode::OK);
}

/// Finding 10: a 400 MB JSON body was accepted; JSON routes take small bodies (the large limit
/// is for uploads only).
#[tokio::test]
async fn json_bodies_past_the_json_limit_are_413() {
    let app = TestApp::new().await;
    let padding = "x".repeat(2 << 20);
    let body = format!(
        r#"{{"dataset": "{}", "kind": "label-blending", "config": {{"validation_split": "{padding}"}}}}"#,
        unknown_digest()
    );
    let answer = app.post_json("/v1/runs", &body).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text
    );
    assert_eq!(answer.error_code(), "payload_too_large");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MiB")),
        "{}",
        answer.text
    );
}

/// Finding 17: dataset names accepted NUL and control characters.
#[tokio::test]
async fn dataset_names_with_control_characters_are_refused() {
    let app = TestApp::new().await;
    for name in ["a%00b", "line%0Abreak", "tab%09", "%1B%5B31m"] {
        let answer = app
            .send(
                Request::post(format!("/v1/datasets?name={name}"))
                    .body(Body::from("not read"))
                    .expect("request"),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            answer.text
        );
        assert!(answer.text.contains("control"), "{name}: {}", answer.text);
    }
}

/// Finding 18: `/metrics` was public under `--private-reads`.
#[tokio::test]
async fn metrics_need_a_token_under_private_reads() {
    let app = TestApp::configured(|config| config.private_reads = true)
        .await
        .serve();
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    let public = TestApp::new().await;
    assert_eq!(public.get("/metrics").await.status, StatusCode::OK);
}

/// Finding 11: one caller created 3,000 queued runs in 4 s. Each caller (a token, or an address
/// without one) may have `max_queued_runs` waiting; past that, 429 with its own code, while
/// other callers are unaffected.
#[tokio::test]
async fn one_caller_cannot_fill_the_queue() {
    let app = TestApp::configured(|config| config.max_queued_runs = 2)
        .await
        .serve();
    let dir = tempfile::TempDir::new().expect("tmp");
    let archive = dir.path().join("mnist.tar.gz");
    tests::tar_gz_dir(&tests::mnist_fixture(), &archive, None);
    let upload = app
        .send(
            Request::post("/v1/datasets?name=mnist")
                .body(Body::from(std::fs::read(&archive).expect("archive")))
                .expect("request"),
        )
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.text);
    let run =
        |from: [u8; 4]| {
            let mut request = Request::post("/v1/runs")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(
                    r#"{{"dataset": "{}", "kind": "label-blending"}}"#,
                    tests::MNIST_FIXTURE_DIGEST
                )))
                .expect("request");
            request.extensions_mut().insert(axum::extract::ConnectInfo(
                std::net::SocketAddr::from((from, 40000)),
            ));
            request
        };
    for _ in 0..2 {
        let created = app.send(run([127, 0, 0, 1])).await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.text);
    }
    let refused = app.send(run([127, 0, 0, 1])).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(refused.error_code(), "too_many_queued_runs");
    assert!(
        refused.text.contains("--max-queued-runs 2"),
        "{}",
        refused.text
    );
    let other = app.send(run([127, 0, 0, 2])).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text);
}
