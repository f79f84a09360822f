//! The guest's idle time that a QEMU run did not wait out: the report of the pacing library
//! (`librrr_skip_idle.so`, crate `rrr-skip-idle`) the QEMU engine preloads.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a run skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdleSkipped {
    /// How often the vCPU waited, halted.
    pub waits: u64,
    /// How many of the main loop's waits for a timer it did not sleep through.
    pub skips: u64,
    /// In a recording, the guest's idle time not waited out (none in a replay: its clocks
    /// come from the log).
    pub skipped: Duration,
}

/// Where the run whose monitor socket is `monitor` writes its report, at exit.
pub fn report_path(monitor: &Path) -> PathBuf {
    monitor.with_extension("idle")
}

/// Takes (reads and removes) the report of the run whose monitor socket is `monitor`, if it
/// wrote one.
pub fn take_report(monitor: &Path) -> Option<IdleSkipped> {
    let path = report_path(monitor);
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    let report = parse(&text);
    match report {
        Some(r) => tracing::debug!(
            "the vCPU waited {} times; {} of QEMU's waits for a timer skipped, {:?} of guest idle time",
            r.waits,
            r.skips,
            r.skipped
        ),
        None => tracing::warn!("unreadable idle report {}: {text:?}", path.display()),
    }
    report
}

/// The report's line: `waits=W skips=N skipped_ns=S`.
fn parse(text: &str) -> Option<IdleSkipped> {
    let mut r = IdleSkipped::default();
    let mut seen = 0;
    for field in text.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        match key {
            "waits" => r.waits = value,
            "skips" => r.skips = value,
            "skipped_ns" => r.skipped = Duration::from_nanos(value),
            _ => continue,
        }
        seen += 1;
    }
    (seen == 3).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let monitor = dir.path().join("rrr-monitor-1-0.sock");
        std::fs::write(
            report_path(&monitor),
            "waits=30754 skips=70102 skipped_ns=4912000000\n",
        )
        .unwrap();
        assert_eq!(
            take_report(&monitor),
            Some(IdleSkipped {
                waits: 30754,
                skips: 70102,
                skipped: Duration::from_millis(4912),
            })
        );
        assert!(!report_path(&monitor).exists());
        assert_eq!(take_report(&monitor), None, "no report: no pacing library");
    }

    #[test]
    fn a_bad_report_is_none() {
        assert_eq!(parse("waits=1 skips=2"), None);
        assert_eq!(parse("waits=x skips=2 skipped_ns=3"), None);
        assert_eq!(parse(""), None);
    }
}
