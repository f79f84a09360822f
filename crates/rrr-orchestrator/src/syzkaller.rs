//! syz reproducers: syzkaller's own `syz-prog2c`, built with the distro's Go at the crash's
//! syzkaller commit, turns the syz program into the C program syzbot would write for it, with
//! the crash's options. rrr then runs it like any C reproducer: nothing of syzkaller runs in
//! the guest, so the recording holds the reproducer's work only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::cache::{self, Key};

/// Bumped when the build recipe changes.
const RECIPE: &str = "syz-prog2c-recipe-1";

/// A syz reproducer's options: syzkaller's `csource.Options` as syzbot shows them, in JSON
/// (`{"threaded":true,"procs":6,...}`) or in the older Go form (`{Threaded:true Procs:6 ...}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReproOpts {
    /// Each call in its own thread.
    pub threaded: bool,
    /// Run the program in a loop.
    pub repeat: bool,
    /// Loop this many times (0: forever, as syzkaller ran it).
    pub repeat_times: i64,
    /// Parallel processes.
    pub procs: i64,
    /// Timeouts multiplier.
    pub slowdown: i64,
    /// none, setuid, namespace, android (empty: none).
    pub sandbox: String,
    /// The sandbox's argument.
    pub sandbox_arg: i64,
    /// Catch and ignore SIGSEGV.
    pub segv: bool,
    /// Run in a fresh temporary directory.
    pub tmpdir: bool,
    /// Check for leaks after the run.
    pub leak: bool,
    /// Extra setup features, as syz-prog2c's `-enable` names them (tun, net_dev, ...).
    pub features: Vec<&'static str>,
}

/// Option names (JSON and Go forms) of the setup features, and their syz-prog2c names.
const FEATURES: &[(&[&str], &str)] = &[
    (&["tun", "EnableTun", "NetInjection"], "tun"),
    (&["netdev", "EnableNetDev", "NetDevices"], "net_dev"),
    (&["resetnet", "ResetNet", "NetReset"], "net_reset"),
    (&["cgroups", "EnableCgroups", "Cgroups"], "cgroups"),
    (
        &["binfmt_misc", "EnableBinfmtMisc", "BinfmtMisc"],
        "binfmt_misc",
    ),
    (&["close_fds", "EnableCloseFds", "CloseFDs"], "close_fds"),
    (&["kcsan", "KCSAN"], "kcsan"),
    (
        &["devlinkpci", "EnableDevlinkPCI", "DevlinkPCI"],
        "devlink_pci",
    ),
    (&["nicvf", "EnableNicVF", "NicVF"], "nic_vf"),
    (&["usb", "USB"], "usb"),
    (&["vhci", "VhciInjection"], "vhci"),
    (&["wifi", "Wifi"], "wifi"),
    (&["ieee802154", "IEEE802154"], "ieee802154"),
    (&["sysctl", "Sysctl"], "sysctl"),
    (&["swap", "Swap"], "swap"),
];

impl ReproOpts {
    /// Parses syzbot's `repro-opts` text, or a syz program's first line (`# {...}`).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim().trim_start_matches('#').trim();
        let pairs: Vec<(String, String)> = if text.starts_with("{\"") {
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).context("reading the reproducer's options (JSON)")?;
            v.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect()
        } else if let Some(body) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            // Go's `%+v` form; also `{}`, no options at all.
            body.split_whitespace()
                .filter_map(|kv| kv.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        } else {
            crate::fail!(
                BadInput,
                "the reproducer's options {text:?} are neither JSON nor syzkaller's Go form"
            );
        };
        let mut o = ReproOpts {
            procs: 1,
            slowdown: 1,
            ..Default::default()
        };
        for (k, v) in pairs {
            let on = v == "true";
            let num = || v.parse::<i64>().unwrap_or(0);
            match k.as_str() {
                "threaded" | "Threaded" => o.threaded = on,
                "repeat" | "Repeat" => o.repeat = on,
                "repeat_times" | "RepeatTimes" => o.repeat_times = num(),
                "procs" | "Procs" => o.procs = num().max(1),
                "slowdown" | "Slowdown" => o.slowdown = num().max(1),
                "sandbox" | "Sandbox" => o.sandbox = v.clone(),
                "sandbox_arg" | "SandboxArg" => o.sandbox_arg = num(),
                "segv" | "HandleSegv" => o.segv = on,
                "tmpdir" | "UseTmpDir" => o.tmpdir = on,
                "leak" | "Leak" => o.leak = on,
                _ => {
                    if let Some((_, name)) = FEATURES.iter().find(|(keys, _)| keys.contains(&&*k)) {
                        if on && !o.features.contains(name) {
                            o.features.push(name);
                        }
                    }
                }
            }
        }
        // In one order whatever the input's: the same options give the same C program.
        o.features
            .sort_by_key(|f| FEATURES.iter().position(|(_, name)| name == f));
        Ok(o)
    }

    /// The syz-prog2c flags that write this reproducer.
    pub fn prog2c_args(&self) -> Vec<String> {
        let repeat = match (self.repeat, self.repeat_times) {
            (false, _) => 1,
            (true, n) => n.max(0),
        };
        let mut a = vec![
            "-os=linux".to_owned(),
            "-arch=amd64".to_owned(),
            format!("-repeat={repeat}"),
            format!("-procs={}", self.procs),
            format!("-slowdown={}", self.slowdown),
            format!("-sandbox={}", self.sandbox),
            format!("-sandbox_arg={}", self.sandbox_arg),
            format!(
                "-enable={}",
                if self.features.is_empty() {
                    "none".to_owned()
                } else {
                    self.features.join(",")
                }
            ),
        ];
        for (on, flag) in [
            (self.threaded, "-threaded"),
            (self.segv, "-segv"),
            (self.tmpdir, "-tmpdir"),
            (self.leak, "-leak"),
        ] {
            if on {
                a.push(flag.to_owned());
            }
        }
        a
    }
}

