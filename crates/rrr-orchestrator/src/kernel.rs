//! `rrr kernel`: builds a kernel that rrr can trace (DWARF on, KASLR off, the sanitizers and
//! debug options the bug does not need off: see [`crate::reduce`]), out of tree, cached by its
//! real inputs; keeps vmlinux, bzImage, .config and the profile.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::cache::{self, Key, Staging};
use crate::compiler::CompilerPlan;
use crate::error::{ErrorKind, Tag};
use crate::reduce;
use crate::tools::{last_lines, major_minor, run_quiet, version_line};

/// The fragment merged over `tinyconfig` (or over `--config`).
const TINY_FRAGMENT: &str = include_str!("../assets/tiny-kernel.config");
/// Fragments shipped with rrr, by the name `--fragment` takes for them.
const BUILTIN_FRAGMENTS: &[(&str, &str)] =
    &[("crash-test", include_str!("../assets/crash-test.config"))];
/// Bumped when the recipe below changes, so old entries are not reused.
const RECIPE: &str = "kernel-recipe-2";
/// The kernel source `scripts/setup` installs.
pub const DISTRO_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// A compiler to build the kernel with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcChoice {
    /// GNU gcc.
    Gcc,
    /// LLVM clang (`make LLVM=1`).
    Clang,
}

/// What kernel to build: its source, config and compiler.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    /// Kernel source: a tree or a .tar.xz/.tar.gz tarball (unless `git` is given).
    pub src: PathBuf,
    /// Kernel source from this git repository instead, at `commit` (fetched shallow into a
    /// cached repository shared by all kernels).
    pub git: Option<String>,
    /// The commit to build from `git`.
    pub commit: Option<String>,
    /// Base .config (default: `make tinyconfig` plus rrr's fragment).
    pub config: Option<PathBuf>,
    /// The crash report the kernel is built for: sanitizers and debug options it does not
    /// involve are switched off.
    pub report: Option<PathBuf>,
    /// The crash's title (default: read from the report).
    pub title: Option<String>,
    /// Build with this compiler instead of the one the config names.
    pub cc: Option<CcChoice>,
    /// Extra config fragments merged last: files, or a fragment shipped with rrr by name.
    pub fragments: Vec<PathBuf>,
    /// Patches applied to the source in order before the build (`git format-patch` mails or
    /// unified diffs, `-p1`); part of the cache key.
    pub patches: Vec<PathBuf>,
    /// Parallel make jobs (default: number of cores; more for a build farm).
    pub jobs: Option<usize>,
    /// How the compiler runs: through ccache, and a distributed compiler's launcher.
    pub compiler: CompilerPlan,
}

impl KernelSpec {
    /// The default kernel: `src` (the distro's source), tinyconfig, no crash.
    pub fn tiny(src: PathBuf) -> Self {
        KernelSpec {
            src,
            git: None,
            commit: None,
            config: None,
            report: None,
            title: None,
            cc: None,
            fragments: vec![],
            patches: vec![],
            jobs: None,
            compiler: CompilerPlan {
                ccache: true,
                launcher: None,
            },
        }
    }
}

/// A built kernel in the cache.
#[derive(Debug)]
pub struct Kernel {
    /// The cache entry.
    pub dir: PathBuf,
}

impl Kernel {
    /// What a machine needs to boot it.
    pub fn boot(&self) -> crate::engine::Boot {
        crate::engine::Boot {
            bzimage: self.bzimage(),
            memory: self.memory(),
        }
    }
    /// The vmlinux with DWARF.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    /// The bootable image.
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
    /// The kernel's tracer profile (built with the kernel).
    pub fn profile(&self) -> PathBuf {
        self.dir.join("vmlinux.rrrprof")
    }

    /// The kernel's tracer profile, opened: built again from vmlinux first if it is missing or
    /// was made by another version of the DWARF reader (a kernel cached by an older rrr).
    pub(crate) fn current_profile(&self) -> anyhow::Result<osi_profile::Profile> {
        if let Ok(p) = osi_profile::Profile::open(&self.profile()) {
            if p.is_current() {
                return Ok(p);
            }
        }
        let bar = crate::report::progress("profiling vmlinux");
        let built = osi_profile::build(
            &self.vmlinux(),
            &self.profile(),
            &osi_profile::Options::default(),
        )
        .with_context(|| format!("profiling {}", self.vmlinux().display()))?;
        bar.finish_and_clear();
        Ok(built)
    }

