//! One SMMUv3 instance: probe, bring-up in the spec's order, the command queue
//! (batched, wrap-aware, CMD_SYNC by polling or interrupt), the event queue, GERROR, wired
//! interrupts (SMMU_IRQ_CTRL), and the STE
//! and TLB operations the generic IOMMU layer asks for. Every poll has a deadline.

use super::cmd::{Command, QueueIndex, RawCommand, SyncCs};
use super::event::{CmdqError, Event, gerror_bits};
use super::features::Features;
use super::queue::Queue;
use super::regs::{CR0, GBPA, IRQ_CTRL, PAGE1_OFFSET, Page0, Page1};
use super::ste::{STE_QWORDS, Ste, SteWriter, UpdateKind, write_ste};
use super::strtab::{LINEAR_MAX_BITS, StreamTable, StrtabError};
use crate::arch::cache;
use crate::arch::timer::Deadline;
use crate::iommu::hwmem::HwMem;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

/// GERROR.EVTQ_ABT_ERR: an event record could not be written.
const GERROR_EVTQ_ABT_ERR: u32 = 1 << 2;

/// Bounds for polls of the hardware.
const ACK_TIMEOUT_MS: u64 = 100;
const SYNC_TIMEOUT_MS: u64 = 1000;
/// How many GERROR names are kept (older ones are counted in `stats.gerrors` only).
const GERROR_LOG: usize = 64;

/// How many decoded events are kept for callers to inspect.
const EVENT_LOG: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrtabChoice {
    Auto,
    Linear,
    TwoLevel,
}

/// Knobs from the boot arguments (`smmu.*`).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub cmdq_log2: Option<u8>,
    pub evtq_log2: Option<u8>,
    pub strtab: StrtabChoice,
    /// Treat the SMMU as non-coherent even if the DT says `dma-coherent`.
    pub force_non_coherent: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { cmdq_log2: None, evtq_log2: None, strtab: StrtabChoice::Auto, force_non_coherent: false }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmmuError {
    NotAnSmmuV3 {
        aidr: u32,
    },
    NoAArch64Tables,
    NoMemory(&'static str),
    Strtab(StrtabError),
    /// CR0ACK (or another acknowledge) did not follow within the bound.
    AckTimeout {
        reg: &'static str,
        want: u32,
        got: u32,
    },
    GbpaTimeout,
    /// The command queue did not drain in time.
    SyncTimeout {
        prod: u32,
        cons: u32,
    },
    /// The SMMU rejected a command: which error, and which command.
    CommandError {
        err: CmdqError,
        cmd: RawCommand,
    },
    Misaligned {
        what: &'static str,
        pa: u64,
    },
    BadConfig(String),
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmmuError::NotAnSmmuV3 { aidr } => write!(f, "AIDR {aidr:#x} is not an SMMUv3"),
            SmmuError::NoAArch64Tables => write!(f, "SMMU cannot walk AArch64 tables"),
            SmmuError::NoMemory(what) => write!(f, "out of memory for the {what}"),
            SmmuError::Strtab(e) => write!(f, "stream table: {e}"),
            SmmuError::AckTimeout { reg, want, got } => {
                write!(f, "{reg} did not acknowledge {want:#x} within {ACK_TIMEOUT_MS} ms (reads {got:#x})")
            }
            SmmuError::GbpaTimeout => write!(f, "GBPA.UPDATE stuck for {ACK_TIMEOUT_MS} ms"),
            SmmuError::SyncTimeout { prod, cons } => {
                write!(f, "CMD_SYNC not consumed within {SYNC_TIMEOUT_MS} ms (PROD {prod:#x}, CONS {cons:#x})")
            }
            SmmuError::CommandError { err, cmd } => write!(f, "{} on command {}", err.name(), cmd),
            SmmuError::Misaligned { what, pa } => write!(f, "{what} at {pa:#x} violates its alignment rule"),
            SmmuError::BadConfig(s) => write!(f, "{s}"),
        }
    }
}

impl From<StrtabError> for SmmuError {
    fn from(e: StrtabError) -> Self {
        SmmuError::Strtab(e)
    }
}

