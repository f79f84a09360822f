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

/// Starts `rrr replay REC --gdb [--at TS]` on a free port; returns it (kill it when done)
/// and the gdb command line it prints, as gdb arguments (`-q -batch`, then its `-ex`
/// commands: `target remote ...` first). The vmlinux it names is the caller's to add.
pub fn replay_under_gdb(rec: &Path, at: Option<u64>) -> (Child, Vec<String>) {
    let mut cmd = rrr();
    cmd.args(["replay", "--gdb", "--port", "0"]).arg(rec);
    if let Some(at) = at {
        cmd.arg("--at").arg(at.to_string());
    }
    let mut server = cmd
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
    let mut args = vec!["-q".to_owned(), "-batch".to_owned()];
    for ex in gdb_cmd.split(" -ex '").skip(1) {
        let ex = ex.split('\'').next().expect("a quoted gdb command");
        args.extend(["-ex".to_owned(), ex.to_owned()]);
    }
    assert!(args[3].starts_with("target remote"), "{gdb_cmd}");
    (server, args)
}
