//! Kernel sources from git: one bare repository in the cache shared by every kernel, into
//! which exactly the wanted commit is fetched (shallow), from whichever repository has it
//! (torvalds, linux-next, a maintainer's tree, ...); a kernel build gets that commit's tree.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::cache;

fn git(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("--git-dir").arg(repo);
    c
}

/// Whether `commit` looks like a full commit id (a fetch by id needs all 40 digits).
fn is_commit_id(commit: &str) -> bool {
    commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Fetches `commit` from `url` into the shared kernel repository (unless it is there), then
/// writes its tree to `dest`.
pub fn checkout(url: &str, commit: &str, dest: &Path) -> anyhow::Result<()> {
    checkout_from("kernel.git", url, commit, dest)
}

/// As [`checkout`], with the cache's bare repository `name` (one per project).
pub fn checkout_from(name: &str, url: &str, commit: &str, dest: &Path) -> anyhow::Result<()> {
    crate::tools::require("git", "git")?;
    if !is_commit_id(commit) {
        crate::fail!(
            BadInput,
            "`{commit}` is not a full 40-digit commit id; git fetches a commit only by its full id"
        );
    }
    let repo = cache::Kind::Git.dir()?.join(name);
    {
        let _lock = cache::lock(&repo)?;
        if !repo.join("HEAD").is_file() {
            std::fs::create_dir_all(&repo)?;
            crate::tools::run_quiet(
                Command::new("git")
                    .args(["init", "--quiet", "--bare"])
                    .arg(&repo),
                "git init",
            )?;
        }
        let have = git(&repo)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .stderr(Stdio::null())
            .status()
            .context("running git")?
            .success();
        if !have {
            let bar = crate::report::progress(format!("fetching {commit:.12} from {url}"));
            let out = git(&repo)
                .args(["fetch", "--quiet", "--depth", "1", url, commit])
                .output()
                .context("running git fetch")?;
            bar.finish_and_clear();
            if !out.status.success() {
                crate::fail!(
                    Network,
                    "cannot fetch commit {commit} from {url}: {}\ncheck the network, and that \
                     the repository has this commit",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            // Keep the commit reachable, so a gc does not drop it.
            crate::tools::run_quiet(
                git(&repo).args(["update-ref", &format!("refs/rrr/{commit}"), commit]),
                "git update-ref",
            )?;
        }
    }
    std::fs::create_dir_all(dest)?;
    let bar = crate::report::progress(format!("checking out {commit:.12}"));
    let mut archive = git(&repo)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .stdin(archive.stdout.take().expect("piped"))
        .status()
        .context("running tar")?;
    let archived = archive.wait()?;
    bar.finish_and_clear();
    if !archived.success() || !tar.success() {
        bail!("extracting commit {commit} into {} failed", dest.display());
    }
    Ok(())
}

#[cfg(test)]
#[path = "../tests/support/git.rs"]
mod test_git;

#[cfg(test)]
mod tests {
    use super::test_git::git as run;
    use super::*;

    #[test]
    fn exactly_the_commit_is_fetched_and_checked_out() {
        let tmp = tempfile::tempdir().unwrap();
        let upstream = tmp.path().join("linux");
        std::fs::create_dir(&upstream).unwrap();
        run(&upstream, &["init", "-q"]);
        std::fs::write(upstream.join("Makefile"), "VERSION = 6\n").unwrap();
        run(&upstream, &["add", "."]);
        run(&upstream, &["commit", "-qm", "one"]);
        let first = run(&upstream, &["rev-parse", "HEAD"]);
        std::fs::write(upstream.join("Makefile"), "VERSION = 7\n").unwrap();
        run(&upstream, &["commit", "-qam", "two"]);

        // The cache root comes from XDG_CACHE_HOME; this test owns that variable.
        std::env::set_var("XDG_CACHE_HOME", tmp.path().join("cache"));
        let url = format!("file://{}", upstream.display());
        let dest = tmp.path().join("src");
        checkout(&url, &first, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("Makefile")).unwrap(),
            "VERSION = 6\n"
        );
        // Fetched once: a second checkout works with the upstream gone.
        std::fs::remove_dir_all(&upstream).unwrap();
        let again = tmp.path().join("src2");
        checkout(&url, &first, &again).unwrap();
        assert!(again.join("Makefile").is_file());

        let e = checkout(&url, &"0".repeat(40), &tmp.path().join("x")).unwrap_err();
        assert!(e.to_string().contains("cannot fetch commit"), "{e}");
        let e = checkout(&url, "abc123", &tmp.path().join("y")).unwrap_err();
        assert!(e.to_string().contains("40-digit"), "{e}");
    }
}
