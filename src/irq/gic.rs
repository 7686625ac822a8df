//! GICv3 bring-up from the platform description: distributor, each CPU's redistributor
//! (found by affinity), CPU interface, and the LPI configuration and pending tables.
//!
//! Per-interrupt configuration of SPIs and PPIs (group, priority, trigger, routing,
//! enable) and the CPU interface (SRE, PMR, IAR/EOI, group enable) go through the
//! `arm-gic` crate. Written here instead: GICD_CTLR and GICR_WAKER, because the crate
//! waits on RWP/ChildrenAsleep without a bound; finding the redistributor by MPIDR
//! across several regions (the crate indexes frames by CPU number); LPIs and the ITS,
//! which the crate does not cover.

use super::its_cmd::lpi_property;
use super::regs::{GICD_CTLR, GICR_CTLR, GICR_TYPER, GICR_WAKER, GicdHead, GicrRd, RD_RAWAWB, SH_INNER, SH_MASK};
use super::{IrqError, Trigger};
use crate::arch::cache;
use crate::arch::timer::Deadline;
use crate::dt;
use crate::mm::frames;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicDistributor, GicRedistributor, Group};
use arm_gic::{IntId, UniqueMmioPointer};
use core::arch::asm;
use core::ptr::NonNull;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

/// Bound for RWP, WAKER and similar acknowledgements.
const ACK_TIMEOUT_MS: u64 = 100;
/// Priority of every interrupt we enable (lower is more urgent; Linux uses 0xa0).
pub const DEFAULT_PRIORITY: u8 = 0xa0;
/// Only priorities below this reach the CPU.
const PMR: u8 = 0xf0;
/// First LPI INTID.
pub const LPI_BASE: u32 = 8192;
/// INTID bits we configure for LPIs: 2^14 INTIDs, i.e. LPIs 8192..16383.
const LPI_ID_BITS: u32 = 14;

/// The LPI tables of this CPU's redistributor.
pub struct Lpis {
    prop_pa: u64,
    prop_len: usize,
    /// Tables are Inner Shareable (else the CPU cleans what it writes).
    coherent: bool,
    next: u32,
    limit: u32,
    /// Given back by `free_lpi`, handed out again first.
    free: Vec<u32>,
}

/// A secondary CPU's redistributor (its SGIs and PPIs are configured here; any CPU
/// may write it, only its own CPU receives what it enables).
struct CpuRd {
    mpidr: u64,
    rd_base: u64,
    rd: &'static GicrRd,
    gicr: GicRedistributor<'static>,
}

pub struct Gic {
    pub dist_base: u64,
    /// The DT's redistributor regions, searched again for each secondary CPU.
    redist: Vec<dt::Region>,
    /// Redistributors of the secondary CPUs brought up by `add_cpu`.
    others: Vec<CpuRd>,
    gicd: GicDistributor<'static>,
    head: &'static GicdHead,
    gicr: GicRedistributor<'static>,
    rd: &'static GicrRd,
    /// RD_base of this CPU's redistributor.
    pub rd_base: u64,
    pub processor_number: u16,
    pub mpidr: u64,
    pub spis: u32,
    pub lpis: Option<Lpis>,
    /// Why LPIs are not available, if they are not.
    pub lpi_problem: Option<&'static str>,
    pub its: Vec<super::its::Its>,
    /// LPI -> (ITS index, DeviceID, EventID), for INV after a configuration change.
    pub lpi_owner: BTreeMap<u32, (usize, u32, u32)>,
}

// SAFETY: the register views are device memory owned by this driver; the GIC mutex
// serialises every access that is not a CPU system register.
unsafe impl Send for Gic {}

/// The MPIDR bits that name a CPU (Aff3, Aff2, Aff1, Aff0).
pub const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

fn this_mpidr() -> u64 {
    crate::arch::mpidr()
}

/// The 32-bit affinity GICR_TYPER reports: Aff3.Aff2.Aff1.Aff0.
fn affinity_of(mpidr: u64) -> u32 {
    ((((mpidr >> 32) & 0xff) << 24) | (mpidr & 0x00ff_ffff)) as u32
}