/// What was counted on this SMMU (for tests and benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub commands: u64,
    pub syncs: u64,
    pub prod_writes: u64,
    /// CMDQ_CONS register reads by the command path (space checks, CMD_SYNC polls).
    pub cons_reads: u64,
    pub events: u64,
    pub evtq_overflows: u64,
    pub gerrors: u64,
    pub cmd_errors: u64,
    /// Wired interrupts taken: event queue, global error, CMD_SYNC completion.
    pub evtq_irqs: u64,
    pub gerror_irqs: u64,
    pub sync_irqs: u64,
}

pub struct SmmuV3 {
    pub name: String,
    pub base: u64,
    p0: &'static Page0,
    p1: &'static Page1,
    pub features: Features,
    pub mem: HwMem,
    pub strtab: StreamTable,
    cmdq: Queue,
    evtq: Queue,
    /// Decoded events, oldest first, bounded.
    pub events: VecDeque<Event>,
    pub stats: Stats,
    /// GERROR bits seen (and acknowledged) so far.
    pub gerror_log: Vec<&'static str>,
    pub quirk_no_prefetch: bool,
    /// Counted by the interrupt handlers without any lock (see `IrqCounters`).
    pub irq: &'static IrqCounters,
    /// Which wired lines are enabled in SMMU_IRQ_CTRL / routed to a handler.
    pub irq_lines: IrqLines,
    /// SMMU_{EVENTQ,GERROR}_IRQ_CFG0/1/2 that `enable_irqs` writes (all 0: no MSI).
    pub irq_msi: IrqMsi,
    pub sync_mode: SyncMode,
    /// GERROR bits an interrupt handler acknowledged, not yet reported by handle_gerror.
    gerror_irq_bits: u32,
}

/// Writes STE qwords to memory and syncs with CFGI_STE + CMD_SYNC.
struct LiveSte<'a> {
    smmu: &'a mut SmmuV3,
    pa: u64,
    sid: u32,
    err: Option<SmmuError>,
}

impl SteWriter for LiveSte<'_> {
    fn write_qword(&mut self, index: usize, value: u64) {
        // SAFETY: pa is the STE slot for sid in our stream table; one 64-bit store.
        unsafe { core::ptr::write_volatile((self.pa as *mut u64).add(index), value) };
    }
    fn sync(&mut self) {
        self.smmu.mem.to_device(self.pa, 64);
        if self.err.is_none()
            && let Err(e) = self.smmu.run(&[Command::CfgiSte { sid: self.sid, leaf: true }])
        {
            self.err = Some(e);
        }
    }
}

impl SmmuV3 {
    /// Read the ID registers, allocate tables and queues, and bring the SMMU up with
    /// every StreamID aborting until a master is attached.
    ///
    /// # Safety
    /// `base` must be an SMMUv3 register frame (two 64 KiB pages) mapped as device
    /// memory and owned by this driver alone.
    pub unsafe fn probe(
        name: &str,
        base: u64,
        coherent: bool,
        quirks: &[String],
        opts: &Options,
    ) -> Result<Self, SmmuError> {
        // SAFETY: the caller guarantees the register pages.
        let (p0, p1) = unsafe { (&*(base as *const Page0), &*((base + PAGE1_OFFSET) as *const Page1)) };
        let idr =
            [p0.idr[0].get(), p0.idr[1].get(), p0.idr[2].get(), p0.idr[3].get(), p0.idr[4].get(), p0.idr[5].get()];
        let aidr = p0.aidr.get();
        let features = Features::decode(idr, aidr);
        // AIDR.ArchMajorRev is 0 for SMMUv3.x (some models report 3).
        if features.arch_major != 0 && features.arch_major != 3 {
            return Err(SmmuError::NotAnSmmuV3 { aidr });
        }
        if !features.aarch64_tables() {
            return Err(SmmuError::NoAArch64Tables);
        }
        // Coherent only if both the DT and the hardware say so (COHACC).
        let mem = HwMem { coherent: features.coherent_walk(coherent, opts.force_non_coherent) };
        let two_level = match opts.strtab {
            StrtabChoice::Linear => false,
            StrtabChoice::TwoLevel => features.two_level_st(),
            StrtabChoice::Auto => features.two_level_st() && features.sid_bits > LINEAR_MAX_BITS,
        };
        let strtab = StreamTable::new(&mem, features.sid_bits, two_level)?;
        let cmdq_log2 = opts.cmdq_log2.unwrap_or(8).min(features.cmdq_log2).max(1);
        let evtq_log2 = opts.evtq_log2.unwrap_or(10).min(features.evtq_log2).max(1);
        let cmdq = Queue::new(&mem, cmdq_log2, 16).ok_or(SmmuError::NoMemory("command queue"))?;
        let evtq = Queue::new(&mem, evtq_log2, 32).ok_or(SmmuError::NoMemory("event queue"))?;
        let mut s = SmmuV3 {
            name: name.into(),
            base,
            p0,
            p1,
            features,
            mem,
            strtab,
            cmdq,
            evtq,
            // Reserved up front: the event queue interrupt drains into it and must not allocate.
            events: VecDeque::with_capacity(EVENT_LOG),
            stats: Stats::default(),
            // Preallocated: interrupt handlers append here and must never allocate.
            gerror_log: Vec::with_capacity(GERROR_LOG),
            quirk_no_prefetch: quirks.iter().any(|q| q == "hisilicon,broken-prefetch-cmd"),
            irq: alloc::boxed::Box::leak(alloc::boxed::Box::new(IrqCounters::default())),
            irq_lines: IrqLines::default(),
            irq_msi: IrqMsi::default(),
            sync_mode: SyncMode::Poll,
            gerror_irq_bits: 0,
        };
        s.reset()?;
        Ok(s)
    }

