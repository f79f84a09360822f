//! Functions not hooked by default: instrumentation the compiler inserts everywhere, whose
//! calls would drown the trace and tell a kernel developer nothing.

/// Name patterns: `prefix*` or an exact name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenyList {
    patterns: Vec<String>,
}

/// The default patterns: KASAN/KCSAN/KMSAN/UBSAN checks, coverage callbacks, lockdep
/// internals, ftrace stubs, retpoline/return thunks.
pub const DEFAULT_DENY: &[&str] = &[
    "__asan_*",
    "__kasan_*",
    "kasan_*",
    "check_memory_region*",
    "__kcsan_*",
    "kcsan_*",
    "__tsan_*",
    "__msan_*",
    "__kmsan_*",
    "kmsan_*",
    "__ubsan_*",
    "ubsan_*",
    "__sanitizer_cov_*",
    "__fentry__",
    "mcount",
    "__mcount*",
    "ftrace_*",
    "__ftrace_*",
    "fentry_*",
    "lockdep_*",
    "__lockdep_*",
    "lock_acquire",
    "lock_release",
    "lock_acquired",
    "lock_contended",
    "__lock_acquire",
    "__lock_release",
    "lock_is_held_type",
    "mark_lock",
    "mark_held_locks",
    "check_preemption_disabled",
    "debug_lockdep_rcu_enabled",
    "rcu_read_lock_held*",
    "__x86_indirect_thunk_*",
    "__x86_return_thunk",
    "__x86_indirect_call_thunk_*",
];

/// The functions where the kernel starts reporting a crash (KASAN, KFENCE, UBSAN, BUG and
/// WARNING, oopses, panics, lockdep). Never denied, even where a pattern covers them
/// (`kasan_report` is not a check): the trace marks a crash at the first call of one.
pub const REPORTING_FUNCTIONS: &[&str] = &[
    "kasan_report",
    "kasan_report_invalid_free",
    "kfence_report_error",
    "ubsan_prologue",
    "report_bug",
    "__warn",
    "die",
    "die_addr",
    "__die",
    "panic",
    "print_circular_bug",
    "print_usage_bug",
];

impl Default for DenyList {
    fn default() -> Self {
        DenyList::new(DEFAULT_DENY.iter().copied())
    }
}

impl DenyList {
    /// A deny-list of these patterns.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        DenyList {
            patterns: patterns.into_iter().map(str::to_owned).collect(),
        }
    }

    /// True if `name` (a clone suffix such as `.isra.0` ignored) matches a pattern and is not
    /// one of the [`REPORTING_FUNCTIONS`].
    pub fn denies(&self, name: &str) -> bool {
        let base = name.split('.').next().unwrap_or(name);
        if REPORTING_FUNCTIONS.contains(&base) {
            return false;
        }
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => base.starts_with(prefix),
            None => base == p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_denied_and_reports_are_not() {
        let d = DenyList::default();
        assert!(d.denies("kasan_check_range"));
        assert!(d.denies("__asan_load8.constprop.0"));
        assert!(!d.denies("kasan_report"));
        assert!(!d.denies("kasan_report_invalid_free.isra.0"));
        assert!(!d.denies("vfs_write"));
    }
}