fn wait_clear(what: &'static str, mut busy: impl FnMut() -> bool) -> Result<(), IrqError> {
    let d = Deadline::after_ms(ACK_TIMEOUT_MS);
    while busy() {
        if d.expired() {
            return Err(IrqError::Timeout(what));
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// RD_base of the redistributor whose GICR_TYPER.Affinity is `mpidr`'s, walking every
/// region frame by frame (128 KiB, or 256 KiB with virtual LPIs) until GICR_TYPER.Last.
fn find_redistributor(regions: &[dt::Region], mpidr: u64) -> Option<&'static GicrRd> {
    let aff = affinity_of(mpidr);
    for r in regions {
        let mut off = 0u64;
        while off + 0x2_0000 <= r.size {
            // SAFETY: the DT says this region holds redistributor frames; the CPU map
            // covers it as device memory; reading GICR_TYPER has no side effects.
            let rd = unsafe { &*((r.base + off) as *const GicrRd) };
            let t = rd.typer.extract();
            if t.read(GICR_TYPER::AFFINITY) as u32 == aff {
                return Some(rd);
            }
            if t.is_set(GICR_TYPER::LAST) {
                break;
            }
            off += if t.is_set(GICR_TYPER::VLPIS) { 0x4_0000 } else { 0x2_0000 };
        }
    }
    None
}

impl Gic {
    /// Bring up the distributor, this CPU's redistributor and CPU interface, with every
    /// interrupt disabled, Group 1 Non-secure, affinity routing on.
    ///
    /// # Safety
    /// `desc` must describe the GICv3 of this machine, mapped as device memory, and
    /// nothing else may drive it.
    pub unsafe fn probe(desc: &dt::Gic) -> Result<Gic, IrqError> {
        if desc.version != 3 {
            return Err(IrqError::Unsupported("GICv2 (only GICv3 is driven)"));
        }
        // The CPU interface first: without SRE there are no ICC_* registers.
        enable_sre()?;
        let mpidr = this_mpidr();
        let rd = find_redistributor(&desc.redist, mpidr).ok_or(IrqError::NoRedistributor { mpidr })?;
        let rd_base = rd as *const GicrRd as u64;
        // SAFETY: dist_base is the distributor frame (caller); GicdHead covers its
        // first two registers, which the crate's handle below never writes (only
        // configure_default_settings/modify_control would, and they are not used).
        let head = unsafe { &*(desc.dist_base as *const GicdHead) };
        let gicd_ptr = NonNull::new(desc.dist_base as *mut Gicd).ok_or(IrqError::NoGic)?;
        let gicr_ptr = NonNull::new(rd_base as *mut GicrSgi).ok_or(IrqError::NoRedistributor { mpidr })?;
        // SAFETY: the frames are the distributor and this CPU's RD+SGI frames, device
        // memory owned by this driver; our own views touch only GICD_CTLR and RD-frame
        // registers the crate does not use.
        let (gicd, gicr) = unsafe {
            (
                GicDistributor::new(UniqueMmioPointer::new(gicd_ptr)),
                GicRedistributor::new(UniqueMmioPointer::new(gicr_ptr)),
            )
        };
        let spis = gicd.typer().num_spis();
        let processor_number = rd.typer.read(GICR_TYPER::PROCESSOR_NUMBER) as u16;
        let mut g = Gic {
            dist_base: desc.dist_base,
            redist: desc.redist.clone(),
            others: Vec::new(),
            gicd,
            head,
            gicr,
            rd,
            rd_base,
            processor_number,
            mpidr,
            spis,
            lpis: None,
            lpi_problem: None,
            its: Vec::new(),
            lpi_owner: BTreeMap::new(),
        };
        g.init_distributor()?;
        g.init_redistributor()?;
        init_cpu_interface();
        match g.init_lpis() {
            Ok(l) => g.lpis = Some(l),
            Err(why) => g.lpi_problem = Some(why),
        }
        Ok(g)
    }

    fn wait_dist_rwp(&self) -> Result<(), IrqError> {
        wait_clear("GICD_CTLR.RWP", || self.head.ctlr.is_set(GICD_CTLR::RWP))
    }

    fn wait_rd_rwp(&self) -> Result<(), IrqError> {
        wait_rwp(self.rd)
    }

    /// Linux gic_dist_init: groups off, every SPI disabled and Group 1, then affinity
    /// routing and Group 1 on.
    fn init_distributor(&mut self) -> Result<(), IrqError> {
        self.head.ctlr.set(0);
        self.wait_dist_rwp()?;
        self.gicd.enable_all_interrupts(false);
        self.wait_dist_rwp()?;
        for n in 0..self.spis.min(IntId::MAX_SPI_COUNT) {
            self.gicd.set_group(IntId::spi(n), Group::Group1NS).map_err(IrqError::Gic)?;
        }
        // Bits 0, 1, 4: EnableGrp1(NS), EnableGrp1A, ARE_NS -- with DS=1 the same bits
        // are EnableGrp0, EnableGrp1, ARE, so one value serves both views.
        self.head.ctlr.write(GICD_CTLR::ARE_NS::SET + GICD_CTLR::ENABLE_GRP1A::SET + GICD_CTLR::ENABLE_GRP1::SET);
        self.wait_dist_rwp()?;
        if !self.head.ctlr.is_set(GICD_CTLR::ARE_NS) {
            return Err(IrqError::Unsupported("the distributor refuses affinity routing (GICD_CTLR.ARE_NS)"));
        }
        Ok(())
    }

    fn init_redistributor(&mut self) -> Result<(), IrqError> {
        init_redistributor(self.rd, &mut self.gicr)
    }

    /// Bring up the redistributor of the CPU with affinity `mpidr` (a secondary, from
    /// that CPU): found by GICR_TYPER.Affinity, woken, every SGI/PPI disabled and Group 1.
    /// Its CPU interface is the caller's (`init_cpu_interface` on that CPU).
    pub fn add_cpu(&mut self, mpidr: u64) -> Result<u64, IrqError> {
        let mpidr = mpidr & MPIDR_AFF_MASK;
        if let Some(c) = self.others.iter().find(|c| c.mpidr == mpidr) {
            return Ok(c.rd_base);
        }
        let rd = find_redistributor(&self.redist, mpidr).ok_or(IrqError::NoRedistributor { mpidr })?;
        let rd_base = rd as *const GicrRd as u64;
        if rd_base == self.rd_base {
            return Err(IrqError::NoRedistributor { mpidr });
        }
        let ptr = NonNull::new(rd_base as *mut GicrSgi).ok_or(IrqError::NoRedistributor { mpidr })?;
        // SAFETY: the RD+SGI frames of this CPU's redistributor, found by affinity in the
        // regions the DT gives, device memory owned by this driver; nothing else has a
        // handle on them (`others` holds at most one per MPIDR, the boot CPU's is apart).
        let mut gicr = GicRedistributor::new(unsafe { UniqueMmioPointer::new(ptr) });
        init_redistributor(rd, &mut gicr)?;
        self.others.push(CpuRd { mpidr, rd_base, rd, gicr });
        Ok(rd_base)
    }

    /// Enable or disable SGI/PPI `intid` in the redistributor of the CPU with affinity
    /// `mpidr` (the boot CPU's or one `add_cpu` brought up). Disabling waits for RWP.
    pub fn set_private_enabled(&mut self, mpidr: u64, intid: u32, on: bool) -> Result<(), IrqError> {
        let id = IntId::try_from(intid).map_err(|_| IrqError::BadIntid(intid))?;
        if !id.is_private() {
            return Err(IrqError::BadIntid(intid));
        }
        let mpidr = mpidr & MPIDR_AFF_MASK;
        if mpidr == self.mpidr & MPIDR_AFF_MASK {
            return self.set_enabled(intid, on);
        }
        let c = self.others.iter_mut().find(|c| c.mpidr == mpidr).ok_or(IrqError::NoRedistributor { mpidr })?;
        c.gicr.enable_interrupt(id, on).map_err(IrqError::Gic)?;
        if !on {
            wait_rwp(c.rd)?;
        }
        Ok(())
    }

    /// Configuration and pending tables for LPIs 8192..2^14, LPIs on. Fails (with a
    /// reason) if the GIC has no LPIs or firmware already enabled them with its tables.
    fn init_lpis(&mut self) -> Result<Lpis, &'static str> {
        if !self.gicd.typer().lpis_supported() {
            return Err("GICD_TYPER.LPIS = 0");
        }
        if !self.rd.typer.is_set(GICR_TYPER::PLPIS) {
            return Err("GICR_TYPER.PLPIS = 0");
        }
        if self.rd.ctlr.is_set(GICR_CTLR::ENABLE_LPIS) {
            return Err("LPIs already enabled by firmware (its tables cannot be replaced)");
        }
        let id_bits = self.gicd.typer().id_bits().min(LPI_ID_BITS);
        if id_bits < LPI_ID_BITS {
            return Err("fewer than 14 INTID bits: no LPI range");
        }
        let prop_len = (1usize << id_bits) - LPI_BASE as usize;
        let prop_pa =
            frames::alloc_zeroed(prop_len.div_ceil(4096)).ok_or("no memory for the LPI configuration table")?;
        for i in 0..prop_len {
            // SAFETY: the table was just allocated for us, prop_len bytes long.
            unsafe { core::ptr::write_volatile((prop_pa as *mut u8).add(i), lpi_property(DEFAULT_PRIORITY, false)) };
        }
        // Pending table: one bit per INTID, 64 KiB aligned (16 pages are).
        let pend_pa = frames::alloc_zeroed(16).ok_or("no memory for the LPI pending table")?;
        let prop = prop_pa | SH_INNER | RD_RAWAWB | u64::from(id_bits - 1);
        self.rd.propbaser.set(prop);
        let coherent = self.rd.propbaser.get() & SH_MASK != 0;
        if !coherent {
            // Non-shareable: the redistributor reads memory, not our caches.
            self.rd.propbaser.set(prop_pa | u64::from(id_bits - 1));
        }
        // PTZ (bit 62): the pending table is zero.
        let pend = pend_pa | (1 << 62) | if coherent { SH_INNER | RD_RAWAWB } else { 0 };
        self.rd.pendbaser.set(pend);
        cache::clean(prop_pa as usize, prop_len);
        cache::clean(pend_pa as usize, 16 * 4096);
        cache::dsb_sy();
        self.rd.ctlr.modify(GICR_CTLR::ENABLE_LPIS::SET);
        if !self.rd.ctlr.is_set(GICR_CTLR::ENABLE_LPIS) {
            return Err("GICR_CTLR.EnableLPIs does not stick");
        }
        Ok(Lpis { prop_pa, prop_len, coherent, next: LPI_BASE, limit: LPI_BASE + prop_len as u32, free: Vec::new() })
    }

    /// Configure an SPI or PPI (Group 1, routed to this CPU); it stays disabled.
    pub fn configure(&mut self, intid: u32, trigger: Trigger, priority: u8) -> Result<(), IrqError> {
        let id = IntId::try_from(intid).map_err(|_| IrqError::BadIntid(intid))?;
        let t = match trigger {
            Trigger::Edge => arm_gic::Trigger::Edge,
            Trigger::Level => arm_gic::Trigger::Level,
        };
        if id.is_private() {
            self.gicr.set_trigger(id, t).map_err(IrqError::Gic)?;
            self.gicr.set_interrupt_priority(id, priority).map_err(IrqError::Gic)?;
            self.gicr.set_group(id, Group::Group1NS).map_err(IrqError::Gic)?;
        } else if id.is_spi() && intid - 32 < self.spis {
            self.gicd.set_trigger(id, t).map_err(IrqError::Gic)?;
            self.gicd.set_interrupt_priority(id, priority).map_err(IrqError::Gic)?;
            self.gicd.set_group(id, Group::Group1NS).map_err(IrqError::Gic)?;
            self.gicd.set_routing(id, Some(self.mpidr)).map_err(IrqError::Gic)?;
        } else {
            return Err(IrqError::BadIntid(intid));
        }
        Ok(())
    }

    /// Enable or disable an SPI or PPI. Disabling waits (bounded) until it took effect.
    pub fn set_enabled(&mut self, intid: u32, on: bool) -> Result<(), IrqError> {
        let id = IntId::try_from(intid).map_err(|_| IrqError::BadIntid(intid))?;
        if id.is_private() {
            self.gicr.enable_interrupt(id, on).map_err(IrqError::Gic)?;
            if !on {
                self.wait_rd_rwp()?;
            }
        } else if id.is_spi() && intid - 32 < self.spis {
            self.gicd.enable_interrupt(id, on).map_err(IrqError::Gic)?;
            if !on {
                self.wait_dist_rwp()?;
            }
        } else {
            return Err(IrqError::BadIntid(intid));
        }
        Ok(())
    }

    /// A free LPI INTID.
    pub fn alloc_lpi(&mut self) -> Result<u32, IrqError> {
        let l = self.lpis.as_mut().ok_or(IrqError::NoLpis(self.lpi_problem.unwrap_or("not initialised")))?;
        if let Some(id) = l.free.pop() {
            return Ok(id);
        }
        if l.next >= l.limit || l.next - LPI_BASE >= super::LPI_SLOTS as u32 {
            return Err(IrqError::NoLpis("all LPIs handed out"));
        }
        let id = l.next;
        l.next += 1;
        Ok(id)
    }

    /// Write the configuration byte of `intid` (the ITS must then INV it).
    pub fn set_lpi(&mut self, intid: u32, priority: u8, enabled: bool) -> Result<(), IrqError> {
        let l = self.lpis.as_ref().ok_or(IrqError::NoLpis(self.lpi_problem.unwrap_or("not initialised")))?;
        let off = intid.checked_sub(LPI_BASE).map(|o| o as usize).filter(|&o| o < l.prop_len);
        let off = off.ok_or(IrqError::BadIntid(intid))?;
        let p = (l.prop_pa as usize + off) as *mut u8;
        // SAFETY: `off` is inside the configuration table this driver allocated.
        unsafe { core::ptr::write_volatile(p, lpi_property(priority, enabled)) };
        if !l.coherent {
            cache::clean(p as usize, 1);
        }
        cache::dsb_sy();
        Ok(())
    }

    /// Give back an LPI whose ITS mapping is gone.
    pub fn free_lpi(&mut self, intid: u32) {
        if let Some(l) = self.lpis.as_mut()
            && !l.free.contains(&intid)
        {
            l.free.push(intid);
        }
    }

    pub fn lpi_range(&self) -> Option<(u32, u32)> {
        self.lpis.as_ref().map(|l| (LPI_BASE, l.limit))
    }
}

/// A redistributor's register writes have taken effect (GICR_CTLR.RWP clear, bounded).
fn wait_rwp(rd: &GicrRd) -> Result<(), IrqError> {
    wait_clear("GICR_CTLR.RWP", || rd.ctlr.is_set(GICR_CTLR::RWP))
}

/// Wake a redistributor (GICR_WAKER, bounded), then every SGI/PPI disabled, Group 1,
/// default priority.
fn init_redistributor(rd: &GicrRd, gicr: &mut GicRedistributor<'_>) -> Result<(), IrqError> {
    rd.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
    wait_clear("GICR_WAKER.ChildrenAsleep", || rd.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP))?;
    gicr.enable_all_interrupts(false);
    wait_rwp(rd)?;
    for id in IntId::private() {
        gicr.set_group(id, Group::Group1NS).map_err(IrqError::Gic)?;
        gicr.set_interrupt_priority(id, DEFAULT_PRIORITY).map_err(IrqError::Gic)?;
    }
    Ok(())
}

