//! `rrr kernel`: builds a kernel that rrr can trace (DWARF on, KASLR off, frame pointers),
//! out of tree, cached by its real inputs; keeps vmlinux, bzImage, .config and the profile.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::cache::{self, Key, Staging};
use crate::tools::run_quiet;

/// The fragment merged over `tinyconfig` (or over `--config`).
const TINY_FRAGMENT: &str = include_str!("../assets/tiny-kernel.config");
/// Options rrr needs whatever the base config says.
const REQUIRED: &str = "CONFIG_DEBUG_INFO=y\nCONFIG_DEBUG_INFO_DWARF5=y\n# CONFIG_DEBUG_INFO_REDUCED is not set\n# CONFIG_DEBUG_INFO_SPLIT is not set\n# CONFIG_RANDOMIZE_BASE is not set\nCONFIG_FRAME_POINTER=y\n";
/// Bumped when the recipe below changes, so old entries are not reused.
const RECIPE: &str = "kernel-recipe-1";
/// The kernel source `scripts/setup` installs.
pub const DISTRO_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// Arguments of `rrr kernel`.
#[derive(clap::Args, Clone, Debug)]
pub struct KernelArgs {
    /// Kernel source: a tree or a .tar.xz/.tar.gz tarball.
    #[arg(long, default_value = DISTRO_SOURCE)]
    pub src: PathBuf,
    /// Base .config (default: `make tinyconfig` plus rrr's fragment).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Extra config fragments merged last.
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
    /// Parallel make jobs (default: number of cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
}

/// A built kernel in the cache.
#[derive(Debug)]
pub struct Kernel {
    /// The cache entry.
    pub dir: PathBuf,
}

impl Kernel {
    /// The vmlinux with DWARF.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    /// The bootable image.
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
    /// The tracer profile.
    pub fn profile(&self) -> PathBuf {
        self.dir.join("vmlinux.rrrprof")
    }
}