    fn write_cr0(&self, val: u32) -> Result<(), SmmuError> {
        self.p0.cr0.set(val);
        acked("CR0ACK", val, || self.p0.cr0ack.get())
    }

    fn update_gbpa(&self, abort: bool) -> Result<(), SmmuError> {
        let d = Deadline::after_ms(ACK_TIMEOUT_MS);
        while self.p0.gbpa.is_set(GBPA::UPDATE) {
            if d.expired() {
                return Err(SmmuError::GbpaTimeout);
            }
        }
        self.p0.gbpa.modify(GBPA::ABORT.val(abort as u32) + GBPA::UPDATE::SET);
        while self.p0.gbpa.is_set(GBPA::UPDATE) {
            if d.expired() {
                return Err(SmmuError::GbpaTimeout);
            }
        }
        Ok(())
    }

    /// The bring-up sequence (IHI 0070 §3.21 / Linux arm_smmu_device_reset).
    fn reset(&mut self) -> Result<(), SmmuError> {
        // 1. A firmware-enabled SMMU: block everything, then turn it off.
        if self.p0.cr0.is_set(CR0::SMMUEN) {
            self.update_gbpa(true)?;
        }
        self.write_cr0(0)?;
        // 2. While disabled, incoming traffic aborts (default deny).
        self.update_gbpa(true)?;
        // 3. Table and queue attributes: write-back inner shareable when coherent.
        let attrs = if self.mem.coherent { (1u32, 3u32) } else { (0, 2) };
        let (c, sh) = attrs;
        let cr1 = c | (c << 2) | (sh << 4) | (c << 6) | (c << 8) | (sh << 10);
        self.p0.cr1.set(cr1);
        // RECINVSID: record C_BAD_STREAMID; PTM: ignore broadcast TLB maintenance.
        self.p0.cr2.set((1 << 1) | (1 << 2));
        // 4. Stream table.
        self.p0.strtab_base.set((1 << 62) | (self.strtab.pa & 0x000f_ffff_ffff_ffc0));
        self.p0.strtab_base_cfg.set(self.strtab.base_cfg());
        // 5. Command queue, enable it, invalidate everything cached.
        self.p0.cmdq_base.set(self.cmdq.base_reg());
        self.p0.cmdq_prod.set(0);
        self.p0.cmdq_cons.set(0);
        let mut enables = CR0::CMDQEN::SET.value;
        self.write_cr0(enables)?;
        let mut inv = alloc::vec![Command::CfgiAll];
        if self.features.hyp {
            inv.push(Command::TlbiEl2All);
        }
        inv.push(Command::TlbiNsnhAll);
        self.run(&inv)?;
        // 6. Event queue.
        self.p0.eventq_base.set(self.evtq.base_reg());
        self.p1.eventq_prod.set(0);
        self.p1.eventq_cons.set(0);
        enables |= CR0::EVTQEN::SET.value;
        self.write_cr0(enables)?;
        // 7. No wired/MSI interrupts yet: events and errors are polled.
        self.p0.irq_ctrl.set(0);
        // 8. Translation on. Unattached StreamIDs hit abort STEs.
        enables |= CR0::SMMUEN::SET.value;
        self.write_cr0(enables)
    }

