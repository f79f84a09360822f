//! What a trace focuses on: which threads it writes, and how deep below the kernel's entry.

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
