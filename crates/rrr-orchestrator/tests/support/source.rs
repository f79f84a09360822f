//! The distro's kernel source for tests, unpacked once per machine into the XDG cache (beside
//! rrr's own cache, outside the work tree), so that a fresh clone of the project does not
//! unpack 1.3 GB again. Tests never write into it.

use std::path::PathBuf;
use std::process::Command;

/// The kernel source `scripts/setup` installs.
const DISTRO_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The XDG cache directory (`$XDG_CACHE_HOME`, or `~/.cache`), as rrr finds it.
pub fn xdg_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
}

/// Where the tests keep their own files, beside rrr's cache.
pub fn tests_cache() -> PathBuf {
    xdg_cache().join("rrr-tests")
}

/// The distro's kernel source tree, unpacked (once, then found again).
pub fn distro_tree() -> PathBuf {
    let tree = tests_cache().join("linux-source-6.1");
    if tree.join("Makefile").is_file() {
        return tree;
    }
    let stage = tree.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(DISTRO_SOURCE)
        .arg("--strip-components=1")
        .arg("-C")
        .arg(&stage)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "unpacking {DISTRO_SOURCE} (scripts/setup installs it)"
    );
    // Another test binary may have unpacked it meanwhile: either copy is the same.
    if std::fs::rename(&stage, &tree).is_err() {
        std::fs::remove_dir_all(&stage).unwrap();
    }
    tree
}
