//! Call notes: a subscriber that keeps the argument words of the calls of a few named
//! functions (`refcount_warn_saturate`'s refcount, for the crash's story), which the tracer's
//! results then hold ([`TraceSummary::calls`]).

use osi_profile::Profile;

use crate::options::TraceOptions;

use super::subscriber::{At, Happened, Mark, Subscriber};
use super::TraceSummary;

/// The most calls kept (of all the functions noted together).
const MOST: usize = 64;

/// A call noted: the function, when, by whom, with which raw argument words.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NotedCall {
    /// The function.
    pub function: String,
    /// Trace time.
    pub ts: u64,
    /// Thread id (0: not known).
    pub tid: i32,
    /// Its argument words, in parameter order (a word not read is 0).
    pub args: Vec<u64>,
}

/// The functions whose calls are noted, and the calls.
pub(crate) struct CallNotes {
    /// Their ids, sorted.
    funcs: Vec<u32>,
    calls: Vec<NotedCall>,
}

impl CallNotes {
    /// The notes `options` ask for (their `note_calls`), if any.
    pub fn from_options(options: &TraceOptions, profile: &Profile) -> Option<CallNotes> {
        (!options.note_calls.is_empty()).then(|| CallNotes::new(&options.note_calls, profile))
    }

    /// Notes the calls of the functions of `profile` named `names` (a name matches its
    /// `.isra`/`.constprop` clones too).
    pub fn new(names: &[String], profile: &Profile) -> CallNotes {
        let mut funcs: Vec<u32> = profile
            .functions()
            .filter(|f| {
                let base = f.name().split('.').next().unwrap_or_default();
                names.iter().any(|n| n == base)
            })
            .map(|f| f.id())
            .collect();
        funcs.sort_unstable();
        CallNotes {
            funcs,
            calls: Vec::new(),
        }
    }
}

impl Subscriber for CallNotes {
    fn cares(&self, func: u32) -> bool {
        self.funcs.binary_search(&func).is_ok()
    }

    fn on(&mut self, happened: &Happened<'_>, at: &At<'_>) -> Option<Mark> {
        let Happened::Call(call, args) = happened else {
            return None;
        };
        if !self.cares(call.func) || self.calls.len() >= MOST {
            return None;
        }
        let function = at.profile.function(call.func)?.name().to_owned();
        let len = (args.len as usize).min(args.words.len());
        self.calls.push(NotedCall {
            function,
            ts: at.ts,
            tid: at.who.ident.map_or(0, |i| i.tid),
            args: args.words[..len].to_vec(),
        });
        None
    }

    fn report(&mut self, summary: &mut TraceSummary) {
        summary.calls = std::mem::take(&mut self.calls);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Args;
    use crate::testing::{function, profile_of};
    use crate::writer::subscriber::{Call, Who};

    #[test]
    fn the_calls_of_the_functions_named_are_noted_with_their_words() {
        let profile = profile_of(vec![
            function("refcount_warn_saturate", 0xffff_ffff_8100_0000),
            function("refcount_warn_saturate.cold", 0xffff_ffff_8100_1000),
            function("kfree", 0xffff_ffff_8100_2000),
        ]);
        let mut notes = CallNotes::new(&["refcount_warn_saturate".to_owned()], &profile);
        assert!(notes.cares(0) && notes.cares(1) && !notes.cares(2));
        let mut args = Args {
            len: 2,
            ..Args::default()
        };
        args.words[..2].copy_from_slice(&[0xffff_c900_0001_3e5c, 3]);
        for func in [2, 0] {
            let at = At {
                profile: &profile,
                ts: 7,
                who: Who::default(),
                stack: &[],
                written: false,
                syscall_site: None,
            };
            let call = Call {
                track: 0,
                slot: 0,
                func,
            };
            assert_eq!(notes.on(&Happened::Call(call, &args), &at), None);
        }
        let mut summary = TraceSummary::default();
        notes.report(&mut summary);
        assert_eq!(
            summary.calls,
            [NotedCall {
                function: "refcount_warn_saturate".into(),
                ts: 7,
                tid: 0,
                args: vec![0xffff_c900_0001_3e5c, 3],
            }]
        );
    }
}
