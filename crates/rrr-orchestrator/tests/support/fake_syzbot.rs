//! A syzbot dashboard on 127.0.0.1 serving fixed answers (JSON and text assets) until dropped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A syzbot fixture file.
pub fn fixture(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syzbot");
    std::fs::read(dir.join(name)).unwrap()
}

/// The server; every other URL is a 404.
pub struct FakeSyzbot {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSyzbot {
    /// Serves `routes` (path and query, exactly as requested, to body).
    pub fn start(routes: HashMap<String, Vec<u8>>) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let s = Arc::clone(&server);
        let thread = std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let resp = match routes.get(req.url()) {
                    Some(body) => tiny_http::Response::from_data(body.clone()),
                    None => {
                        tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404)
                    }
                };
                let _ = req.respond(resp);
            }
        });
        FakeSyzbot {
            server,
            thread: Some(thread),
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.server_addr().to_ip().unwrap())
    }
}

impl Drop for FakeSyzbot {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}
