//! `rrr kernel`.

use std::path::PathBuf;

use rrr_orchestrator::kernel::{build, explain, KernelSpec, DISTRO_SOURCE};
use rrr_orchestrator::{CompilerPlan, LAUNCHER_ENV};

use super::choices::CcArg;

/// Arguments of `rrr kernel`.
#[derive(clap::Args, Clone, Debug)]
pub struct KernelArgs {
    /// Kernel source: a tree or a .tar.xz/.tar.gz tarball.
    #[arg(long, default_value = DISTRO_SOURCE)]
    pub src: PathBuf,
    /// Kernel source from git instead: this repository, at --commit (fetched shallow into a
    /// cached repository shared by all kernels).
    #[arg(long, requires = "commit")]
    pub git: Option<String>,
    /// The commit to build from --git.
    #[arg(long, requires = "git")]
    pub commit: Option<String>,
    /// Base .config (default: `make tinyconfig` plus rrr's fragment).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The crash report the kernel is built for: sanitizers and debug options it does not
    /// involve are switched off.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The crash's title (default: read from the report).
    #[arg(long)]
    pub title: Option<String>,
    /// Build with this compiler instead of the one the config names (gcc or clang).
    #[arg(long)]
    pub cc: Option<CcArg>,
    /// Print each config change and why, then stop.
    #[arg(long)]
    pub explain: bool,
    /// Extra config fragments merged last: files, or a fragment shipped with rrr by name
    /// (`crash-test`: LKDTM and generic KASAN, a kernel that crashes on demand).
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
    /// A patch to apply to the source before the build: a `git format-patch` mail or a unified
    /// diff, applied with `-p1`; repeat for several, applied in order (part of the cache key).
    #[arg(long = "patch", value_name = "FILE")]
    pub patches: Vec<PathBuf>,
    /// Parallel make jobs (default: number of cores; for a build farm, its total).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub compiler: CompilerArgs,
}

/// How the kernel's compiler runs.
#[derive(clap::Args, Clone, Debug)]
pub struct CompilerArgs {
    /// Compile without ccache (by default, when it is installed, every kernel compiles
    /// through it, its store in rrr's cache: unchanged files hit across trees and commits).
    #[arg(long)]
    pub no_ccache: bool,
    /// Compile through this launcher of a distributed compiler: `distcc` (hosts from
    /// DISTCC_HOSTS) or `icecc`; raise --jobs to the farm's size.
    #[arg(long, value_name = "CMD", env = LAUNCHER_ENV)]
    pub cc_launcher: Option<String>,
}

impl CompilerArgs {
    /// As the library takes them.
    pub fn plan(&self) -> CompilerPlan {
        CompilerPlan {
            ccache: !self.no_ccache,
            launcher: self.cc_launcher.clone(),
        }
    }
}

/// Runs `rrr kernel`.
pub fn run(args: KernelArgs) -> anyhow::Result<()> {
    if args.explain {
        print!("{}", explain(&args.spec())?);
        return Ok(());
    }
    let k = build(&args.spec())?;
    println!("{}", k.dir.display());
    eprintln!(
        "rrr: kernel ready:\n  vmlinux  {}\n  bzImage  {}\n  profile  {}",
        k.vmlinux().display(),
        k.bzimage().display(),
        k.profile().display()
    );
    Ok(())
}

impl KernelArgs {
    /// The kernel these flags ask for.
    pub fn spec(&self) -> KernelSpec {
        KernelSpec {
            src: self.src.clone(),
            git: self.git.clone(),
            commit: self.commit.clone(),
            config: self.config.clone(),
            report: self.report.clone(),
            title: self.title.clone(),
            cc: self.cc.map(Into::into),
            fragments: self.fragments.clone(),
            patches: self.patches.clone(),
            jobs: self.jobs,
            compiler: self.compiler.plan(),
        }
    }
}
