//! The router in-process: how routes answer bad input, and a snapshot of the OpenAPI document.
//!
//! Requests go through `tower::ServiceExt::oneshot` (no listener, no worker) to the real router
//! on a temporary SQLite database and local store. The snapshot makes any API change show up in
//! review.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::app::TestApp;
use server::registry::routes;

const UNKNOWN_ID: &str = "0190b3a2-7c1e-7d4f-9a6b-1c2d3e4f5a6b";

#[tokio::test]
async fn malformed_digests_and_ids_in_paths_are_400_with_the_error_shape() {
    let app = TestApp::new().await;
    for path in [
        "/v1/datasets/sha256:00",
        "/v1/datasets/not-hex",
        "/v1/datasets/md5:d41d8cd98f00b204e9800998ecf8427e/archive",
        "/v1/datasets/abc/splits/train/examples/0.png",
        "/v1/runs/nope",
        "/v1/runs/nope/events",
        "/v1/commentaries/nope",
        "/v1/commentaries/nope/artifact",
        "/v1/commentaries/nope/insights",
    ] {
        let answer = app.get(path).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), "bad_request", "{path}");
    }
    let cancel = app
        .send(
            Request::post("/v1/runs/12345/cancel")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::BAD_REQUEST, "{}", cancel.text);
    assert!(
        cancel.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("run id"))
    );
}

#[tokio::test]
async fn malformed_ids_are_refused_before_the_database_is_asked() {
    // The database's pool is closed: a malformed id still gets its 400, a well-formed one
    // needs the database and fails inside.
    let opened = TestApp::opened().await;
    opened
        .state
        .db
        .clone()
        .close()
        .await
        .expect("close the pool");
    let app = opened.serve();
    assert_eq!(
        app.get("/v1/runs/nope").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/v1/datasets/sha256:00").await.status,
        StatusCode::BAD_REQUEST
    );
    let inside = app.get(&format!("/v1/runs/{UNKNOWN_ID}")).await;
    assert_eq!(inside.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(inside.error_code(), "internal");
    assert!(
        !inside.text.to_lowercase().contains("pool"),
        "internal details are not returned: {}",
        inside.text
    );
}

#[tokio::test]
async fn well_formed_ids_that_name_nothing_are_404() {
    let app = TestApp::new().await;
    let zeros = "0".repeat(64);
    for path in [
        format!("/v1/datasets/sha256:{zeros}"),
        format!("/v1/datasets/{zeros}/archive"),
        format!("/v1/runs/{UNKNOWN_ID}"),
        format!("/v1/commentaries/{UNKNOWN_ID}"),
        format!("/v1/commentaries/{}/artifact", UNKNOWN_ID.to_uppercase()),
        "/v1/no/such/route".to_string(),
    ] {
        let answer = app.get(&path).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), "not_found", "{path}");
    }
}

#[tokio::test]
async fn bad_json_bodies_get_the_error_shape_with_the_right_status() {
    let app = TestApp::new().await;
    let syntax = app.post_json("/v1/runs", "{not json").await;
    assert_eq!(syntax.status, StatusCode::BAD_REQUEST, "{}", syntax.text);
    assert_eq!(syntax.error_code(), "bad_request");

    let shape = app
        .post_json(
            "/v1/runs",
            r#"{"dataset": "sha256:00", "kind": "no-such-kind"}"#,
        )
        .await;
    assert_eq!(
        shape.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        shape.text
    );
    assert_eq!(shape.error_code(), "bad_request");
    assert!(shape.text.contains("no-such-kind"), "{}", shape.text);

    let untyped = app
        .send(
            Request::post("/v1/runs")
                .body(Body::from(r#"{"dataset": "x", "kind": "label-blending"}"#))
                .expect("request"),
        )
        .await;
    assert_eq!(untyped.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(untyped.error_code(), "unsupported_media_type");

    // Well-formed JSON naming a malformed digest: the request is bad, nothing is looked up.
    let digest = app
        .post_json(
            "/v1/runs",
            r#"{"dataset": "sha256:00", "kind": "label-blending"}"#,
        )
        .await;
    assert_eq!(digest.status, StatusCode::BAD_REQUEST, "{}", digest.text);
}

#[tokio::test]
async fn bad_query_strings_and_multipart_forms_get_the_error_shape() {
    let app = TestApp::new().await;
    let query = app.get("/v1/runs?state=sleeping").await;
    assert_eq!(query.status, StatusCode::BAD_REQUEST, "{}", query.text);
    assert_eq!(query.error_code(), "bad_request");
    let cursor = app.get("/v1/datasets?cursor=later").await;
    assert_eq!(cursor.status, StatusCode::BAD_REQUEST);
    assert_eq!(cursor.error_code(), "bad_request");

    let form = app
        .send(
            Request::post("/v1/commentaries")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("not a form"))
                .expect("request"),
        )
        .await;
    assert_eq!(form.status, StatusCode::BAD_REQUEST, "{}", form.text);
    assert_eq!(form.error_code(), "bad_request");
}

#[tokio::test]
async fn a_method_a_route_does_not_answer_is_405_with_allow() {
    let app = TestApp::new().await;
    let answer = app
        .send(
            Request::builder()
                .method(Method::PUT)
                .uri("/v1/runs")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        answer.text
    );
    assert_eq!(answer.error_code(), "method_not_allowed");
    let allow = answer.headers[header::ALLOW].to_str().expect("Allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn pages_answer_malformed_and_unknown_ids_with_a_friendly_page() {
    let app = TestApp::new().await;
    for path in [
        "/runs/nope".to_string(),
        "/commentaries/nope".to_string(),
        "/datasets/sha256:00".to_string(),
        format!("/runs/{UNKNOWN_ID}"),
    ] {
        let answer = app.get(&path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            answer.headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("text/html")),
            "{path}"
        );
        assert!(answer.text.contains("<h1>"), "{path}: {}", answer.text);
    }
}

#[tokio::test]
async fn health_answers_without_a_listener() {
    let app = TestApp::new().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
}

#[test]
fn the_openapi_document_is_unchanged() {
    // A change to any route, parameter or schema changes this snapshot: review the diff, then
    // accept it (`cargo insta review`, or INSTA_UPDATE=always) and commit the .snap file.
    let document = routes::openapi().to_pretty_json().expect("OpenAPI as JSON");
    insta::assert_snapshot!("openapi", document);
}
