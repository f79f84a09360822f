//! What the library tells the user as it works, through the reporter the front end sets
//! ([`set_reporter`]): the command line prints messages and shows spinners, Python logs them.
//! Until one is set, messages go to `tracing` and progress is not shown. The library itself
//! prints nothing.

use std::sync::{Arc, RwLock};

/// How much a message matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// What a step did or found.
    Info,
    /// Something the user may want to know (a default taken, an option that stays on).
    Note,
    /// Something went wrong but the work goes on (a cached copy used, an attempt retried).
    Warning,
}

/// How a front end shows what the library reports.
pub trait Reporter: Send + Sync {
    /// A message for the user.
    fn message(&self, level: Level, text: &str);

    /// A long step starts, doing `what`; it ends when the returned progress is dropped.
    fn progress(&self, what: &str) -> Box<dyn Progress>;
}

/// A long step, as a front end shows it.
pub trait Progress: Send {
    /// What the step is doing now.
    fn update(&self, what: &str);
}

static REPORTER: RwLock<Option<Arc<dyn Reporter>>> = RwLock::new(None);

/// Sets how the library's messages and progress are shown, for the whole process.
pub fn set_reporter(reporter: Arc<dyn Reporter>) {
    *REPORTER.write().unwrap_or_else(|e| e.into_inner()) = Some(reporter);
}

fn reporter() -> Option<Arc<dyn Reporter>> {
    REPORTER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Tells the user `text`.
pub(crate) fn message(level: Level, text: &str) {
    match reporter() {
        Some(r) => r.message(level, text),
        None => match level {
            Level::Warning => tracing::warn!("{text}"),
            Level::Info | Level::Note => tracing::info!("{text}"),
        },
    }
}

/// Tells the user what a step did or found.
pub(crate) fn info(text: &str) {
    message(Level::Info, text);
}

/// Tells the user something they may want to know.
pub(crate) fn note(text: &str) {
    message(Level::Note, text);
}

/// Warns the user.
pub(crate) fn warn(text: &str) {
    message(Level::Warning, text);
}

/// A long step in progress (see [`progress`]); it ends when dropped.
pub(crate) struct Step(Option<Box<dyn Progress>>);

impl Step {
    /// What the step is doing now.
    pub fn set_message(&self, what: impl AsRef<str>) {
        if let Some(p) = &self.0 {
            p.update(what.as_ref());
        }
    }

    /// Ends the step.
    pub fn finish_and_clear(self) {}
}

/// Starts a long step doing `what`.
pub(crate) fn progress(what: impl AsRef<str>) -> Step {
    let what = what.as_ref();
    tracing::debug!("{what}");
    Step(reporter().map(|r| r.progress(what)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Keeps what it is told.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    struct Bar(Arc<Log>);

    impl Progress for Bar {
        fn update(&self, what: &str) {
            self.0 .0.lock().unwrap().push(format!("update {what}"));
        }
    }

    impl Drop for Bar {
        fn drop(&mut self) {
            self.0 .0.lock().unwrap().push("end".into());
        }
    }

    struct Keep(Arc<Log>);

    impl Reporter for Keep {
        fn message(&self, level: Level, text: &str) {
            self.0 .0.lock().unwrap().push(format!("{level:?} {text}"));
        }

        fn progress(&self, what: &str) -> Box<dyn Progress> {
            self.0 .0.lock().unwrap().push(format!("start {what}"));
            Box::new(Bar(Arc::clone(&self.0)))
        }
    }

    #[test]
    fn messages_and_steps_reach_the_reporter_set() {
        let log = Arc::new(Log::default());
        set_reporter(Arc::new(Keep(Arc::clone(&log))));
        note("CONFIG_X stays on");
        let step = progress("building");
        step.set_message("building: CC foo.o");
        step.finish_and_clear();
        warn("cached copy");
        assert_eq!(
            *log.0.lock().unwrap(),
            [
                "Note CONFIG_X stays on",
                "start building",
                "update building: CC foo.o",
                "end",
                "Warning cached copy"
            ]
        );
    }
}
