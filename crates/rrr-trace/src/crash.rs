//! The crash a recording ended at, as the trace marks it: the report (title, text and call
//! trace, read from the recording's console by the orchestrator) reaches the tracer in a
//! small text file (`crash=PATH`), and the writer marks the first call of a reporting
//! function ([`osi_profile::REPORTING_FUNCTIONS`]) with an instant named after the report.

use std::path::Path;

/// A kernel crash report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Its title, as syzbot would give it (`KASAN: slab-use-after-free in f`).
    pub title: String,
    /// Its text, from the console.
    pub text: String,
    /// Its call trace, innermost frame first, as function names (the reliable frames: those
    /// the kernel did not mark `?`).
    pub frames: Vec<String>,
}

impl CrashReport {
    /// The file form: the title on the first line, the frames on the second (space
    /// separated), the text after.
    pub fn to_file_text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.title.replace('\n', " "),
            self.frames.join(" "),
            self.text
        )
    }

    /// Parses [`CrashReport::to_file_text`]'s form.
    pub fn from_file_text(text: &str) -> CrashReport {
        let mut lines = text.splitn(3, '\n');
        let title = lines.next().unwrap_or_default().to_owned();
        let frames = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        CrashReport {
            title,
            text: lines.next().unwrap_or_default().to_owned(),
            frames,
        }
    }

    /// Reads a report file.
    pub fn read(path: &Path) -> std::io::Result<CrashReport> {
        Ok(CrashReport::from_file_text(&std::fs::read_to_string(path)?))
    }

    /// Whether the calls open when the kernel started reporting (`open`, outermost first, the
    /// reporting function last) are the report's call trace: every frame of the report below
    /// the reporting function (its callers) that the trace can show (`traced`) must be open,
    /// in the same order. Returns the frames that are missing.
    pub fn missing_frames<'a>(
        &'a self,
        open: &[&str],
        traced: impl Fn(&str) -> bool,
    ) -> Vec<&'a str> {
        let reporter = open.last().copied().unwrap_or_default();
        // The frames from the reporting function outwards (the report's own printing
        // functions, above it, ran after the moment marked).
        let callers = match self.frames.iter().position(|f| f == reporter) {
            Some(i) => &self.frames[i + 1..],
            None => &self.frames[..],
        };
        // Both innermost first; each frame is looked for past the last one found.
        let open_callers: Vec<&str> = open[..open.len().saturating_sub(1)]
            .iter()
            .rev()
            .copied()
            .collect();
        let mut from = 0;
        let mut missing = Vec::new();
        for frame in callers.iter().filter(|f| traced(f)) {
            match open_callers[from..].iter().position(|o| o == frame) {
                Some(i) => from += i + 1,
                None => missing.push(frame.as_str()),
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> CrashReport {
        CrashReport {
            title: "KASAN: slab-use-after-free in lkdtm_WRITE_AFTER_FREE".into(),
            text: "BUG: KASAN: slab-use-after-free in lkdtm_WRITE_AFTER_FREE+0x1/0x2\n...\n".into(),
            // Innermost first, the printing functions above the reporting one.
            frames: "dump_stack_lvl print_report kasan_report lkdtm_WRITE_AFTER_FREE \
                     lkdtm_do_action direct_entry full_proxy_write vfs_write ksys_write \
                     do_syscall_64 entry_SYSCALL_64_after_hwframe"
                .split_whitespace()
                .map(String::from)
                .collect(),
        }
    }

    #[test]
    fn the_file_form_round_trips() {
        let r = report();
        assert_eq!(CrashReport::from_file_text(&r.to_file_text()), r);
    }

    #[test]
    fn the_open_calls_agree_with_the_report_when_its_traced_callers_are_open_in_order() {
        let r = report();
        let traced = |f: &str| !f.starts_with("entry_");
        // Outermost first.
        let open: Vec<&str> = r.frames[2..10].iter().rev().map(String::as_str).collect();
        assert!(r.missing_frames(&open, traced).is_empty());
        // A caller the trace did not see open.
        let mut short = open.to_vec();
        short.remove(2);
        assert_eq!(r.missing_frames(&short, traced), vec!["vfs_write"]);
        // Frames out of order.
        let mut swapped = open.to_vec();
        swapped.swap(1, 2);
        assert_eq!(r.missing_frames(&swapped, traced), vec!["ksys_write"]);
    }
}
