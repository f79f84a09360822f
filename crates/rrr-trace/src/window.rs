//! The part of a replay a trace holds, in trace times (guest instructions, as the UI shows
//! them): `FROM..TO`, either end left out for the replay's start or end.

use std::fmt;
use std::str::FromStr;

/// A span of trace times, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// The first trace time written.
    pub from: u64,
    /// The last trace time written.
    pub to: u64,
}

impl Window {
    /// The whole replay.
    pub const ALL: Window = Window {
        from: 0,
        to: u64::MAX,
    };

    /// Whether this is the whole replay.
    pub fn is_all(&self) -> bool {
        *self == Window::ALL
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::ALL
    }
}

impl fmt::Display for Window {
    /// `FROM..TO`, an open end left out (`..` for the whole replay).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from > 0 {
            write!(f, "{}", self.from)?;
        }
        f.write_str("..")?;
        if self.to < u64::MAX {
            write!(f, "{}", self.to)?;
        }
        Ok(())
    }
}

/// A window that is not `FROM..TO`.
#[derive(Debug, thiserror::Error)]
#[error(
    "not a window of trace times: {0:?} (FROM..TO, e.g. 1000000..2000000, 5000000.. or ..2000000)"
)]
pub struct BadWindow(String);

impl FromStr for Window {
    type Err = BadWindow;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadWindow(s.to_owned());
        let (from, to) = s.split_once("..").ok_or_else(bad)?;
        let end = |t: &str, open: u64| -> Result<u64, BadWindow> {
            let t = t.trim().replace('_', "");
            if t.is_empty() {
                Ok(open)
            } else {
                t.parse().map_err(|_| bad())
            }
        };
        let w = Window {
            from: end(from, 0)?,
            to: end(to, u64::MAX)?,
        };
        if w.from > w.to {
            return Err(bad());
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip_through_their_text() {
        for (text, w) in [
            ("5..9", Window { from: 5, to: 9 }),
            (
                "5..",
                Window {
                    from: 5,
                    to: u64::MAX,
                },
            ),
            ("..9", Window { from: 0, to: 9 }),
            ("..", Window::ALL),
        ] {
            assert_eq!(text.parse::<Window>().unwrap(), w);
            assert_eq!(w.to_string(), text);
        }
        assert_eq!(
            "1_000..2_000".parse::<Window>().unwrap(),
            Window {
                from: 1000,
                to: 2000
            }
        );
        for bad in ["", "5", "9..5", "a..b", "1...2"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }
}
