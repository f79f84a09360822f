//! The engine side of the core: runs inside the emulator's hooks, on the vCPU thread.
//!
//! Per event it does the least it can: mask the stack pointer to find the thread, read the
//! argument words (and `char *` strings) that only exist now, append a [`Record`] to a batch.
//! Guest introspection (reading the current task) happens only when a CPU's stack changes.

use std::collections::HashMap;
use std::sync::Arc;

use osi_profile::{ClassRef, Location, Profile};

use crate::channel::BatchSender;
use crate::guest::{is_kernel_address, Guest, Reg};
use crate::hooks::Returns;
use crate::prefetch::prefetch;
use crate::record::{Access, ArgsRef, Batch, Record, ThreadIdent, TrackKey, MAX_ARG_WORDS};

/// Longest string read for a `char *` argument, in bytes.
pub const MAX_STRING: usize = 128;

/// Where the kernel keeps what the observer reads, from the profile's OS facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsLayout {
    /// Kernel stack size (THREAD_SIZE), a power of two.
    pub thread_size: u64,
    /// Per-CPU offset of `current_task` (added to the GS base).
    pub current_task: Option<u64>,
    /// Per-CPU offset of `hardirq_stack_ptr` (top of the CPU's IRQ stack).
    pub hardirq_stack_ptr: Option<u64>,
    /// IRQ stack size (`sizeof(struct irq_stack)`; THREAD_SIZE if unknown). The stack is
    /// only page-aligned (it lives in the per-CPU area, or is vmap'd there), so it may span
    /// two THREAD_SIZE-aligned blocks: it is known by its range, not by masking.
    pub irq_stack_size: u64,
    /// `task_struct` member offsets.
    pub task_pid: Option<u64>,
    /// See `task_pid`.
    pub task_tgid: Option<u64>,
    /// See `task_pid`.
    pub task_comm: Option<u64>,
    /// See `task_pid`.
    pub task_stack: Option<u64>,
    /// See `task_pid`.
    pub task_mm: Option<u64>,
    /// Offset in `task_struct` of the stack pointer a switched-out task was left at
    /// (`thread.sp`, saved by `__switch_to_asm`).
    pub task_saved_sp: Option<u64>,
}

impl OsLayout {
    /// Reads the layout from a kernel profile's facts (missing facts disable what needs them).
    pub fn from_profile(profile: &Profile) -> Self {
        let f = |k: &str| profile.fact(k).map(|v| v as u64);
        OsLayout {
            thread_size: f("thread_size")
                .filter(|s| s.is_power_of_two())
                .unwrap_or(16384),
            current_task: f("percpu.current_task"),
            hardirq_stack_ptr: f("percpu.hardirq_stack_ptr"),
            irq_stack_size: f("sizeof.irq_stack")
                .filter(|s| s.is_power_of_two())
                .or(f("thread_size").filter(|s| s.is_power_of_two()))
                .unwrap_or(16384),
            task_pid: f("task_struct.pid"),
            task_tgid: f("task_struct.tgid"),
            task_comm: f("task_struct.comm"),
            task_stack: f("task_struct.stack"),
            task_mm: f("task_struct.mm"),
            task_saved_sp: f("task_struct.thread")
                .zip(f("thread_struct.sp"))
                .map(|(t, s)| t + s),
        }
    }
}

/// The per-CPU entry and exception stacks (the CPU entry area of the x86-64 memory map,
/// `Documentation/arch/x86/x86_64/mm.rst`): code running there is entry code or an exception
/// on its own stack, never a thread.
const CPU_ENTRY_AREA: std::ops::Range<u64> = 0xfffffe00_00000000..0xfffffe80_00000000;

/// True for the C handlers the kernel's interrupt entry stubs call (`DEFINE_IDTENTRY_IRQ`,
/// `DEFINE_IDTENTRY_SYSVEC`): everything below their frame is interrupt work.
fn is_irq_handler(name: &str) -> bool {
    matches!(name, "common_interrupt" | "spurious_interrupt") || name.starts_with("sysvec_")
}

/// True for the kernel functions that take the machine down (power off, restart, panic
/// reboot). Tracing stops at their entry: what follows them depends on when the emulator acts
/// on the request, which differs from one replay to the next.
fn is_machine_end(name: &str) -> bool {
    matches!(
        name,
        "kernel_power_off" | "kernel_restart" | "kernel_halt" | "emergency_restart"
    )
}