/// The Go toolchain: `go` on PATH, else the newest of the distro's `/usr/lib/go-*/bin/go`
/// (Debian's versioned packages do not put theirs on PATH); with its version (`1.23.5`).
fn go() -> anyhow::Result<(PathBuf, String)> {
    let mut found: Vec<PathBuf> = crate::tools::find("go").into_iter().collect();
    let mut distro: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("go-"))
        .map(|e| e.path().join("bin/go"))
        .filter(|p| p.is_file())
        .collect();
    distro.sort_by_key(|p| crate::tools::major_minor(&go_dir_version(p)));
    found.extend(distro.into_iter().rev());
    let go = found.into_iter().next().context(
        "building syzkaller's syz-prog2c needs Go: install golang-go (Debian 12: golang-1.23-go \
         from bookworm-backports; scripts/setup does it), or pick a crash with a C reproducer \
         (--crash)",
    )?;
    let text = crate::tools::version_output(&go, "version")?;
    let version = text
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix("go")
                .filter(|v| v.starts_with(char::is_numeric))
        })
        .unwrap_or("?")
        .to_owned();
    Ok((go, version))
}

/// `1.23` from `/usr/lib/go-1.23/bin/go`.
fn go_dir_version(go: &Path) -> String {
    go.ancestors()
        .nth(2)
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().trim_start_matches("go-").to_owned())
        .unwrap_or_default()
}

/// The Go version a go.mod asks for (its `go` line), if any.
fn go_mod_version(go_mod: &str) -> Option<String> {
    go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("go "))
        .map(|v| v.trim().to_owned())
}

/// Builds (or finds in the cache) syz-prog2c of syzkaller `commit` from `url`.
pub fn prog2c(url: &str, commit: &str) -> anyhow::Result<PathBuf> {
    let (go, version) = go()?;
    crate::tools::require("make", "make")?;
    let mut key = Key::default();
    key.add("recipe", RECIPE.as_bytes())
        .add("commit", commit.as_bytes())
        .add("go", version.as_bytes());
    cache::file_entry(cache::Kind::Syzkaller, &key, "syz-prog2c", |dir| {
        build_prog2c(url, commit, &go, &version, dir)
    })
}

