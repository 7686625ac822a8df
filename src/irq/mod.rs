//! Interrupts: the GICv3 from the device tree (distributor, every CPU's redistributor
//! and CPU interface), SGIs between CPUs, LPIs through the ITS for MSIs, and a handler
//! table by INTID shared by all CPUs.
//!
//! Handlers run with IRQs masked, from the exception vector (or from an idle secondary
//! CPU after WFI), and must not block: they may not take a lock that the interrupted
//! code could hold (use `try_lock`). Allocating and printing are fine: the heap, frame
//! and console locks mask IRQs while held (`arch::irqlock`). What they count is in atomics.

pub mod its_cmd;

#[cfg(target_os = "none")]
pub mod gic;
#[cfg(target_os = "none")]
pub mod its;
#[cfg(target_os = "none")]
mod regs;
#[cfg(target_os = "none")]
pub mod timer;

#[cfg(target_os = "none")]
pub use hw::*;

/// How an interrupt line signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// The SGI that wakes an idle secondary CPU to look for a job (`arch::smp::run_on`).
pub const SGI_WAKE: u32 = 0;

/// ICC_SGI1R_EL1 for SGI `sgi` (0..15) to the one CPU with affinity `mpidr`, or `None`
/// if `sgi` is not an SGI or Aff0 >= 16 needs a range selector the CPU interface lacks.
/// Fields (GICv3 spec, ICC_SGI1R_EL1): TargetList \[15:0\] (bit Aff0 % 16), Aff1 \[23:16\],
/// INTID \[27:24\], Aff2 \[39:32\], IRM \[40\] = 0 (the list, not "all but me"),
/// RS \[47:44\] (Aff0 / 16), Aff3 \[55:48\].
pub fn sgi1r(sgi: u32, mpidr: u64, range_selector: bool) -> Option<u64> {
    if sgi > 15 {
        return None;
    }
    let aff0 = mpidr & 0xff;
    if aff0 >= 16 && !range_selector {
        return None;
    }
    let (aff1, aff2, aff3) = ((mpidr >> 8) & 0xff, (mpidr >> 16) & 0xff, (mpidr >> 32) & 0xff);
    Some((1 << (aff0 % 16)) | (aff1 << 16) | (u64::from(sgi) << 24) | (aff2 << 32) | ((aff0 / 16) << 44) | (aff3 << 48))
}

/// A GIC interrupt specifier from the device tree (`<type number flags>`, the
/// binding's `#interrupt-cells = 3` or 4): type 0 is an SPI (INTID 32 + number), type 1 a
/// PPI (INTID 16 + number); flags bits \[3:0\] are the trigger (1/2 edge, 4/8 level).
/// `None` for anything else (extended ranges, partitions, other controllers' formats).
pub fn gic_spec_to_intid(cells: &[u32]) -> Option<(u32, Trigger)> {
    if !(3..=4).contains(&cells.len()) {
        return None;
    }
    let (ty, num, flags) = (cells[0], cells[1], cells[2]);
    let intid = match ty {
        0 if num < 988 => 32 + num,
        1 if num < 16 => 16 + num,
        _ => return None,
    };
    let trigger = if flags & 0x3 != 0 { Trigger::Edge } else { Trigger::Level };
    Some((intid, trigger))
}

/// INTIDs of the two EL1 timers the kernel uses, as PPIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerIntids {
    /// The EL1 (non-secure) physical timer, CNTP.
    pub phys: u32,
    /// The virtual timer, CNTV.
    pub virt: u32,
}

/// The PPIs the Arm BSA assigns (what every DT seen so far names too): the fallback
/// when the DT has no usable timer node.
pub const BSA_TIMER_INTIDS: TimerIntids = TimerIntids { phys: 30, virt: 27 };

/// The EL1 timers' INTIDs from the DT's timer node: its "phys" and "virt" interrupts must
/// be GIC PPIs, the GIC their parent. `Err` says why not.
pub fn timer_intids(t: &crate::dt::ArchTimer, gic: &crate::dt::Gic) -> Result<TimerIntids, alloc::string::String> {
    use alloc::format;
    if !gic.is_parent(t.interrupt_parent) {
        return Err(format!("{}: interrupt parent is not the GIC {}", t.node, gic.node));
    }
    let ppi = |name: &str| {
        let (_, cells) = t.irqs.iter().find(|(n, _)| n == name).ok_or(format!("{}: no `{name}` interrupt", t.node))?;
        match gic_spec_to_intid(cells) {
            Some((intid, _)) if (16..32).contains(&intid) => Ok(intid),
            _ => Err(format!("{}: `{name}` interrupt {cells:x?} is not a GIC PPI", t.node)),
        }
    };
    Ok(TimerIntids { phys: ppi("phys")?, virt: ppi("virt")? })
}

