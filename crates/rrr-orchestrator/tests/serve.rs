//! `rrr serve` over loopback, with a real HTTP client: the trace to the Perfetto UI's origin
//! and only under the server's own host names, 404 for everything else.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the server when the test ends, whatever happens.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

#[test]
fn serves_exactly_the_trace_to_the_perfetto_ui() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("my trace.pftrace");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&trace, &body).unwrap();
    std::fs::write(dir.path().join("secret"), "no").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_rrr"))
        .args(["serve", "--port", "0"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut url = String::new();
    BufReader::new(stdout).read_line(&mut url).unwrap();
    let url = url.trim();
    let prefix = "https://ui.perfetto.dev/#!/?url=";
    assert!(url.starts_with(prefix), "{url}");
    let file_url = &url[prefix.len()..];
    assert!(
        file_url.starts_with("http://127.0.0.1:") && file_url.ends_with("/my%20trace.pftrace"),
        "{file_url}"
    );
    let base = file_url.trim_end_matches("/my%20trace.pftrace");

    let http = agent();
    let mut got = http.get(file_url).call().unwrap();
    assert_eq!(got.status(), 200);
    let header = |r: &ureq::http::Response<ureq::Body>, h: &str| {
        r.headers().get(h).map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header(&got, "access-control-allow-origin").as_deref(),
        Some("https://ui.perfetto.dev")
    );
    assert_eq!(header(&got, "cache-control").as_deref(), Some("no-cache"));
    let bytes = got
        .body_mut()
        .with_config()
        .limit(10 << 20)
        .read_to_vec()
        .unwrap();
    assert!(bytes == body, "the file is served byte for byte");

    for path in ["/secret", "/", "/../secret", "/my%20trace.pftrace.bak"] {
        let r = http.get(&format!("{base}{path}")).call().unwrap();
        assert_eq!(r.status(), 404, "GET {path}");
    }
    // The UI probes for a trace processor with POST /status: that must not look like one.
    let r = http.post(&format!("{base}/status")).send("").unwrap();
    assert_eq!(r.status(), 404);
    let r = http.post(file_url).send("").unwrap();
    assert_eq!(r.status(), 404, "only GET serves the trace");

    // DNS rebinding: a page whose name resolves to 127.0.0.1 must not read the trace.
    let port = base.rsplit(':').next().unwrap();
    let path = "/my%20trace.pftrace";
    let foreign = raw(port, "GET", path, &format!("attacker.example:{port}"));
    assert!(
        foreign.starts_with("HTTP/1.1 403") && foreign.len() < 1000,
        "no trace bytes to a foreign Host: {}",
        &foreign[..foreign.len().min(200)]
    );
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let own = raw(port, "GET", path, &host);
        assert!(
            own.starts_with("HTTP/1.1 200") && own.len() > body.len(),
            "Host {host}"
        );
    }
    let post = raw(port, "POST", path, &format!("127.0.0.1:{port}"));
    assert!(post.len() < 1000, "no trace bytes to a POST");
    let preflight = raw(port, "OPTIONS", path, &format!("127.0.0.1:{port}"));
    assert!(
        preflight.starts_with("HTTP/1.1 204") && preflight.contains("GET, HEAD"),
        "{preflight}"
    );
    drop(server);
}

/// Sends `METHOD path` with this `Host` header to 127.0.0.1:`port` over a plain socket and
/// returns all it answered.
fn raw(port: &str, method: &str, path: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: https://ui.perfetto.dev\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_missing_trace_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_rrr"))
        .args(["serve", "--port", "0", "/nonexistent/trace.pftrace"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such trace"), "{err}");
}
