//! `rrr syzbot`: a bug's kernel, config, reproducers and crash report from syzbot's public JSON
//! API (`/bug?extid=X&json=1`, assets under `/text?tag=...&x=...`), kept in the cache.
//!
//! The bug's JSON is fetched again on every use (syzbot adds crashes); when syzbot cannot be
//! reached, the cached copy is used with a warning. Each crash's files are stored under a key of
//! the crash's own JSON, so they never change once written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::error::Tag;
use serde::Deserialize;

use crate::cache::{self, Key, Staging};

/// syzbot's dashboard.
pub const DEFAULT_URL: &str = "https://syzkaller.appspot.com";

/// Which syzbot bug, and where to ask.
#[derive(Clone, Debug)]
pub struct BugSpec {
    /// The bug: its extid (`c6d438f2d77f96cae7c2`, from the `extid=` of its URL, or of the
    /// `syzbot+<extid>@` reporter address), its 40-digit id, or its URL.
    pub bug: String,
    /// This crash of the bug (index in syzbot's list) instead of the newest one with a C
    /// reproducer.
    pub crash: Option<usize>,
    /// The syzbot dashboard to ask (a mirror, or a local server in tests).
    pub syzbot_url: String,
}

/// A bug, as syzbot's JSON API describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct Bug {
    /// Title of the bug (the first crash's title).
    #[serde(default)]
    pub title: String,
    /// Bug id (40 hex digits).
    #[serde(default)]
    pub id: String,
    /// open, fixed, invalid, ... (absent in older dashboards).
    #[serde(default)]
    pub status: Option<String>,
    /// The crashes, with reproducers first.
    #[serde(default)]
    pub crashes: Vec<Crash>,
}

/// One crash of a bug. Links are relative to the dashboard (`/text?tag=...&x=...`).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct Crash {
    /// The crash's title, as the report's first line.
    #[serde(default)]
    pub title: String,
    /// Link to the syz reproducer.
    #[serde(rename = "syz-reproducer", default)]
    pub syz_reproducer: Option<String>,
    /// Link to the C reproducer.
    #[serde(rename = "c-reproducer", default)]
    pub c_reproducer: Option<String>,
    /// Options the syz reproducer runs with.
    #[serde(rename = "repro-opts", default)]
    pub repro_opts: Option<String>,
    /// Link to the kernel .config.
    #[serde(rename = "kernel-config", default)]
    pub kernel_config: Option<String>,
    /// Web link to the kernel tree at the commit (not always a clonable URL).
    #[serde(rename = "kernel-source-git", default)]
    pub kernel_source_git: Option<String>,
    /// The kernel commit.
    #[serde(rename = "kernel-source-commit", default)]
    pub kernel_source_commit: Option<String>,
    /// Web link to syzkaller at its commit.
    #[serde(rename = "syzkaller-git", default)]
    pub syzkaller_git: Option<String>,
    /// The syzkaller commit.
    #[serde(rename = "syzkaller-commit", default)]
    pub syzkaller_commit: Option<String>,
    /// The compiler that built the kernel.
    #[serde(rename = "compiler-description", default)]
    pub compiler_description: Option<String>,
    /// amd64, arm64, ...
    #[serde(default)]
    pub architecture: Option<String>,
    /// Link to the crash report.
    #[serde(rename = "crash-report-link", default)]
    pub crash_report_link: Option<String>,
}

/// A crash of a bug with its files in the cache.
#[derive(Debug)]
pub struct Fetched {
    /// The bug.
    pub bug: Bug,
    /// Index of the chosen crash in `bug.crashes`.
    pub index: usize,
    /// Directory holding the crash's files.
    pub dir: PathBuf,
}

impl Fetched {
    /// The chosen crash.
    pub fn crash(&self) -> &Crash {
        &self.bug.crashes[self.index]
    }
    /// The kernel .config syzbot built.
    pub fn config(&self) -> PathBuf {
        self.dir.join("kernel.config")
    }
    /// The C reproducer, if the crash has one.
    pub(crate) fn repro_c(&self) -> Option<PathBuf> {
        Some(self.dir.join("repro.c")).filter(|p| p.is_file())
    }
    /// The syz reproducer, if the crash has one.
    pub(crate) fn repro_syz(&self) -> Option<PathBuf> {
        Some(self.dir.join("repro.syz")).filter(|p| p.is_file())
    }
    /// The crash report, if syzbot links one.
    pub fn report(&self) -> Option<PathBuf> {
        Some(self.dir.join("report.txt")).filter(|p| p.is_file())
    }
}

