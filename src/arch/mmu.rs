//! The CPU's own translation: an identity map (VA == PA) with RAM as normal
//! write-back memory and everything else as device memory. Built twice: first
//! with just the image and the DTB as RAM (all that is known before the device
//! tree is read), then from the DT memory nodes.

use core::arch::asm;

/// MAIR_EL1 attribute indices.
pub const ATTR_DEVICE_NGNRNE: u64 = 0;
pub const ATTR_NORMAL_WB: u64 = 1;
pub const ATTR_NORMAL_NC: u64 = 2;
pub const ATTR_DEVICE_NGNRE: u64 = 3;
/// idx0 Device-nGnRnE (0x00), idx1 Normal WB (0xff), idx2 Normal NC (0x44), idx3 Device-nGnRE (0x04).
const MAIR: u64 = (0xff << 8) | (0x44 << 16) | (0x04 << 24);

const L1_TABLES: usize = 8; // 8 x 512 GiB: the identity map covers 4 TiB
const L2_POOL: usize = 48;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[repr(C)]
struct TableSet {
    l0: Table,
    l1: [Table; L1_TABLES],
    l2: [Table; L2_POOL],
}

static mut EARLY: TableSet = TableSet::EMPTY;
static mut FINAL: TableSet = TableSet::EMPTY;

impl TableSet {
    const EMPTY: TableSet = TableSet {
        l0: Table([0; 512]),
        l1: [const { Table([0; 512]) }; L1_TABLES],
        l2: [const { Table([0; 512]) }; L2_POOL],
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmuError {
    /// More mixed RAM/device gigabytes than the L2 pool holds.
    TooManyMixedRegions,
    /// More RAM ranges than the builder accepts.
    TooManyRanges,
}

impl core::fmt::Display for MmuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmuError::TooManyMixedRegions => write!(f, "more than {L2_POOL} GiB ranges mix RAM and devices"),
            MmuError::TooManyRanges => write!(f, "more than 32 RAM ranges"),
        }
    }
}

/// Physical address bits the CPU implements (ID_AA64MMFR0_EL1.PARange).
pub fn pa_bits() -> u32 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) v, options(nomem, nostack)) };
    match v & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// How much of the physical address space the identity map covers.
pub fn mapped_limit() -> u64 {
    let bits = pa_bits().min(48);
    (1u64 << bits).min(L1_TABLES as u64 * 512 * GIB)
}

/// Sorted, merged RAM ranges (fixed capacity: usable before the heap exists).
pub struct RamRanges {
    r: [(u64, u64); 32],
    n: usize,
}

impl Default for RamRanges {
    fn default() -> Self {
        Self::new()
    }
}

impl RamRanges {
    pub const fn new() -> Self {
        RamRanges { r: [(0, 0); 32], n: 0 }
    }

    pub fn add(&mut self, base: u64, size: u64) -> Result<(), MmuError> {
        if size == 0 {
            return Ok(());
        }
        if self.n == self.r.len() {
            return Err(MmuError::TooManyRanges);
        }
        self.r[self.n] = (base, base.saturating_add(size));
        self.n += 1;
        self.r[..self.n].sort_unstable();
        // merge overlapping/adjacent
        let mut out = 0;
        for i in 0..self.n {
            let (s, e) = self.r[i];
            if out > 0 && s <= self.r[out - 1].1 {
                self.r[out - 1].1 = self.r[out - 1].1.max(e);
            } else {
                self.r[out] = (s, e);
                out += 1;
            }
        }
        self.n = out;
        Ok(())
    }

    /// Is [a, a+len) entirely RAM / partly RAM?
    fn classify(&self, a: u64, len: u64) -> (bool, bool) {
        let e = a + len;
        let mut any = false;
        for &(s, t) in &self.r[..self.n] {
            if s <= a && t >= e {
                return (true, true);
            }
            if s < e && t > a {
                any = true;
            }
        }
        (false, any)
    }
}

fn block(addr: u64, attr: u64) -> u64 {
    let mut d = addr | 0b01 | (attr << 2) | (1 << 10); // block, AttrIndx, AF
    if attr == ATTR_NORMAL_WB || attr == ATTR_NORMAL_NC {
        d |= 0b11 << 8; // inner shareable
    } else {
        d |= (1 << 53) | (1 << 54); // never execute from device memory
    }
    d
}

