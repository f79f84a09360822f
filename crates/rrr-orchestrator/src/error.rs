//! The library's error: what failed, with its causes as the command line prints them, and
//! its kind, which front ends tell apart (Python raises a subclass of `rrr.Error` per kind;
//! a script can tell a network failure it may retry from a bad bug id).
//!
//! Inside the crate errors are `anyhow` chains; where a failure's kind is known, it is tagged
//! ([`fail!`](crate::fail), [`Tag::tag`]), and the public [`Error`] takes the kind of the
//! innermost tag (the cause, not the step that met it).

use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reaching the network failed (syzbot, a git remote); trying again may work.
    Network,
    /// A build failed: the kernel, the stimulus, syz-prog2c.
    Build,
    /// A patch does not apply to the kernel source.
    Patch,
    /// Recording failed: the machine did not boot, stopped early, or no attempt crashed.
    Recording,
    /// The replay did not follow the recording (diverged, failed, stopped short, timed out).
    ReplayDiverged,
    /// The input is wrong: a bad bug id, a path that is not what it should be, a recording
    /// that is not one (or is corrupt), an option's bad value.
    BadInput,
    /// A tool or file rrr needs is not installed.
    MissingTool,
    /// Anything else (input/output, the cache).
    Other,
}

impl ErrorKind {
    /// Its name, in snake case (`replay_diverged`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Network => "network",
            ErrorKind::Build => "build",
            ErrorKind::Patch => "patch",
            ErrorKind::Recording => "recording",
            ErrorKind::ReplayDiverged => "replay_diverged",
            ErrorKind::BadInput => "bad_input",
            ErrorKind::MissingTool => "missing_tool",
            ErrorKind::Other => "other",
        }
    }
}

/// A failed step of the library: its message (with causes) says why and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{inner:#}")]
pub struct Error {
    kind: ErrorKind,
    inner: anyhow::Error,
}

impl Error {
    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<anyhow::Error> for Error {
    fn from(inner: anyhow::Error) -> Error {
        Error {
            kind: kind_of(&inner),
            inner,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::from(anyhow::Error::from(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::from(anyhow::Error::from(e))
    }
}

/// What the library's steps return.
pub type Result<T> = std::result::Result<T, Error>;

/// A cause tagged with its kind. It shows its inner chain whole and has no source of its own,
/// so the chain prints once; [`kind_of`] looks inside.
#[derive(Debug)]
pub(crate) struct Tagged {
    kind: ErrorKind,
    inner: anyhow::Error,
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.inner)
    }
}

impl std::error::Error for Tagged {}

/// An error of `kind` saying `message`.
pub(crate) fn tagged(kind: ErrorKind, message: String) -> anyhow::Error {
    anyhow::Error::new(Tagged {
        kind,
        inner: anyhow::Error::msg(message),
    })
}

/// The kind of the innermost tag in `e`'s chain; [`ErrorKind::Other`] if it has none.
fn kind_of(e: &anyhow::Error) -> ErrorKind {
    let mut kind = ErrorKind::Other;
    for cause in e.chain() {
        if let Some(t) = cause.downcast_ref::<Tagged>() {
            return match kind_of(&t.inner) {
                ErrorKind::Other => t.kind,
                inner => inner,
            };
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            kind = e.kind;
        }
    }
    kind
}

/// Tags a result's error with its kind.
pub(crate) trait Tag<T> {
    /// The error, if any, is of `kind`.
    fn tag(self, kind: ErrorKind) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Tag<T> for std::result::Result<T, E> {
    fn tag(self, kind: ErrorKind) -> anyhow::Result<T> {
        self.map_err(|e| {
            anyhow::Error::new(Tagged {
                kind,
                inner: e.into(),
            })
        })
    }
}

/// Returns an error of a kind: `fail!(BadInput, "{x} is not ...")`, in a function returning
/// `anyhow::Result` or the library's [`Result`].
#[macro_export]
#[doc(hidden)]
macro_rules! fail {
    ($kind:ident, $($fmt:tt)+) => {
        return Err($crate::error::tagged($crate::ErrorKind::$kind, format!($($fmt)+)).into())
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn failing(kind: ErrorKind) -> anyhow::Result<()> {
        Err(tagged(kind, "the cause".into()))
    }

    #[test]
    fn the_innermost_kind_wins_and_the_message_is_whole() {
        let e = failing(ErrorKind::MissingTool)
            .tag(ErrorKind::Build)
            .context("building the kernel")
            .unwrap_err();
        let e = Error::from(e);
        assert_eq!(e.kind(), ErrorKind::MissingTool);
        assert_eq!(e.to_string(), "building the kernel: the cause");
    }

    #[test]
    fn an_untagged_cause_takes_the_step_s_kind() {
        let io = std::fs::read("/nonexistent/rrr").context("reading the manifest");
        let e = Error::from(io.tag(ErrorKind::BadInput).unwrap_err());
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert!(e.to_string().starts_with("reading the manifest: "), "{e}");
        let plain = Error::from(anyhow::anyhow!("no kind"));
        assert_eq!(plain.kind(), ErrorKind::Other);
    }
}