    /// Guest memory for this kernel: 256M for a small kernel like rrr's tiny one, 2G for a
    /// full (syzbot-like) config, whose boot and sanitizers need it. Derived from the
    /// kernel's config only, so a recording and its replays always agree.
    pub fn memory(&self) -> &'static str {
        let options = std::fs::read_to_string(self.dir.join("config"))
            .map(|c| c.lines().filter(|l| l.ends_with("=y")).count())
            .unwrap_or(0);
        if options < 1500 {
            "256M"
        } else {
            "2G"
        }
    }
}

/// How the kernel is configured and compiled, decided before building.
struct Plan {
    /// The base config's text (the tiny fragment when there is no --config).
    base: String,
    /// The compiler and its `--version` line.
    cc: CcChoice,
    cc_version: String,
    /// The reduction's changes.
    changes: Vec<reduce::Change>,
    /// What the crash keeps (for --explain).
    kept: Vec<String>,
}

fn pahole_for_btf() -> bool {
    version_line("pahole").is_some_and(|v| major_minor(v.trim().trim_start_matches('v')) >= (1, 22))
}

/// The text of the fragment `f`: a file, or one of [`BUILTIN_FRAGMENTS`] by name.
fn fragment_text(f: &Path) -> anyhow::Result<String> {
    let builtin = BUILTIN_FRAGMENTS
        .iter()
        .find(|(name, _)| f.as_os_str() == *name && !f.exists());
    match builtin {
        Some((_, text)) => Ok((*text).to_owned()),
        None => std::fs::read_to_string(f).with_context(|| {
            let names: Vec<_> = BUILTIN_FRAGMENTS.iter().map(|(n, _)| *n).collect();
            format!(
                "reading the config fragment {} (a file, or one of rrr's: {})",
                f.display(),
                names.join(", ")
            )
        }),
    }
}

fn plan(args: &KernelSpec) -> anyhow::Result<Plan> {
    let base = match &args.config {
        Some(c) => std::fs::read_to_string(c)
            .with_context(|| format!("reading the kernel config {}", c.display()))?,
        None => TINY_FRAGMENT.to_owned(),
    };
    let wanted = reduce::Compiler::of_config(&base);
    let cc = args.cc.unwrap_or(match wanted {
        Some(reduce::Compiler::Clang(_)) => CcChoice::Clang,
        _ => CcChoice::Gcc,
    });
    let cc_version = match cc {
        CcChoice::Gcc => version_line("gcc")
            .context("gcc not found: run scripts/setup (apt-get install build-essential)")?,
        CcChoice::Clang => {
            let found = version_line("clang").filter(|_| crate::tools::on_path("ld.lld"));
            found.with_context(|| {
                format!(
                    "this kernel's config was made with {} (CONFIG_CC_VERSION_TEXT), and clang \
                     or ld.lld is missing: apt-get install clang lld llvm, or pass --cc gcc to \
                     build it with gcc",
                    wanted.as_ref().map_or("clang".into(), |c| c.to_string())
                )
            })?
        }
    };
    let host = reduce::Compiler::from_version_text(&cc_version);
    if let (Some(w), Some(h)) = (&wanted, &host) {
        if w != h {
            crate::report::note(&format!(
                "the config was made with {w}, this machine builds with {h}; \
                 compiler-dependent options may differ"
            ));
        }
    }
    let tools = reduce::Toolchain {
        dwarf5: host.as_ref().is_some_and(reduce::Compiler::dwarf5),
        pahole_for_btf: pahole_for_btf(),
    };
    let crash = match &args.report {
        Some(path) => {
            let report = std::fs::read_to_string(path)
                .with_context(|| format!("reading the crash report {}", path.display()))?;
            let title = args
                .title
                .clone()
                .unwrap_or_else(|| reduce::Crash::title_from_report(&report));
            Some(reduce::Crash::from_report(&title, &report))
        }
        None => args.title.as_deref().map(|t| reduce::Crash {
            title: t.to_owned(),
            ..Default::default()
        }),
    };
    let changes = reduce::reduce(&base, crash.as_ref(), &tools);
    let kept = crash
        .as_ref()
        .map(|c| reduce::kept(&base, c))
        .unwrap_or_default();
    Ok(Plan {
        base,
        cc,
        cc_version,
        changes,
        kept,
    })
}

