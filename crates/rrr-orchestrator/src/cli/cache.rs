//! `rrr cache list|gc|path`: what the cache holds, and cleaning it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use rrr_orchestrator::cache;

/// Arguments of `rrr cache`.
#[derive(clap::Args, Clone, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with the cache.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum Action {
    /// Print the cache directory.
    Path,
    /// List the entries with their size and age.
    List,
    /// Remove unfinished entries left by killed runs, and entries older than --older-than.
    Gc {
        /// Also remove entries not modified for this many days.
        #[arg(long)]
        older_than: Option<u64>,
        /// Remove every entry.
        #[arg(long, conflicts_with = "older_than")]
        all: bool,
    },
}

/// One entry (or an unfinished one).
struct Entry {
    kind: &'static str,
    path: PathBuf,
    bytes: u64,
    age: Duration,
    /// A staging directory whose process is gone.
    stale: bool,
}

fn size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|d| d.flatten().map(|e| size(&e.path())).sum())
        .unwrap_or(0)
}

/// The process id of a staging directory (`<key>.tmp-<pid>`), if it is one.
fn staging_pid(name: &str) -> Option<u32> {
    name.rsplit_once(".tmp-")?.1.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn entries(root: &Path) -> Vec<Entry> {
    let now = SystemTime::now();
    let mut all = Vec::new();
    for kind in cache::Kind::ALL {
        let kind = kind.dir_name();
        let Ok(dir) = std::fs::read_dir(root.join(kind)) else {
            continue;
        };
        for e in dir.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            all.push(Entry {
                kind,
                bytes: size(&path),
                stale: staging_pid(&name).is_some_and(|pid| !alive(pid)),
                path,
                age,
            });
        }
    }
    all
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .with_context(|| format!("removing {}", path.display()))
}

/// Runs `rrr cache`.
pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let root = cache::root()?;
    match args.action {
        Action::Path => println!("{}", root.display()),
        Action::List => {
            let all = entries(&root);
            for e in &all {
                let days = e.age.as_secs() / 86_400;
                let mark = if e.stale {
                    "  (unfinished: rrr cache gc removes it)"
                } else {
                    ""
                };
                println!(
                    "{:<15} {:>10}  {:>4}d  {}{mark}",
                    e.kind,
                    human(e.bytes),
                    days,
                    e.path.display()
                );
            }
            let total: u64 = all.iter().map(|e| e.bytes).sum();
            eprintln!(
                "rrr: {} entries, {} in {}",
                all.len(),
                human(total),
                root.display()
            );
        }
        Action::Gc { older_than, all } => {
            let limit = older_than.map(|d| Duration::from_secs(d * 86_400));
            let mut freed = 0;
            let mut removed = 0;
            for e in entries(&root) {
                let live_staging = e
                    .path
                    .file_name()
                    .and_then(|n| staging_pid(&n.to_string_lossy()))
                    .is_some_and(alive);
                let old = limit.is_some_and(|l| e.age >= l);
                if live_staging || !(e.stale || old || all) {
                    continue;
                }
                // A complete entry is removed under its lock: not while a run builds it.
                let _lock = match e.stale {
                    true => None,
                    false => Some(cache::lock(&e.path)?),
                };
                remove(&e.path)?;
                freed += e.bytes;
                removed += 1;
            }
            eprintln!("rrr: removed {removed} entries, {} freed", human(freed));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_directories_name_their_process() {
        assert_eq!(staging_pid("0123abcd.tmp-4242"), Some(4242));
        assert_eq!(staging_pid("0123abcd"), None);
        assert_eq!(staging_pid("x.tmp-abc"), None);
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
