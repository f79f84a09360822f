//! How the kernel's compiler runs: through ccache, its store in rrr's cache (bounded, listed
//! by `rrr cache list`, cleaned by `rrr cache gc`), so that a kernel built from a tree that
//! differs in a few files compiles only those; and through a distributed compiler's launcher
//! (distcc, icecream) when one machine is not enough. rrr writes no scheduler of its own.

use std::path::PathBuf;
use std::process::Command;

use crate::cache;

/// The ccache store's size bound.
const CCACHE_MAX_SIZE: &str = "8G";
/// The environment variable that names a compiler launcher, as `--cc-launcher` does.
pub const LAUNCHER_ENV: &str = "RRR_CC_LAUNCHER";

/// How to run the compiler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompilerPlan {
    /// Compile through ccache (when it is installed).
    pub ccache: bool,
    /// A launcher in front of the compiler: `distcc`, `icecc` (with its own host settings:
    /// `DISTCC_HOSTS`...).
    pub launcher: Option<String>,
}

/// The ccache store: `<cache root>/ccache/store`.
pub fn ccache_dir() -> anyhow::Result<PathBuf> {
    Ok(cache::Kind::Ccache.dir()?.join("store"))
}

impl CompilerPlan {
    /// Whether ccache runs: asked for and installed (a machine without it builds without).
    pub fn uses_ccache(&self) -> bool {
        self.ccache && crate::tools::find("ccache").is_some()
    }

    /// Makes `make` (building in `kernels`, the kernels' cache directory, with compiler `cc`)
    /// compile as planned, and reproducibly: the kernel's build timestamp, user and host are
    /// fixed, and ccache rewrites the paths under `kernels` (every build tree is there, under
    /// its own key) to relative ones and leaves the build directory out of its hash, so an
    /// unchanged file hits across trees and commits.
    pub fn apply(
        &self,
        make: &mut Command,
        cc: &str,
        kernels: &std::path::Path,
    ) -> anyhow::Result<()> {
        make.env("KBUILD_BUILD_TIMESTAMP", "1970-01-01")
            .env("KBUILD_BUILD_USER", "rrr")
            .env("KBUILD_BUILD_HOST", "rrr");
        let launcher = self.launcher.as_deref().filter(|l| !l.trim().is_empty());
        if self.uses_ccache() {
            let store = ccache_dir()?;
            std::fs::create_dir_all(&store)?;
            make.env("CCACHE_DIR", &store)
                .env("CCACHE_MAXSIZE", CCACHE_MAX_SIZE)
                .env("CCACHE_BASEDIR", kernels)
                .env("CCACHE_NOHASHDIR", "1");
            if let Some(l) = launcher {
                make.env("CCACHE_PREFIX", l);
            }
            make.arg(format!("CC=ccache {cc}"));
        } else if let Some(l) = launcher {
            make.arg(format!("CC={l} {cc}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn env(c: &Command, name: &str) -> Option<String> {
        c.get_envs()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn a_launcher_without_ccache_wraps_the_compiler_and_builds_are_reproducible() {
        let plan = CompilerPlan {
            ccache: false,
            launcher: Some("distcc".into()),
        };
        let mut make = Command::new("make");
        plan.apply(&mut make, "gcc", std::path::Path::new("/k"))
            .unwrap();
        assert_eq!(args(&make), ["CC=distcc gcc"]);
        assert_eq!(
            env(&make, "KBUILD_BUILD_TIMESTAMP").as_deref(),
            Some("1970-01-01")
        );
        assert_eq!(env(&make, "CCACHE_DIR"), None);
        let mut plain = Command::new("make");
        CompilerPlan::default()
            .apply(&mut plain, "gcc", std::path::Path::new("/k"))
            .unwrap();
        assert!(args(&plain).is_empty());
    }
}
