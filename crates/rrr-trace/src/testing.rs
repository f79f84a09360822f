//! Builders the unit tests share: small profiles and thread identities.

use osi_profile::{Function, Profile, ProfileData, TypeDesc};

use crate::record::ThreadIdent;

/// A kernel function at `entry` without parameters, returning nothing.
pub(crate) fn function(name: &str, entry: u64) -> Function {
    Function {
        name: name.into(),
        entry,
        size: 0x40,
        file: None,
        line: 0,
        ret: TypeDesc::void(),
        params: vec![],
        flags: 0,
    }
}

/// A profile of `functions` (their ids in entry order).
pub(crate) fn profile_of(functions: Vec<Function>) -> Profile {
    let mut d = ProfileData {
        functions,
        ..Default::default()
    };
    d.finish();
    Profile::from_bytes(&d.to_bytes()).unwrap()
}

/// A user thread.
pub(crate) fn ident(pid: i32, tid: i32, comm: &str) -> ThreadIdent {
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm.as_bytes());
    ThreadIdent {
        pid,
        tid,
        comm: c,
        kernel: false,
    }
}
