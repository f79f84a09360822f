//! How the command line shows what the library reports: messages on stderr after `rrr:`,
//! long steps as spinners (hidden when stderr is not a terminal).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rrr_orchestrator::report::{set_reporter, Level, Progress, Reporter};

/// Messages on stderr, steps as spinners.
struct Terminal;

impl Reporter for Terminal {
    fn message(&self, level: Level, text: &str) {
        match level {
            Level::Info => eprintln!("rrr: {text}"),
            Level::Note => eprintln!("rrr: note: {text}"),
            Level::Warning => eprintln!("rrr: warning: {text}"),
        }
    }

    fn progress(&self, what: &str) -> Box<dyn Progress> {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}")
                .expect("valid template"),
        );
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Box::new(Spinner(bar))
    }
}

/// A spinner, cleared when the step ends.
struct Spinner(ProgressBar);

impl Progress for Spinner {
    fn update(&self, what: &str) {
        self.0.set_message(what.to_owned());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Shows the library's messages and progress on the terminal from now on.
pub fn install() {
    set_reporter(Arc::new(Terminal));
}