/// Builds syz-prog2c of syzkaller `commit` from `url` with `go` (of `version`) into
/// `dir/syz-prog2c`.
fn build_prog2c(
    url: &str,
    commit: &str,
    go: &Path,
    version: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let tree = dir.join("syzkaller");
    crate::git::checkout_from("syzkaller.git", url, commit, &tree)?;
    let wanted = std::fs::read_to_string(tree.join("go.mod"))
        .ok()
        .and_then(|m| go_mod_version(&m));
    let bar = crate::report::progress(format!("building syz-prog2c of syzkaller {commit:.12}"));
    let path = std::env::join_paths(go.parent().into_iter().map(Path::to_path_buf).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let out = Command::new("make")
        .arg("prog2c")
        .current_dir(&tree)
        .env("PATH", path)
        .output()
        .context("running make prog2c")?;
    bar.finish_and_clear();
    if !out.status.success() {
        let go_note = match wanted {
            Some(w) if crate::tools::major_minor(&w) > crate::tools::major_minor(version) => {
                format!(
                    "syzkaller {commit:.12} needs Go {w} (its go.mod) and {} is Go {version}: \
                     install a newer Go, or let Go download it (network access to \
                     proxy.golang.org)",
                    go.display()
                )
            }
            _ => format!(
                "built with {} (Go {version}); a syzkaller without vendored modules also needs \
                 network access to proxy.golang.org",
                go.display()
            ),
        };
        crate::fail!(
            Build,
            "building syz-prog2c of syzkaller {commit:.12} failed: {go_note}. Or pick a crash \
             with a C reproducer (--crash). make said:\n{}",
            crate::tools::last_lines(&String::from_utf8_lossy(&out.stderr), 15)
        );
    }
    std::fs::rename(tree.join("bin/syz-prog2c"), dir.join("syz-prog2c"))
        .context("make prog2c made no bin/syz-prog2c")?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// Writes the C program for the syz program `syz` with `opts` to `out` (atomically).
pub fn to_c(prog2c: &Path, syz: &Path, opts: &ReproOpts, out: &Path) -> anyhow::Result<()> {
    let res = Command::new(prog2c)
        .args(opts.prog2c_args())
        .arg(format!("-prog={}", syz.display()))
        .output()
        .with_context(|| format!("running {}", prog2c.display()))?;
    if !res.status.success() || res.stdout.is_empty() {
        crate::fail!(
            Build,
            "syz-prog2c could not turn {} into C: {}",
            syz.display(),
            String::from_utf8_lossy(&res.stderr).trim()
        );
    }
    let tmp = out.with_extension("c.tmp");
    std::fs::write(&tmp, &res.stdout)?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_options_give_prog2c_flags() {
        let o = ReproOpts::parse(
            r#"{"threaded":true,"repeat":true,"procs":6,"slowdown":1,"sandbox":"none","sandbox_arg":0,"tun":true,"netdev":true,"resetnet":true,"cgroups":true,"binfmt_misc":true,"close_fds":true,"usb":true,"vhci":true,"wifi":true,"ieee802154":true,"sysctl":true,"swap":true,"tmpdir":true,"segv":true}"#,
        )
        .unwrap();
        assert_eq!(
            o.prog2c_args(),
            [
                "-os=linux",
                "-arch=amd64",
                "-repeat=0",
                "-procs=6",
                "-slowdown=1",
                "-sandbox=none",
                "-sandbox_arg=0",
                "-enable=tun,net_dev,net_reset,cgroups,binfmt_misc,close_fds,usb,vhci,wifi,\
                 ieee802154,sysctl,swap",
                "-threaded",
                "-segv",
                "-tmpdir",
            ]
        );
    }

    #[test]
    fn go_form_and_program_header_options_parse() {
        let old = ReproOpts::parse(
            "{Threaded:false Collide:false Repeat:false Procs:1 Sandbox:setuid Fault:false \
             FaultCall:-1 FaultNth:0 EnableTun:true UseTmpDir:true HandleSegv:false \
             WaitRepeat:false Debug:false Repro:false}",
        )
        .unwrap();
        assert_eq!(
            old,
            ReproOpts {
                procs: 1,
                slowdown: 1,
                sandbox: "setuid".into(),
                tmpdir: true,
                features: vec!["tun"],
                ..Default::default()
            }
        );
        assert!(old.prog2c_args().contains(&"-repeat=1".to_owned()));
        let header =
            ReproOpts::parse("# {\"repeat\":true,\"repeat_times\":3,\"procs\":0,\"sandbox\":\"\"}")
                .unwrap();
        assert_eq!((header.repeat_times, header.procs), (3, 1));
        assert!(header.prog2c_args().contains(&"-repeat=3".to_owned()));
        assert!(header.prog2c_args().contains(&"-enable=none".to_owned()));
        let e = ReproOpts::parse("threaded").unwrap_err();
        assert!(e.to_string().contains("neither JSON"), "{e}");
    }

    #[test]
    fn go_versions_are_read_from_go_mod_and_distro_paths() {
        assert_eq!(
            go_mod_version("module github.com/google/syzkaller\n\ngo 1.22.1\n").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(go_mod_version("module x\n"), None);
        assert_eq!(go_dir_version(Path::new("/usr/lib/go-1.23/bin/go")), "1.23");
    }
}
