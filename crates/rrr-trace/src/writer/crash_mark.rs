//! The crash marker: a subscriber that marks the crash report the recording ended at, at
//! the first call of a reporting function ([`osi_profile::REPORTING_FUNCTIONS`], those in the
//! profile) in the written part: an instant named after the report on the thread that made
//! the call and on a top-level `crash` track, with the report's text, the reporting function,
//! and whether the calls open then are the report's call trace.

use osi_profile::Profile;

use super::subscriber::{At, Happened, Mark, Subscriber};
use crate::crash::CrashReport;

/// The crash to mark, and whether it is marked.
pub(crate) struct CrashMarker {
    report: CrashReport,
    /// The reporting functions' ids, sorted.
    reporters: Vec<u32>,
    marked: bool,
}

impl CrashMarker {
    /// Marks `report`, reported by the reporting functions of `profile`.
    pub fn new(report: CrashReport, profile: &Profile) -> CrashMarker {
        let mut reporters: Vec<u32> = profile
            .functions()
            .filter(|f| {
                let base = f.name().split('.').next().unwrap_or_default();
                osi_profile::REPORTING_FUNCTIONS.contains(&base)
            })
            .map(|f| f.id())
            .collect();
        reporters.sort_unstable();
        CrashMarker {
            report,
            reporters,
            marked: false,
        }
    }

    /// The mark for the report, started by a call of `func` under the calls `stack`.
    fn mark(&self, profile: &Profile, stack: &[u32], func: u32) -> Mark {
        let name = |id: u32| profile.function(id).map_or("", |f| f.name());
        let open: Vec<&str> = stack.iter().chain([&func]).map(|&f| name(f)).collect();
        let traced = |frame: &str| {
            profile
                .function_by_name(frame)
                .and_then(|id| profile.function(id))
                .is_some_and(|f| !f.is_denied())
        };
        let missing = self.report.missing_frames(&open, traced);
        let calls = if self.report.frames.is_empty() {
            "the report has no call trace to check".to_owned()
        } else if missing.is_empty() {
            "the calls open here are the report's call trace".to_owned()
        } else {
            format!(
                "differs from the report's call trace: not open here: {}",
                missing.join(", ")
            )
        };
        Mark {
            name: self.report.title.clone(),
            args: vec![
                ("report", self.report.text.clone()),
                ("reported_by", name(func).to_owned()),
                ("stack", calls),
            ],
            track: "crash".to_owned(),
            inside_call: true,
            always_on_thread: true,
            crash: true,
            keep_part: true,
            flow: None,
        }
    }
}

impl Subscriber for CrashMarker {
    fn cares(&self, func: u32) -> bool {
        self.reporters.binary_search(&func).is_ok()
    }

    fn on(&mut self, happened: &Happened<'_>, at: &At<'_>) -> Option<Mark> {
        let Happened::Call(call, _) = happened else {
            return None;
        };
        if self.marked || !at.written || !self.cares(call.func) {
            return None;
        }
        self.marked = true;
        Some(self.mark(at.profile, at.stack, call.func))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Args;
    use crate::testing::{function, profile_of};
    use crate::writer::subscriber::{Call, Who};
    use osi_profile::Profile;

    fn profile() -> Profile {
        profile_of(vec![
            function("do_syscall_64", 0xffff_ffff_8100_0000),
            function("do_sys_openat2", 0xffff_ffff_8100_1000),
            function("kasan_report", 0xffff_ffff_8100_2000),
            function("kfree", 0xffff_ffff_8100_3000),
        ])
    }

    /// The marks a crash marker makes over calls (function, caller stack, written).
    fn marks(report: CrashReport, calls: &[(u32, &[u32], bool)]) -> Vec<Mark> {
        let profile = profile();
        let mut m = CrashMarker::new(report, &profile);
        let args = Args::default();
        calls
            .iter()
            .filter_map(|&(func, stack, written)| {
                let call = Call {
                    track: 0,
                    slot: 0x1000,
                    func,
                };
                let at = At {
                    profile: &profile,
                    ts: 5,
                    who: Who::default(),
                    stack,
                    written,
                    syscall_site: None,
                };
                m.on(&Happened::Call(call, &args), &at)
            })
            .collect()
    }

    fn report(frames: &[&str]) -> CrashReport {
        CrashReport {
            title: "KASAN: use-after-free in do_sys_openat2".into(),
            text: "BUG: KASAN".into(),
            frames: frames.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_reporting_call_in_the_written_part_is_marked_once() {
        let r = report(&["kasan_report", "do_sys_openat2", "do_syscall_64"]);
        let got = marks(
            r,
            &[
                (3, &[0, 1], true),
                (2, &[0, 1], false),
                (2, &[0, 1], true),
                (2, &[0, 1], true),
            ],
        );
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(m.name, "KASAN: use-after-free in do_sys_openat2");
        assert_eq!(m.track, "crash");
        assert!(m.crash && m.inside_call && m.always_on_thread);
        let arg = |k: &str| m.args.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(arg("reported_by"), "kasan_report");
        assert_eq!(
            arg("stack"),
            "the calls open here are the report's call trace"
        );
    }

    #[test]
    fn a_call_trace_that_differs_is_said() {
        let r = report(&["kasan_report", "do_sys_openat2", "do_syscall_64"]);
        let got = marks(r, &[(2, &[0], true)]);
        let stack = &got[0].args[2].1;
        assert_eq!(
            stack,
            "differs from the report's call trace: not open here: do_sys_openat2"
        );
        let got = marks(report(&[]), &[(2, &[0], true)]);
        assert_eq!(got[0].args[2].1, "the report has no call trace to check");
    }
}
