//! `rrr profile`: the profile, PANDA's kernelinfo.conf, or the TSV listing of a vmlinux.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use osi_profile::{DenyList, Options, Profile};

/// Arguments of `rrr profile`.
#[derive(clap::Args)]
pub struct ProfileArgs {
    /// The kernel's vmlinux (with DWARF), or a static user binary.
    elf: PathBuf,
    /// Where to write the profile (default: `<ELF>.rrrprof`).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also write PANDA's kernelinfo.conf here.
    #[arg(long)]
    kernelinfo: Option<PathBuf>,
    /// Group name of the kernelinfo.conf section.
    #[arg(long, default_value = "rrr", requires = "kernelinfo")]
    group: String,
    /// Print one function per line (entry, name, return type, params) instead of writing a file.
    #[arg(long, conflicts_with_all = ["output", "kernelinfo"])]
    tsv: bool,
    /// Treat the binary as user-space code (the stimulus).
    #[arg(long)]
    user: bool,
    /// Deny-list patterns (`prefix*` or exact) replacing the default list.
    #[arg(long = "deny", value_name = "PATTERN")]
    deny: Vec<String>,
}

/// Runs `rrr profile`.
pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    let deny = if args.deny.is_empty() {
        DenyList::default()
    } else {
        DenyList::new(args.deny.iter().map(String::as_str))
    };
    let opts = Options {
        deny,
        user: args.user,
        threads: 0,
    };
    let start = std::time::Instant::now();
    if args.tsv {
        let data = osi_profile::read(&args.elf, &opts)?;
        let profile = Profile::from_bytes(&data.to_bytes())?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        osi_profile::write_tsv(&profile, &mut out)
            .and_then(|_| out.flush())
            .context("writing the listing")?;
        return Ok(());
    }
    let output = args.output.unwrap_or_else(|| {
        let mut p = args.elf.clone().into_os_string();
        p.push(".rrrprof");
        p.into()
    });
    let profile = osi_profile::build(&args.elf, &output, &opts)?;
    let params: usize = profile.functions().map(|f| f.param_count()).sum();
    eprintln!(
        "rrr: profile of {} functions ({} parameters) written to {} in {:.2} s",
        profile.len(),
        params,
        output.display(),
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = args.kernelinfo {
        std::fs::write(&path, osi_profile::kernelinfo(&profile, &args.group))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "rrr: kernelinfo.conf [{}] written to {}",
            args.group,
            path.display()
        );
    }
    Ok(())
}
