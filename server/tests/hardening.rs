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
    app.upload_mnist().await;
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

/// An archive entry: its path and bytes.
type Entry = (&'static str, Vec<u8>);

/// A tar.gz of `entries`, in order.
fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, data.as_slice())
            .expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

fn png(width: u32, height: u32, color: image::ExtendedColorType, fill: u8) -> Vec<u8> {
    let channels = match color {
        image::ExtendedColorType::Rgb8 => 3,
        _ => 1,
    };
    let mut bytes = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut bytes),
        &vec![fill; (width * height * channels) as usize],
        width,
        height,
        color,
        image::ImageFormat::Png,
    )
    .expect("png");
    bytes
}

/// Finding 15: five refusals named files by their path in the server's staging folder
/// (`.../staging/commentary-extract-XXXX/...`). They name the file inside the upload only.
#[tokio::test]
async fn upload_errors_name_files_inside_the_upload_only() {
    let app = TestApp::new().await;
    let data_dir = app.state.config.data_dir.display().to_string();
    let images = |n: u32| {
        let mut bytes = tests::idx_header(&[n, 2, 2]);
        bytes.extend(vec![7u8; (n * 4) as usize]);
        bytes
    };
    let labels = |n: u32| {
        let mut bytes = tests::idx_header(&[n]);
        bytes.extend(vec![0u8; n as usize]);
        bytes
    };
    let gzip = |bytes: Vec<u8>| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &bytes).expect("gzip");
        encoder.finish().expect("gzip")
    };
    let grey = image::ExtendedColorType::L8;
    // (what is wrong, the archive's entries, the file the message must name)
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "a file and a folder of one name",
            vec![("train", vec![1]), ("train/cat/a.png", png(2, 2, grey, 0))],
            "train",
        ),
        (
            "a split given twice, plain and gzipped",
            vec![
                ("train-images-idx3-ubyte", images(2)),
                ("train-images-idx3-ubyte.gz", gzip(images(2))),
                ("train-labels-idx1-ubyte", labels(2)),
            ],
            "train-images-idx3-ubyte",
        ),
        (
            "image and label counts that differ",
            vec![
                ("train-images-idx3-ubyte", images(3)),
                ("train-labels-idx1-ubyte", labels(2)),
            ],
            "train-labels-idx1-ubyte",
        ),
        (
            "mixed image sizes",
            vec![
                ("train/cat/a.png", png(2, 2, grey, 0)),
                ("train/cat/b.png", png(3, 3, grey, 0)),
            ],
            "b.png",
        ),
        (
            "mixed channels",
            vec![
                ("train/cat/a.png", png(2, 2, grey, 0)),
                (
                    "train/cat/b.png",
                    png(2, 2, image::ExtendedColorType::Rgb8, 9),
                ),
            ],
            "b.png",
        ),
    ];
    for (case, entries, names) in cases {
        let answer = app
            .send(
                Request::post("/v1/datasets?name=bad")
                    .body(Body::from(tar_gz(&entries)))
                    .expect("request"),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            answer.text
        );
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{case}: {message}");
        for leak in [data_dir.as_str(), "staging", "commentary-extract", "/tmp"] {
            assert!(!message.contains(leak), "{case} leaks {leak:?}: {message}");
        }
    }
}

/// `POST /login` with `token`, from `origin` when given.
async fn log_in(app: &TestApp, token: &str, origin: Option<&str>) -> common::app::Answer {
    let mut request = Request::post("/login")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    app.send(
        request
            .body(Body::from(format!("token={token}")))
            .expect("request"),
    )
    .await
}