    pub fn cr0ack(&self) -> u32 {
        self.p0.cr0ack.get()
    }

    pub fn gbpa(&self) -> u32 {
        self.p0.gbpa.get()
    }

    pub fn cmdq_log2(&self) -> u8 {
        self.cmdq.ix.log2size()
    }

    pub fn evtq_log2(&self) -> u8 {
        self.evtq.ix.log2size()
    }

    /// Global bypass: turn translation off with GBPA set to bypass (or abort), or back on.
    pub fn set_enabled(&mut self, on: bool, gbpa_abort: bool) -> Result<(), SmmuError> {
        let cur = self.p0.cr0.get();
        if on {
            self.run(&[Command::CfgiAll, Command::TlbiNsnhAll])?;
            self.write_cr0(cur | CR0::SMMUEN::SET.value)
        } else {
            self.update_gbpa(gbpa_abort)?;
            self.write_cr0(cur & !CR0::SMMUEN::SET.value)
        }
    }

    /// Write `cmds` and then `sync` into the queue (waiting for space; the caller's
    /// commands are not copied), then ring the doorbell once.
    fn submit(&mut self, cmds: &[Command], sync: Command) -> Result<(), SmmuError> {
        let ix = self.cmdq.ix;
        let len = cmds.len() + 1;
        let at = |i: usize| if i < cmds.len() { Some(cmds[i]) } else { Some(sync).filter(|_| i == cmds.len()) };
        let mut i = 0;
        while i < len {
            // Space. The CONS we cached (at the last CMD_SYNC) is never ahead of the SMMU's:
            // when it already shows room for the rest, no register read is needed (a strict
            // unmap then costs one PROD write and one CONS read). Otherwise refresh CONS
            // until there is room (bounded).
            if (ix.space(self.cmdq.prod, self.cmdq.cons) as usize) < len - i {
                let d = Deadline::after_ms(SYNC_TIMEOUT_MS);
                loop {
                    self.read_cons();
                    if !ix.is_full(self.cmdq.prod, self.cmdq.cons) {
                        break;
                    }
                    self.check_cmdq_error()?;
                    if d.expired() {
                        return Err(SmmuError::SyncTimeout { prod: self.cmdq.prod, cons: self.cmdq.cons });
                    }
                }
            }
            let start = self.cmdq.prod;
            let mut n = 0;
            while let Some(c) = at(i).filter(|_| !ix.is_full(self.cmdq.prod, self.cmdq.cons)) {
                let w = c.encode();
                let slot = self.cmdq.slot(self.cmdq.prod) as *mut u64;
                // SAFETY: the slot is inside our command queue and not owned by the
                // SMMU (the queue is not full between CONS and PROD).
                unsafe {
                    core::ptr::write_volatile(slot, w[0]);
                    core::ptr::write_volatile(slot.add(1), w[1]);
                }
                self.cmdq.prod = ix.inc(self.cmdq.prod, 1);
                i += 1;
                n += 1;
            }
            self.flush_cmds(start, n);
            cache::dsb_sy();
            self.p0.cmdq_prod.set(self.cmdq.prod);
            self.stats.prod_writes += 1;
            self.stats.commands += n as u64;
        }
        Ok(())
    }

    /// Clean the command slots [start, start+n) for a non-coherent SMMU (wrap-aware).
    fn flush_cmds(&self, start: u32, n: u32) {
        if self.mem.coherent || n == 0 {
            return;
        }
        let entries = self.cmdq.ix.entries();
        let first = self.cmdq.ix.idx(start);
        let till_end = (entries - first).min(n);
        self.mem.to_device(self.cmdq.slot(start), till_end as usize * 16);
        if n > till_end {
            self.mem.to_device(self.cmdq.pa, (n - till_end) as usize * 16);
        }
    }