/// Where the kernel's source comes from.
enum Source<'a> {
    /// A commit fetched from a git repository.
    Git { url: &'a str, commit: &'a str },
    /// A tarball, unpacked into the build.
    Tarball(&'a Path),
    /// A tree, laid out in the build as hard links (see [`link_tree`]).
    Tree(&'a Path),
}

fn source(args: &KernelSpec) -> anyhow::Result<Source<'_>> {
    Ok(match (&args.git, &args.commit) {
        (Some(url), Some(commit)) => Source::Git { url, commit },
        _ if args.src.is_file() => Source::Tarball(&args.src),
        _ if args.src.join("Makefile").is_file() => Source::Tree(&args.src),
        _ => crate::fail!(BadInput, "{}: not a kernel tree (no Makefile) nor a tarball; pass --src DIR|TARBALL (scripts/setup installs {DISTRO_SOURCE})", args.src.display()),
    })
}

/// The cache key: source identity, configs, reduction, compiler, recipe.
fn key(args: &KernelSpec, source: &Source, plan: &Plan) -> anyhow::Result<String> {
    let mut k = Key::default();
    k.add("recipe", RECIPE.as_bytes())
        .add("base", plan.base.as_bytes())
        .add("reduction", reduce::fragment(&plan.changes).as_bytes());
    match *source {
        // A commit names its tree wherever it is fetched from.
        Source::Git { commit, .. } => {
            k.add("git-commit", commit.as_bytes());
        }
        Source::Tarball(tarball) => {
            k.add_file("tarball", tarball)?;
        }
        Source::Tree(tree) => {
            // A git tree: its commit and uncommitted changes; otherwise its path and Makefile.
            let head = Command::new("git")
                .arg("-C")
                .arg(tree)
                .args(["rev-parse", "HEAD"])
                .output();
            match head {
                Ok(o) if o.status.success() => {
                    k.add("commit", &o.stdout);
                    let diff = Command::new("git")
                        .arg("-C")
                        .arg(tree)
                        .args(["diff", "HEAD"])
                        .output()?;
                    k.add("diff", &diff.stdout);
                }
                // Another tree: its content (a file changed by hand is another kernel).
                _ => {
                    let bar = crate::report::progress(format!("hashing {}", tree.display()));
                    k.add_tree("tree", tree)?;
                    bar.finish_and_clear();
                }
            }
        }
    }
    for f in &args.fragments {
        k.add("extra", fragment_text(f)?.as_bytes());
    }
    for p in &args.patches {
        k.add_file("patch", p)
            .with_context(|| format!("reading the patch {}", p.display()))?;
    }
    k.add("cc", plan.cc_version.as_bytes());
    Ok(k.hex())
}

/// The config changes `spec`'s build would make and why, and what the crash keeps: one line
/// each.
pub fn explain(spec: &KernelSpec) -> crate::Result<String> {
    let plan = plan(spec)?;
    let mut out = format!("# compiler: {}\n", plan.cc_version);
    if plan.changes.is_empty() {
        out.push_str("# the config needs no change\n");
    }
    for c in &plan.changes {
        out.push_str(&format!("{c}\n"));
    }
    for k in &plan.kept {
        out.push_str(&format!("{k}\n"));
    }
    Ok(out)
}

