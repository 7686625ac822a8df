//! Context Descriptors (CD, 64 bytes = 8 x u64) for AArch64 stage-1 translation.
//!
//! Layout from the Arm SMMUv3 specification (IHI 0070, §5.4 "Context Descriptor"),
//! cross-checked with Linux `arm-smmu-v3.h` (`CTXDESC_CD_*`) and FreeBSD `smmureg.h`.
//! Only TTB0 is used (EPD1 = 1): the IOVA space is the lower VA range.
//! Live updates reuse the STE sequencing in [`super::ste::write_entry_with`] with [`cd_used`].

use core::fmt;

use super::ste::{Cacheability, STE_QWORDS, Shareability, SteWriter, UpdateKind, write_entry_with};

pub const CD_QWORDS: usize = 8;

// ---- qword 0 ----
pub const CD0_T0SZ_SHIFT: u32 = 0;
pub const CD0_T0SZ_MASK: u64 = 0x3f;
pub const CD0_TG0_SHIFT: u32 = 6;
pub const CD0_TG0_MASK: u64 = 0b11 << CD0_TG0_SHIFT;
pub const CD0_IR0_SHIFT: u32 = 8;
pub const CD0_IR0_MASK: u64 = 0b11 << CD0_IR0_SHIFT;
pub const CD0_OR0_SHIFT: u32 = 10;
pub const CD0_OR0_MASK: u64 = 0b11 << CD0_OR0_SHIFT;
pub const CD0_SH0_SHIFT: u32 = 12;
pub const CD0_SH0_MASK: u64 = 0b11 << CD0_SH0_SHIFT;
pub const CD0_EPD0: u64 = 1 << 14;
pub const CD0_ENDI: u64 = 1 << 15;
pub const CD0_EPD1: u64 = 1 << 30;
pub const CD0_V: u64 = 1 << 31;
pub const CD0_IPS_SHIFT: u32 = 32;
pub const CD0_IPS_MASK: u64 = 0b111 << CD0_IPS_SHIFT;
pub const CD0_AFFD: u64 = 1 << 35;
pub const CD0_WXN: u64 = 1 << 36;
pub const CD0_UWXN: u64 = 1 << 37;
pub const CD0_TBI0: u64 = 1 << 38;
pub const CD0_TBI1: u64 = 1 << 39;
pub const CD0_PAN: u64 = 1 << 40;
pub const CD0_AA64: u64 = 1 << 41;
pub const CD0_HD: u64 = 1 << 42;
pub const CD0_HA: u64 = 1 << 43;
pub const CD0_S: u64 = 1 << 44;
pub const CD0_R: u64 = 1 << 45;
pub const CD0_A: u64 = 1 << 46;
pub const CD0_ASET: u64 = 1 << 47;
pub const CD0_ASID_SHIFT: u32 = 48;
pub const CD0_ASID_MASK: u64 = 0xffff << CD0_ASID_SHIFT;
// ---- qword 1..4 ----
/// TTB0\[51:4\].
pub const CD1_TTB0_MASK: u64 = ((1 << 52) - 1) & !0xf;
/// qword 3 holds MAIR0 (bits \[31:0\]) and MAIR1 (bits \[63:32\]), i.e. a MAIR_EL1 image.
pub const CD_MAIR_QWORD: usize = 3;
/// qword 4 holds AMAIR0/AMAIR1.
pub const CD_AMAIR_QWORD: usize = 4;

/// Level-1 CD table descriptor: V bit 0, L2Ptr\[51:12\].
pub const L1CD_V: u64 = 1;
pub const L1CD_L2PTR_MASK: u64 = ((1 << 52) - 1) & !0xfff;

const PA_LIMIT: u64 = 1 << 52;

/// CD.TG0 encoding (TCR_EL1.TG0 style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdGranule {
    G4K = 0,
    G64K = 1,
    G16K = 2,
}

impl CdGranule {
    pub const fn log2(self) -> u32 {
        match self {
            CdGranule::G4K => 12,
            CdGranule::G16K => 14,
            CdGranule::G64K => 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdError {
    /// TTB0 wider than 52 bits.
    AddressTooWide {
        pa: u64,
    },
    /// TTB0 not aligned to the starting-level table size.
    Ttb0Misaligned {
        ttb0: u64,
        align: u64,
    },
    BadT0sz {
        t0sz: u8,
    },
    BadIps {
        ips: u8,
    },
    /// Stall (CD.S) together with abort-on-terminate makes no sense for this driver.
    StallAndAbort,
}

impl fmt::Display for CdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CdError::AddressTooWide { pa } => write!(f, "TTB0 {pa:#x} wider than 52 bits"),
            CdError::Ttb0Misaligned { ttb0, align } => write!(f, "TTB0 {ttb0:#x} not aligned to {align:#x}"),
            CdError::BadT0sz { t0sz } => write!(f, "T0SZ {t0sz} out of range"),
            CdError::BadIps { ips } => write!(f, "IPS {ips} reserved"),
            CdError::StallAndAbort => f.write_str("CD.S and CD.A both set"),
        }
    }
}