    /// If the SMMU flagged a command error: name it and the failing command, skip the
    /// command (replace it with a harmless CMD_SYNC), acknowledge, and report.
    fn check_cmdq_error(&mut self) -> Result<(), SmmuError> {
        let active = self.p0.gerror.get() ^ self.p0.gerrorn.get();
        if active & super::regs::GERROR_CMDQ_ERR == 0 {
            return Ok(());
        }
        let cons = self.p0.cmdq_cons.get();
        let err = CmdqError::from_cons(cons);
        let slot = self.cmdq.slot(cons) as *mut u64;
        self.mem.to_cpu(slot as u64, 16);
        // SAFETY: CONS points at a slot of our queue, which the SMMU stopped at.
        let raw = unsafe { [core::ptr::read_volatile(slot), core::ptr::read_volatile(slot.add(1))] };
        // Replace it so the queue can go on (Linux does the same for CERROR_ILL).
        let nop = Command::sync_none().encode();
        // SAFETY: as above; the SMMU re-reads the slot after we acknowledge.
        unsafe {
            core::ptr::write_volatile(slot, nop[0]);
            core::ptr::write_volatile(slot.add(1), nop[1]);
        }
        self.mem.to_device(slot as u64, 16);
        cache::dsb_sy();
        self.p0.gerrorn.set(self.p0.gerrorn.get() ^ super::regs::GERROR_CMDQ_ERR);
        self.stats.cmd_errors += 1;
        self.stats.gerrors += 1;
        self.log_gerror("CMDQ_ERR");
        Err(SmmuError::CommandError { err, cmd: RawCommand(raw) })
    }

    /// Submit `cmds` followed by one CMD_SYNC and wait until the SMMU consumed it.
    /// Allocation-free: interrupt handlers (the lazy-flush timer) use it, and so does every
    /// strict unmap.
    pub fn run(&mut self, cmds: &[Command]) -> Result<(), SmmuError> {
        let by_irq = self.sync_by_irq();
        let sync = if by_irq { SYNC_IRQ } else { Command::sync_none() };
        let irqs_before = self.irq.sync.load(Ordering::SeqCst);
        self.submit(cmds, sync)?;
        self.stats.syncs += 1;
        let target = self.cmdq.prod;
        if by_irq {
            return self.wait_sync_irq(target, irqs_before);
        }
        // Look once before starting the clock: an SMMU that consumed the commands while
        // PROD was written (QEMU's does) costs no timer reads.
        if self.sync_reached(target) {
            return Ok(());
        }
        let d = Deadline::after_ms(SYNC_TIMEOUT_MS);
        loop {
            if self.sync_reached(target) {
                return Ok(());
            }
            self.check_cmdq_error()?;
            if d.expired() {
                return Err(SmmuError::SyncTimeout { prod: target, cons: self.cmdq.cons });
            }
        }
    }

    /// Submit raw command words (test hook: illegal commands).
    pub fn run_raw(&mut self, raw: [u64; 2]) -> Result<(), SmmuError> {
        let slot = self.cmdq.slot(self.cmdq.prod) as *mut u64;
        // SAFETY: as in submit; we own the slot at PROD.
        unsafe {
            core::ptr::write_volatile(slot, raw[0]);
            core::ptr::write_volatile(slot.add(1), raw[1]);
        }
        self.flush_cmds(self.cmdq.prod, 1);
        self.cmdq.prod = self.cmdq.ix.inc(self.cmdq.prod, 1);
        self.stats.commands += 1;
        self.run(&[])
    }

    /// Program the STE of `sid` (hitless when possible, else break-before-make).
    pub fn write_ste(&mut self, sid: u32, target: &Ste) -> Result<UpdateKind, SmmuError> {
        let (pa, new_l1) = self.strtab.ste_pa(&self.mem, sid)?;
        if new_l1 {
            // An SMMU may have cached the absent L1 descriptor's range.
            let range = super::strtab::SPLIT - 1;
            self.run(&[Command::CfgiSteRange { sid: sid & !((1 << super::strtab::SPLIT) - 1), range }])?;
        }
        let mut cur: [u64; STE_QWORDS] = StreamTable::read(pa);
        let mut w = LiveSte { smmu: self, pa, sid, err: None };
        let kind = write_ste(&mut cur, target, &mut w);
        match w.err {
            Some(e) => Err(e),
            None => Ok(kind),
        }
    }