/// Builds (or finds in the cache) the kernel.
pub fn build(args: &KernelSpec) -> crate::Result<Kernel> {
    let plan = plan(args)?;
    let source = source(args)?;
    let key = key(args, &source, &plan)?;
    let target = cache::Kind::Kernels.dir()?.join(&key);
    let _lock = cache::lock(&target)?;
    if target.join("vmlinux.rrrprof").is_file() {
        tracing::info!("kernel {key} found in the cache");
        return Ok(Kernel { dir: target });
    }
    let stage = Staging::new(&target)?;
    let src = match source {
        Source::Git { url, commit } => {
            let dir = stage.dir.join("src");
            crate::git::checkout(url, commit, &dir)?;
            dir
        }
        Source::Tarball(tarball) => {
            let dir = stage.dir.join("src");
            link_tree(&unpacked(tarball)?, &dir)?;
            dir
        }
        Source::Tree(tree) => {
            let dir = stage.dir.join("src");
            link_tree(tree, &dir)?;
            dir
        }
    };
    apply_patches(&src, &args.patches)?;
    let out = stage.dir.join("build");
    std::fs::create_dir_all(&out)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let kernels = cache::Kind::Kernels.dir()?;
    let cc = match plan.cc {
        CcChoice::Gcc => "gcc",
        CcChoice::Clang => "clang",
    };
    let make = |what: &[&str]| -> anyhow::Result<Command> {
        let mut c = Command::new("make");
        c.arg("-C").arg(&src).arg(format!("O={}", out.display()));
        if plan.cc == CcChoice::Clang {
            c.arg("LLVM=1");
        }
        args.compiler.apply(&mut c, cc, &kernels)?;
        c.args(what);
        Ok(c)
    };
    // Configuration.
    match &args.config {
        Some(base) => {
            std::fs::copy(base, out.join(".config"))
                .with_context(|| format!("copying {}", base.display()))?;
            run_quiet(&mut make(&["olddefconfig"])?, "make olddefconfig").tag(ErrorKind::Build)?;
        }
        None => {
            run_quiet(&mut make(&["tinyconfig"])?, "make tinyconfig").tag(ErrorKind::Build)?;
        }
    }
    let frag_dir = stage.dir.join("fragments");
    std::fs::create_dir_all(&frag_dir)?;
    let mut frags = Vec::new();
    if args.config.is_none() {
        frags.push(write(&frag_dir.join("tiny.config"), TINY_FRAGMENT)?);
    }
    // Copies, so that merge_config.sh (run in the source tree) finds them whatever the
    // caller's directory and however they were named.
    for (i, f) in args.fragments.iter().enumerate() {
        let copy = frag_dir.join(format!("extra-{i}.config"));
        frags.push(write(&copy, &fragment_text(f)?)?);
    }
    frags.push(write(
        &frag_dir.join("rrr-reduction.config"),
        &reduce::fragment(&plan.changes),
    )?);
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&src)
        .args(["-m", "-O"])
        .arg(&out)
        .arg(out.join(".config"))
        .args(&frags);
    run_quiet(&mut merge, "merge_config.sh").tag(ErrorKind::Build)?;
    run_quiet(&mut make(&["olddefconfig"])?, "make olddefconfig").tag(ErrorKind::Build)?;
    check_config(
        &std::fs::read_to_string(out.join(".config"))?,
        &plan.changes,
    )?;
    // Build.
    let mut cmd = make(&[&format!("-j{jobs}"), "bzImage"])?;
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
    // The kernel's profile, built where it is built for a kernel cached by an older reader.
    Kernel { dir: boot.clone() }.current_profile()?;
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

/// The tarball `tarball` unpacked, once, into the cache (its pristine source, which builds
/// link into their own trees): a kernel that differs from a cached one by a patch or a config
/// option does not unpack 1.3 GB again.
fn unpacked(tarball: &Path) -> anyhow::Result<PathBuf> {
    let mut key = Key::default();
    key.add_file("tarball", tarball)?;
    let target = cache::Kind::Sources.dir()?.join(key.hex());
    let _lock = cache::lock(&target)?;
    if target.join("Makefile").is_file() {
        return Ok(target);
    }
    let stage = Staging::new(&target)?;
    let bar = crate::report::progress(format!("unpacking {}", tarball.display()));
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tarball)
        .arg("--strip-components=1")
        .arg("-C")
        .arg(&stage.dir)
        .status()
        .context("running tar")?;
    bar.finish_and_clear();
    if !st.success() || !stage.dir.join("Makefile").is_file() {
        crate::fail!(
            BadInput,
            "unpacking {} failed; is it a kernel source tarball?",
            tarball.display()
        );
    }
    stage.commit()
}