/// Stage-1 context for one address space (TTB0 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdCfg {
    pub asid: u16,
    /// Starting-level table PA.
    pub ttb0: u64,
    /// Input (IOVA) size is 64 - t0sz.
    pub t0sz: u8,
    pub tg0: CdGranule,
    pub ir0: Cacheability,
    pub or0: Cacheability,
    pub sh0: Shareability,
    /// Output (IPA/PA) size encoding, 0=32 .. 6=52 bits (use IDR5.OAS).
    pub ips: u8,
    /// MAIR_EL1-style attribute indirection value.
    pub mair: u64,
    /// ASET: 0 = shared ASID set (matches broadcast TLBI), 1 = non-shared.
    pub aset: bool,
    /// AFFD: access-flag faults disabled.
    pub affd: bool,
    /// R: record faults.
    pub record_faults: bool,
    /// A: terminated transactions get an abort (not RAZ/WI).
    pub abort: bool,
    /// S: stall faulting transactions.
    pub stall: bool,
    pub ha: bool,
    pub hd: bool,
    pub tbi0: bool,
}

impl CdCfg {
    /// Defaults from the driver policy: 4K, WB-RWA ISH walks, AFFD=1, R=1, A=1, S=0, ASET=0.
    pub const fn new_4k(asid: u16, ttb0: u64, t0sz: u8, ips: u8, mair: u64) -> CdCfg {
        CdCfg {
            asid,
            ttb0,
            t0sz,
            tg0: CdGranule::G4K,
            ir0: Cacheability::WbRwa,
            or0: Cacheability::WbRwa,
            sh0: Shareability::Inner,
            ips,
            mair,
            aset: false,
            affd: true,
            record_faults: true,
            abort: true,
            stall: false,
            ha: false,
            hd: false,
            tbi0: false,
        }
    }

    /// Starting lookup level (0..=3) and size in bytes of the starting-level table.
    pub fn root_table(&self) -> Result<(u32, u64), CdError> {
        let min = if self.tg0 == CdGranule::G64K { 12 } else { 16 };
        if self.t0sz < min || self.t0sz > 39 {
            return Err(CdError::BadT0sz { t0sz: self.t0sz });
        }
        let g = self.tg0.log2();
        let stride = g - 3;
        let ias = 64 - self.t0sz as u32;
        let va_bits = ias - g; // bits resolved by table lookups, > 0 here
        let levels = va_bits.div_ceil(stride);
        if levels == 0 || levels > 4 {
            return Err(CdError::BadT0sz { t0sz: self.t0sz });
        }
        let root_bits = va_bits - (levels - 1) * stride;
        Ok((4 - levels, 8u64 << root_bits))
    }

    fn check(&self) -> Result<(), CdError> {
        if self.ips > 6 {
            return Err(CdError::BadIps { ips: self.ips });
        }
        if self.ttb0 >= PA_LIMIT {
            return Err(CdError::AddressTooWide { pa: self.ttb0 });
        }
        if self.stall && self.abort {
            return Err(CdError::StallAndAbort);
        }
        let (_, size) = self.root_table()?;
        let align = size.max(if self.ips == 6 { 64 } else { 16 });
        if self.ttb0 & (align - 1) != 0 {
            return Err(CdError::Ttb0Misaligned { ttb0: self.ttb0, align });
        }
        Ok(())
    }
}

/// A Context Descriptor image.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cd {
    words: [u64; CD_QWORDS],
}

impl fmt::Debug for Cd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cd(")?;
        for (i, w) in self.words.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{w:#018x}")?;
        }
        f.write_str(")")
    }
}

impl Cd {
    pub const fn invalid() -> Cd {
        Cd { words: [0; CD_QWORDS] }
    }