    pub fn read_ste(&mut self, sid: u32) -> Result<[u64; STE_QWORDS], SmmuError> {
        let (pa, _) = self.strtab.ste_pa(&self.mem, sid)?;
        Ok(StreamTable::read(pa))
    }

    /// Drain the event queue into `events`; returns how many were read. Detects and
    /// acknowledges overflow (PROD.OVF != CONS.OVF).
    pub fn drain_events(&mut self) -> usize {
        let ix = self.evtq.ix;
        let prod = self.p1.eventq_prod.get();
        let mut cons = self.p1.eventq_cons.get();
        let mut n = 0;
        if QueueIndex::overflowed(prod, cons) {
            self.stats.evtq_overflows += 1;
        }
        // An event the SMMU could not write (queue full on QEMU's model, or an
        // abort on the queue's memory) shows as GERROR.EVTQ_ABT_ERR: events were lost.
        let lost = (self.p0.gerror.get() ^ self.p0.gerrorn.get()) & GERROR_EVTQ_ABT_ERR;
        if lost != 0 {
            self.stats.evtq_overflows += 1;
            self.log_gerror("EVTQ_ABT_ERR");
            self.p0.gerrorn.set(self.p0.gerrorn.get() ^ lost);
        }
        while !ix.is_empty(prod, cons) {
            let slot = self.evtq.slot(cons);
            self.mem.to_cpu(slot, 32);
            let p = slot as *const u64;
            let mut raw = [0u64; 4];
            for (i, w) in raw.iter_mut().enumerate() {
                // SAFETY: the slot is between CONS and PROD: written by the SMMU, ours to read.
                *w = unsafe { core::ptr::read_volatile(p.add(i)) };
            }
            if self.events.len() == EVENT_LOG {
                self.events.pop_front();
            }
            self.events.push_back(Event::decode(raw));
            cons = (ix.inc(cons, 1) & !super::cmd::Q_OVF) | QueueIndex::ovf(cons);
            n += 1;
        }
        // Acknowledge an overflow by copying PROD's OVF flag into CONS.
        cons = (cons & !super::cmd::Q_OVF) | QueueIndex::ovf(prod);
        self.p1.eventq_cons.set(cons);
        self.evtq.cons = cons;
        self.stats.events += n as u64;
        n
    }

    /// Drain events and return (and forget) the ones recorded since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.drain_events();
        self.events.drain(..).collect()
    }

    /// Active GERROR conditions, acknowledged (all but CMDQ_ERR, which the command
    /// path handles together with the failing command).
    pub fn handle_gerror(&mut self) -> Vec<&'static str> {
        let g = self.p0.gerror.get();
        let n = self.p0.gerrorn.get();
        let active = (g ^ n) & !super::regs::GERROR_CMDQ_ERR;
        // Conditions the interrupt handler already acknowledged (and counted).
        let by_irq = core::mem::take(&mut self.gerror_irq_bits);
        if active == 0 && by_irq == 0 {
            return Vec::new();
        }
        let names: Vec<&'static str> = gerror_bits(active | by_irq).collect();
        self.p0.gerrorn.set(n ^ active);
        self.stats.gerrors += u64::from(active.count_ones());
        for n in &names {
            self.log_gerror(n);
        }
        names
    }
}

impl SmmuV3 {
    /// Refresh the cached CONS from the SMMU (counted in `Stats::cons_reads`).
    fn read_cons(&mut self) {
        self.cmdq.cons = self.p0.cmdq_cons.get();
        self.stats.cons_reads += 1;
    }

    /// Refresh CONS from the SMMU; has it consumed everything up to `target`?
    fn sync_reached(&mut self, target: u32) -> bool {
        self.read_cons();
        consumed_all(self.cmdq.ix, self.cmdq.cons, target)
    }
}

/// Wait (bounded) until an acknowledge register reads `want`.
fn acked(reg: &'static str, want: u32, read: impl Fn() -> u32) -> Result<(), SmmuError> {
    let d = Deadline::after_ms(ACK_TIMEOUT_MS);
    loop {
        let got = read();
        if got == want {
            return Ok(());
        }
        if d.expired() {
            return Err(SmmuError::AckTimeout { reg, want, got });
        }
    }
}