/// An interrupt in progress on a CPU: events on stack `key` at or below `sp` (the handler's
/// frame) belong to it; the `ret` at `sp` is its last.
#[derive(Clone, Copy, Debug)]
struct IrqMarker {
    key: u64,
    sp: u64,
}

/// A context switch in progress on a CPU: `__switch_to` runs on the next task's stack, but
/// `current` (the per-CPU `current_task`) is the previous task until `__switch_to` writes it,
/// after saving the previous task's segments and MSRs (`wrmsrl`, `native_load_gs_index`). Its
/// calls until then are the previous thread's, as the kernel's own `current`, ftrace and gdb
/// say. Their stack slots, on the next task's stack, are moved to just below where the
/// previous task's stack was left, where they nest on its track. From the write on, the rest
/// of `__switch_to` is the next thread's: a call of it begins there on the next thread's
/// track, at its real slot, and its `ret` ends it.
#[derive(Clone, Copy, Debug)]
struct SwitchWindow {
    /// Kernel stack key of the previous thread.
    prev: u64,
    /// The next task (`__switch_to`'s `next_p`) and its kernel stack key.
    next_task: u64,
    next: u64,
    /// Function id of `__switch_to`.
    func: u32,
    /// Stack pointer at `__switch_to`'s entry, on the next task's stack.
    entry_sp: u64,
    /// Where that slot is moved to on the previous thread's track.
    moved_sp: u64,
}

impl SwitchWindow {
    /// Room between where the previous task's stack was left and the moved slots.
    const GAP: u64 = 256;

    /// Where slot `sp` of the window is on the previous thread's track, if `sp` is on the
    /// window's stack at or below its entry.
    fn moved(&self, sp: u64, thread_size: u64) -> Option<u64> {
        let depth = self.entry_sp.wrapping_sub(sp);
        (depth < thread_size).then(|| self.moved_sp.wrapping_sub(depth))
    }
}

#[derive(Clone, Debug, Default)]
struct CpuState {
    /// Kernel stack key of the thread this CPU runs.
    current: Option<u64>,
    /// The identity of `current` is not known yet (read it at the next event).
    ident_pending: bool,
    /// Lowest address of this CPU's IRQ stack, once read.
    irq_stack: Option<u64>,
    irqs: Vec<IrqMarker>,
    /// A `__switch_to` that has not yet made the next task current.
    switching: Option<SwitchWindow>,
}

/// Engine-side state: one per emulator, called from every hook.
pub struct Observer {
    profile: Arc<Profile>,
    /// Per function id: what its entry needs (see [`FuncPlan`]).
    funcs: Vec<FuncPlan>,
    /// Every function's parameters to read, each function's in one span (see [`FuncPlan`]).
    params: Vec<ParamRead>,
    /// The machine is going down: nothing more is recorded.
    ended: bool,
    layout: OsLayout,
    cpus: Vec<CpuState>,
    idents: HashMap<u64, ThreadIdent>,
    batch: Batch,
    sender: BatchSender,
}

impl Observer {
    /// An observer that sends its batches through `sender`.
    pub(crate) fn new(profile: Arc<Profile>, layout: OsLayout, sender: BatchSender) -> Self {
        let batch = sender.empty_batch();
        let (funcs, params) = func_plans(&profile);
        Observer {
            funcs,
            params,
            ended: false,
            profile,
            layout,
            cpus: Vec::new(),
            idents: HashMap::new(),
            batch,
            sender,
        }
    }

    /// Closes the channel to the writer (after a last [`Observer::flush`]).
    pub(crate) fn close(&mut self) {
        self.sender.close();
    }

