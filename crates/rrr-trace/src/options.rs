//! How to trace, beyond the profile and the output: one [`TraceOptions`], the same on both
//! engines, from the CLI and Python through the plugin's `options=FILE` to the writer's stages,
//! each of which reads the options it uses.

use std::path::{Path, PathBuf};

use crate::focus::Threads;
use crate::ring::Budget;
use crate::watch::Range;
use crate::window::Window;

/// How to trace, beyond the profile and the output, the same on both engines: rrr writes it as
/// a JSON file ([`TraceOptions::save`]) that both plugins take as their `options=FILE`
/// argument and read once ([`TraceOptions::from_args`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceOptions {
    /// Mark the crash report in this file (see [`CrashReport`](crate::CrashReport)).
    pub crash: Option<PathBuf>,
    /// Write only this part of the replay.
    pub window: Window,
    /// At the end, write the trace's [`TraceSummary`](crate::TraceSummary) here, as JSON.
    pub results: Option<PathBuf>,
    /// The threads to write.
    pub threads: Threads,
    /// The deepest kernel call to write, below the kernel's entry.
    pub max_depth: Option<u32>,
    /// List every access to this memory (see [`crate::watch`]), into `accesses`.
    pub watch: Option<Range>,
    /// The object that holds the watched memory, if known.
    pub object: Option<Range>,
    /// Where the watch's events go.
    pub accesses: Option<PathBuf>,
    /// Mark the sanitizer's and the allocator's own accesses to the watched memory in the
    /// trace too (the watch file always lists them, saying whose they are).
    pub watch_own: bool,
    /// Note the calls of these functions with their argument words, in the results.
    pub note_calls: Vec<String>,
    /// Write at most this many bytes, keeping the end (see [`crate::ring`]).
    pub budget: Option<Budget>,
}

/// Why a plugin's `options=FILE` could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BadOptions {
    /// The file could not be read.
    #[error("cannot read the trace options {path}: {source}")]
    Read {
        /// The options file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not [`TraceOptions`] as JSON.
    #[error("the trace options {path} are not rrr's (written by another rrr?): {source}")]
    Parse {
        /// The options file.
        path: PathBuf,
        /// What is wrong with it.
        source: serde_json::Error,
    },
    /// The options contradict each other.
    #[error("{0}")]
    Inconsistent(&'static str),
}

impl TraceOptions {
    /// The options a plugin was given (`arg(name)`: its argument `name`, if any): those in the
    /// JSON file `options=FILE`, else the defaults (trace everything).
    pub fn from_args(arg: impl Fn(&str) -> Option<String>) -> Result<TraceOptions, BadOptions> {
        let Some(path) = arg("options").filter(|v| !v.is_empty()).map(PathBuf::from) else {
            return Ok(TraceOptions::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|source| BadOptions::Read {
            path: path.clone(),
            source,
        })?;
        let options: TraceOptions =
            serde_json::from_str(&text).map_err(|source| BadOptions::Parse { path, source })?;
        if options.watch.is_some() != options.accesses.is_some() {
            return Err(BadOptions::Inconsistent(
                "a watch and the file for its accesses go together",
            ));
        }
        Ok(options)
    }

    /// Writes the options to `path` as JSON, for a plugin's `options=FILE`.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_reach_the_plugin_through_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("options.json");
        let arg = |name: &str| (name == "options").then(|| file.display().to_string());
        let options = TraceOptions {
            crash: Some("/r/crash".into()),
            window: "5..".parse().unwrap(),
            results: Some("/r/results.json".into()),
            threads: Threads::Pids(vec![1, 2]),
            max_depth: Some(3),
            watch: Some(Range {
                addr: 0xffff888000001000,
                len: 8,
            }),
            object: Some(Range {
                addr: 0xffff888000001000,
                len: 64,
            }),
            accesses: Some("/r/accesses".into()),
            watch_own: true,
            note_calls: vec!["refcount_warn_saturate".into()],
            budget: Some(Budget {
                bytes: 1 << 20,
                parts: "/r/parts".into(),
            }),
        };
        options.save(&file).unwrap();
        assert_eq!(TraceOptions::from_args(arg).unwrap(), options);
        // Without the argument: everything, as the README's by-hand replay does.
        assert_eq!(
            TraceOptions::from_args(|_| None).unwrap(),
            TraceOptions::default()
        );
        // What is wrong is said, naming the file.
        std::fs::write(&file, r#"{"window": {"from": 1, "to": 2}, "sizes": "/x"}"#).unwrap();
        let err = TraceOptions::from_args(arg).unwrap_err().to_string();
        assert!(
            err.contains("options.json") && err.contains("sizes"),
            "{err}"
        );
        TraceOptions {
            accesses: None,
            ..options
        }
        .save(&file)
        .unwrap();
        let err = TraceOptions::from_args(arg).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        std::fs::remove_file(&file).unwrap();
        let err = TraceOptions::from_args(arg).unwrap_err().to_string();
        assert!(err.contains("cannot read the trace options"), "{err}");
    }
}