#[cfg(target_os = "none")]
mod hw {
    use super::Trigger;
    use super::gic::{DEFAULT_PRIORITY, Gic, LPI_BASE};
    use super::its::Its;
    use crate::dt::Platform;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt;
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use spin::Mutex;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum IrqError {
        /// The platform has no usable interrupt controller.
        NoGic,
        Unsupported(&'static str),
        NoRedistributor {
            mpidr: u64,
        },
        /// A register did not acknowledge within its bound.
        Timeout(&'static str),
        BadIntid(u32),
        /// enable() of an interrupt nobody handles.
        NoHandler(u32),
        NoMemory(&'static str),
        NoLpis(&'static str),
        NoIts,
        Its {
            node: String,
            why: String,
        },
        /// `irq::init` has not run (or failed).
        NotReady,
        Gic(arm_gic::gicv3::GicError),
    }

    impl fmt::Display for IrqError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                IrqError::NoGic => write!(f, "no GIC in the device tree"),
                IrqError::Unsupported(w) => write!(f, "unsupported: {w}"),
                IrqError::NoRedistributor { mpidr } => write!(f, "no redistributor for MPIDR {mpidr:#x}"),
                IrqError::Timeout(w) => write!(f, "{w} did not settle within its bound"),
                IrqError::BadIntid(i) => write!(f, "INTID {i} is not one this GIC can configure"),
                IrqError::NoHandler(i) => write!(f, "INTID {i} has no handler"),
                IrqError::NoMemory(w) => write!(f, "out of memory for the {w}"),
                IrqError::NoLpis(w) => write!(f, "no LPIs: {w}"),
                IrqError::NoIts => write!(f, "no ITS for this device"),
                IrqError::Its { node, why } => write!(f, "{node}: {why}"),
                IrqError::NotReady => write!(f, "interrupts are not initialised"),
                IrqError::Gic(e) => write!(f, "arm-gic: {e}"),
            }
        }
    }

    /// INTIDs 0..1020 (SGI, PPI, SPI) have a slot each; LPIs from 8192 get this many.
    pub const LPI_SLOTS: usize = 1024;
    const SLOTS: usize = 1020 + LPI_SLOTS;
    /// Interrupts acknowledged per exception before returning (a storm cannot livelock).
    const MAX_PER_EXCEPTION: usize = 32;

    struct Slot {
        /// `fn(u32, usize)` or 0.
        handler: AtomicUsize,
        data: AtomicUsize,
        count: AtomicU64,
    }

    static SLOT_TABLE: [Slot; SLOTS] =
        [const { Slot { handler: AtomicUsize::new(0), data: AtomicUsize::new(0), count: AtomicU64::new(0) } }; SLOTS];
    static SPURIOUS: AtomicU64 = AtomicU64::new(0);
    static UNHANDLED: AtomicU64 = AtomicU64::new(0);
    static READY: AtomicBool = AtomicBool::new(false);
    static GIC: Mutex<Option<Gic>> = Mutex::new(None);

    /// A handler is registered for `intid`.
    fn has_handler(intid: u32) -> bool {
        slot(intid).is_some_and(|s| s.handler.load(Ordering::SeqCst) != 0)
    }

    fn slot(intid: u32) -> Option<&'static Slot> {
        let i = match intid {
            0..1020 => intid as usize,
            _ if intid >= LPI_BASE => 1020 + (intid - LPI_BASE) as usize,
            _ => return None,
        };
        SLOT_TABLE.get(i)
    }