    /// The profile the observer decodes with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    // Inlined with its rare paths kept out of line: these run several times per event.
    #[inline(always)]
    fn cpu(&mut self, cpu: u32) -> &mut CpuState {
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.add_cpu(i);
        }
        &mut self.cpus[i]
    }

    #[cold]
    fn add_cpu(&mut self, i: usize) {
        self.cpus.resize_with(i + 1, CpuState::default);
    }

    #[inline(always)]
    fn push(&mut self, r: Record) {
        self.batch.records.push(r);
        if self.batch.records.len() >= self.sender.batch_len() {
            self.send();
        }
    }

    #[cold]
    fn send(&mut self) {
        self.sender.send(&mut self.batch);
    }

    /// Sends what is buffered now (the writer will write it within its flush interval).
    pub fn flush(&mut self) {
        if !self.batch.records.is_empty() {
            self.sender.send(&mut self.batch);
        }
    }

    /// A hooked function is about to execute its first instruction on `cpu`.
    pub fn on_enter<G: Guest + ?Sized>(&mut self, cpu: u32, g: &mut G, func: u32, ts: u64) {
        if self.ended {
            return;
        }
        // The function's plan and its parameters are likely cache misses: they are asked for
        // before the register reads (calls into the emulator), which they then overlap.
        prefetch(self.funcs.as_ptr().wrapping_add(func as usize));
        let sp = g.reg(Reg::RSP);
        let plan = self.funcs.get(func as usize).copied().unwrap_or_default();
        prefetch(self.params.as_ptr().wrapping_add(plan.first as usize));
        let kind = plan.kind;
        if kind != KIND_USER && !is_kernel_address(sp) {
            // Kernel code on a user stack: an entry stub before it switched stacks.
            return;
        }
        if kind == KIND_IRQ && !CPU_ENTRY_AREA.contains(&sp) {
            let key = self.stack_key(cpu, sp);
            self.cpu(cpu).irqs.push(IrqMarker { key, sp });
        }
        if kind == KIND_SWITCH {
            self.begin_switch(cpu, g, func, sp, ts);
        }
        let (track, slot) = self.place(cpu, g, sp, false, ts);
        let mut args = self.read_args(g, func, plan, sp);
        if kind == KIND_SYSCALL {
            self.syscall_site(g, &mut args);
        }
        // Taken before the push, which may send the batch and its words.
        let renamed = (kind == KIND_RENAME && args.len >= 2)
            .then(|| {
                let at = args.at as usize;
                match self.batch.words.get(at..at + 2) {
                    Some(&[task, name]) => Some((task, name)),
                    _ => None,
                }
            })
            .flatten();
        self.push(Record::Enter {
            ts,
            track,
            sp: slot,
            func,
            args,
        });
        self.ended = kind == KIND_END;
        if let Some((task, name)) = renamed {
            self.rename(g, task, name, ts);
        }
    }

    /// A `ret` at `pc`, of a function that leaves its value as `returns` says, is about to
    /// execute on `cpu`.
    pub fn on_return<G: Guest + ?Sized>(
        &mut self,
        cpu: u32,
        g: &mut G,
        pc: u64,
        returns: Returns,
        ts: u64,
    ) {
        if self.ended {
            return;
        }
        let sp = g.reg(Reg::RSP);
        let (track, sp) = self.place(cpu, g, sp, true, ts);
        let rax = g.reg(Reg::RAX);
        let value = match returns {
            Returns::Rax => [rax, 0],
            Returns::RaxRdx => [rax, g.reg(Reg::RDX)],
            // The struct's first 16 bytes (as many as a value shows); its address if unreadable.
            Returns::Memory => {
                let mut b = [0u8; 16];
                if g.read(rax, &mut b) {
                    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
                    [word(0), word(8)]
                } else {
                    [rax, 0]
                }
            }
        };
        self.push(Record::Return {
            ts,
            track,
            sp,
            pc,
            value,
        });
    }

    /// The instruction at `access.pc` loads or stores watched memory on `cpu`.
    pub fn on_access<G: Guest + ?Sized>(&mut self, g: &mut G, access: Access, ts: u64) {
        if self.ended {
            return;
        }
        let sp = g.reg(Reg::RSP);
        let (track, _) = self.place(access.cpu, g, sp, false, ts);
        self.push(Record::Access { ts, track, access });
    }

    /// `__switch_to` is entered on `cpu`, already on the next task's stack (at `sp`), while
    /// `current_task` still names the previous one.
    #[cold]
    fn begin_switch<G: Guest + ?Sized>(
        &mut self,
        cpu: u32,
        g: &mut G,
        func: u32,
        sp: u64,
        ts: u64,
    ) {
        // Identify the next thread from the switch's own argument, so that its first events
        // (a new thread's first resume) are on its track, not on a track of a stack nobody
        // owns.
        let [prev_task, next] = [0, 1].map(|i| g.reg(Reg(osi_profile::arch::INTEGER_ARGS[i])));
        let Ok((next_key, next_ident)) = self.read_task(g, next) else {
            self.cpu(cpu).switching = None;
            return;
        };
        self.identify(next_key, next_ident, ts);
        let mask = !(self.layout.thread_size - 1);
        let window = match self.read_task(g, prev_task) {
            Ok((prev, ident)) if sp & mask != prev && sp & mask == next_key => {
                self.identify(prev, ident, ts);
                let saved = self
                    .layout
                    .task_saved_sp
                    .and_then(|off| g.read_u64(prev_task.wrapping_add(off)));
                saved
                    .filter(|&s| s & mask == prev)
                    .map(|saved| SwitchWindow {
                        prev,
                        next_task: next,
                        next: next_key,
                        func,
                        entry_sp: sp,
                        moved_sp: saved.wrapping_sub(SwitchWindow::GAP),
                    })
            }
            _ => None,
        };
        self.cpu(cpu).switching = window;
    }

    /// The track of an event at `sp` (a `ret` if `ret`) and the stack slot it has there.
    #[inline(always)]
    fn place<G: Guest + ?Sized>(
        &mut self,
        cpu: u32,
        g: &mut G,
        sp: u64,
        ret: bool,
        ts: u64,
    ) -> (TrackKey, u64) {
        if let Some(w) = self.cpu(cpu).switching {
            return self.place_in_switch(cpu, g, sp, ret, ts, w);
        }
        (self.track_for(cpu, g, sp, ret, ts), sp)
    }

    /// During a context switch: the previous thread's track and the moved slot while
    /// `current_task` is still the previous task. Once it names the next one, the previous
    /// thread's part of the switch ends (its calls there unwound), the event is placed as
    /// usual, and the rest of `__switch_to` begins on the next thread's track.
    #[cold]
    fn place_in_switch<G: Guest + ?Sized>(
        &mut self,
        cpu: u32,
        g: &mut G,
        sp: u64,
        ret: bool,
        ts: u64,
        w: SwitchWindow,
    ) -> (TrackKey, u64) {
        let current = self.current_task(g, Reg::GS_BASE);
        let moved = w.moved(sp, self.layout.thread_size);
        if let (Some(slot), false) = (moved, current == Some(w.next_task)) {
            return (TrackKey::Thread(w.prev), slot);
        }
        self.cpu(cpu).switching = None;
        // A return just above the moved slots: every call of the window open on the previous
        // thread's track ends here, unwound (no frame has this slot, nor a function at pc 0).
        self.push(Record::Return {
            ts,
            track: TrackKey::Thread(w.prev),
            sp: w.moved_sp.wrapping_add(8),
            pc: 0,
            value: [0, 0],
        });
        let track = self.track_for(cpu, g, sp, ret, ts);
        if track == TrackKey::Thread(w.next) {
            self.push(Record::Enter {
                ts,
                track,
                sp: w.entry_sp,
                func: w.func,
                args: ArgsRef::default(),
            });
        }
        (track, sp)
    }

    /// Decides the track of an event at `sp` (a `ret` if `ret`), noting context switches and
    /// new threads.
    fn track_for<G: Guest + ?Sized>(
        &mut self,
        cpu: u32,
        g: &mut G,
        sp: u64,
        ret: bool,
        ts: u64,
    ) -> TrackKey {
        if !is_kernel_address(sp) {
            // User mode: every interrupt on this CPU has returned; the thread is the one
            // whose kernel stack this CPU last ran on.
            self.cpu(cpu).irqs.clear();
            if let Some(key) = self.cpu(cpu).current {
                return TrackKey::Thread(key);
            }
            // First sight of this CPU, in user mode: find the thread from its task.
            return match self.current_stack(g, Reg::KERNEL_GS_BASE) {
                Some(key) => {
                    self.cpu(cpu).current = Some(key);
                    self.refresh_ident(cpu, g, key, ts, Reg::KERNEL_GS_BASE);
                    TrackKey::Thread(key)
                }
                None => TrackKey::Irq(cpu),
            };
        }
        if CPU_ENTRY_AREA.contains(&sp) {
            return TrackKey::Irq(cpu);
        }
        let key = self.stack_key(cpu, sp);
        let state = self.cpu(cpu);
        while let Some(m) = state.irqs.last() {
            if m.key != key {
                break;
            }
            let in_handler = sp < m.sp || (sp == m.sp && !ret);
            let handler_returns = sp == m.sp;
            if !in_handler {
                state.irqs.pop();
            }
            if in_handler || handler_returns {
                // An interrupt's events; its thread is still the one running (it may have
                // been switched out and back in, inside the handler, since).
                if state.current != Some(key) {
                    self.switch_to(cpu, g, key, ts);
                }
                return TrackKey::Irq(cpu);
            }
        }
        if state.current == Some(key) {
            if state.ident_pending {
                self.refresh_ident(cpu, g, key, ts, Reg::GS_BASE);
            }
            return TrackKey::Thread(key);
        }
        if self.is_irq_stack(cpu, g, sp) {
            return TrackKey::Irq(cpu);
        }
        self.switch_to(cpu, g, key, ts);
        TrackKey::Thread(key)
    }

    /// `cpu` now runs the thread of kernel stack `key`: notes the switch and reads who it is.
    fn switch_to<G: Guest + ?Sized>(&mut self, cpu: u32, g: &mut G, key: u64, ts: u64) {
        let state = self.cpu(cpu);
        let prev = state.current.replace(key);
        if let Some(from) = prev {
            self.push(Record::Switch {
                ts,
                cpu,
                from: TrackKey::Thread(from),
                to: TrackKey::Thread(key),
            });
        }
        self.refresh_ident(cpu, g, key, ts, Reg::GS_BASE);
    }

    /// The key of the stack `sp` is on: its THREAD_SIZE-aligned base, or for any address of
    /// this CPU's IRQ stack (once read), that stack's lowest address.
    #[inline(always)]
    fn stack_key(&self, cpu: u32, sp: u64) -> u64 {
        match self.cpus.get(cpu as usize).and_then(|c| c.irq_stack) {
            Some(low) if self.on_irq_stack(low, sp) => low,
            _ => sp & !(self.layout.thread_size - 1),
        }
    }

    /// Whether `sp` is on the IRQ stack whose lowest address is `low`.
    #[inline(always)]
    fn on_irq_stack(&self, low: u64, sp: u64) -> bool {
        sp.wrapping_sub(low) < self.layout.irq_stack_size
    }

    /// Whether `sp` is on this CPU's IRQ stack (read the first time it is asked).
    fn is_irq_stack<G: Guest + ?Sized>(&mut self, cpu: u32, g: &mut G, sp: u64) -> bool {
        if self.cpu(cpu).irq_stack.is_none() {
            if let Some(off) = self.layout.hardirq_stack_ptr {
                let base = g.reg(Reg::GS_BASE);
                if let Some(top) = g.read_u64(base.wrapping_add(off)).filter(|&t| t != 0) {
                    // hardirq_stack_ptr points at the top word of the stack.
                    let low = top.wrapping_add(8).wrapping_sub(self.layout.irq_stack_size);
                    self.cpu(cpu).irq_stack = Some(low);
                }
            }
        }
        let low = self.cpu(cpu).irq_stack;
        low.is_some_and(|low| self.on_irq_stack(low, sp))
    }

    /// Reads the current task; if it owns the stack `key`, records its identity when new or
    /// changed. Otherwise (mid-switch: the stack moved before `current_task`), retries later.
    fn refresh_ident<G: Guest + ?Sized>(
        &mut self,
        cpu: u32,
        g: &mut G,
        key: u64,
        ts: u64,
        percpu: Reg,
    ) {
        let ident = match self.read_current(g, key, percpu) {
            Ok(ident) => ident,
            Err(Retry::Later) => {
                self.cpu(cpu).ident_pending = true;
                return;
            }
            Err(Retry::Never) => {
                // No layout: the thread is known by its stack alone (the writer names it), once.
                self.cpu(cpu).ident_pending = false;
                if self.idents.contains_key(&key) {
                    return;
                }
                ThreadIdent {
                    tid: -1,
                    pid: -1,
                    comm: [0; 16],
                    kernel: true,
                }
            }
        };
        self.cpu(cpu).ident_pending = false;
        self.identify(key, ident, ts);
    }

    /// The kernel stack base of the current task, read through the per-CPU base in `percpu`.
    fn current_stack<G: Guest + ?Sized>(&self, g: &mut G, percpu: Reg) -> Option<u64> {
        let stack = self.layout.task_stack?;
        let task = self.current_task(g, percpu)?;
        g.read_u64(task.wrapping_add(stack)).filter(|&s| s != 0)
    }

    /// The current task (the per-CPU `current_task`), through the per-CPU base in `percpu`.
    fn current_task<G: Guest + ?Sized>(&self, g: &mut G, percpu: Reg) -> Option<u64> {
        let base = g.reg(percpu);
        g.read_u64(base.wrapping_add(self.layout.current_task?))
    }

    fn read_current<G: Guest + ?Sized>(
        &self,
        g: &mut G,
        key: u64,
        percpu: Reg,
    ) -> Result<ThreadIdent, Retry> {
        let l = &self.layout;
        let task_layout = [l.task_pid, l.task_tgid, l.task_comm, l.task_stack];
        if l.current_task.is_none() || !task_layout.iter().all(Option::is_some) {
            return Err(Retry::Never);
        }
        let task = self.current_task(g, percpu).ok_or(Retry::Later)?;
        match self.read_task(g, task)? {
            (stack, ident) if stack == key => Ok(ident),
            _ => Err(Retry::Later),
        }
    }

    /// The kernel stack and identity of the task at `task`.
    fn read_task<G: Guest + ?Sized>(
        &self,
        g: &mut G,
        task: u64,
    ) -> Result<(u64, ThreadIdent), Retry> {
        let l = &self.layout;
        let (Some(pid), Some(tgid), Some(comm), Some(stack)) =
            (l.task_pid, l.task_tgid, l.task_comm, l.task_stack)
        else {
            return Err(Retry::Never);
        };
        let key = g.read_u64(task + stack).ok_or(Retry::Later)?;
        let mut buf = [0u8; 4];
        let mut read_i32 = |g: &mut G, addr: u64| -> Result<i32, Retry> {
            g.read(addr, &mut buf)
                .then(|| i32::from_le_bytes(buf))
                .ok_or(Retry::Later)
        };
        let tid = read_i32(g, task + pid)?;
        let pid = read_i32(g, task + tgid)?;
        let mut name = [0u8; 16];
        if !g.read(task + comm, &mut name) {
            return Err(Retry::Later);
        }
        let kernel = match l.task_mm {
            Some(mm) => g.read_u64(task + mm).ok_or(Retry::Later)? == 0,
            None => false,
        };
        Ok((
            key,
            ThreadIdent {
                tid,
                pid,
                comm: name,
                kernel,
            },
        ))
    }

    /// `__set_task_comm(task, name, ...)` is about to rename `task` (a thread naming itself,
    /// or exec naming the process after its program): its track takes the new name now, not
    /// at its next context switch (which a thread that exits after renaming never has).
    fn rename<G: Guest + ?Sized>(&mut self, g: &mut G, task: u64, name: u64, ts: u64) {
        let Ok((key, mut ident)) = self.read_task(g, task) else {
            return;
        };
        // The new name: up to 15 bytes and a NUL, as the kernel copies it; the longest
        // readable prefix if it ends just before an unmapped page.
        let mut comm = [0u8; 16];
        let Some(n) = (1..16).rev().find(|&n| g.read(name, &mut comm[..n])) else {
            return;
        };
        let end = comm[..n].iter().position(|&b| b == 0).unwrap_or(n);
        comm[end..].fill(0);
        ident.comm = comm;
        self.identify(key, ident, ts);
    }

    /// The thread on stack `key` is `ident` from `ts` on (sent to the writer if new).
    fn identify(&mut self, key: u64, ident: ThreadIdent, ts: u64) {
        if self.idents.get(&key) != Some(&ident) {
            self.idents.insert(key, ident);
            self.push(Record::Thread {
                ts,
                track: TrackKey::Thread(key),
                ident,
            });
        }
    }

    /// A syscall's entry (`do_syscall_64(regs, nr)`, its arguments in `args`): appends to
    /// them where in the program the call was made: the first of the words at the user stack
    /// pointer the kernel saved in `regs` that lies in one of the program's own functions (a
    /// return address: at the pointer for a libc wrapper that pushes nothing, `syscall()`, a
    /// few words above it for one that saves registers first, glibc's cancellable `close`),
    /// else the word at the pointer; missing if it cannot be read.
    #[cold]
    fn syscall_site<G: Guest + ?Sized>(&mut self, g: &mut G, args: &mut ArgsRef) {
        let words = &mut self.batch.words;
        let w = args.len as usize;
        if w == 0 || w >= MAX_ARG_WORDS || words.len() != args.at as usize + w {
            return;
        }
        let regs = words[args.at as usize];
        let sp = g
            .read_u64(regs.wrapping_add(crate::guest::PT_REGS_SP))
            .filter(|&sp| !is_kernel_address(sp));
        let profile = &self.profile;
        let in_program =
            |word: u64| !is_kernel_address(word) && profile.function_containing(word).is_some();
        let ret = sp.and_then(|sp| {
            let first = g.read_u64(sp)?;
            if in_program(first) {
                return Some(first);
            }
            let mut above = (1..SITE_WORDS).map_while(|i| g.read_u64(sp + 8 * i));
            Some(above.find(|&w| in_program(w)).unwrap_or(first))
        });
        words.push(ret.unwrap_or(0));
        if ret.is_none() {
            args.missing |= 1 << w;
        }
        args.len += 1;
    }

    /// Reads the parameters `plan` (function `func`'s) says, their words into the batch.
    fn read_args<G: Guest + ?Sized>(
        &mut self,
        g: &mut G,
        func: u32,
        plan: FuncPlan,
        sp: u64,
    ) -> ArgsRef {
        let profile = &self.profile;
        let words = &mut self.batch.words;
        let mut args = ArgsRef {
            at: words.len() as u32,
            strings: self.batch.arena.len() as u32,
            ..ArgsRef::default()
        };
        let first = plan.first as usize;
        let params = self.params.get(first..first + plan.len as usize);
        let mut w = 0usize;
        for (i, p) in params.unwrap_or_default().iter().enumerate() {
            let n = crate::decode::words_for(p.loc);
            if w + n > MAX_ARG_WORDS {
                break;
            }
            let word = match p.loc {
                Location::CallSite => call_site_word(g, profile, func, i as u16, sp),
                loc => read_word(g, loc, sp),
            };
            words.push(word.unwrap_or(0));
            if let Location::RegPair(_, b) = p.loc {
                words.push(g.reg(Reg(b)));
            }
            if word.is_none() {
                args.missing |= 1 << w;
            }
            if p.string {
                let s = word.filter(|&v| v != 0);
                read_string(g, s, &mut self.batch.arena);
            }
            w += n;
        }
        args.len = w as u8;
        args
    }
}

