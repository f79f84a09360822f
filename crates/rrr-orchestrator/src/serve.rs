//! `rrr serve`: lets ui.perfetto.dev open a local trace. An HTTP server on 127.0.0.1 serves
//! exactly that one file to the UI's origin; everything else (notably the UI's `POST /status`
//! probe for a trace processor) is a 404, so the UI loads the file itself.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use tiny_http::{Header, Method, Response, Server};

/// The only origin allowed to read the trace.
pub const UI_ORIGIN: &str = "https://ui.perfetto.dev";

/// The URL that makes ui.perfetto.dev fetch `name` from the server on `port`.
pub(crate) fn ui_url(port: u16, name: &str) -> String {
    format!("{UI_ORIGIN}/#!/?url=http://127.0.0.1:{port}/{name}")
}

/// A server for one trace file, bound to 127.0.0.1.
pub struct TraceServer {
    server: Server,
    trace: PathBuf,
    name: String,
}

impl TraceServer {
    /// Binds `127.0.0.1:port` (0: any free port) to serve `trace`.
    pub fn bind(trace: &Path, port: u16) -> crate::Result<Self> {
        if !trace.is_file() {
            crate::fail!(
                BadInput,
                "{}: no such trace; make one with `rrr trace` or `rrr run`",
                trace.display()
            );
        }
        let name = trace
            .file_name()
            .context("the trace path has no file name")?
            .to_string_lossy()
            .into_owned();
        let server = Server::http(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on 127.0.0.1:{port}: {e}; is another `rrr serve` or a trace \
                 processor running? Stop it or pass --port"
            )
        })?;
        Ok(TraceServer {
            server,
            trace: trace.to_owned(),
            name,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server
            .server_addr()
            .to_ip()
            .map_or(0, |addr| addr.port())
    }

    /// The UI URL that opens the trace.
    pub fn url(&self) -> String {
        ui_url(self.port(), &urlencoding(&self.name))
    }

    /// Whether `host` (a request's `Host` header) names this server: `127.0.0.1`,
    /// `localhost` or `[::1]` with its port. Any other name reached 127.0.0.1 through a name a
    /// web page controls (DNS rebinding), and must not read the trace.
    fn is_own_host(&self, host: &str) -> bool {
        let port = self.port();
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|name| host.eq_ignore_ascii_case(&format!("{name}:{port}")))
    }

    /// Makes [`TraceServer::serve_forever`] return (from another thread).
    pub fn stop(&self) {
        self.server.unblock();
    }

    /// Answers requests until the process ends or [`TraceServer::stop`].
    pub fn serve_forever(&self) {
        for request in self.server.incoming_requests() {
            let host = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Host"))
                .map(|h| h.value.as_str().to_owned());
            if !host.as_deref().is_some_and(|h| self.is_own_host(h)) {
                tracing::warn!("refused a request for host {host:?}");
                let result = request.respond(Response::empty(403));
                if let Err(e) = result {
                    tracing::debug!("a client went away: {e}");
                }
                continue;
            }
            let wanted = request.url().trim_start_matches('/');
            let is_trace = wanted == self.name || wanted == urlencoding(&self.name);
            if is_trace && *request.method() == Method::Options {
                // The UI's CORS preflight.
                let response = with_common_headers(Response::empty(204))
                    .with_header(header("Access-Control-Allow-Methods", "GET, HEAD"))
                    .with_header(header("Access-Control-Allow-Headers", "*"));
                if let Err(e) = request.respond(response) {
                    tracing::debug!("a client went away: {e}");
                }
                continue;
            }
            let ok = matches!(request.method(), Method::Get | Method::Head) && is_trace;
            let result = if ok {
                tracing::info!("serving {} to {:?}", self.name, request.remote_addr());
                match std::fs::File::open(&self.trace) {
                    Ok(file) => {
                        let response = Response::from_file(file)
                            .with_header(header("Content-Type", "application/octet-stream"));
                        request.respond(with_common_headers(response))
                    }
                    Err(e) => {
                        tracing::warn!("{}: {e}", self.trace.display());
                        request.respond(with_common_headers(
                            Response::from_string("trace unreadable").with_status_code(500),
                        ))
                    }
                }
            } else {
                request.respond(with_common_headers(
                    Response::from_string("not found").with_status_code(404),
                ))
            };
            if let Err(e) = result {
                tracing::debug!("a client went away: {e}");
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn with_common_headers<R: std::io::Read>(response: Response<R>) -> Response<R> {
    response
        .with_header(header("Access-Control-Allow-Origin", UI_ORIGIN))
        .with_header(header("Cache-Control", "no-cache"))
}

/// Percent-encodes what is not safe in a URL path segment.
fn urlencoding(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens `url` in the user's browser (xdg-open), or says to open it by hand.
pub fn open_in_browser(url: &str) {
    match Command::new("xdg-open").arg(url).status() {
        Ok(s) if s.success() => {}
        Ok(s) => crate::report::warn(&format!(
            "xdg-open exited with {s}; open the URL above by hand"
        )),
        Err(e) => crate::report::warn(&format!(
            "cannot run xdg-open ({e}); open the URL above by hand"
        )),
    }
}

/// Runs `trace_processor_shell` (or `trace_processor`) as the UI's RPC backend for `trace`
/// on `port`, until it exits; with `open`, opens the UI.
pub fn serve_rpc(trace: &Path, port: u16, open: bool) -> crate::Result<()> {
    let shell = ["trace_processor_shell", "trace_processor"]
        .into_iter()
        .find(|tool| crate::tools::on_path(tool))
        .context(
            "--rpc needs trace_processor_shell on PATH: get it with \
             `curl -LO https://get.perfetto.dev/trace_processor && chmod +x trace_processor`, \
             or serve the file without --rpc",
        )?;
    if !trace.is_file() {
        crate::fail!(BadInput, "{}: no such trace", trace.display());
    }
    let url = format!("{UI_ORIGIN}/");
    crate::report::info(&format!(
        "{shell} serves {} on 127.0.0.1:{}; open {url} and choose \"Use loaded trace\"",
        trace.display(),
        port
    ));
    if open {
        open_in_browser(&url);
    }
    let status = Command::new(shell)
        .args(["--httpd", "--http-port"])
        .arg(port.to_string())
        .arg(trace)
        .status()
        .with_context(|| format!("running {shell}"))?;
    if !status.success() {
        crate::fail!(Other, "{shell} exited with {status}");
    }
    Ok(())
}
