//! Finding 14 of the hardening review (issue 15): idle or half-sent connections were never
//! timed out, and 260 of them exhausted the file descriptors until the server stopped
//! accepting. Heads must arrive within `--header-timeout`, and at most `--max-connections` are
//! served at once (more wait in the listen queue, and are served as others end).

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Backend, Registry};

fn address(registry: &Registry) -> String {
    registry
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Reads until the server closes the connection (or `limit` passes); returns what came.
fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    (got, started.elapsed())
}

#[test]
fn idle_and_half_sent_connections_are_closed_after_the_header_timeout() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--header-timeout", "1s"],
    );
    let addr = address(&registry);
    let mut idle = TcpStream::connect(&addr).expect("connect");
    let mut half = TcpStream::connect(&addr).expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("write");
    for stream in [&mut idle, &mut half] {
        let (_, took) = read_to_close(stream, Duration::from_secs(10));
        assert!(
            took < Duration::from_secs(5),
            "closed after {took:?}, not the 1 s header timeout"
        );
    }
}

#[test]
fn connections_past_the_limit_wait_until_others_end() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &[
            "--workers",
            "0",
            "--max-connections",
            "2",
            "--header-timeout",
            "2s",
        ],
    );
    let addr = address(&registry);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut third = TcpStream::connect(&addr).expect("the listen queue takes it");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    let (answer, _) = read_to_close(&mut third, Duration::from_secs(20));
    let waited = started.elapsed();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Served once the two idle connections timed out, not before.
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    drop(held);
}