    /// Interrupts on: GIC from `p`, every ITS, the vector hook, then DAIF.I cleared.
    /// Interrupt sources stay disabled until someone registers and enables them.
    pub fn init(p: &Platform) -> Result<(), IrqError> {
        let desc = p.gic.as_ref().ok_or(IrqError::NoGic)?;
        // SAFETY: the DT describes this machine's GIC; the CPU map covers it as device
        // memory; nothing else drives it (init runs once, at boot).
        let mut g = unsafe { Gic::probe(desc)? };
        let mut problems = Vec::new();
        if g.lpis.is_some() {
            for d in &desc.its {
                // SAFETY: as above, for the ITS frames the DT lists.
                match unsafe { Its::probe(d, g.rd_base, g.processor_number) } {
                    Ok(its) => g.its.push(its),
                    Err(e) => problems.push(e),
                }
            }
        }
        *GIC.lock() = Some(g);
        crate::arch::exceptions::set_irq_handler(handle_irq);
        // The wake SGI has nothing to do: being taken is what wakes a CPU from WFI.
        register(super::SGI_WAKE, |_| {})?;
        READY.store(true, Ordering::SeqCst);
        unmask();
        match problems.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn ready() -> bool {
        READY.load(Ordering::SeqCst)
    }

    /// Interrupts for a secondary CPU, run on that CPU: its redistributor (found by its
    /// MPIDR, woken) and CPU interface (SRE, PMR, Group 1 on), `SGI_WAKE` and every PPI
    /// that has a handler by then (per-CPU timers: whichever CPU arms one takes it) enabled.
    /// IRQs stay masked (DAIF.I): the CPU takes them in `service_pending`, after WFI.
    pub fn init_this_cpu() -> Result<(), IrqError> {
        if !ready() {
            return Err(IrqError::NotReady);
        }
        super::gic::enable_sre()?;
        let mpidr = crate::arch::mpidr();
        if super::sgi1r(super::SGI_WAKE, mpidr, super::gic::sgi_range_selector()).is_none() {
            return Err(IrqError::Unsupported("Aff0 >= 16 without ICC_CTLR_EL1.RSS: no SGI can reach this CPU"));
        }
        with_gic(|g| g.add_cpu(mpidr).map(|_| ()))?;
        super::gic::init_cpu_interface();
        set_private_enabled(mpidr, super::SGI_WAKE, true)?;
        for ppi in 16..32 {
            if has_handler(ppi) {
                set_private_enabled(mpidr, ppi, true)?;
            }
        }
        Ok(())
    }

    /// Enable or disable SGI/PPI `intid` on the CPU with affinity `mpidr` (its
    /// redistributor must be up: the boot CPU's, or a secondary's after `init_this_cpu`).
    pub fn set_private_enabled(mpidr: u64, intid: u32, on: bool) -> Result<(), IrqError> {
        if on && !has_handler(intid) {
            return Err(IrqError::NoHandler(intid));
        }
        with_gic(|g| g.set_private_enabled(mpidr, intid, on))
    }

    /// Send SGI `sgi` to the CPU with affinity `mpidr` (Group 1, by affinity). Stores
    /// made before the call are visible to that CPU when it takes the SGI.
    pub fn send_sgi(sgi: u32, mpidr: u64) -> Result<(), IrqError> {
        if !ready() {
            return Err(IrqError::NotReady);
        }
        let v = super::sgi1r(sgi, mpidr, super::gic::sgi_range_selector()).ok_or(IrqError::BadIntid(sgi))?;
        super::gic::write_sgi1r(v);
        Ok(())
    }

    /// Take what is pending at this CPU's interface with IRQs masked (an idle CPU after
    /// WFI): acknowledge, dispatch, EOI, bounded. Returns how many were handled; finding
    /// nothing (a spurious wake-up) is not counted as an anomaly.
    pub fn service_pending() -> usize {
        use arm_gic::InterruptGroup;
        use arm_gic::gicv3::GicCpuInterface;
        if GicCpuInterface::get_pending_interrupt(InterruptGroup::Group1).is_none() {
            return 0;
        }
        dispatch()
    }

    /// Clear DAIF.I: IRQs are taken from now on.
    pub fn unmask() {
        // SAFETY: only unmasks IRQs; the vectors and handler hook are installed.
        unsafe { core::arch::asm!("msr daifclr, #2", "isb", options(nomem, nostack)) };
    }

    /// One line for the boot report.
    pub fn summary() -> String {
        let g = GIC.lock();
        let Some(g) = g.as_ref() else { return "interrupts: not initialised".into() };
        let mut s = alloc::format!(
            "GICv3 dist {:#x}, redistributor {:#x} (processor {}), {} SPIs",
            g.dist_base,
            g.rd_base,
            g.processor_number,
            g.spis
        );
        match (g.lpi_range(), g.lpi_problem) {
            (Some((lo, hi)), _) => s += &alloc::format!(", LPIs {lo}..{hi}"),
            (None, Some(why)) => s += &alloc::format!(", no LPIs ({why})"),
            _ => {}
        }
        for its in &g.its {
            s += &alloc::format!(
                ", ITS {:#x} ({} DeviceID bits, {} KiB of tables)",
                its.base,
                its.dev_bits,
                its.table_bytes() / 1024
            );
        }
        s
    }

    /// Install `f` for `intid`. It is called with the INTID (interrupt acknowledged,
    /// EOI after it returns).
    pub fn register(intid: u32, f: fn(u32)) -> Result<(), IrqError> {
        fn call_plain(intid: u32, f: usize) {
            // SAFETY: register_plain stores only `fn(u32)` pointers in `data`.
            let f: fn(u32) = unsafe { core::mem::transmute(f) };
            f(intid)
        }
        register_with(intid, call_plain, f as usize)
    }

    /// Install `f` for `intid`, called as `f(intid, data)`.
    pub fn register_with(intid: u32, f: fn(u32, usize), data: usize) -> Result<(), IrqError> {
        let s = slot(intid).ok_or(IrqError::BadIntid(intid))?;
        s.handler.store(0, Ordering::SeqCst);
        s.data.store(data, Ordering::SeqCst);
        s.handler.store(f as usize, Ordering::SeqCst);
        Ok(())
    }

    /// Disable `intid` and remove its handler.
    pub fn unregister(intid: u32) -> Result<(), IrqError> {
        let r = disable(intid);
        if let Some(s) = slot(intid) {
            s.handler.store(0, Ordering::SeqCst);
        }
        r
    }

    fn with_gic<R>(f: impl FnOnce(&mut Gic) -> Result<R, IrqError>) -> Result<R, IrqError> {
        let mut g = GIC.lock();
        f(g.as_mut().ok_or(IrqError::NotReady)?)
    }

    /// Trigger and priority of an SPI or PPI (it stays as enabled/disabled as it was).
    pub fn configure(intid: u32, trigger: Trigger, priority: u8) -> Result<(), IrqError> {
        with_gic(|g| g.configure(intid, trigger, priority))
    }

    /// Let `intid` through (it must have a handler).
    pub fn enable(intid: u32) -> Result<(), IrqError> {
        let s = slot(intid).ok_or(IrqError::BadIntid(intid))?;
        if s.handler.load(Ordering::SeqCst) == 0 {
            return Err(IrqError::NoHandler(intid));
        }
        set_enabled(intid, true)
    }

    pub fn disable(intid: u32) -> Result<(), IrqError> {
        set_enabled(intid, false)
    }

    fn set_enabled(intid: u32, on: bool) -> Result<(), IrqError> {
        with_gic(|g| {
            if intid < LPI_BASE {
                return g.set_enabled(intid, on);
            }
            // LPI: its configuration byte, then INV through the ITS that maps it.
            let &(its, devid, eventid) = g.lpi_owner.get(&intid).ok_or(IrqError::BadIntid(intid))?;
            g.set_lpi(intid, DEFAULT_PRIORITY, on)?;
            let its = g.its.get_mut(its).ok_or(IrqError::NoIts)?;
            its.run(&[super::its_cmd::ItsCommand::Inv { devid, eventid }])
        })
    }

    /// How many times `intid` was taken.
    pub fn count(intid: u32) -> u64 {
        slot(intid).map_or(0, |s| s.count.load(Ordering::SeqCst))
    }

    /// (spurious acknowledges, interrupts without a handler).
    pub fn anomalies() -> (u64, u64) {
        (SPURIOUS.load(Ordering::SeqCst), UNHANDLED.load(Ordering::SeqCst))
    }

    /// The IRQ exception (on any CPU): acknowledge, dispatch, EOI, until nothing is
    /// pending (bounded).
    fn handle_irq() {
        dispatch();
    }

    /// Acknowledge, dispatch, EOI until nothing is pending, at most MAX_PER_EXCEPTION.
    fn dispatch() -> usize {
        use arm_gic::InterruptGroup;
        use arm_gic::gicv3::GicCpuInterface;
        let mut handled = 0;
        for _ in 0..MAX_PER_EXCEPTION {
            let Some(id) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) else {
                SPURIOUS.fetch_add(1, Ordering::Relaxed);
                return handled;
            };
            let intid = id.raw_value();
            if (1020..1024).contains(&intid) {
                // Special INTIDs are not acknowledged, so there is nothing to EOI.
                SPURIOUS.fetch_add(1, Ordering::Relaxed);
                return handled;
            }
            handled += 1;
            match slot(intid) {
                Some(s) => {
                    s.count.fetch_add(1, Ordering::SeqCst);
                    let h = s.handler.load(Ordering::SeqCst);
                    if h == 0 {
                        UNHANDLED.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // SAFETY: only `fn(u32, usize)` pointers are stored in `handler`.
                        let f: fn(u32, usize) = unsafe { core::mem::transmute(h) };
                        f(intid, s.data.load(Ordering::SeqCst));
                    }
                }
                None => {
                    UNHANDLED.fetch_add(1, Ordering::Relaxed);
                }
            }
            GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
            if GicCpuInterface::get_pending_interrupt(InterruptGroup::Group1).is_none() {
                return handled;
            }
        }
        handled
    }

