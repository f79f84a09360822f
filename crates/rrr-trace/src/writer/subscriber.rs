//! Subscribers: what follows the call model's events without being part of the trace's
//! encoding: the crash marker ([`super::crash_mark`]) and the memory watch ([`crate::watch`]).
//! Each sees calls, returns and watched accesses with the thread and the calls open, keeps
//! its own state, and may ask for a mark in the trace; none reaches into another's state.

use osi_profile::Profile;

use crate::record::{Access, Args, ThreadIdent};

/// Who an event happened to.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Who<'a> {
    pub ident: Option<&'a ThreadIdent>,
    pub cpu: Option<u32>,
}

/// Where an event happened: when, to whom, under which calls (function ids, outermost first),
/// and whether that part of the replay is written.
pub(crate) struct At<'a> {
    pub profile: &'a Profile,
    pub ts: u64,
    pub who: Who<'a>,
    pub stack: &'a [u32],
    pub written: bool,
    /// Where in the program the thread's latest syscall was made, if known.
    pub syscall_site: Option<u64>,
}

/// A call: its track, its stack slot, its function.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub track: usize,
    pub slot: u64,
    pub func: u32,
}

/// What the call model saw, as subscribers get it. The stack they are given is the caller's.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Happened<'a> {
    /// A call is made, with its arguments.
    Call(Call, &'a Args),
    /// A call returned a value.
    Return(Call, u64),
    /// Watched memory was accessed.
    Access(&'a Access),
}

/// An instant a subscriber asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Its name.
    pub name: String,
    /// Its arguments, as text.
    pub args: Vec<(&'static str, String)>,
    /// The trace's own top-level track it also goes on.
    pub track: String,
    /// It goes inside the call just made (after its slice begins), not before it.
    pub inside_call: bool,
    /// It goes on the thread's track even when the policy leaves that thread's calls out.
    pub always_on_thread: bool,
    /// It is the crash: the trace's crash time, and a size budget keeps its part and what
    /// follows.
    pub crash: bool,
    /// A size budget keeps its part (a moment of a crash's story).
    pub keep_part: bool,
    /// Its place in a flow the subscriber draws (arrows between marks, across threads).
    pub flow: Option<FlowStep>,
}

/// A mark's place in a flow, by the subscriber's own key for the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowStep {
    /// The flow starts here.
    Start(u64),
    /// The flow goes on through here.
    Step(u64),
    /// The flow ends here.
    End(u64),
}

/// Something that follows the call model's events.
pub(crate) trait Subscriber: Send {
    /// Whether calls of `func` matter to it (asked once per function, before the first
    /// record: the hot path looks the answer up).
    fn cares(&self, func: u32) -> bool;

    /// Something happened at `at`: what to mark in the trace, if anything.
    fn on(&mut self, happened: &Happened<'_>, at: &At<'_>) -> Option<Mark>;

    /// The replay is over: writes what it has left.
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// The replay is over: puts what it found in the tracer's results.
    fn report(&mut self, _summary: &mut super::TraceSummary) {}
}