/// Finding 18: the login form had no CSRF protection (another page could sign the browser in
/// as the attacker, whose uploads the victim would then make), and the cookie lacked `Secure`
/// behind TLS. A login must come from this registry's own page, and `--public-url https://...`
/// makes the cookie `Secure`.
#[tokio::test]
async fn login_is_refused_from_other_origins_and_secure_behind_https() {
    let app = TestApp::new().await;
    let token = server::registry::auth::create_token(&app.state.db, "me", schema::api::Scope::Read)
        .await
        .expect("token");
    let forged = log_in(&app, &token.secret, Some("http://evil.example")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text);
    assert!(!forged.headers.contains_key(header::SET_COOKIE));
    let logout = app
        .send(
            Request::post("/logout")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "http://evil.example")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(logout.status, StatusCode::FORBIDDEN);

    let own = log_in(&app, &token.secret, Some("http://127.0.0.1:8080")).await;
    assert_eq!(own.status, StatusCode::SEE_OTHER, "{}", own.text);
    let cookie = own.headers[header::SET_COOKIE].to_str().expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains("Secure"),
        "{cookie}"
    );

    let public = TestApp::configured(|config| {
        config.public_url = Some("https://registry.example".parse().expect("url"));
    })
    .await
    .serve();
    let token =
        server::registry::auth::create_token(&public.state.db, "me", schema::api::Scope::Read)
            .await
            .expect("token");
    // Behind a TLS proxy, the browser's Origin is the public URL, not the Host the proxy sends.
    let proxied = log_in(&public, &token.secret, Some("https://registry.example")).await;
    assert_eq!(proxied.status, StatusCode::SEE_OTHER, "{}", proxied.text);
    let cookie = proxied.headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