    /// Build a valid AArch64 CD: EPD0=0, EPD1=1, ENDI=0, AA64=1, TBI1=0.
    pub fn new(cfg: &CdCfg) -> Result<Cd, CdError> {
        cfg.check()?;
        let mut q0 = (cfg.t0sz as u64 & CD0_T0SZ_MASK)
            | ((cfg.tg0 as u64) << CD0_TG0_SHIFT)
            | ((cfg.ir0 as u64) << CD0_IR0_SHIFT)
            | ((cfg.or0 as u64) << CD0_OR0_SHIFT)
            | ((cfg.sh0 as u64) << CD0_SH0_SHIFT)
            | CD0_EPD1
            | CD0_V
            | ((cfg.ips as u64) << CD0_IPS_SHIFT)
            | CD0_AA64
            | ((cfg.asid as u64) << CD0_ASID_SHIFT);
        for (on, bit) in [
            (cfg.affd, CD0_AFFD),
            (cfg.tbi0, CD0_TBI0),
            (cfg.hd, CD0_HD),
            (cfg.ha, CD0_HA),
            (cfg.stall, CD0_S),
            (cfg.record_faults, CD0_R),
            (cfg.abort, CD0_A),
            (cfg.aset, CD0_ASET),
        ] {
            if on {
                q0 |= bit;
            }
        }
        let mut words = [0; CD_QWORDS];
        words[0] = q0;
        words[1] = cfg.ttb0 & CD1_TTB0_MASK;
        words[CD_MAIR_QWORD] = cfg.mair;
        Ok(Cd { words })
    }

    pub const fn from_words(words: [u64; CD_QWORDS]) -> Cd {
        Cd { words }
    }

    pub const fn words(&self) -> [u64; CD_QWORDS] {
        self.words
    }

    pub const fn valid(&self) -> bool {
        self.words[0] & CD0_V != 0
    }

    pub const fn asid(&self) -> u16 {
        (self.words[0] >> CD0_ASID_SHIFT) as u16
    }

    pub const fn ttb0(&self) -> u64 {
        self.words[1] & CD1_TTB0_MASK
    }
}

/// Bits of a CD the SMMU interprets (Linux `arm_smmu_get_cd_used`): only V when invalid,
/// everything when valid, except TTB0/T0SZ/TG0/IR0/OR0/SH0 when EPD0 disables TTB0 walks.
pub fn cd_used(ent: &[u64; STE_QWORDS]) -> [u64; STE_QWORDS] {
    let mut used = [0u64; STE_QWORDS];
    used[0] = CD0_V;
    if ent[0] & CD0_V == 0 {
        return used;
    }
    used = [u64::MAX; STE_QWORDS];
    if ent[0] & CD0_EPD0 != 0 {
        used[0] &= !(CD0_T0SZ_MASK | CD0_TG0_MASK | CD0_IR0_MASK | CD0_OR0_MASK | CD0_SH0_MASK);
        used[1] &= !CD1_TTB0_MASK;
    }
    used
}

/// Update a live CD (the writer's `sync` must issue CFGI_CD + CMD_SYNC).
pub fn write_cd<W: SteWriter + ?Sized>(cur: &mut [u64; CD_QWORDS], target: &Cd, w: &mut W) -> UpdateKind {
    write_entry_with(cur, &target.words, cd_used, w)
}

