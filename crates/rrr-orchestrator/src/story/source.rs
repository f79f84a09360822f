//! The reproducer's source: which of its calls made a step happen, by the call's return
//! address in the stimulus's DWARF, or by the syscall's name in its innermost function.

use osi_profile::Profile;

use super::ReproCall;
use crate::recording::Recording;

/// The stimulus's functions with source, to name the reproducer's calls.
pub(super) struct Source {
    profile: Profile,
    /// The stimulus's DWARF, for a call site's line.
    dwarf: Option<addr2line::Loader>,
    /// The stimulus's source text, by line (1-based: index 0 is line 1).
    lines: Vec<String>,
    file: String,
}

impl Source {
    /// The recording's stimulus: its profile and its source (next to its binary).
    pub(super) fn of(rec: &Recording) -> Option<Source> {
        let profile = Profile::open(&rec.profile().ok()?).ok()?;
        let file = rec.stimulus.with_file_name("stimulus.c");
        let text = std::fs::read_to_string(&file).ok()?;
        Some(Source {
            profile,
            dwarf: addr2line::Loader::new(&rec.stimulus).ok(),
            lines: text.lines().map(str::to_owned).collect(),
            file: file.display().to_string(),
        })
    }

    /// The declaration line of the stimulus's function `name`, and where the next function
    /// starts (its body lies between), if it has source.
    fn span(&self, name: &str) -> Option<(u32, u32)> {
        let f = self
            .profile
            .function(self.profile.function_by_name(name)?)?;
        if !f.is_user() || !f.file().ends_with("stimulus.c") || f.line() == 0 {
            return None;
        }
        let next = self
            .profile
            .functions()
            .filter(|g| g.is_user() && g.file().ends_with("stimulus.c") && g.line() > f.line())
            .map(|g| g.line())
            .min()
            .unwrap_or(self.lines.len() as u32 + 1);
        Some((f.line(), next))
    }

    /// The reproducer's call at `site` (a return address in the stimulus), if its DWARF puts
    /// it in the stimulus's source.
    fn call_at(&self, site: u64, syscall: Option<String>) -> Option<ReproCall> {
        let dwarf = self.dwarf.as_ref()?;
        // The call instruction is before the return address.
        let at = site.checked_sub(1)?;
        let location = dwarf.find_location(at).ok()??;
        if !location.file?.ends_with("stimulus.c") {
            return None;
        }
        let line = location.line?;
        let function = dwarf.find_frames(at).ok().and_then(|mut frames| {
            let mut outer = None;
            while let Ok(Some(f)) = frames.next() {
                outer = f
                    .function
                    .and_then(|f| f.demangle().ok().map(|n| n.into_owned()));
            }
            outer
        })?;
        Some(self.at_line(syscall, function, line, true))
    }

    /// The call of `syscall` by `function` at `line` of the stimulus's source (`exact`: found
    /// by its return address).
    fn at_line(
        &self,
        syscall: Option<String>,
        function: String,
        line: u32,
        exact: bool,
    ) -> ReproCall {
        ReproCall {
            syscall,
            function,
            file: Some(self.file.clone()),
            line: Some(line),
            source: self
                .lines
                .get(line as usize - 1)
                .map(|l| l.trim().to_owned()),
            exact,
        }
    }

    /// The reproducer's call behind a kernel event with `stack` (outermost first), made at
    /// `site` in the program if known.
    pub(super) fn call(&self, stack: &[String], site: u64) -> Option<ReproCall> {
        let syscall = syscall(stack);
        if site != 0 {
            if let Some(call) = self.call_at(site, syscall.clone()) {
                return Some(call);
            }
        }
        let (function, (from, to)) = stack
            .iter()
            .rev()
            .find_map(|f| Some((f.clone(), self.span(f)?)))?;
        let mentions = |text: &String| {
            syscall.as_deref().is_some_and(|s| {
                text.contains(&format!("__NR_{s}"))
                    || text.contains(&format!("SYS_{s}"))
                    || text.contains(&format!("{s}("))
            })
        };
        // The function's body: its line to the next function's.
        let body = (from..to).zip(self.lines.iter().skip(from.saturating_sub(1) as usize));
        let line = body
            .filter(|(_, text)| mentions(text))
            .map(|(n, _)| n)
            .next()
            .unwrap_or(from);
        Some(self.at_line(syscall, function, line, false))
    }
}

/// The syscall a stack (outermost first) is in: its kernel entry's name (`__x64_sys_bpf`),
/// else the libc wrapper the program called (`__libc_close`).
pub(super) fn syscall(stack: &[String]) -> Option<String> {
    let entry = ["__x64_sys_", "__ia32_sys_", "__do_sys_", "__se_sys_"];
    let from_kernel = stack.iter().find_map(|f| {
        let base = f.split('.').next().unwrap_or(f);
        entry
            .iter()
            .find_map(|p| base.strip_prefix(p))
            .map(str::to_owned)
    });
    from_kernel.or_else(|| {
        // The innermost user frame before the kernel's entry, a libc wrapper.
        let entry = stack.iter().position(|f| f == "do_syscall_64")?;
        let wrapper = stack[..entry].last()?;
        let name = wrapper
            .trim_start_matches("__libc_")
            .trim_start_matches('_');
        (name != "syscall" && !name.is_empty()).then(|| name.to_owned())
    })
}