    /// An MSI the device must write: `data` to `doorbell` (the ITS's GITS_TRANSLATER,
    /// a physical address; behind an SMMU the device is given an IOVA for it).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MsiVector {
        pub intid: u32,
        pub doorbell: u64,
        pub data: u32,
        pub devid: u32,
        /// Index of the ITS.
        pub its: usize,
    }

    /// A new LPI for (ITS with phandle `msi_parent`, or the first ITS, DeviceID
    /// `devid`), mapped and disabled. Register a handler, then `enable(v.intid)`.
    pub fn alloc_msi(msi_parent: Option<u32>, devid: u32) -> Result<MsiVector, IrqError> {
        with_gic(|g| {
            let i = match msi_parent {
                Some(ph) => g.its.iter().position(|t| t.phandle == ph),
                None => (!g.its.is_empty()).then_some(0),
            }
            .ok_or(IrqError::NoIts)?;
            let intid = g.alloc_lpi()?;
            g.set_lpi(intid, DEFAULT_PRIORITY, false)?;
            let its = &mut g.its[i];
            let data = its.map_event(devid, intid)?;
            let doorbell = its.doorbell();
            g.lpi_owner.insert(intid, (i, devid, data));
            Ok(MsiVector { intid, doorbell, data, devid, its: i })
        })
    }

    /// Undo `alloc_msi`: the LPI is disabled, its handler removed, the ITS mapping
    /// discarded (and the device's ITT freed with its last vector).
    pub fn free_msi(v: &MsiVector) -> Result<(), IrqError> {
        if let Some(s) = slot(v.intid) {
            s.handler.store(0, Ordering::SeqCst);
        }
        with_gic(|g| {
            g.set_lpi(v.intid, DEFAULT_PRIORITY, false)?;
            g.lpi_owner.remove(&v.intid);
            let its = g.its.get_mut(v.its).ok_or(IrqError::NoIts)?;
            its.unmap_event(v.devid, v.data)?;
            g.free_lpi(v.intid);
            Ok(())
        })
    }

    /// Make `v`'s LPI pending through the ITS (INT command), as if the device had
    /// written its MSI: proves the ITS -> redistributor -> CPU path without a device.
    pub fn its_int(v: &MsiVector) -> Result<(), IrqError> {
        with_gic(|g| {
            let its = g.its.get_mut(v.its).ok_or(IrqError::NoIts)?;
            its.run(&[super::its_cmd::ItsCommand::Int { devid: v.devid, eventid: v.data }])
        })
    }

    /// Physical doorbells (GITS_TRANSLATER) of every ITS in use.
    pub fn doorbells() -> Vec<u64> {
        GIC.lock().as_ref().map(|g| g.its.iter().map(Its::doorbell).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gic_specifiers() {
        // QEMU virt's SMMU: <GIC_SPI 74 IRQ_TYPE_EDGE_RISING>.
        assert_eq!(gic_spec_to_intid(&[0, 74, 1]), Some((106, Trigger::Edge)));
        // The architected timer's EL1 physical PPI: <GIC_PPI 14 IRQ_TYPE_LEVEL_HIGH>.
        assert_eq!(gic_spec_to_intid(&[1, 14, 4]), Some((30, Trigger::Level)));
        // 4-cell form (PPI partitions) keeps the first three.
        assert_eq!(gic_spec_to_intid(&[0, 3, 4, 0]), Some((35, Trigger::Level)));
        assert_eq!(gic_spec_to_intid(&[0, 988, 4]), None, "beyond INTID 1019");
        assert_eq!(gic_spec_to_intid(&[1, 16, 4]), None, "PPI numbers stop at 15");
        assert_eq!(gic_spec_to_intid(&[2, 0, 4]), None, "extended SPI range");
        // Real boards: RK3588 (4 cells, edge), HiSilicon D05 (behind mbigen, 2 cells).
        assert_eq!(gic_spec_to_intid(&[0, 0x171, 1, 0]), Some((401, Trigger::Edge)));
        assert_eq!(gic_spec_to_intid(&[0x2dd, 1]), None, "another controller's 2-cell format");
    }

    #[test]
    fn sgi1r_by_affinity() {
        // QEMU virt CPU 1: MPIDR Aff0 = 1 -> TargetList bit 1, INTID in [27:24].
        assert_eq!(sgi1r(0, 0x1, false), Some(0b10));
        assert_eq!(sgi1r(7, 0x1, false), Some((7 << 24) | 0b10));
        // Aff1/Aff2/Aff3 land in their fields, Aff0 picks the list bit.
        assert_eq!(sgi1r(3, 0x12_0004_0305, false), Some((1 << 5) | (3 << 16) | (3 << 24) | (4 << 32) | (0x12 << 48)));
        assert_eq!(sgi1r(1, 0x0004_0000, false), Some(1 | (1 << 24) | (4 << 32)));
        // Aff0 >= 16 needs the range selector: RS = Aff0 / 16.
        assert_eq!(sgi1r(2, 0x23, false), None);
        assert_eq!(sgi1r(2, 0x23, true), Some((1 << 3) | (2 << 24) | (2 << 44)));
        // IRM stays 0 (a list, never "everyone else"); SGIs stop at 15.
        assert_eq!(sgi1r(15, 0x0, false).map(|v| v & (1 << 40)), Some(0));
        assert_eq!(sgi1r(16, 0x1, false), None);
    }

    /// Every DTB we carry names the BSA's PPIs, by position (QEMU, FVP, D05, i.MX95 with
    /// GICv2-style CPU masks in the flags) or by `interrupt-names` (RK3588, 4 cells).
    #[test]
    fn timer_intids_from_real_dtbs() {
        for (name, dtb) in [
            ("qemu virt", &include_bytes!("../../tests/dt/qemu-virt-smmuv3.dtb")[..]),
            ("fvp", include_bytes!("../../tests/dt/boards/fvp-base-revc.dtb")),
            ("d05", include_bytes!("../../tests/dt/boards/hip07-d05.dtb")),
            ("imx95", include_bytes!("../../tests/dt/boards/imx95-19x19-evk.dtb")),
            ("rock 5b", include_bytes!("../../tests/dt/boards/rk3588-rock-5b.dtb")),
        ] {
            let p = crate::dt::describe(dtb).unwrap();
            let t = p.timer.as_ref().unwrap_or_else(|| panic!("{name}: no timer node"));
            let gic = p.gic.as_ref().unwrap();
            assert_eq!(timer_intids(t, gic), Ok(BSA_TIMER_INTIDS), "{name}: {t:?}");
        }
        let rock = crate::dt::describe(include_bytes!("../../tests/dt/boards/rk3588-rock-5b.dtb")).unwrap();
        let names: std::vec::Vec<_> = rock.timer.unwrap().irqs.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["sec-phys", "phys", "virt", "hyp-phys", "hyp-virt"]);
    }

    /// What the DT says wins; anything that is not a GIC PPI is refused with a reason.
    #[test]
    fn timer_intids_from_crafted_nodes() {
        let p = crate::dt::describe(include_bytes!("../../tests/dt/qemu-virt-smmuv3.dtb")).unwrap();
        let gic = p.gic.clone().unwrap();
        let base = p.timer.clone().unwrap();
        let with = |irqs: &[(&str, &[u32])]| crate::dt::ArchTimer {
            irqs: irqs.iter().map(|(n, c)| ((*n).into(), c.to_vec())).collect(),
            ..base.clone()
        };
        // Other PPIs, named out of order.
        let t = with(&[("virt", &[1, 4, 4]), ("phys", &[1, 3, 4])]);
        assert_eq!(timer_intids(&t, &gic), Ok(TimerIntids { phys: 19, virt: 20 }));
        let why = |t: &crate::dt::ArchTimer| timer_intids(t, &gic).unwrap_err();
        assert!(why(&with(&[("phys", &[1, 14, 4])])).contains("no `virt`"));
        assert!(why(&with(&[("phys", &[0, 14, 4]), ("virt", &[1, 11, 4])])).contains("not a GIC PPI"), "an SPI");
        assert!(why(&with(&[("phys", &[1, 14]), ("virt", &[1, 11, 4])])).contains("not a GIC PPI"), "2 cells");
        let other_parent = crate::dt::ArchTimer { interrupt_parent: Some(0xdead), ..base.clone() };
        assert!(why(&other_parent).contains("not the GIC"));
    }
}
