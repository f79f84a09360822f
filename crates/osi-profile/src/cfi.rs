//! The canonical frame address (CFA) at a code address, from the file's call frame
//! information (`.debug_frame`, else `.eh_frame`): what a caller's `DW_OP_fbreg` is relative
//! to when its frame base is `DW_OP_call_frame_cfa`, as gcc writes it.

use gimli::{BaseAddresses, CfaRule, UnwindContext, UnwindSection};

use crate::dwarf::R;

/// A file's call frame information.
pub(crate) struct Cfi<'a> {
    debug_frame: gimli::DebugFrame<R<'a>>,
    eh_frame: gimli::EhFrame<R<'a>>,
    eh_bases: BaseAddresses,
}

impl<'a> Cfi<'a> {
    /// The call frame information in `debug_frame` and `eh_frame` (either may be empty), the
    /// latter loaded at `eh_frame_address`.
    pub fn new(debug_frame: &'a [u8], eh_frame: &'a [u8], eh_frame_address: u64) -> Self {
        let endian = gimli::RunTimeEndian::Little;
        let mut debug_frame = gimli::DebugFrame::new(debug_frame, endian);
        debug_frame.set_address_size(8);
        let mut eh_frame = gimli::EhFrame::new(eh_frame, endian);
        eh_frame.set_address_size(8);
        Cfi {
            debug_frame,
            eh_frame,
            eh_bases: BaseAddresses::default().set_eh_frame(eh_frame_address),
        }
    }

    /// The CFA at `pc` as a register (DWARF numbering) plus an offset, if the frame
    /// information has a rule of that form there.
    pub fn cfa_at(&self, pc: u64) -> Option<(u16, i64)> {
        let mut ctx = UnwindContext::new();
        let rule = match self.debug_frame.unwind_info_for_address(
            &BaseAddresses::default(),
            &mut ctx,
            pc,
            gimli::DebugFrame::cie_from_offset,
        ) {
            Ok(row) => row.cfa().clone(),
            Err(_) => self
                .eh_frame
                .unwind_info_for_address(
                    &self.eh_bases,
                    &mut ctx,
                    pc,
                    gimli::EhFrame::cie_from_offset,
                )
                .ok()?
                .cfa()
                .clone(),
        };
        match rule {
            CfaRule::RegisterAndOffset { register, offset } => Some((register.0, offset)),
            CfaRule::Expression(_) => None,
        }
    }
}