/// Has CONS reached `target` (the PROD value right after our CMD_SYNC)? CONS never
/// passes PROD and never lags a full lap, so a different wrap bit means "not yet".
fn consumed_all(ix: QueueIndex, cons: u32, target: u32) -> bool {
    ix.wrp(cons) == ix.wrp(target) && ix.idx(cons) >= ix.idx(target)
}

// SAFETY: an SmmuV3 owns its register frame and memory; the registry's mutex
// serialises every access, so moving it between CPUs is sound.
unsafe impl Send for SmmuV3 {}

impl SmmuV3 {
    /// Remember a GERROR condition without allocating (interrupt context may call this).
    fn log_gerror(&mut self, name: &'static str) {
        if self.gerror_log.len() < GERROR_LOG {
            self.gerror_log.push(name);
        }
    }

    /// Test hook: stop (or restart) command consumption by clearing CMDQEN, so a
    /// CMD_SYNC can be made to never complete. Restarting lets the SMMU consume
    /// whatever was queued meanwhile.
    #[doc(hidden)]
    pub fn set_cmdq_enabled(&mut self, on: bool) -> Result<(), SmmuError> {
        let cur = self.p0.cr0.get();
        let v = if on { cur | CR0::CMDQEN::SET.value } else { cur & !CR0::CMDQEN::SET.value };
        self.write_cr0(v)
    }

    /// (PROD, CONS) of the command queue as the SMMU sees them now.
    pub fn cmdq_indices(&self) -> (u32, u32) {
        (self.p0.cmdq_prod.get(), self.p0.cmdq_cons.get() & !(0x7f << 24))
    }
}

/// Interrupt counts the handlers keep without taking the registry lock (the code they
/// interrupt may hold it); `stats` copies them under the lock.
#[derive(Debug, Default)]
pub struct IrqCounters {
    pub evtq: AtomicU64,
    pub gerror: AtomicU64,
    pub sync: AtomicU64,
}

/// The SMMU's wired interrupt lines that have a handler. A line that is not here is
/// polled: events by `drain_events`, errors by the command path and `handle_gerror`,
/// CMD_SYNC by CMDQ_CONS.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IrqLines {
    pub evtq: bool,
    pub gerror: bool,
    pub cmdq_sync: bool,
}

/// Raw SMMU_*_IRQ_CFG0 (address), CFG1 (data), CFG2 (attributes) of one interrupt
/// source; the encoding is the caller's (`iommu::irq::msi_cfg`). CFG0 = 0: no MSI.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MsiCfg {
    pub cfg0: u64,
    pub cfg1: u32,
    pub cfg2: u32,
}

/// The MSI configuration of the event queue and global error interrupts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IrqMsi {
    pub evtq: MsiCfg,
    pub gerror: MsiCfg,
}

/// How `run` learns that its CMD_SYNC completed (`smmu.sync=poll|irq`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Poll CMDQ_CONS.
    #[default]
    Poll,
    /// CMD_SYNC with CS=IRQ: wait for the `cmdq-sync` interrupt (then confirm CONS).
    Irq,
}

/// CMD_SYNC completing with the wired `cmdq-sync` interrupt (MSIAddress 0: no MSI write).
const SYNC_IRQ: Command = Command::Sync { cs: SyncCs::Irq, msh: 0, msiattr: 0, msidata: 0, msiaddr: 0 };

impl SmmuV3 {
    /// Enable the interrupts in `lines` in SMMU_IRQ_CTRL (IRQ_CTRLACK polled, bounded),
    /// signalled as `irq_msi` says (MSIs, or wired with CFG0 = 0). The caller has routed
    /// each to a handler first. PRI is not used.
    pub fn enable_irqs(&mut self, lines: IrqLines) -> Result<(), SmmuError> {
        self.write_irq_ctrl(0)?;
        if self.features.msi {
            // Written while IRQ_CTRL has them off, as the spec requires.
            let m = self.irq_msi;
            self.p0.eventq_irq_cfg0.set(m.evtq.cfg0);
            self.p0.eventq_irq_cfg1.set(m.evtq.cfg1);
            self.p0.eventq_irq_cfg2.set(m.evtq.cfg2);
            self.p0.gerror_irq_cfg0.set(m.gerror.cfg0);
            self.p0.gerror_irq_cfg1.set(m.gerror.cfg1);
            self.p0.gerror_irq_cfg2.set(m.gerror.cfg2);
        }
        let mut v = 0;
        if lines.evtq {
            v |= IRQ_CTRL::EVENTQ_IRQEN::SET.value;
        }
        if lines.gerror {
            v |= IRQ_CTRL::GERROR_IRQEN::SET.value;
        }
        self.write_irq_ctrl(v)?;
        self.irq_lines = lines;
        Ok(())
    }