/// The first word of a value at `loc`, at a function's entry with stack pointer `sp`.
#[inline(always)]
fn read_word<G: Guest + ?Sized>(g: &mut G, loc: Location, sp: u64) -> Option<u64> {
    match loc {
        Location::Reg(r) => Some(g.reg(Reg(r))),
        Location::RegPair(a, _) => Some(g.reg(Reg(a))),
        Location::Stack(off) => g.read_u64(sp.wrapping_add(off as i64 as u64)),
        Location::Const(v) => Some(v as i64 as u64),
        Location::RegOffset(r, off) => Some(g.reg(Reg(r)).wrapping_add(off as i64 as u64)),
        Location::Memory(r, off) => {
            let at = g.reg(Reg(r)).wrapping_add(off as i64 as u64);
            g.read_u64(at)
        }
        Location::CallSite | Location::None => None,
    }
}

/// Parameter `param` of function `func`, which its caller did not pass (a `.isra` clone's):
/// the value its call site's debug info gives, found by the return address at `sp`.
#[cold]
fn call_site_word<G: Guest + ?Sized>(
    g: &mut G,
    profile: &Profile,
    func: u32,
    param: u16,
    sp: u64,
) -> Option<u64> {
    let callee = profile.function(func)?.entry();
    let return_pc = g.read_u64(sp)?;
    read_word(g, profile.call_site_value(return_pc, callee, param), sp)
}

