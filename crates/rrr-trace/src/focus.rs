//! What a trace focuses on: which threads it writes, and how deep below the kernel's entry.

use std::fmt;
use std::str::FromStr;

/// Which threads' calls a trace writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Threads {
    /// Every thread and interrupt.
    #[default]
    All,
    /// The processes that ever had a thread of this name (the stimulus: its forks start with
    /// its name, its threads share its process), and the interrupts taken while they run.
    Comm(String),
    /// These processes or threads (pid or tid), and the interrupts taken while they run.
    Pids(Vec<i32>),
}

impl fmt::Display for Threads {
    /// `all`, `comm:NAME` or `pids:1:2` (no commas: QEMU's plugin arguments split on them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threads::All => f.write_str("all"),
            Threads::Comm(name) => write!(f, "comm:{name}"),
            Threads::Pids(pids) => {
                f.write_str("pids")?;
                for p in pids {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// A thread filter that is not `all`, `comm:NAME` or `pids:P:P...`.
#[derive(Debug, thiserror::Error)]
#[error("not a thread filter: {0:?} (all, comm:NAME or pids:PID:PID...)")]
pub struct BadThreads(String);

impl FromStr for Threads {
    type Err = BadThreads;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadThreads(s.to_owned());
        if s == "all" {
            return Ok(Threads::All);
        }
        if let Some(name) = s.strip_prefix("comm:").filter(|n| !n.is_empty()) {
            return Ok(Threads::Comm(name.to_owned()));
        }
        let pids = s.strip_prefix("pids:").ok_or_else(bad)?;
        let pids: Result<Vec<i32>, _> = pids.split(':').map(str::parse).collect();
        match pids {
            Ok(p) if !p.is_empty() => Ok(Threads::Pids(p)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_filters_round_trip_through_their_text() {
        for t in [
            Threads::All,
            Threads::Comm("stimulus".into()),
            Threads::Pids(vec![12, 345]),
        ] {
            assert_eq!(t.to_string().parse::<Threads>().unwrap(), t);
        }
        for bad in ["", "comm:", "pids:", "pids:x", "stimulus"] {
            assert!(bad.parse::<Threads>().is_err(), "{bad}");
        }
    }
}