/// Finding 17: 414 and 431 answers had empty, non-JSON bodies (hyper's). Heads over the
/// registry's own limits are answered with the error shape.
#[tokio::test]
async fn oversized_request_heads_get_the_error_shape() {
    let app = TestApp::new().await;
    let long = app
        .get(&format!("/v1/datasets?name={}", "a".repeat(9000)))
        .await;
    assert_eq!(long.status, StatusCode::URI_TOO_LONG);
    assert_eq!(long.error_code(), "uri_too_long");
    let mut request = Request::get("/healthz");
    for i in 0..101 {
        request = request.header(format!("x-filler-{i}"), "1");
    }
    let many = app
        .send(request.body(Body::empty()).expect("request"))
        .await;
    assert_eq!(many.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(many.error_code(), "headers_too_large");
    let big = app
        .send(
            Request::get("/healthz")
                .header("x-big", "b".repeat(40 << 10))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(big.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

/// Finding 1: a 20.8 MB gzip bomb was refused only after writing 16 GB to staging (the byte
/// cap alone). Expansion is bounded by a ratio to the upload too: this 100 KB archive of
/// 200 MB of zeros stops at 64 MiB.
#[tokio::test]
async fn a_gzip_bomb_stops_at_the_expansion_ratio() {
    let app = TestApp::new().await;
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    let size: u64 = 200 << 20;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(
            &mut header,
            "train-images-idx3-ubyte",
            std::io::Read::take(std::io::repeat(0), size),
        )
        .expect("append");
    let bomb = builder.into_inner().expect("tar").finish().expect("gzip");
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let answer = app
        .send(
            Request::post("/v1/datasets?name=bomb")
                .body(Body::from(bomb))
                .expect("request"),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("--max-expansion-ratio") && message.contains("67108864"),
        "{message}"
    );
}

/// Finding 1: a full disk was reported as a "truncated" archive, and the upload went on until
/// the disk was full. Uploads stop while the free-space margin is still free, with 507.
#[tokio::test]
async fn uploads_stop_with_507_before_the_disk_fills() {
    let app = TestApp::configured(|config| config.limits.min_free_bytes = u64::MAX)
        .await
        .serve();
    let answer = app.post_mnist().await;
    assert_eq!(
        answer.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        answer.text
    );
    assert_eq!(answer.error_code(), "insufficient_storage");
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("--min-free-space"), "{message}");
    assert!(
        !message.contains(&app.state.config.data_dir.display().to_string()),
        "{message}"
    );
    // Nothing was kept.
    let listed = app.get("/v1/datasets").await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(0));
}

/// Finding 14: the example-image cache held up to four whole decoded splits of any size, and
/// decoded once per concurrent miss (eight requests took 3.4 GB). It is bounded by bytes, and a
/// split that would not fit is refused before anything is decoded.
#[tokio::test]
async fn example_images_of_a_split_larger_than_the_cache_are_refused() {
    let app = TestApp::configured(|config| config.example_cache_bytes = 2 << 20)
        .await
        .serve();
    app.upload_mnist().await;
    let base = format!("/v1/datasets/{}/splits", tests::MNIST_FIXTURE_DIGEST);
    // The test split (1,996 images of 784 bytes) fits in 2 MiB; train (8,004) does not.
    let fits = app.get(&format!("{base}/test/examples/0.png")).await;
    assert_eq!(fits.status, StatusCode::OK, "{}", fits.text);
    let refused = app.get(&format!("{base}/train/examples/0.png")).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(refused.error_code(), "unsupported");
    assert!(
        refused.text.contains("--example-cache-bytes"),
        "{}",
        refused.text
    );
    // Concurrent misses of one split are answered alike (decoded once, by one of them).
    let paths: Vec<String> = (0..8)
        .map(|i| format!("{base}/test/examples/{i}.png"))
        .collect();
    let answers = futures::future::join_all(paths.iter().map(|p| app.get(p))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
}

/// A zip of `images` 8192x8192 greyscale PNGs of zeros (an image folder, `train/0/*.png`):
/// each image is 64 KiB compressed but 64 MiB to decode and digest, so the archive is small
/// and reading it takes minutes of CPU. One PNG is encoded and copied raw (built in a moment).
fn zip_of_large_pngs(images: usize) -> Vec<u8> {
    use image::ImageEncoder as _;
    use std::io::Write as _;
    let side = 8192;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(
        &vec![0u8; side * side],
        side as u32,
        side as u32,
        image::ExtendedColorType::L8,
    )
    .expect("png");
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut one = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    one.start_file("train/0/0.png", stored).expect("entry");
    one.write_all(&png).expect("write");
    let one = one.finish().expect("zip").into_inner();
    let mut source = zip::ZipArchive::new(std::io::Cursor::new(one)).expect("read back");
    let mut many = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..images {
        let entry = source.by_index_raw(0).expect("entry");
        many.raw_copy_file_rename(entry, format!("train/0/{i}.png"))
            .expect("copy");
    }
    many.finish().expect("zip").into_inner()
}

/// CPU seconds the process `pid` has used (user and system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in USER_HZ, 100 per second on every architecture it runs on.
    ticks as f64 / 100.0
}

/// Finding 17: decoding went on after the client disconnected (an abandoned upload kept
/// decoding for nobody). Here the upload's client goes away while the archive is being read
/// (400 images of 64 MiB to decode and digest, a minute or more of CPU): the registry stops
/// using CPU within seconds and stays healthy.
#[tokio::test(flavor = "multi_thread")]
async fn decoding_stops_when_the_client_goes_away() {
    let registry = common::Registry::start(&common::Backend::sqlite_local(), &["--workers", "0"]);
    let client = registry.client();
    let archive = zip_of_large_pngs(400);
    let idle = cpu_seconds(registry.pid());
    let pending = tokio::spawn(
        client
            .http
            .post(client.url("/v1/datasets?name=abandoned"))
            .body(archive)
            .send(),
    );
    let started = std::time::Instant::now();
    // The body is in and decoding has begun: the registry has used two seconds of CPU.
    while cpu_seconds(registry.pid()) < idle + 2.0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "decoding did not start: {:.2} s of CPU",
            cpu_seconds(registry.pid()) - idle
        );
        assert!(
            !pending.is_finished(),
            "the upload was answered: {pending:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    pending.abort(); // the client goes away
    // Give the cancel a second to land, then the registry must be (nearly) idle.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after_cancel = cpu_seconds(registry.pid());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let used = cpu_seconds(registry.pid()) - after_cancel;
    assert!(
        used < 0.5,
        "the registry used {used:.2} s of CPU in 2 s after the client left"
    );
    assert_eq!(client.get_json("/healthz").await["status"], "ok");
}