fn build(set: &mut TableSet, ram: &RamRanges) -> Result<(), MmuError> {
    let limit = mapped_limit();
    let mut l2_used = 0;
    for (i, t) in set.l1.iter().enumerate() {
        set.l0.0[i] = (t as *const Table as u64) | 0b11;
    }
    let gigs = (limit / GIB) as usize;
    for g in 0..gigs {
        let addr = g as u64 * GIB;
        let (full, any) = ram.classify(addr, GIB);
        let desc = if full {
            block(addr, ATTR_NORMAL_WB)
        } else if !any {
            block(addr, ATTR_DEVICE_NGNRE)
        } else {
            if l2_used == L2_POOL {
                return Err(MmuError::TooManyMixedRegions);
            }
            let l2 = &mut set.l2[l2_used];
            l2_used += 1;
            for (j, e) in l2.0.iter_mut().enumerate() {
                let a = addr + j as u64 * MIB2;
                let (full, _) = ram.classify(a, MIB2);
                // A 2 MiB block that is only partly RAM stays device memory: mapping
                // device registers as normal memory would allow speculative reads.
                *e = block(a, if full { ATTR_NORMAL_WB } else { ATTR_DEVICE_NGNRE });
            }
            (l2 as *const Table as u64) | 0b11
        };
        set.l1[g / 512].0[g % 512] = desc;
    }
    Ok(())
}

fn tcr() -> u64 {
    let ips = match pa_bits() {
        32 => 0,
        36 => 1,
        40 => 2,
        42 => 3,
        44 => 4,
        _ => 5,
    };
    16 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (ips << 32)
}

/// Turn the MMU and caches on with RAM = `ram`. Called once, with the MMU off.
///
/// # Safety
/// Must run on the boot CPU with the MMU off, and `ram` must include the image,
/// the stack and the DTB.
pub unsafe fn enable(ram: &RamRanges, image: (u64, u64)) -> Result<(), MmuError> {
    // SAFETY: single CPU, MMU off, nothing else refers to EARLY.
    #[allow(clippy::deref_addrof)]
    let set = unsafe { &mut *(&raw mut EARLY) };
    build(set, ram)?;
    // Data written with the MMU off went to memory; drop any stale cached copies
    // of the image (tables, stack, BSS) before the caches are switched on.
    super::cache::discard(image.0 as usize, image.1 as usize);
    let ttbr = &raw const set.l0 as u64;
    // SAFETY: the tables identity-map the running code, stack and data with the
    // attributes above; the sequence is the architecture's MMU-enable sequence.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {tmp}, sctlr_el1",
            "orr {tmp}, {tmp}, #(1 << 0)",  // M
            "orr {tmp}, {tmp}, #(1 << 2)",  // C
            "orr {tmp}, {tmp}, #(1 << 12)", // I
            "msr sctlr_el1, {tmp}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) tcr(),
            ttbr = in(reg) ttbr,
            tmp = out(reg) _,
            options(nostack),
        );
    }
    Ok(())
}

/// Switch to the final map built from the DT memory nodes.
///
/// # Safety
/// Called once, with the MMU on, and `ram` must still cover everything in use.
pub unsafe fn switch_final(ram: &RamRanges) -> Result<(), MmuError> {
    // SAFETY: FINAL is not live yet; only this function writes it, once.
    #[allow(clippy::deref_addrof)]
    let set = unsafe { &mut *(&raw mut FINAL) };
    build(set, ram)?;
    let ttbr = &raw const set.l0 as u64;
    // SAFETY: both maps identity-map the running code and data with the same
    // attributes, so switching TTBR0 and invalidating the TLB is safe.
    unsafe {
        asm!(
            "dsb ishst",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            ttbr = in(reg) ttbr,
            options(nostack),
        );
    }
    Ok(())
}

pub fn mmu_enabled() -> bool {
    let v: u64;
    // SAFETY: reading SCTLR_EL1 has no side effects.
    unsafe { asm!("mrs {}, sctlr_el1", out(reg) v, options(nomem, nostack)) };
    v & 1 != 0
}

/// Memory attribute index the live tables give `addr` (for self-tests).
pub fn attr_of(addr: u64) -> Option<u64> {
    let par: u64;
    // SAFETY: AT S1E1R only updates PAR_EL1.
    unsafe { asm!("at s1e1r, {a}", "isb", "mrs {p}, par_el1", a = in(reg) addr, p = out(reg) par, options(nostack)) };
    if par & 1 != 0 {
        return None;
    }
    Some(par >> 56)
}