fn compiler_version() -> anyhow::Result<String> {
    let out = Command::new("gcc")
        .arg("--version")
        .output()
        .context("gcc not found: run scripts/setup (apt-get install build-essential)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}

/// The cache key: source identity, configs, compiler, recipe.
fn key(args: &KernelArgs) -> anyhow::Result<String> {
    let mut k = Key::default();
    k.add("recipe", RECIPE.as_bytes())
        .add("fragment", TINY_FRAGMENT.as_bytes())
        .add("required", REQUIRED.as_bytes());
    if args.src.is_file() {
        k.add_file("tarball", &args.src)?;
    } else if args.src.join("Makefile").is_file() {
        // A git tree: its commit and uncommitted changes; otherwise its path and Makefile.
        let head = Command::new("git")
            .arg("-C")
            .arg(&args.src)
            .args(["rev-parse", "HEAD"])
            .output();
        match head {
            Ok(o) if o.status.success() => {
                k.add("commit", &o.stdout);
                let diff = Command::new("git")
                    .arg("-C")
                    .arg(&args.src)
                    .args(["diff", "HEAD"])
                    .output()?;
                k.add("diff", &diff.stdout);
            }
            _ => {
                k.add(
                    "tree",
                    args.src.canonicalize()?.to_string_lossy().as_bytes(),
                );
                k.add_file("makefile", &args.src.join("Makefile"))?;
            }
        }
    } else {
        bail!("{}: not a kernel tree (no Makefile) nor a tarball; pass --src DIR|TARBALL (scripts/setup installs {DISTRO_SOURCE})", args.src.display());
    }
    if let Some(c) = &args.config {
        k.add_file("config", c)?;
    }
    for f in &args.fragments {
        k.add_file("extra", f)?;
    }
    k.add("cc", compiler_version()?.as_bytes());
    Ok(k.hex())
}

/// Builds (or finds in the cache) the kernel.
pub fn build(args: &KernelArgs) -> anyhow::Result<Kernel> {
    let key = key(args)?;
    let target = cache::root()?.join("kernels").join(&key);
    let _lock = cache::lock(&target)?;
    if target.join("vmlinux.rrrprof").is_file() {
        tracing::info!("kernel {key} found in the cache");
        return Ok(Kernel { dir: target });
    }
    let stage = Staging::new(&target)?;
    let src = match args.src.is_file() {
        true => {
            let dir = stage.dir.join("src");
            std::fs::create_dir_all(&dir)?;
            let bar = crate::progress::spinner(format!("unpacking {}", args.src.display()));
            let st = Command::new("tar")
                .arg("-xf")
                .arg(&args.src)
                .arg("--strip-components=1")
                .arg("-C")
                .arg(&dir)
                .status()
                .context("running tar")?;
            bar.finish_and_clear();
            if !st.success() {
                bail!(
                    "unpacking {} failed; is it a kernel source tarball?",
                    args.src.display()
                );
            }
            dir
        }
        false => args.src.canonicalize()?,
    };
    let out = stage.dir.join("build");
    std::fs::create_dir_all(&out)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let make = |what: &[&str]| -> Command {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(&src)
            .arg(format!("O={}", out.display()))
            .args(what);
        c
    };
    // Configuration.
    match &args.config {
        Some(base) => {
            std::fs::copy(base, out.join(".config"))
                .with_context(|| format!("copying {}", base.display()))?;
            run_quiet(&mut make(&["olddefconfig"]), "make olddefconfig")?;
        }
        None => {
            run_quiet(&mut make(&["tinyconfig"]), "make tinyconfig")?;
        }
    }
    let frag_dir = stage.dir.join("fragments");
    std::fs::create_dir_all(&frag_dir)?;
    let mut frags = Vec::new();
    if args.config.is_none() {
        frags.push(write(&frag_dir.join("tiny.config"), TINY_FRAGMENT)?);
    }
    frags.extend(args.fragments.iter().cloned());
    frags.push(write(&frag_dir.join("rrr-required.config"), REQUIRED)?);
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&src)
        .args(["-m", "-O"])
        .arg(&out)
        .arg(out.join(".config"))
        .args(&frags);
    run_quiet(&mut merge, "merge_config.sh")?;
    run_quiet(&mut make(&["olddefconfig"]), "make olddefconfig")?;
    let config = std::fs::read_to_string(out.join(".config"))?;
    for need in ["CONFIG_DEBUG_INFO_DWARF5=y", "CONFIG_FRAME_POINTER=y"] {
        if !config.lines().any(|l| l == need) {
            bail!("the kernel config refuses {need} (a dependency is missing); check --config/--fragment");
        }
    }
    if config.lines().any(|l| l == "CONFIG_RANDOMIZE_BASE=y") {
        bail!("the kernel config keeps CONFIG_RANDOMIZE_BASE=y; rrr needs KASLR off");
    }
    // Build.
    let mut cmd = make(&[&format!("-j{jobs}"), "bzImage"]);
    run_make(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let boot = stage.dir.join("boot");
    std::fs::create_dir_all(&boot)?;
    for (from, to) in [
        (out.join("vmlinux"), "vmlinux"),
        (out.join("arch/x86/boot/bzImage"), "bzImage"),
        (out.join(".config"), "config"),
    ] {
        std::fs::rename(&from, boot.join(to))
            .with_context(|| format!("keeping {}", from.display()))?;
    }
    let bar = crate::progress::spinner("profiling vmlinux".to_owned());
    osi_profile::build(
        &boot.join("vmlinux"),
        &boot.join("vmlinux.rrrprof"),
        &osi_profile::Options::default(),
    )?;
    bar.finish_and_clear();
    // Keep only the artifacts: source and objects go.
    for d in ["src", "build", "fragments"] {
        let _ = std::fs::remove_dir_all(stage.dir.join(d));
    }
    for entry in std::fs::read_dir(&boot)? {
        let entry = entry?;
        std::fs::rename(entry.path(), stage.dir.join(entry.file_name()))?;
    }
    std::fs::remove_dir(&boot)?;
    let dir = stage.commit()?;
    Ok(Kernel { dir })
}

fn write(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(path, text)?;
    Ok(path.to_owned())
}

/// Runs make with a spinner showing its progress; on failure, the error holds the output's tail.
fn run_make(cmd: &mut Command) -> anyhow::Result<()> {
    let mut child = cmd.spawn().context("running make (run scripts/setup)")?;
    let bar = crate::progress::spinner("building the kernel".to_owned());
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut tail = std::collections::VecDeque::new();
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        bar.set_message(format!("building the kernel: {}", line.trim()));
        tail.push_back(line);
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    let status = child.wait()?;
    let errors = err_thread.join().unwrap_or_default();
    bar.finish_and_clear();
    if !status.success() {
        let errs: Vec<_> = errors.iter().rev().take(40).rev().cloned().collect();
        bail!(
            "the kernel did not build (make exited with {status}); the end of its output:\n{}\n{}",
            tail.into_iter().collect::<Vec<_>>().join("\n"),
            errs.join("\n")
        );
    }
    Ok(())
}

/// Runs `rrr kernel`.
pub fn run(args: KernelArgs) -> anyhow::Result<()> {
    let k = build(&args)?;
    println!("{}", k.dir.display());
    eprintln!(
        "rrr: kernel ready:\n  vmlinux  {}\n  bzImage  {}\n  profile  {}",
        k.vmlinux().display(),
        k.bzimage().display(),
        k.profile().display()
    );
    Ok(())
}
