//! The host tools rrr runs, found up front with a message that says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::error::{ErrorKind, Tag};

/// `tool`'s path, if it is in PATH.
pub fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Whether `tool` is in PATH.
pub fn on_path(tool: &str) -> bool {
    find(tool).is_some()
}

/// Finds `tool` in PATH, or says which package provides it.
pub fn require(tool: &str, package: &str) -> anyhow::Result<PathBuf> {
    find(tool)
        .with_context(|| {
            format!("`{tool}` not found in PATH: install {package} (scripts/setup installs everything rrr needs)")
        })
        .tag(ErrorKind::MissingTool)
}

/// What `program how` (`--version`, or Go's `version`) prints on stdout.
pub fn version_output(program: &Path, how: &str) -> anyhow::Result<String> {
    let out = Command::new(program)
        .arg(how)
        .output()
        .with_context(|| format!("running {} {how}", program.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first line of `tool --version`, if the tool runs.
pub fn version_line(tool: &str) -> Option<String> {
    let text = version_output(Path::new(tool), "--version").ok()?;
    Some(text.lines().next().unwrap_or("").to_owned())
}

/// The last `n` lines of `text`, joined by newlines (the end of a tool's log, for an error).
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The (major, minor) of a dotted version (`10.0.2`, `1.24`); missing parts are 0.
pub fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A library cargo built with rrr (a tracer plugin, the QEMU pacing library): `$env_var`,
/// else `file` next to the `rrr` executable.
pub fn built_library(file: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the rrr executable")?;
    let dir = exe.parent().context("rrr executable without a directory")?;
    // Test binaries live one level down, in deps/.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join(file);
        if p.is_file() {
            return Ok(p);
        }
    }
    crate::fail!(MissingTool,
        "rrr's library {file} is not next to {}: build it with `cargo build --release --workspace` (or set {env_var})",
        exe.display()
    )
}

/// Runs a build step quietly; on failure the error carries its output.
pub fn run_quiet(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (is it installed? run scripts/setup)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
