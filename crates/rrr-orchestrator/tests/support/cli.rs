//! Running the `rrr` binary from tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Starts `rrr replay REC --gdb` on a free port; returns it (kill it when done) and gdb's
/// `target remote ...` command, taken from the gdb command line it prints.
pub fn replay_under_gdb(rec: &Path) -> (Child, String) {
    let mut server = rrr()
        .args(["replay", "--gdb", "--port", "0"])
        .arg(rec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gdb_cmd = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut gdb_cmd,
    )
    .unwrap();
    assert!(gdb_cmd.trim_end().ends_with("/vmlinux"), "{gdb_cmd}");
    let target = gdb_cmd
        .split('\'')
        .nth(1)
        .expect("the gdb command names its target")
        .to_owned();
    (server, target)
}