/// What the user named: a bug's extid or id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BugRef {
    /// The 20-digit id in syzbot's reporter address and `extid=` links.
    ExtId(String),
    /// The 40-digit id in `id=` links.
    Id(String),
}

impl BugRef {
    /// Parses an extid, an id, or a dashboard URL holding either.
    pub fn parse(text: &str) -> crate::Result<BugRef> {
        let text = text.trim();
        let param = |name: &str| {
            text.split(['?', '&', '#'])
                .find_map(|p| p.strip_prefix(name))
                .map(str::to_owned)
        };
        let (value, from_url) = match (param("extid="), param("id=")) {
            (Some(v), _) => (v, Some(true)),
            (None, Some(v)) => (v, Some(false)),
            (None, None) => (
                text.strip_prefix("syzbot+")
                    .and_then(|t| t.split('@').next())
                    .unwrap_or(text)
                    .to_owned(),
                None,
            ),
        };
        let hex = !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit());
        let what = "a syzbot bug is named by its extid (as in \
                    https://syzkaller.appspot.com/bug?extid=c6d438f2d77f96cae7c2), its id, or that URL";
        match (hex, from_url, value.len()) {
            (true, Some(true), _) | (true, None, 16..=24) => {
                Ok(BugRef::ExtId(value.to_ascii_lowercase()))
            }
            (true, Some(false), _) | (true, None, 40) => Ok(BugRef::Id(value.to_ascii_lowercase())),
            _ => crate::fail!(BadInput, "`{text}` is not a syzbot bug: {what}"),
        }
    }

    fn query(&self) -> String {
        match self {
            BugRef::ExtId(v) => format!("extid={v}"),
            BugRef::Id(v) => format!("id={v}"),
        }
    }

    fn name(&self) -> &str {
        match self {
            BugRef::ExtId(v) | BugRef::Id(v) => v,
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// Why a download failed: syzbot answered with an error status, or could not be reached.
enum GetError {
    Status(u16),
    Unreachable(String),
}

fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, GetError> {
    match agent.get(url).call() {
        Ok(mut r) => r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| GetError::Unreachable(e.to_string())),
        Err(ureq::Error::StatusCode(code)) => Err(GetError::Status(code)),
        Err(e) => Err(GetError::Unreachable(e.to_string())),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file without a directory")?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The bug: fresh from syzbot (then cached), or the cached copy when syzbot is unreachable.
fn bug(args: &BugSpec, bug: &BugRef, agent: &ureq::Agent) -> anyhow::Result<Bug> {
    let base = args.syzbot_url.trim_end_matches('/');
    let url = format!("{base}/bug?{}&json=1", bug.query());
    let cached = cache::Kind::SyzbotBugs
        .dir()?
        .join(format!("{}.json", bug.name()));
    match get(agent, &url) {
        Ok(body) => {
            let parsed = parse_bug(&body, bug.name())?;
            write_atomic(&cached, &body)?;
            Ok(parsed)
        }
        Err(GetError::Status(404)) => crate::fail!(
            BadInput,
            "syzbot has no bug `{}` ({url} is 404): check the id; it is the extid= of the \
             bug's URL or the syzbot+<extid>@ reporter address",
            bug.name()
        ),
        Err(GetError::Status(code)) => {
            crate::fail!(Network, "syzbot answered {code} for {url}; try again later")
        }
        Err(GetError::Unreachable(why)) => match std::fs::read(&cached) {
            Ok(body) => {
                crate::report::warn(&format!(
                    "cannot reach syzbot ({why}); using the copy of bug {} cached at {}",
                    bug.name(),
                    cached.display()
                ));
                parse_bug(&body, bug.name())
            }
            Err(_) => crate::fail!(
                Network,
                "cannot reach syzbot at {base} ({why}), and bug {} is not in the cache: check \
                 the network (or --syzbot-url / RRR_SYZBOT_URL)",
                bug.name()
            ),
        },
    }
}

/// Parses a bug's JSON, with an error that says what was wrong.
pub(crate) fn parse_bug(body: &[u8], name: &str) -> anyhow::Result<Bug> {
    serde_json::from_slice(body).map_err(|e| {
        let start: String = String::from_utf8_lossy(&body[..body.len().min(120)]).into();
        crate::error::tagged(
            crate::ErrorKind::BadInput,
            format!(
                "syzbot's answer for bug {name} is not the bug JSON rrr reads ({e}); it \
                 starts: {start:?}. Is --syzbot-url a syzbot dashboard?"
            ),
        )
    })
}

/// The crash rrr uses: `wanted`, or the first (syzbot lists the best reproducers first) with
/// a C reproducer, else the first with a syz one.
pub(crate) fn choose_crash(bug: &Bug, wanted: Option<usize>) -> anyhow::Result<usize> {
    if let Some(n) = wanted {
        if n >= bug.crashes.len() {
            crate::fail!(
                BadInput,
                "bug `{}` has {} crash(es) on syzbot; --crash {n} is out of range",
                bug.title,
                bug.crashes.len()
            );
        }
        return Ok(n);
    }
    let has = |l: &Option<String>| l.as_deref().is_some_and(|l| !l.is_empty());
    if let Some(n) = bug.crashes.iter().position(|c| has(&c.c_reproducer)) {
        return Ok(n);
    }
    if let Some(n) = bug.crashes.iter().position(|c| has(&c.syz_reproducer)) {
        return Ok(n);
    }
    crate::fail!(
        BadInput,
        "bug `{}` has no reproducer on syzbot ({} crash(es), none with a C or syz \
         reproducer): rrr needs a reproducer to record; pick a bug with `Repro` on its page",
        bug.title,
        bug.crashes.len()
    )
}

/// Fetches the bug, chooses its crash and downloads the crash's files (once).
pub fn fetch(args: &BugSpec) -> crate::Result<Fetched> {
    let bug_ref = BugRef::parse(&args.bug)?;
    let agent = agent();
    let bug = bug(args, &bug_ref, &agent)?;
    let index = choose_crash(&bug, args.crash)?;
    let crash = &bug.crashes[index];
    let crash_json = serde_json::to_vec(crash)?;
    let mut key = Key::default();
    key.add("crash", &crash_json);
    let target = cache::Kind::SyzbotCrashes.dir()?.join(key.hex());
    let _lock = cache::lock(&target)?;
    if !target.join("crash.json").is_file() {
        let stage = Staging::new(&target)?;
        let base = args.syzbot_url.trim_end_matches('/');
        let assets = [
            (&crash.kernel_config, "kernel.config", true),
            (&crash.c_reproducer, "repro.c", false),
            (&crash.syz_reproducer, "repro.syz", false),
            (&crash.crash_report_link, "report.txt", false),
        ];
        let bar = crate::report::progress(format!("downloading {} from syzbot", bug.title));
        for (link, file, required) in assets {
            let Some(link) = link.as_deref().filter(|l| !l.is_empty()) else {
                if required {
                    crate::fail!(
                        BadInput,
                        "crash {index} of bug `{}` has no kernel config",
                        bug.title
                    );
                }
                continue;
            };
            let url = if link.starts_with("http") {
                link.to_owned()
            } else {
                format!("{base}{link}")
            };
            let bytes = get(&agent, &url)
                .map_err(|e| match e {
                    GetError::Status(code) => anyhow::anyhow!("syzbot answered {code} for {url}"),
                    GetError::Unreachable(why) => anyhow::anyhow!(
                        "cannot download {url} ({why}); check the network and run again"
                    ),
                })
                .tag(crate::ErrorKind::Network)?;
            std::fs::write(stage.dir.join(file), bytes)?;
        }
        std::fs::write(stage.dir.join("crash.json"), &crash_json)?;
        bar.finish_and_clear();
        stage.commit()?;
    }
    Ok(Fetched {
        bug,
        index,
        dir: target,
    })
}

/// The clonable repository of a `kernel-source-git` web link (`.../log/?id=<commit>`,
/// `.../commit/<commit>`, `.../+log/<commit>`, ...).
pub(crate) fn clone_url(link: &str) -> anyhow::Result<String> {
    let no_query = link.split('?').next().unwrap_or(link).trim_end_matches('/');
    let mut parts: Vec<&str> = no_query.split('/').collect();
    // Drop a trailing commit, then a trailing view name.
    if parts.last().is_some_and(|p| {
        p.len() >= 12
            && p.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'^' || b == b'!')
    }) {
        parts.pop();
    }
    if parts
        .last()
        .is_some_and(|p| matches!(*p, "log" | "commit" | "commits" | "tree" | "+log" | "+"))
    {
        parts.pop();
    }
    let url = parts.join("/");
    let scheme_ok = ["https://", "http://", "git://", "file://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok || url.split('/').count() < 4 {
        crate::fail!(
            BadInput,
            "cannot tell the git repository from syzbot's link {link:?}"
        );
    }
    Ok(url)
}

/// What was fetched, in a few lines for the user.
pub fn summary(f: &Fetched) -> String {
    let c = f.crash();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let file = |p: Option<PathBuf>| p.map_or("-".into(), |p| p.display().to_string());
    format!(
        "bug       {}\nid        {}\nstatus    {}\ncrash     #{} of {}: {}\nkernel    {} @ {}\ncompiler  {}\nconfig    {}\nrepro.c   {}\nrepro.syz {}\nreport    {}",
        f.bug.title,
        f.bug.id,
        opt(&f.bug.status),
        f.index,
        f.bug.crashes.len(),
        c.title,
        opt(&c.kernel_source_git),
        opt(&c.kernel_source_commit),
        opt(&c.compiler_description),
        f.config().display(),
        file(f.repro_c()),
        file(f.repro_syz()),
        file(f.report()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_refs_from_ids_addresses_and_urls() {
        let ext = BugRef::ExtId("c6d438f2d77f96cae7c2".into());
        for t in [
            "c6d438f2d77f96cae7c2",
            "https://syzkaller.appspot.com/bug?extid=c6d438f2d77f96cae7c2",
            "syzbot+c6d438f2d77f96cae7c2@syzkaller.appspotmail.com",
            " C6D438F2D77F96CAE7C2 ",
        ] {
            assert_eq!(BugRef::parse(t).unwrap(), ext, "{t}");
        }
        let id = "1bef50bdd9622a1969608d1090b2b4a588d0c6ac";
        assert_eq!(
            BugRef::parse(&format!("https://syzkaller.appspot.com/bug?id={id}")).unwrap(),
            BugRef::Id(id.into())
        );
        assert_eq!(BugRef::parse(id).unwrap(), BugRef::Id(id.into()));
        for bad in [
            "",
            "hello",
            "c6d438f2",
            "https://example.com/bug?x=1",
            "zz6d438f2d77f96cae7c2",
        ] {
            let e = BugRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains("extid"), "{bad}: {e}");
        }
    }

    #[test]
    fn clone_urls_from_syzbot_links() {
        let c = "7f2c2d5b6a1f0b3b1e1d2b9c1a0e1f2a3b4c5d6e";
        for (link, want) in [
            (
                format!("https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/log/?id={c}"),
                "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
            ),
            (
                format!("https://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git/commit/?id={c}"),
                "https://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git",
            ),
            (format!("https://github.com/google/kmsan/commits/{c}"), "https://github.com/google/kmsan"),
            (
                format!("https://android.googlesource.com/kernel/common/+log/{c}"),
                "https://android.googlesource.com/kernel/common",
            ),
            (
                "https://git.kernel.org/pub/scm/linux/kernel/git/netdev/net.git".into(),
                "https://git.kernel.org/pub/scm/linux/kernel/git/netdev/net.git",
            ),
        ] {
            assert_eq!(clone_url(&link).unwrap(), want, "{link}");
        }
        assert!(clone_url("not a url").is_err());
    }

    fn crash(c: bool, syz: bool) -> Crash {
        Crash {
            c_reproducer: c.then(|| "/text?tag=ReproC&x=1".into()),
            syz_reproducer: syz.then(|| "/text?tag=ReproSyz&x=2".into()),
            ..Crash::default()
        }
    }

    #[test]
    fn the_first_crash_with_a_c_reproducer_is_chosen() {
        let bug = Bug {
            title: "t".into(),
            id: "i".into(),
            status: None,
            crashes: vec![crash(false, true), crash(true, true), crash(true, false)],
        };
        assert_eq!(choose_crash(&bug, None).unwrap(), 1);
        assert_eq!(choose_crash(&bug, Some(2)).unwrap(), 2);
        assert!(choose_crash(&bug, Some(3)).is_err());
        let syz_only = Bug {
            crashes: vec![crash(false, false), crash(false, true)],
            ..bug.clone()
        };
        assert_eq!(choose_crash(&syz_only, None).unwrap(), 1);
        let none = Bug {
            crashes: vec![crash(false, false)],
            ..bug
        };
        let e = choose_crash(&none, None).unwrap_err().to_string();
        assert!(e.contains("no reproducer"), "{e}");
    }
}