/// How to read one parameter at a function's entry: where it is, and whether it is a string
/// (`char *`) whose bytes go with it. Resolved once from the profile: reading a function's
/// parameters through the profile at every call (names, classes, locations decoded each
/// time) was 5% of the vCPU thread in a looping trace's perf profile.
#[derive(Clone, Copy, Debug)]
struct ParamRead {
    loc: Location,
    string: bool,
}

/// What an entry of one function needs: its kind (a `KIND_*`) and its [`ParamRead`]s,
/// `params[first..first + len]`. One table, so that an entry costs one cache miss for it.
#[derive(Clone, Copy, Debug, Default)]
struct FuncPlan {
    first: u32,
    len: u16,
    kind: u8,
}

/// Every function's [`FuncPlan`], by function id, and the [`ParamRead`]s they refer to.
fn func_plans(profile: &Profile) -> (Vec<FuncPlan>, Vec<ParamRead>) {
    let mut params = Vec::new();
    let funcs = profile
        .functions()
        .map(|f| {
            let first = params.len();
            params.extend(f.params().map(|p| ParamRead {
                loc: p.location(),
                string: p.class() == ClassRef::CharPtr,
            }));
            let kind = if f.is_user() {
                KIND_USER
            } else if is_irq_handler(f.name()) {
                KIND_IRQ
            } else if is_machine_end(f.name()) {
                KIND_END
            } else if f.name() == RENAME {
                KIND_RENAME
            } else if f.name() == SWITCH {
                KIND_SWITCH
            } else if f.name() == SYSCALL {
                KIND_SYSCALL
            } else {
                KIND_PLAIN
            };
            FuncPlan {
                first: first as u32,
                len: (params.len() - first).min(usize::from(u16::MAX)) as u16,
                kind,
            }
        })
        .collect();
    (funcs, params)
}