/// Applies `patches` in order to the tree `src` (`patch -p1`, which writes each patched file
/// anew, so a hard-linked source keeps its own). A patch that does not apply is an error that
/// names it and its failing hunks; the caller's staging directory, and so the half-patched
/// tree, is then removed.
fn apply_patches(src: &Path, patches: &[PathBuf]) -> anyhow::Result<()> {
    if patches.is_empty() {
        return Ok(());
    }
    let patch = crate::tools::require("patch", "patch")?;
    for p in patches {
        let file =
            std::fs::File::open(p).with_context(|| format!("reading the patch {}", p.display()))?;
        let out = Command::new(&patch)
            .current_dir(src)
            .args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch"])
            .arg("--reject-file=-")
            .stdin(file)
            .output()
            .context("running patch")?;
        if !out.status.success() {
            crate::fail!(
                Patch,
                "the patch {} does not apply to this kernel source (patch -p1 said):\n{}{}\n\
                 rebase it on this source, or build the source it was made for",
                p.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        tracing::info!("applied {}", p.display());
    }
    Ok(())
}

/// Lays the tree `tree` out at `dest` as hard links (copies where the two are on different file
/// systems), without its `.git`. Every build then compiles its sources at the same paths
/// relative to its build directory, wherever the tree is, so ccache (whose base directory is
/// the kernels' cache) hits across trees, tarballs and commits. The build is out of tree and
/// writes nothing into `dest`.
fn link_tree(tree: &Path, dest: &Path) -> anyhow::Result<()> {
    if dest.starts_with(tree.canonicalize()?) {
        crate::fail!(
            BadInput,
            "rrr's cache ({}) is inside the kernel tree {}: set XDG_CACHE_HOME elsewhere",
            dest.display(),
            tree.display()
        );
    }
    let entries = std::fs::read_dir(tree)
        .with_context(|| format!("reading {}", tree.display()))?
        .map(|e| e.map(|e| e.path()))
        .filter(|p| !p.as_ref().is_ok_and(|p| p.ends_with(".git")))
        .collect::<Result<Vec<_>, _>>()?;
    let bar = crate::report::progress(format!("linking {} into the build", tree.display()));
    for how in ["-al", "-a"] {
        std::fs::create_dir_all(dest)?;
        let copied = Command::new("cp")
            .arg(how)
            .args(&entries)
            .arg(dest)
            .stderr(Stdio::null())
            .status()
            .context("running cp")?;
        if copied.success() {
            bar.finish_and_clear();
            return Ok(());
        }
        std::fs::remove_dir_all(dest)?;
    }
    bar.finish_and_clear();
    bail!(
        "copying the kernel tree {} into {} failed; is there room in the cache?",
        tree.display(),
        dest.display()
    )
}

/// Checks that the final config took the changes rrr needs (DWARF on, KASLR off), and warns
/// about the ones Kconfig overrode (an option selected by another).
fn check_config(config: &str, changes: &[reduce::Change]) -> anyhow::Result<()> {
    let has = |line: &str| config.lines().any(|l| l == line);
    if !has("CONFIG_DEBUG_INFO=y")
        || !(has("CONFIG_DEBUG_INFO_DWARF5=y") || has("CONFIG_DEBUG_INFO_DWARF4=y"))
    {
        crate::fail!(BadInput, "the kernel config refuses DWARF debug info (a dependency is missing); check --config/--fragment");
    }
    if has("CONFIG_RANDOMIZE_BASE=y") {
        crate::fail!(
            BadInput,
            "the kernel config keeps CONFIG_RANDOMIZE_BASE=y; rrr needs KASLR off"
        );
    }
    for c in changes.iter().filter(|c| !c.on) {
        if has(&format!("CONFIG_{}=y", c.option)) {
            crate::report::note(&format!(
                "CONFIG_{} stays on: another option selects it",
                c.option
            ));
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(path, text)?;
    Ok(path.to_owned())
}

/// Runs make with a spinner showing its progress; on failure, the error holds the output's tail.
fn run_make(cmd: &mut Command) -> anyhow::Result<()> {
    let mut child = cmd.spawn().context("running make (run scripts/setup)")?;
    let bar = crate::report::progress("building the kernel");
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut out = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        bar.set_message(format!("building the kernel: {}", line.trim()));
        out.push(line);
    }
    let status = child.wait()?;
    let errors = err_thread.join().unwrap_or_default();
    bar.finish_and_clear();
    if !status.success() {
        crate::fail!(
            Build,
            "the kernel did not build (make exited with {status}); the end of its output:\n{}\n{}",
            last_lines(&out.join("\n"), 30),
            last_lines(&errors.join("\n"), 40)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-file tree in `dir/name` and a patch of its `a.c` (line `two` to `TWO`).
    fn tree_and_patch(dir: &Path) -> (PathBuf, PathBuf) {
        let tree = dir.join("linux");
        std::fs::create_dir_all(tree.join("kernel")).unwrap();
        std::fs::write(tree.join("Makefile"), "VERSION = 6\n").unwrap();
        std::fs::write(tree.join("kernel/a.c"), "one\ntwo\nthree\n").unwrap();
        let patch = dir.join("fix.patch");
        std::fs::write(
            &patch,
            "From: someone\nSubject: [PATCH] a fix\n\n---\n\
             --- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n",
        )
        .unwrap();
        (tree, patch)
    }

    #[test]
    fn patches_apply_to_the_builds_linked_copy_and_a_bad_one_names_its_hunk() {
        let tmp = tempfile::tempdir().unwrap();
        let (tree, patch) = tree_and_patch(tmp.path());
        let copy = tmp.path().join("build-src");
        link_tree(&tree, &copy).unwrap();
        apply_patches(&copy, std::slice::from_ref(&patch)).unwrap();
        assert_eq!(
            std::fs::read_to_string(copy.join("kernel/a.c")).unwrap(),
            "one\nTWO\nthree\n"
        );
        // The tree the copy was linked from keeps its own file.
        assert_eq!(
            std::fs::read_to_string(tree.join("kernel/a.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
        // Applied twice: the second does not apply, and says where.
        let err = apply_patches(&copy, std::slice::from_ref(&patch)).unwrap_err();
        let said = format!("{err:#}");
        assert!(
            said.contains(&patch.display().to_string()) && said.contains("kernel/a.c"),
            "{said}"
        );
        let other = tmp.path().join("other.patch");
        std::fs::write(
            &other,
            "--- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1,3 +1,3 @@\n one\n-deux\n+DEUX\n three\n",
        )
        .unwrap();
        let said = format!("{:#}", apply_patches(&copy, &[other]).unwrap_err());
        assert!(
            said.contains("Hunk #1 FAILED") && said.contains("rebase it"),
            "{said}"
        );
    }

    #[test]
    fn a_patch_is_part_of_the_key_and_a_tree_is_keyed_by_its_content() {
        let tmp = tempfile::tempdir().unwrap();
        let (tree, patch) = tree_and_patch(tmp.path());
        let spec = |patches: Vec<PathBuf>| KernelSpec {
            patches,
            ..KernelSpec::tiny(tree.clone())
        };
        let key_of = |spec: &KernelSpec| {
            let plan = plan(spec).unwrap();
            key(spec, &source(spec).unwrap(), &plan).unwrap()
        };
        let plain = key_of(&spec(vec![]));
        let patched = key_of(&spec(vec![patch.clone()]));
        assert_ne!(plain, patched, "with and without the patch: two kernels");
        let again = tmp.path().join("same.patch");
        std::fs::copy(&patch, &again).unwrap();
        assert_eq!(
            patched,
            key_of(&spec(vec![again])),
            "the same patch: one kernel"
        );
        assert_ne!(
            patched,
            key_of(&spec(vec![patch.clone(), patch.clone()])),
            "patches in order"
        );
        // The tree changed by hand (same path, same Makefile) is another kernel.
        std::fs::write(tree.join("kernel/a.c"), "one\nTWO\nthree\n").unwrap();
        assert_ne!(plain, key_of(&spec(vec![])));
    }

    #[test]
    fn fragments_are_files_or_rrrs_own_by_name() {
        let text = fragment_text(Path::new("crash-test")).unwrap();
        assert!(text.lines().any(|l| l == "CONFIG_KASAN=y"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.config");
        std::fs::write(&file, "CONFIG_X=y\n").unwrap();
        assert_eq!(fragment_text(&file).unwrap(), "CONFIG_X=y\n");
        let err = fragment_text(Path::new("no-such-fragment")).unwrap_err();
        assert!(format!("{err:#}").contains("crash-test"), "{err:#}");
    }
}
