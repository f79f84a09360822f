//! Git for tests: commands with a fixed author and date.

use std::path::Path;
use std::process::Command;

/// Runs git in `dir`; returns its output. A fixed author and date give the same commit id on
/// every machine and run, so what is built from it is found in the cache next time.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "rrr")
        .env("GIT_AUTHOR_EMAIL", "rrr@localhost")
        .env("GIT_COMMITTER_NAME", "rrr")
        .env("GIT_COMMITTER_EMAIL", "rrr@localhost")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
