//! Running the `rrr` binary from tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `rrr` under test.
pub fn rrr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
}

/// A file of the repository's `examples/`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// Runs `cmd` and returns its trimmed stdout, failing with its stderr.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `cmd`, which must fail, and returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a gdb session on a replay gave.
pub struct GdbSession {
    /// The gdb arguments of the command `rrr replay --gdb` printed (`-ex` commands, with
    /// `-q -batch` first), without the vmlinux.
    pub printed: Vec<String>,
    /// gdb's stdout and stderr.
    pub said: String,
    pub stderr: String,
}

impl GdbSession {
    /// The values gdb printed (`$N = VALUE`), in order.
    pub fn values(&self) -> Vec<&str> {
        self.said
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(_, v)| v))
            .collect()
    }
}

/// A `rrr replay REC --gdb [--at TS]` waiting for gdb (on the free port it picked).
pub struct GdbServer {
    child: std::process::Child,
    /// The gdb arguments of the command it printed (see [`GdbSession::printed`]).
    pub printed: Vec<String>,
}

/// Starts `rrr replay REC --gdb [--at TS]` and reads the gdb command it prints.
pub fn gdb_server(rec: &Path, at: Option<u64>) -> GdbServer {
    let mut cmd = rrr();
    cmd.args(["replay", "--gdb"]).arg(rec);
    if let Some(at) = at {
        cmd.arg("--at").arg(at.to_string());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gdb_cmd = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut gdb_cmd,
    )
    .unwrap();
    assert!(gdb_cmd.trim_end().ends_with("/vmlinux"), "{gdb_cmd}");
    let mut printed = vec!["-q".to_owned(), "-batch".to_owned()];
    for ex in gdb_cmd.split(" -ex '").skip(1) {
        let ex = ex.split('\'').next().expect("a quoted gdb command");
        printed.extend(["-ex".to_owned(), ex.to_owned()]);
    }
    assert!(printed[3].starts_with("target remote"), "{gdb_cmd}");
    GdbServer { child, printed }
}

impl GdbServer {
    /// Runs the printed gdb command on `vmlinux` in batch mode with `commands` and `kill`
    /// after it, and stops the replay.
    pub fn run(mut self, vmlinux: &Path, commands: &[&str]) -> GdbSession {
        // A gdb that hangs (a replay that never reaches its stop) fails the test, instead of
        // holding CI until its own time runs out.
        let mut gdb = Command::new("timeout");
        gdb.args(["600", "gdb"]).args(&self.printed);
        for c in commands.iter().chain(&["kill"]) {
            gdb.args(["-ex", c]);
        }
        let out = gdb.arg(vmlinux).output().unwrap();
        let _ = self.child.kill();
        let _ = self.child.wait();
        GdbSession {
            printed: self.printed,
            said: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// [`gdb_server`] then [`GdbServer::run`].
pub fn gdb_session(rec: &Path, at: Option<u64>, vmlinux: &Path, commands: &[&str]) -> GdbSession {
    gdb_server(rec, at).run(vmlinux, commands)
}

/// The manifest of the recording in `rec`.
pub fn manifest(rec: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(rec.join("recording.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Makes `rec` look like a recording of `engine` (it holds only the manifest): for errors
/// found before anything is replayed.
pub fn write_manifest(rec: &Path, engine: &str) {
    let text = format!(
        r#"{{"version": 1, "engine": "{engine}", "kernel": "/nonexistent",
            "stimulus": "/nonexistent", "outcome": {{"ended": {{"status": 0}}}}}}"#
    );
    std::fs::write(rec.join("recording.json"), text).unwrap();
}
