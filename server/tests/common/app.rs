//! The registry in-process: the real router on a temporary SQLite database and local store,
//! answered through `tower::ServiceExt::oneshot` (no listener, no worker).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use server::registry::{AppState, ServeConfig, SharedState, open_state, routes};
use tempfile::TempDir;
use tower::ServiceExt as _;

/// A registry state on a temporary folder, served by the real router.
pub struct TestApp {
    pub router: Router,
    /// The state the router serves (for tests that call the registry's functions directly).
    pub state: SharedState,
    _dir: TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

/// An answer: status, headers and the body (JSON when it parses).
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
    pub raw: Vec<u8>,
}

impl Answer {
    /// The body's `error.code`, asserting the error shape.
    pub fn error_code(&self) -> &str {
        assert!(
            self.headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("application/json")),
            "an error is JSON: {:?} {}",
            self.headers,
            self.text
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error has a message: {}",
            self.text
        );
        self.body["error"]["code"].as_str().unwrap_or("<no code>")
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::opened().await.serve()
    }

    /// The state before it is served (a test may change it first).
    pub async fn opened() -> Opened {
        Self::configured(|_| {}).await
    }

    /// The state of a registry configured by `configure` (on top of the defaults, no workers).
    pub async fn configured(configure: impl FnOnce(&mut ServeConfig)) -> Opened {
        let dir = TempDir::new().expect("tmp");
        let mut config = ServeConfig::new(dir.path().join("data"));
        config.workers = 0;
        configure(&mut config);
        let (shutdown, stop) = tokio::sync::watch::channel(false);
        let state = open_state(config, true, stop).await.expect("open state");
        Opened {
            state,
            dir,
            shutdown,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            text,
            raw: bytes.to_vec(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    /// Uploads the MNIST fixture (as `mnist`), asserting it is stored.
    pub async fn upload_mnist(&self) {
        let upload = self.post_mnist().await;
        assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.text);
    }

    /// `POST /v1/datasets?name=mnist` with the fixture as .tar.gz: the answer, whatever it is.
    pub async fn post_mnist(&self) -> Answer {
        let dir = TempDir::new().expect("tmp");
        let archive = dir.path().join("mnist.tar.gz");
        tests::tar_gz_dir(&tests::mnist_fixture(), &archive, None);
        self.send(
            Request::post("/v1/datasets?name=mnist")
                .body(Body::from(std::fs::read(&archive).expect("archive")))
                .expect("request"),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &str) -> Answer {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
    }
}

/// A state not yet served.
pub struct Opened {
    pub state: AppState,
    dir: TempDir,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Opened {
    pub fn serve(self) -> TestApp {
        let state = Arc::new(self.state);
        TestApp {
            router: routes::router(state.clone()),
            state,
            _dir: self.dir,
            _shutdown: self.shutdown,
        }
    }
}