/// Level-1 CD table descriptor for a 4 KiB-aligned leaf CD table.
pub fn l1_cd_desc(l2_pa: u64) -> Option<u64> {
    if l2_pa >= PA_LIMIT || l2_pa & 0xfff != 0 {
        return None;
    }
    Some((l2_pa & L1CD_L2PTR_MASK) | L1CD_V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const MAIR: u64 = 0x0000_0000_0004_ff44;

    fn cfg() -> CdCfg {
        // 48-bit IOVA, 4K, 44-bit output
        CdCfg::new_4k(1, 0x4008_0000, 16, 4, MAIR)
    }

    #[test]
    fn encoding() {
        let cd = Cd::new(&cfg()).unwrap();
        let w = cd.words();
        let q0 = 16
            | (1 << 8)
            | (1 << 10)
            | (3 << 12)
            | (1 << 30)
            | (1 << 31)
            | (4 << 32)
            | (1 << 35)
            | (1 << 41)
            | (1 << 45)
            | (1 << 46)
            | (1 << 48);
        assert_eq!(w[0], q0);
        assert_eq!(w[1], 0x4008_0000);
        assert_eq!(w[3], MAIR);
        assert_eq!(&w[4..], &[0, 0, 0, 0]);
        assert!(cd.valid());
        assert_eq!(cd.asid(), 1);
        assert_eq!(w[0] & (CD0_EPD0 | CD0_ENDI | CD0_HA | CD0_HD | CD0_TBI0 | CD0_S), 0);
        let cd = Cd::new(&CdCfg { asid: 0xbeef, tg0: CdGranule::G64K, t0sz: 22, ttb0: 0x1_0000, ..cfg() }).unwrap();
        assert_eq!(cd.asid(), 0xbeef);
        assert_eq!((cd.words()[0] >> 6) & 3, 1);
    }

    #[test]
    fn checks() {
        // 48-bit, 4K: level 0, 512 entries -> 4 KiB root
        assert_eq!(cfg().root_table(), Ok((0, 4096)));
        // 39-bit: level 1, 512 entries
        assert_eq!(CdCfg { t0sz: 25, ..cfg() }.root_table(), Ok((1, 4096)));
        // 32-bit: level 1, 4 entries -> 32 bytes
        assert_eq!(CdCfg { t0sz: 32, ..cfg() }.root_table(), Ok((1, 32)));
        // 64K 42-bit: level 2, 8192 entries
        assert_eq!(CdCfg { t0sz: 22, tg0: CdGranule::G64K, ..cfg() }.root_table(), Ok((2, 65536)));
        // 16K 47-bit: level 1, 2048 entries
        assert_eq!(CdCfg { t0sz: 17, tg0: CdGranule::G16K, ..cfg() }.root_table(), Ok((1, 16384)));
        assert!(matches!(Cd::new(&CdCfg { ttb0: 0x4008_0800, ..cfg() }), Err(CdError::Ttb0Misaligned { .. })));
        assert!(Cd::new(&CdCfg { t0sz: 32, ttb0: 0x4008_0020, ..cfg() }).is_ok());
        assert!(matches!(
            Cd::new(&CdCfg { t0sz: 32, ttb0: 0x4008_0008, ..cfg() }),
            Err(CdError::Ttb0Misaligned { .. })
        ));
        assert!(matches!(Cd::new(&CdCfg { t0sz: 15, ..cfg() }), Err(CdError::BadT0sz { .. })));
        assert!(matches!(Cd::new(&CdCfg { t0sz: 40, ..cfg() }), Err(CdError::BadT0sz { .. })));
        assert!(matches!(Cd::new(&CdCfg { ips: 7, ..cfg() }), Err(CdError::BadIps { .. })));
        assert!(matches!(Cd::new(&CdCfg { ttb0: 1 << 52, ..cfg() }), Err(CdError::AddressTooWide { .. })));
        assert!(matches!(Cd::new(&CdCfg { stall: true, ..cfg() }), Err(CdError::StallAndAbort)));
        assert_eq!(l1_cd_desc(0x8000_1000), Some(0x8000_1001));
        assert_eq!(l1_cd_desc(0x8000_1040), None);
    }

    #[derive(Debug, PartialEq)]
    enum Op {
        W(usize, u64),
        Sync,
    }
    struct Rec(Vec<Op>, [u64; 8]);
    impl SteWriter for Rec {
        fn write_qword(&mut self, i: usize, v: u64) {
            self.1[i] = v;
            self.0.push(Op::W(i, v));
        }
        fn sync(&mut self) {
            self.0.push(Op::Sync);
        }
    }

    #[test]
    fn live_updates() {
        let a = Cd::new(&cfg()).unwrap();
        // install into an invalid slot: qwords 1 and 3 first, then qword 0
        let mut cur = [0u64; 8];
        let mut r = Rec(Vec::new(), cur);
        assert_eq!(write_cd(&mut cur, &a, &mut r), UpdateKind::Hitless { critical: 0 });
        assert_eq!(r.0, [Op::W(1, a.words()[1]), Op::W(3, MAIR), Op::Sync, Op::W(0, a.words()[0]), Op::Sync]);
        assert_eq!(r.1, a.words());
        // ASID change only: one store
        let b = Cd::new(&CdCfg { asid: 2, ..cfg() }).unwrap();
        let mut r = Rec(Vec::new(), cur);
        assert_eq!(write_cd(&mut cur, &b, &mut r), UpdateKind::Hitless { critical: 0 });
        assert_eq!(r.0, [Op::W(0, b.words()[0]), Op::Sync]);
        // ASID and TTB0 change: break-before-make
        let c = Cd::new(&CdCfg { asid: 3, ttb0: 0x4009_0000, ..cfg() }).unwrap();
        let mut r = Rec(Vec::new(), cur);
        assert_eq!(write_cd(&mut cur, &c, &mut r), UpdateKind::BreakBeforeMake);
        assert_eq!(r.0, [Op::W(0, 0), Op::Sync, Op::W(1, 0x4009_0000), Op::Sync, Op::W(0, c.words()[0]), Op::Sync]);
        // back to invalid
        let mut r = Rec(Vec::new(), cur);
        assert_eq!(write_cd(&mut cur, &Cd::invalid(), &mut r), UpdateKind::Hitless { critical: 0 });
        assert_eq!(r.0[0], Op::W(0, 0));
        assert_eq!(cur, [0; 8]);
    }
}