/// [`FuncPlan::kind`]: any other function.
const KIND_PLAIN: u8 = 0;
/// [`FuncPlan::kind`]: an interrupt handler.
const KIND_IRQ: u8 = 1;
/// [`FuncPlan::kind`]: user-space code.
const KIND_USER: u8 = 2;
/// [`FuncPlan::kind`]: the machine goes down.
const KIND_END: u8 = 3;
/// See [`RENAME`].
const KIND_RENAME: u8 = 4;
/// See [`SWITCH`].
const KIND_SWITCH: u8 = 5;
/// The C half of a context switch, `__switch_to(prev, next)`, entered on `next`'s stack.
const SWITCH: &str = "__switch_to";
/// See [`SYSCALL`].
const KIND_SYSCALL: u8 = 6;

/// How many words at a syscall's user stack pointer may hold its return address into the
/// program (see [`Observer::syscall_site`]): glibc's wrappers save at most a few registers.
const SITE_WORDS: u64 = 8;
/// The C entry of every syscall from user space, `do_syscall_64(regs, nr)`: the observer
/// adds the call site in the program to its arguments (see [`Observer::syscall_site`]).
pub(crate) const SYSCALL: &str = "do_syscall_64";
/// The kernel function every rename of a task goes through (`prctl(PR_SET_NAME)`,
/// `pthread_setname_np`, exec).
const RENAME: &str = "__set_task_comm";

enum Retry {
    Later,
    Never,
}

/// Appends `u16 len + bytes` of the NUL-terminated string at `addr` (at most [`MAX_STRING`]
/// bytes, read page by page), or `u16::MAX` if it cannot be read.
fn read_string<G: Guest + ?Sized>(g: &mut G, addr: Option<u64>, arena: &mut Vec<u8>) {
    let at = arena.len();
    arena.extend_from_slice(&[0, 0]);
    let Some(mut addr) = addr else {
        arena[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        return;
    };
    let mut len = 0usize;
    let mut chunk = [0u8; 32];
    'outer: while len < MAX_STRING {
        // Never cross a page in one read: the next page may be unmapped.
        let to_page = (4096 - (addr & 4095)) as usize;
        let n = chunk.len().min(to_page).min(MAX_STRING - len);
        if !g.read(addr, &mut chunk[..n]) {
            if len == 0 {
                arena.truncate(at);
                arena.extend_from_slice(&u16::MAX.to_le_bytes());
                return;
            }
            break;
        }
        for &b in &chunk[..n] {
            if b == 0 {
                break 'outer;
            }
            arena.push(b);
            len += 1;
        }
        addr += n as u64;
    }
    arena[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
}
