//! The XDG cache: entries keyed by a hash of their real inputs, built in a temporary
//! directory and renamed into place, so an interrupted step never leaves an entry that a
//! later run trusts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

/// The kinds of cache entries, each a directory under the cache root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Built kernels (`rrr kernel`).
    Kernels,
    /// Kernel source tarballs, unpacked (builds link their trees from these).
    Sources,
    /// Compiled stimuli.
    Stimuli,
    /// Disk images.
    Rootfs,
    /// Disks with the ready snapshot.
    Snapshots,
    /// Recordings made by `rrr run`.
    Recordings,
    /// syzbot crashes' files.
    SyzbotCrashes,
    /// syzbot bugs' JSON.
    SyzbotBugs,
    /// Git repositories (kernels, syzkaller).
    Git,
    /// syzkaller's syz-prog2c, built per commit.
    Syzkaller,
    /// ccache's store for kernel builds (one entry, `store`).
    Ccache,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::Kernels,
        Kind::Sources,
        Kind::Stimuli,
        Kind::Rootfs,
        Kind::Snapshots,
        Kind::Recordings,
        Kind::SyzbotCrashes,
        Kind::SyzbotBugs,
        Kind::Git,
        Kind::Syzkaller,
        Kind::Ccache,
    ];

    /// Its directory under the cache root.
    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::Kernels => "kernels",
            Kind::Sources => "sources",
            Kind::Stimuli => "stimuli",
            Kind::Rootfs => "rootfs",
            Kind::Snapshots => "snapshots",
            Kind::Recordings => "recordings",
            Kind::SyzbotCrashes => "syzbot/crashes",
            Kind::SyzbotBugs => "syzbot/bugs",
            Kind::Git => "git",
            Kind::Syzkaller => "syzkaller",
            Kind::Ccache => "ccache",
        }
    }

    /// Its directory: `<root>/<dir_name>`.
    pub fn dir(self) -> crate::Result<PathBuf> {
        Ok(root()?.join(self.dir_name()))
    }
}

/// `$XDG_CACHE_HOME/rrr` (or `~/.cache/rrr`).
pub fn root() -> crate::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?,
        )
        .join(".cache"),
    };
    Ok(base.join("rrr"))
}

/// Takes the exclusive lock of the cache entry `target` (`<root>/<kind>/<key>`), waiting for
/// another rrr building the same entry; held until the returned file is dropped. Check for the
/// entry after taking it. Lock files live apart, in `<root>/locks/`.
pub fn lock(target: &Path) -> crate::Result<std::fs::File> {
    let name = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .context("cache entry outside the cache")
    };
    let kind_dir = target.parent();
    let locks = kind_dir
        .and_then(Path::parent)
        .context("cache entry outside the cache")?
        .join("locks");
    std::fs::create_dir_all(&locks).with_context(|| format!("creating {}", locks.display()))?;
    let path = locks.join(format!("{}-{}.lock", name(kind_dir)?, name(Some(target))?));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// The file `file` of the cache entry `<root>/<kind>/<key>`: found, or built by `build` into a
/// staging directory (given to it) that becomes the entry, under the entry's lock.
pub(crate) fn file_entry(
    kind: Kind,
    key: &Key,
    file: &str,
    build: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let target = kind.dir()?.join(key.hex());
    let path = target.join(file);
    let _lock = lock(&target)?;
    if path.is_file() {
        return Ok(path);
    }
    let stage = Staging::new(&target)?;
    build(&stage.dir)?;
    Ok(stage.commit()?.join(file))
}

/// Hashes the inputs of a cache entry.
#[derive(Default)]
pub(crate) struct Key(Sha256);

impl Key {
    /// Adds a labelled input.
    pub fn add(&mut self, label: &str, bytes: &[u8]) -> &mut Self {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a file's contents, streamed.
    pub(crate) fn add_file(&mut self, label: &str, path: &Path) -> anyhow::Result<&mut Self> {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        self.0.update(label.as_bytes());
        std::io::copy(&mut f, &mut self.0)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(self)
    }

    /// Adds the tree `dir` by content: every file's and link's path relative to it, with its
    /// bytes or its target, in a stable order, leaving out `.git`.
    pub(crate) fn add_tree(&mut self, label: &str, dir: &Path) -> anyhow::Result<&mut Self> {
        self.0.update(label.as_bytes());
        self.add_dir(dir, Path::new(""))
            .with_context(|| format!("reading the tree {}", dir.display()))?;
        Ok(self)
    }

    fn add_dir(&mut self, root: &Path, rel: &Path) -> std::io::Result<()> {
        let mut entries = std::fs::read_dir(root.join(rel))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = rel.join(e.file_name());
            let kind = e.file_type()?;
            if kind.is_dir() {
                if name != Path::new(".git") {
                    self.add_dir(root, &name)?;
                }
                continue;
            }
            let path = e.path();
            let bytes = if kind.is_symlink() {
                std::fs::read_link(&path)?
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                std::fs::read(&path)?
            };
            self.add(&name.to_string_lossy(), &bytes);
        }
        Ok(())
    }

    /// The key as 16 hex digits (enough to tell entries apart).
    pub fn hex(&self) -> String {
        self.0
            .clone()
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A cache entry under construction in `<final>.tmp-<pid>`; `commit` renames it into place.
pub(crate) struct Staging {
    pub dir: PathBuf,
    target: PathBuf,
}

impl Staging {
    /// Starts building the entry `target` (its parent is created; stale staging of this
    /// process id is removed).
    pub fn new(target: &Path) -> anyhow::Result<Self> {
        let name = target
            .file_name()
            .context("cache entry without a name")?
            .to_string_lossy()
            .into_owned();
        let dir = target.with_file_name(format!("{name}.tmp-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging {
            dir,
            target: target.to_owned(),
        })
    }

    /// Renames the finished entry into place.
    pub fn commit(self) -> anyhow::Result<PathBuf> {
        if self.target.exists() {
            std::fs::remove_dir_all(&self.target).ok();
        }
        std::fs::rename(&self.dir, &self.target)
            .with_context(|| format!("moving {} into the cache", self.target.display()))?;
        let target = self.target.clone();
        std::mem::forget(self);
        Ok(target)
    }
}

impl Drop for Staging {
    /// An abandoned entry (error, panic) is removed.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
