//! `rrr stimulus`: compiles a reproducer as a static binary with symbols and DWARF, cached.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::cache::{self, Key};

/// Where the stimulus's code is linked: away from busybox's (0x400000), so the tracer can tell
/// the stimulus's user code from every other process's by address.
pub(crate) const TEXT_BASE: &str = "0x10000000";
/// Bumped when the compile recipe changes.
const RECIPE: &str = "stimulus-recipe-1";

/// The compiler flags (besides the output).
fn flags() -> Vec<String> {
    [
        "-static",
        "-g",
        "-pthread",
        "-O0",
        "-fno-omit-frame-pointer",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("-Wl,-Ttext-segment={TEXT_BASE}")])
    .collect()
}

/// Compiles (or finds in the cache) the stimulus; returns the binary's path.
pub fn build(source: &Path) -> crate::Result<PathBuf> {
    crate::tools::require("gcc", "build-essential")?;
    let gcc = crate::tools::version_line("gcc").context("running gcc --version")?;
    let mut key = Key::default();
    key.add("recipe", RECIPE.as_bytes())
        .add("flags", flags().join(" ").as_bytes())
        .add("gcc", gcc.as_bytes())
        .add_file("source", source)?;
    let binary = cache::file_entry(cache::Kind::Stimuli, &key, "stimulus", |dir| {
        compile(source, dir)
    })?;
    Ok(binary)
}

/// Compiles `source` into `dir/stimulus`.
fn compile(source: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::copy(source, dir.join("stimulus.c"))
        .with_context(|| format!("reading {}", source.display()))?;
    let out = Command::new("gcc")
        .args(flags())
        .arg("-o")
        .arg(dir.join("stimulus"))
        .arg(dir.join("stimulus.c"))
        .output()
        .context("running gcc")?;
    if !out.status.success() {
        crate::fail!(
            Build,
            "{} does not compile (gcc {}):\n{}",
            source.display(),
            flags().join(" "),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}