/// System register interface on for this CPU; an error if it stays off.
pub fn enable_sre() -> Result<(), IrqError> {
    GicCpuInterface::enable_system_register_el1();
    if icc_sre() & 1 == 0 {
        return Err(IrqError::Unsupported("ICC_SRE_EL1.SRE stays 0 (system register interface disabled)"));
    }
    Ok(())
}

/// ICC_CTLR_EL1.RSS: this CPU interface can target Aff0 values 16..255 in SGIs.
pub fn sgi_range_selector() -> bool {
    let v: u64;
    // SAFETY: reading ICC_CTLR_EL1 has no side effects.
    unsafe { asm!("mrs {}, s3_0_c12_c12_4", out(reg) v, options(nomem, nostack)) };
    v & (1 << 18) != 0
}

/// Write ICC_SGI1R_EL1 (`super::sgi1r`'s encoding): generate a Group 1 SGI. Earlier
/// stores are made visible first (the receiver looks for what it was woken for).
pub fn write_sgi1r(v: u64) {
    // SAFETY: ICC_SGI1R_EL1 only makes an SGI pending at the CPUs it names; the DSB
    // orders this CPU's earlier stores before it (as Linux gic_ipi_send_mask does).
    unsafe { asm!("dsb ishst", "msr s3_0_c12_c11_5, {}", "isb", in(reg) v, options(nostack)) };
}

fn icc_sre() -> u64 {
    let v: u64;
    // SAFETY: reading ICC_SRE_EL1 has no side effects.
    unsafe { asm!("mrs {}, s3_0_c12_c12_5", out(reg) v, options(nomem, nostack)) };
    v
}

/// Priority mask, no preemption groups, EOI also deactivates, Group 1 on (this CPU).
pub fn init_cpu_interface() {
    GicCpuInterface::set_priority_mask(PMR);
    // SAFETY: ICC_BPR1_EL1 = 0 and ICC_CTLR_EL1 = 0 (EOImode 0: a write to EOIR drops
    // the priority and deactivates) only change how this CPU's interface behaves.
    unsafe {
        asm!("msr s3_0_c12_c12_3, xzr", options(nomem, nostack)); // ICC_BPR1_EL1
        asm!("msr s3_0_c12_c12_4, xzr", "isb", options(nomem, nostack)); // ICC_CTLR_EL1
    }
    GicCpuInterface::enable_group1(true);
}