    fn write_irq_ctrl(&self, val: u32) -> Result<(), SmmuError> {
        self.p0.irq_ctrl.set(val);
        acked("IRQ_CTRLACK", val, || self.p0.irq_ctrlack.get())
    }

    /// SMMU_IRQ_CTRL as the SMMU acknowledged it.
    pub fn irq_ctrl(&self) -> u32 {
        self.p0.irq_ctrlack.get()
    }

    pub fn set_sync_mode(&mut self, m: SyncMode) {
        self.sync_mode = m;
    }

    /// CMD_SYNC by interrupt only when asked, wired, and this CPU takes IRQs now
    /// (bring-up runs before interrupts are on).
    pub fn sync_by_irq(&self) -> bool {
        self.sync_mode == SyncMode::Irq && self.irq_lines.cmdq_sync && !crate::arch::irqs_masked()
    }

    /// Wait (bounded by the CMD_SYNC timeout) for the `cmdq-sync` interrupt count to pass
    /// `before`, then confirm CONS reached `target` (a late interrupt from an earlier,
    /// timed-out CMD_SYNC must not complete this one).
    fn wait_sync_irq(&mut self, target: u32, before: u64) -> Result<(), SmmuError> {
        let d = Deadline::after_ms(SYNC_TIMEOUT_MS);
        let mut seen = false;
        loop {
            if !seen && self.irq.sync.load(Ordering::SeqCst) != before {
                seen = true;
                self.stats.sync_irqs += 1;
            }
            if seen && self.sync_reached(target) {
                return Ok(());
            }
            self.check_cmdq_error()?;
            if d.expired() {
                let cons = self.p0.cmdq_cons.get();
                return Err(SmmuError::SyncTimeout { prod: target, cons });
            }
            core::hint::spin_loop();
        }
    }

    /// Event queue interrupt (called with the registry lock held, from the handler):
    /// drain into `events`. Allocation-free while `events` stays within EVENT_LOG.
    pub fn on_evtq_irq(&mut self) -> usize {
        self.stats.evtq_irqs = self.irq.evtq.load(Ordering::SeqCst);
        self.drain_events()
    }

    /// Global error interrupt: a lost event record is the event queue's business;
    /// everything else except CMDQ_ERR (the command path owns it) is acknowledged now
    /// and reported by the next `handle_gerror`. Allocation-free. Returns whether any
    /// GERROR bit was active (a `combined` line's handler counts only those).
    pub fn on_gerror_irq(&mut self) -> bool {
        self.stats.gerror_irqs = self.irq.gerror.load(Ordering::SeqCst);
        let active = self.p0.gerror.get() ^ self.p0.gerrorn.get();
        let any = active != 0;
        if active & GERROR_EVTQ_ABT_ERR != 0 {
            self.drain_events();
        }
        let n = self.p0.gerrorn.get();
        let active = (self.p0.gerror.get() ^ n) & !super::regs::GERROR_CMDQ_ERR;
        if active != 0 {
            self.p0.gerrorn.set(n ^ active);
            self.gerror_irq_bits |= active;
            self.stats.gerrors += u64::from(active.count_ones());
        }
        any
    }

    /// (PROD, CONS) of the event queue as the SMMU sees them now.
    pub fn evtq_indices(&self) -> (u32, u32) {
        (self.p1.eventq_prod.get(), self.p1.eventq_cons.get())
    }

    /// `stats` with the interrupt counts brought up to date.
    pub fn stats_now(&mut self) -> Stats {
        self.stats.evtq_irqs = self.irq.evtq.load(Ordering::SeqCst);
        self.stats.gerror_irqs = self.irq.gerror.load(Ordering::SeqCst);
        self.stats
    }
}
