//! Stream Table Entries (STE, 64 bytes = 8 x u64), level-1 stream table descriptors,
//! and the safe STE update sequence.
//!
//! Layout from the Arm SMMUv3 specification (IHI 0070, §5.2 "Stream Table Entry"),
//! cross-checked with Linux `arm-smmu-v3.h` (`STRTAB_STE_*`) and FreeBSD `smmureg.h`.
//!
//! The update algorithm ([`write_entry_with`]) follows the approach of Linux's
//! `arm_smmu_write_entry()`: compute which bits each configuration actually *uses*; if
//! only one qword's used bits change, the update is hitless (write the bits the current
//! configuration ignores, sync, flip the single critical qword, sync, clean up, sync);
//! otherwise break-before-make (V=0, sync, write qwords 1..7, sync, write qword 0, sync).
//! At every sync point the hardware sees either the old configuration, the new one, or an
//! invalid entry.

use core::fmt;

pub const STE_QWORDS: usize = 8;

// ---- qword 0 ----
pub const STE0_V: u64 = 1 << 0;
pub const STE0_CFG_SHIFT: u32 = 1;
pub const STE0_CFG_MASK: u64 = 0b111 << STE0_CFG_SHIFT;
pub const STE0_S1FMT_SHIFT: u32 = 4;
pub const STE0_S1FMT_MASK: u64 = 0b11 << STE0_S1FMT_SHIFT;
/// S1ContextPtr\[51:6\].
pub const STE0_S1CTXPTR_MASK: u64 = ((1 << 52) - 1) & !0x3f;
pub const STE0_S1CDMAX_SHIFT: u32 = 59;
pub const STE0_S1CDMAX_MASK: u64 = 0x1f << STE0_S1CDMAX_SHIFT;
// ---- qword 1 ----
pub const STE1_S1DSS_SHIFT: u32 = 0;
pub const STE1_S1DSS_MASK: u64 = 0b11;
pub const STE1_S1CIR_SHIFT: u32 = 2;
pub const STE1_S1CIR_MASK: u64 = 0b11 << STE1_S1CIR_SHIFT;
pub const STE1_S1COR_SHIFT: u32 = 4;
pub const STE1_S1COR_MASK: u64 = 0b11 << STE1_S1COR_SHIFT;
pub const STE1_S1CSH_SHIFT: u32 = 6;
pub const STE1_S1CSH_MASK: u64 = 0b11 << STE1_S1CSH_SHIFT;
pub const STE1_S1STALLD: u64 = 1 << 27;
pub const STE1_EATS_SHIFT: u32 = 28;
pub const STE1_EATS_MASK: u64 = 0b11 << STE1_EATS_SHIFT;
pub const STE1_STRW_SHIFT: u32 = 30;
pub const STE1_STRW_MASK: u64 = 0b11 << STE1_STRW_SHIFT;
pub const STE1_SHCFG_SHIFT: u32 = 44;
pub const STE1_SHCFG_MASK: u64 = 0b11 << STE1_SHCFG_SHIFT;
// ---- qword 2 ----
pub const STE2_S2VMID_MASK: u64 = 0xffff;
/// VTCR image at bits \[50:32\].
pub const STE2_VTCR_SHIFT: u32 = 32;
pub const STE2_VTCR_MASK: u64 = 0x7ffff << STE2_VTCR_SHIFT;
pub const STE2_S2T0SZ_SHIFT: u32 = 32;
pub const STE2_S2SL0_SHIFT: u32 = 38;
pub const STE2_S2IR0_SHIFT: u32 = 40;
pub const STE2_S2OR0_SHIFT: u32 = 42;
pub const STE2_S2SH0_SHIFT: u32 = 44;
pub const STE2_S2TG_SHIFT: u32 = 46;
pub const STE2_S2PS_SHIFT: u32 = 48;
pub const STE2_S2AA64: u64 = 1 << 51;
pub const STE2_S2ENDI: u64 = 1 << 52;
pub const STE2_S2AFFD: u64 = 1 << 53;
pub const STE2_S2PTW: u64 = 1 << 54;
pub const STE2_S2HD: u64 = 1 << 55;
pub const STE2_S2HA: u64 = 1 << 56;
pub const STE2_S2S: u64 = 1 << 57;
pub const STE2_S2R: u64 = 1 << 58;
// ---- qword 3 ----
/// S2TTB\[51:4\].
pub const STE3_S2TTB_MASK: u64 = ((1 << 52) - 1) & !0xf;

/// Level-1 stream table descriptor: Span\[4:0\], L2Ptr\[51:6\].
pub const L1STD_SPAN_MASK: u64 = 0x1f;
pub const L1STD_L2PTR_MASK: u64 = ((1 << 52) - 1) & !0x3f;

const PA_LIMIT: u64 = 1 << 52;

/// STE.Config values (bits \[3:1\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteConfig {
    /// 0b000: abort, no event recorded.
    Abort,
    /// 0b100: bypass both stages.
    Bypass,
    /// 0b101: stage 1 translate, stage 2 bypass.
    S1,
    /// 0b110: stage 1 bypass, stage 2 translate.
    S2,
    /// 0b111: stage 1 then stage 2 (nested).
    Nested,
}

impl SteConfig {
    pub const fn bits(self) -> u64 {
        match self {
            SteConfig::Abort => 0b000,
            SteConfig::Bypass => 0b100,
            SteConfig::S1 => 0b101,
            SteConfig::S2 => 0b110,
            SteConfig::Nested => 0b111,
        }
    }
    /// Decode Config; 0b001..0b011 are abort too (Config\[2\]==0), reported as `Abort`.
    pub const fn from_bits(b: u64) -> SteConfig {
        match b & 0b111 {
            0b100 => SteConfig::Bypass,
            0b101 => SteConfig::S1,
            0b110 => SteConfig::S2,
            0b111 => SteConfig::Nested,
            _ => SteConfig::Abort,
        }
    }
}

/// STE.S1Fmt: CD table format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S1Fmt {
    /// Linear table of 2^S1CDMax CDs.
    Linear = 0,
    /// 2-level, 4KB leaf tables (SPLIT = 6).
    TwoLevel4K = 1,
    /// 2-level, 64KB leaf tables (SPLIT = 10).
    TwoLevel64K = 2,
}

/// STE.S1DSS: behaviour of transactions without a SubstreamID when S1CDMax > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S1Dss {
    Terminate = 0,
    Bypass = 1,
    /// Use CD 0 (substream 0) for non-substream traffic.
    Ssid0 = 2,
}

/// Cacheability of CD fetches (STE.S1CIR/S1COR) and S2 walks (S2IR0/S2OR0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheability {
    NonCacheable = 0,
    /// Write-back, read-allocate, write-allocate.
    WbRwa = 1,
    /// Write-through, read-allocate.
    WtRa = 2,
    /// Write-back, read-allocate, no write-allocate.
    WbRa = 3,
}

/// Shareability encoding (0b01 is reserved here; see [`ShCfg`] for STE.SHCFG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shareability {
    Non = 0,
    Outer = 2,
    Inner = 3,
}

/// STE.SHCFG override of the incoming shareability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShCfg {
    NonShareable = 0,
    Incoming = 1,
    Outer = 2,
    Inner = 3,
}

/// STE.STRW: StreamWorld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strw {
    /// Non-secure EL1 (the normal kernel/driver case).
    NsEl1 = 0,
    /// EL2 (requires SMMU_IDR0.HYP).
    El2 = 2,
    /// EL2-E2H (requires HYP and CR2.E2H).
    El2E2h = 3,
}

/// STE.EATS: PCIe ATS handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eats {
    Abort = 0,
    Translate = 1,
    S1Chk = 2,
}

/// Stage-2 translation granule (STE.S2TG encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S2Granule {
    G4K = 0,
    G64K = 1,
    G16K = 2,
}

impl S2Granule {
    pub const fn log2(self) -> u32 {
        match self {
            S2Granule::G4K => 12,
            S2Granule::G16K => 14,
            S2Granule::G64K => 16,
        }
    }
}

/// Errors detected while building an STE or L1 descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteError {
    /// S1ContextPtr must be 64-byte aligned.
    CdTableMisaligned {
        pa: u64,
    },
    /// An address does not fit in 52 bits.
    AddressTooWide {
        pa: u64,
    },
    /// S1CDMax larger than the architectural 20 SSID bits.
    S1CdMaxTooLarge {
        s1cdmax: u8,
    },
    /// S2T0SZ outside the supported range.
    BadT0sz {
        t0sz: u8,
    },
    /// S2SL0 is reserved for this granule, or inconsistent with S2T0SZ
    /// (the starting level would have to resolve 0 bits or need > 16 concatenated tables).
    BadS2Geometry {
        t0sz: u8,
        sl0: u8,
        granule: S2Granule,
    },
    /// S2PS encoding > 0b110.
    BadPs {
        ps: u8,
    },
    /// VTTBR not aligned to the starting-level table size.
    VttbrMisaligned {
        vttbr: u64,
        align: u64,
    },
    /// Reserved cacheability/shareability value.
    BadAttr,
    /// L1 descriptor Span out of range (1..=12) or L2 table misaligned.
    BadSpan {
        span: u8,
    },
    L2TableMisaligned {
        pa: u64,
        align: u64,
    },
}

impl fmt::Display for SteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SteError::CdTableMisaligned { pa } => write!(f, "CD table pointer {pa:#x} not 64-byte aligned"),
            SteError::AddressTooWide { pa } => write!(f, "address {pa:#x} wider than 52 bits"),
            SteError::S1CdMaxTooLarge { s1cdmax } => write!(f, "S1CDMax {s1cdmax} > 20"),
            SteError::BadT0sz { t0sz } => write!(f, "S2T0SZ {t0sz} out of range"),
            SteError::BadS2Geometry { t0sz, sl0, granule } => {
                write!(f, "S2SL0 {sl0} inconsistent with S2T0SZ {t0sz} for {granule:?}")
            }
            SteError::BadPs { ps } => write!(f, "S2PS {ps} reserved"),
            SteError::VttbrMisaligned { vttbr, align } => {
                write!(f, "VTTBR {vttbr:#x} not aligned to root table size {align:#x}")
            }
            SteError::BadAttr => f.write_str("reserved attribute encoding"),
            SteError::BadSpan { span } => write!(f, "L1 descriptor span {span} out of range"),
            SteError::L2TableMisaligned { pa, align } => write!(f, "L2 stream table {pa:#x} not aligned to {align:#x}"),
        }
    }
}

/// Stage-1 (CD table) part of an STE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S1Cfg {
    /// Physical address of the CD (S1CDMax = 0) or CD table / L1 CD table.
    pub cd_table_pa: u64,
    /// log2 of the number of CDs (0 = a single CD, substreams disabled).
    pub s1cdmax: u8,
    pub s1fmt: S1Fmt,
    pub s1dss: S1Dss,
    /// Attributes of CD fetches.
    pub s1cir: Cacheability,
    pub s1cor: Cacheability,
    pub s1csh: Shareability,
    /// STE.S1STALLD. Set it only when SMMU_IDR0.STALL_MODEL == 0b00; it is ILLEGAL with
    /// STALL_MODEL == 0b10 (stall forced). See [`S1Cfg::stall_disable_for`].
    pub stall_disable: bool,
    pub strw: Strw,
    pub eats: Eats,
}

impl S1Cfg {
    /// Single CD at `cd_pa`, WB cacheable inner-shareable fetches, NS-EL1, no ATS.
    pub const fn new(cd_pa: u64) -> S1Cfg {
        S1Cfg {
            cd_table_pa: cd_pa,
            s1cdmax: 0,
            s1fmt: S1Fmt::Linear,
            s1dss: S1Dss::Terminate,
            s1cir: Cacheability::WbRwa,
            s1cor: Cacheability::WbRwa,
            s1csh: Shareability::Inner,
            stall_disable: false,
            strw: Strw::NsEl1,
            eats: Eats::Abort,
        }
    }

    /// Linux's rule: set S1STALLD iff the SMMU supports (but does not force) stalls.
    pub fn stall_disable_for(features: &super::features::Features) -> bool {
        features.stall_model == super::features::StallModel::StallAndTerminate
    }

    fn check(&self) -> Result<(), SteError> {
        if self.cd_table_pa >= PA_LIMIT {
            return Err(SteError::AddressTooWide { pa: self.cd_table_pa });
        }
        if self.cd_table_pa & 0x3f != 0 {
            return Err(SteError::CdTableMisaligned { pa: self.cd_table_pa });
        }
        if self.s1cdmax > 20 {
            return Err(SteError::S1CdMaxTooLarge { s1cdmax: self.s1cdmax });
        }
        Ok(())
    }

    fn qword0(&self) -> u64 {
        // With S1CDMax == 0 the format is ignored; keep it linear so the used-bits
        // comparison stays exact.
        let fmt = if self.s1cdmax == 0 { S1Fmt::Linear } else { self.s1fmt };
        (self.cd_table_pa & STE0_S1CTXPTR_MASK)
            | ((fmt as u64) << STE0_S1FMT_SHIFT)
            | ((self.s1cdmax as u64 & 0x1f) << STE0_S1CDMAX_SHIFT)
    }

    fn qword1(&self) -> u64 {
        let mut q = ((self.s1dss as u64) << STE1_S1DSS_SHIFT)
            | ((self.s1cir as u64) << STE1_S1CIR_SHIFT)
            | ((self.s1cor as u64) << STE1_S1COR_SHIFT)
            | ((self.s1csh as u64) << STE1_S1CSH_SHIFT)
            | ((self.eats as u64) << STE1_EATS_SHIFT)
            | ((self.strw as u64) << STE1_STRW_SHIFT);
        if self.stall_disable {
            q |= STE1_S1STALLD;
        }
        q
    }
}

/// Stage-2 part of an STE (VMID, VTCR image, VTTBR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2Cfg {
    pub vmid: u16,
    /// Physical address of the starting-level table (aligned to its size).
    pub vttbr: u64,
    /// IPA size is 64 - t0sz.
    pub t0sz: u8,
    /// Starting level encoding (VTCR_EL2.SL0 meaning, per granule).
    pub sl0: u8,
    pub irgn: Cacheability,
    pub orgn: Cacheability,
    pub sh: Shareability,
    pub tg: S2Granule,
    /// Output size encoding (0=32 .. 6=52 bits), like IDR5.OAS.
    pub ps: u8,
    /// AArch64 tables (S2AA64). Must be true on AArch64-only SMMUs.
    pub aa64: bool,
    /// Protected table walk: stage-1 walks that hit stage-2 Device memory fault.
    pub ptw: bool,
    /// Record stage-2 faults (S2R).
    pub record_faults: bool,
    /// Stall on stage-2 faults (S2S); false = terminate.
    pub stall: bool,
    /// Access flag fault disable (S2AFFD).
    pub affd: bool,
    pub eats: Eats,
}

impl S2Cfg {
    /// 4K granule, IPA `64 - t0sz` bits, WB ISH walks, S2R=1, S2PTW=1, S2AFFD=1.
    pub const fn new_4k(vmid: u16, vttbr: u64, t0sz: u8, sl0: u8, ps: u8) -> S2Cfg {
        S2Cfg {
            vmid,
            vttbr,
            t0sz,
            sl0,
            irgn: Cacheability::WbRwa,
            orgn: Cacheability::WbRwa,
            sh: Shareability::Inner,
            tg: S2Granule::G4K,
            ps,
            aa64: true,
            ptw: true,
            record_faults: true,
            stall: false,
            affd: true,
            eats: Eats::Abort,
        }
    }

    /// Starting lookup level implied by (granule, SL0), or `None` if SL0 is reserved.
    pub fn start_level(&self) -> Option<u32> {
        match (self.tg, self.sl0) {
            (S2Granule::G4K, 0) => Some(2),
            (S2Granule::G4K, 1) => Some(1),
            (S2Granule::G4K, 2) => Some(0),
            (S2Granule::G16K | S2Granule::G64K, 0) => Some(3),
            (S2Granule::G16K | S2Granule::G64K, 1) => Some(2),
            (S2Granule::G16K | S2Granule::G64K, 2) => Some(1),
            (S2Granule::G16K, 3) => Some(0),
            _ => None,
        }
    }

    /// Size in bytes of the (possibly concatenated) starting-level table, after validating
    /// T0SZ / SL0 / granule consistency.
    pub fn root_table_bytes(&self) -> Result<u64, SteError> {
        let g = self.tg.log2();
        let min_t0sz = if self.tg == S2Granule::G64K && self.ps == 6 { 12 } else { 16 };
        if self.t0sz < min_t0sz || self.t0sz > 39 {
            return Err(SteError::BadT0sz { t0sz: self.t0sz });
        }
        let geo = SteError::BadS2Geometry { t0sz: self.t0sz, sl0: self.sl0, granule: self.tg };
        let level = self.start_level().ok_or(geo)?;
        let stride = g - 3;
        let ias = 64 - self.t0sz as u32;
        let below = (3 - level) * stride + g;
        if ias <= below {
            return Err(geo);
        }
        let root_bits = ias - below;
        // Up to 16 tables may be concatenated at the starting level.
        if root_bits > stride + 4 {
            return Err(geo);
        }
        Ok(8u64 << root_bits)
    }

    fn check(&self) -> Result<(), SteError> {
        if self.ps > 6 {
            return Err(SteError::BadPs { ps: self.ps });
        }
        if self.vttbr >= PA_LIMIT {
            return Err(SteError::AddressTooWide { pa: self.vttbr });
        }
        let size = self.root_table_bytes()?;
        // S2TTB holds bits [51:4]; the base must be aligned to the table size
        // (at least 64 bytes when 52-bit output addresses are used).
        let align = size.max(if self.ps == 6 { 64 } else { 16 });
        if self.vttbr & (align - 1) != 0 {
            return Err(SteError::VttbrMisaligned { vttbr: self.vttbr, align });
        }
        Ok(())
    }

    /// The VTCR image placed in STE qword 2 bits \[50:32\] (shifted down to bit 0).
    pub fn vtcr(&self) -> u64 {
        (self.t0sz as u64 & 0x3f)
            | ((self.sl0 as u64 & 3) << 6)
            | ((self.irgn as u64) << 8)
            | ((self.orgn as u64) << 10)
            | ((self.sh as u64) << 12)
            | ((self.tg as u64) << 14)
            | ((self.ps as u64 & 7) << 16)
    }

    fn qword2(&self) -> u64 {
        let mut q = self.vmid as u64 | (self.vtcr() << STE2_VTCR_SHIFT);
        if self.aa64 {
            q |= STE2_S2AA64;
        }
        if self.affd {
            q |= STE2_S2AFFD;
        }
        if self.ptw {
            q |= STE2_S2PTW;
        }
        if self.stall {
            q |= STE2_S2S;
        }
        if self.record_faults {
            q |= STE2_S2R;
        }
        q
    }
}

/// A Stream Table Entry image.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ste {
    words: [u64; STE_QWORDS],
}

impl fmt::Debug for Ste {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ste({:?}", self.config())?;
        for w in self.words {
            write!(f, " {w:#018x}")?;
        }
        f.write_str(")")
    }
}

impl Ste {
    /// All-zero, invalid STE (V=0: transactions raise C_BAD_STE).
    pub const fn invalid() -> Ste {
        Ste { words: [0; STE_QWORDS] }
    }

    /// Valid STE that aborts all traffic without recording events (Config = 0b000).
    pub const fn abort() -> Ste {
        let mut words = [0; STE_QWORDS];
        words[0] = STE0_V | (SteConfig::Abort.bits() << STE0_CFG_SHIFT);
        Ste { words }
    }

    /// Valid bypass STE (Config = 0b100), SHCFG = use incoming shareability.
    pub const fn bypass() -> Ste {
        let mut words = [0; STE_QWORDS];
        words[0] = STE0_V | (SteConfig::Bypass.bits() << STE0_CFG_SHIFT);
        words[1] = 1 << STE1_SHCFG_SHIFT;
        Ste { words }
    }

    /// Stage-1 translation through a CD table (Config = 0b101).
    pub fn s1(cfg: &S1Cfg) -> Result<Ste, SteError> {
        cfg.check()?;
        let mut words = [0; STE_QWORDS];
        words[0] = STE0_V | (SteConfig::S1.bits() << STE0_CFG_SHIFT) | cfg.qword0();
        words[1] = cfg.qword1();
        if cfg.s1dss == S1Dss::Bypass {
            // SHCFG only applies to the bypassed non-substream traffic.
            words[1] |= 1 << STE1_SHCFG_SHIFT;
        }
        Ok(Ste { words })
    }

    /// Stage-2 only translation (Config = 0b110).
    pub fn s2(cfg: &S2Cfg) -> Result<Ste, SteError> {
        cfg.check()?;
        let mut words = [0; STE_QWORDS];
        words[0] = STE0_V | (SteConfig::S2.bits() << STE0_CFG_SHIFT);
        words[1] = (1 << STE1_SHCFG_SHIFT) | ((cfg.eats as u64) << STE1_EATS_SHIFT);
        words[2] = cfg.qword2();
        words[3] = cfg.vttbr & STE3_S2TTB_MASK;
        Ok(Ste { words })
    }

    /// Nested stage 1 + stage 2 (Config = 0b111). The CD table pointer is an IPA.
    /// EATS is taken from the stage-1 config.
    pub fn nested(s1: &S1Cfg, s2: &S2Cfg) -> Result<Ste, SteError> {
        s1.check()?;
        s2.check()?;
        let mut words = [0; STE_QWORDS];
        words[0] = STE0_V | (SteConfig::Nested.bits() << STE0_CFG_SHIFT) | s1.qword0();
        words[1] = s1.qword1() | (1 << STE1_SHCFG_SHIFT);
        words[2] = s2.qword2();
        words[3] = s2.vttbr & STE3_S2TTB_MASK;
        Ok(Ste { words })
    }

    /// Reinterpret raw words (e.g. read back from memory).
    pub const fn from_words(words: [u64; STE_QWORDS]) -> Ste {
        Ste { words }
    }

    pub const fn words(&self) -> [u64; STE_QWORDS] {
        self.words
    }

    pub const fn valid(&self) -> bool {
        self.words[0] & STE0_V != 0
    }

    pub const fn config(&self) -> SteConfig {
        SteConfig::from_bits((self.words[0] & STE0_CFG_MASK) >> STE0_CFG_SHIFT)
    }

    pub const fn vmid(&self) -> u16 {
        (self.words[2] & STE2_S2VMID_MASK) as u16
    }

    /// Set STE.S2VMID on a stage-1 STE (tags stage-1 TLB entries with a VMID when
    /// stage 2 is implemented). Stage-2 STEs carry it already.
    pub const fn with_vmid(mut self, vmid: u16) -> Ste {
        self.words[2] = (self.words[2] & !STE2_S2VMID_MASK) | vmid as u64;
        self
    }

    /// Override SHCFG (bypass / S2 / nested, or S1 with S1DSS=bypass).
    pub const fn with_shcfg(mut self, shcfg: ShCfg) -> Ste {
        self.words[1] = (self.words[1] & !STE1_SHCFG_MASK) | ((shcfg as u64) << STE1_SHCFG_SHIFT);
        self
    }

    /// Bits of this entry that the SMMU interprets (see [`ste_used`]).
    pub fn used(&self) -> [u64; STE_QWORDS] {
        ste_used(&self.words)
    }
}

/// Which bits of an STE the SMMU reads for the configuration encoded in it
/// (equivalent to Linux `arm_smmu_get_ste_used`). Unused bits can be changed freely
/// while the entry is live.
pub fn ste_used(ent: &[u64; STE_QWORDS]) -> [u64; STE_QWORDS] {
    let mut used = [0u64; STE_QWORDS];
    used[0] = STE0_V;
    if ent[0] & STE0_V == 0 {
        return used;
    }
    used[0] |= STE0_CFG_MASK;
    let cfg = (ent[0] & STE0_CFG_MASK) >> STE0_CFG_SHIFT;
    // Config[2] == 0: abort; nothing else is read.
    if cfg & 0b100 == 0 {
        return used;
    }
    if cfg & 0b001 != 0 {
        // Stage 1 translates.
        used[0] |= STE0_S1FMT_MASK | STE0_S1CTXPTR_MASK | STE0_S1CDMAX_MASK;
        used[1] |= STE1_S1DSS_MASK
            | STE1_S1CIR_MASK
            | STE1_S1COR_MASK
            | STE1_S1CSH_MASK
            | STE1_S1STALLD
            | STE1_STRW_MASK
            | STE1_EATS_MASK;
        used[2] |= STE2_S2VMID_MASK;
        if (ent[1] & STE1_S1DSS_MASK) >> STE1_S1DSS_SHIFT == S1Dss::Bypass as u64 {
            used[1] |= STE1_SHCFG_MASK;
        }
    }
    if cfg & 0b010 != 0 {
        // Stage 2 translates.
        used[1] |= STE1_EATS_MASK | STE1_SHCFG_MASK;
        used[2] |= STE2_S2VMID_MASK
            | STE2_VTCR_MASK
            | STE2_S2AA64
            | STE2_S2ENDI
            | STE2_S2AFFD
            | STE2_S2PTW
            | STE2_S2HD
            | STE2_S2HA
            | STE2_S2S
            | STE2_S2R;
        used[3] |= STE3_S2TTB_MASK;
    }
    if cfg == SteConfig::Bypass.bits() {
        used[1] |= STE1_SHCFG_MASK;
    }
    used
}

/// Level-1 stream table descriptor pointing at an L2 table of `2^(span-1)` STEs.
/// `span` must be 1..=12 and the L2 table aligned to its size. Span 0 = invalid: use `0`.
pub fn l1_desc(l2_pa: u64, span: u8) -> Result<u64, SteError> {
    if span == 0 || span > 12 {
        return Err(SteError::BadSpan { span });
    }
    if l2_pa >= PA_LIMIT {
        return Err(SteError::AddressTooWide { pa: l2_pa });
    }
    let align = (STE_QWORDS as u64 * 8) << (span - 1);
    if l2_pa & (align - 1) != 0 {
        return Err(SteError::L2TableMisaligned { pa: l2_pa, align });
    }
    Ok((l2_pa & L1STD_L2PTR_MASK) | span as u64)
}

/// Callback used by the update sequence. `write_qword` must store the value to the live
/// table entry with a single 64-bit store; `sync` must make prior stores visible to the
/// SMMU and issue CFGI_STE (or CFGI_CD) for the entry followed by CMD_SYNC, waiting for it.
pub trait SteWriter {
    fn write_qword(&mut self, index: usize, value: u64);
    fn sync(&mut self);
}

/// How an entry update was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Nothing the SMMU uses changed (unused bits may have been cleaned up).
    NoChange,
    /// Only `critical` qword's used bits changed: no invalid window.
    Hitless { critical: usize },
    /// V=0, rest, qword 0.
    BreakBeforeMake,
}

/// Store `src[range]` into `cur` through the writer; sync once if anything changed.
fn entry_set<W: SteWriter + ?Sized>(
    w: &mut W,
    cur: &mut [u64; STE_QWORDS],
    src: &[u64; STE_QWORDS],
    start: usize,
    len: usize,
) -> bool {
    let mut changed = false;
    for i in start..(start + len).min(STE_QWORDS) {
        if cur[i] != src[i] {
            cur[i] = src[i];
            w.write_qword(i, src[i]);
            changed = true;
        }
    }
    if changed {
        w.sync();
    }
    changed
}

/// Generic live-entry update for 8-qword SMMU structures (STEs and CDs).
///
/// `cur` is the software copy of what is in memory now (updated as writes happen);
/// `used` reports the bits the SMMU reads for a given entry. Qword 0 must hold the
/// valid bit and writing 0 to it must make the entry invalid (true for STE and CD).
pub fn write_entry_with<W: SteWriter + ?Sized>(
    cur: &mut [u64; STE_QWORDS],
    target: &[u64; STE_QWORDS],
    used: fn(&[u64; STE_QWORDS]) -> [u64; STE_QWORDS],
    w: &mut W,
) -> UpdateKind {
    let cur_used = used(cur);
    let target_used = used(target);
    let mut unused_update = [0u64; STE_QWORDS];
    let mut diff: u8 = 0;
    for i in 0..STE_QWORDS {
        // Keep what the current config uses, take target values everywhere else.
        unused_update[i] = (cur[i] & cur_used[i]) | (target[i] & !cur_used[i]);
        // Target bits the target config does not use are dropped (builders never set them).
        if (unused_update[i] & target_used[i]) != (target[i] & target_used[i]) {
            diff |= 1 << i;
        }
    }
    let target = {
        let mut t = *target;
        for i in 0..STE_QWORDS {
            t[i] &= target_used[i];
        }
        t
    };
    if diff.count_ones() == 1 {
        let critical = diff.trailing_zeros() as usize;
        // The critical qword is written in one go in the next step.
        unused_update[critical] = cur[critical];
        entry_set(w, cur, &unused_update, 0, STE_QWORDS);
        entry_set(w, cur, &target, critical, 1);
        entry_set(w, cur, &target, 0, STE_QWORDS);
        UpdateKind::Hitless { critical }
    } else if diff != 0 {
        unused_update[0] = 0;
        entry_set(w, cur, &unused_update, 0, 1);
        entry_set(w, cur, &target, 1, STE_QWORDS - 1);
        entry_set(w, cur, &target, 0, 1);
        UpdateKind::BreakBeforeMake
    } else {
        // No used bit changes; clear leftover unused bits (no semantic effect).
        entry_set(w, cur, &target, 0, STE_QWORDS);
        UpdateKind::NoChange
    }
}

/// Update a live STE from `cur` to `target` (see module docs).
pub fn write_ste<W: SteWriter + ?Sized>(cur: &mut [u64; STE_QWORDS], target: &Ste, w: &mut W) -> UpdateKind {
    write_entry_with(cur, &target.words, ste_used, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Op {
        W(usize, u64),
        Sync,
    }

    /// Records operations and checks, at each sync, that the live entry means either the
    /// old config, the new config, or is invalid.
    pub(crate) struct Recorder {
        pub live: [u64; 8],
        pub old: [u64; 8],
        pub new: [u64; 8],
        pub ops: Vec<Op>,
        pub used: fn(&[u64; 8]) -> [u64; 8],
        pub v_bit: u64,
    }

    fn semantics(e: &[u64; 8], used: fn(&[u64; 8]) -> [u64; 8]) -> [u64; 8] {
        let u = used(e);
        let mut s = *e;
        for i in 0..8 {
            s[i] &= u[i];
        }
        s
    }

    impl SteWriter for Recorder {
        fn write_qword(&mut self, i: usize, v: u64) {
            self.live[i] = v;
            self.ops.push(Op::W(i, v));
        }
        fn sync(&mut self) {
            self.ops.push(Op::Sync);
            let s = semantics(&self.live, self.used);
            let ok = self.live[0] & self.v_bit == 0
                || s == semantics(&self.old, self.used)
                || s == semantics(&self.new, self.used);
            assert!(ok, "torn entry at sync: {:x?}", self.live);
        }
    }

    pub(crate) fn run(
        old: [u64; 8],
        new: [u64; 8],
        used: fn(&[u64; 8]) -> [u64; 8],
        v_bit: u64,
    ) -> (UpdateKind, Vec<Op>) {
        let mut r = Recorder { live: old, old, new, ops: Vec::new(), used, v_bit };
        let mut cur = old;
        let kind = write_entry_with(&mut cur, &new, used, &mut r);
        assert_eq!(cur, new, "final entry");
        assert_eq!(r.live, new, "live entry");
        if !r.ops.is_empty() {
            assert_eq!(r.ops.last(), Some(&Op::Sync), "ends with sync");
        }
        (kind, r.ops)
    }

    fn s1cfg(pa: u64) -> S1Cfg {
        S1Cfg::new(pa)
    }

    fn s2cfg() -> S2Cfg {
        // 40-bit IPA (t0sz 24), 4K, start level 1 -> 2 concatenated tables (8 KiB).
        S2Cfg::new_4k(5, 0x8000_2000, 24, 1, 2)
    }

    fn assert_builder_only_sets_used(s: &Ste) {
        let u = s.used();
        for (i, (w, u)) in s.words().iter().zip(u).enumerate() {
            assert_eq!(w & !u, 0, "qword {i} sets unused bits: {s:?}");
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(Ste::abort().words(), [1, 0, 0, 0, 0, 0, 0, 0]);
        let b = Ste::bypass().words();
        assert_eq!(b[0], 0b1001);
        assert_eq!(b[1], 1 << 44);
        let s = Ste::s1(&S1Cfg { stall_disable: true, ..s1cfg(0x4000_0040) }).unwrap();
        let w = s.words();
        assert_eq!(w[0], 0x4000_0040 | (0b101 << 1) | 1);
        // S1DSS=0, S1CIR=WBRA(1)@2, S1COR=WBRA(1)@4, S1CSH=ISH(3)@6, S1STALLD@27
        assert_eq!(w[1], (1 << 2) | (1 << 4) | (3 << 6) | (1 << 27));
        assert_eq!(s.config(), SteConfig::S1);
        let s = Ste::s2(&s2cfg()).unwrap();
        let w = s.words();
        assert_eq!(w[0], (0b110 << 1) | 1);
        let vtcr = (24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12)) | (2 << 16);
        assert_eq!(w[2], 5 | (vtcr << 32) | (1 << 51) | (1 << 53) | (1 << 54) | (1 << 58));
        assert_eq!(w[3], 0x8000_2000);
        let n = Ste::nested(&s1cfg(0x1000), &s2cfg()).unwrap();
        assert_eq!(n.config(), SteConfig::Nested);
        assert_eq!(n.words()[0] & 0xf, 0b1111);
        let cd = S1Cfg { s1cdmax: 6, s1fmt: S1Fmt::TwoLevel4K, s1dss: S1Dss::Bypass, ..s1cfg(0x1000) };
        let s = Ste::s1(&cd).unwrap();
        assert_eq!(s.words()[0] >> 59, 6);
        assert_eq!((s.words()[0] >> 4) & 3, 1);
        assert_eq!((s.words()[1] >> 44) & 3, 1);
        for s in [Ste::abort(), Ste::bypass(), Ste::s1(&cd).unwrap(), Ste::s2(&s2cfg()).unwrap(), n] {
            assert_builder_only_sets_used(&s);
        }
        assert_builder_only_sets_used(&Ste::s1(&s1cfg(0x40)).unwrap().with_vmid(3));
    }

    #[test]
    fn checks() {
        assert_eq!(Ste::s1(&s1cfg(0x1020)), Err(SteError::CdTableMisaligned { pa: 0x1020 }));
        assert_eq!(Ste::s1(&s1cfg(1 << 52)), Err(SteError::AddressTooWide { pa: 1 << 52 }));
        assert!(matches!(Ste::s1(&S1Cfg { s1cdmax: 21, ..s1cfg(0x40) }), Err(SteError::S1CdMaxTooLarge { .. })));
        // VTTBR must be aligned to 8 KiB root (2 concatenated 4K tables).
        let bad = S2Cfg { vttbr: 0x8000_1000, ..s2cfg() };
        assert_eq!(Ste::s2(&bad), Err(SteError::VttbrMisaligned { vttbr: 0x8000_1000, align: 0x2000 }));
        // 4K: 48-bit IPA needs level 0 (SL0=2); level 1 would need 32 tables.
        let c = S2Cfg { t0sz: 16, sl0: 1, ..s2cfg() };
        assert!(matches!(Ste::s2(&c), Err(SteError::BadS2Geometry { .. })));
        let c = S2Cfg { t0sz: 16, sl0: 2, vttbr: 0x1000, ..s2cfg() };
        assert_eq!(c.root_table_bytes(), Ok(4096));
        assert!(Ste::s2(&c).is_ok());
        // 39-bit IPA starting at level 0 resolves 0 bits there: invalid.
        let c = S2Cfg { t0sz: 25, sl0: 2, ..s2cfg() };
        assert!(matches!(c.root_table_bytes(), Err(SteError::BadS2Geometry { .. })));
        // SL0 = 3 reserved with 4K.
        let c = S2Cfg { sl0: 3, ..s2cfg() };
        assert!(matches!(c.root_table_bytes(), Err(SteError::BadS2Geometry { .. })));
        // 32-bit IPA, 4K, level 1: 4 entries -> 32-byte table.
        let c = S2Cfg { t0sz: 32, sl0: 1, vttbr: 0x20, ..s2cfg() };
        assert_eq!(c.root_table_bytes(), Ok(32));
        assert!(Ste::s2(&c).is_ok());
        // 64K granule, 42-bit IPA from level 2: 2^13 entries? 42-29 = 13 bits -> 64 KiB.
        let c = S2Cfg { tg: S2Granule::G64K, t0sz: 22, sl0: 1, vttbr: 0x1_0000, ..s2cfg() };
        assert_eq!(c.root_table_bytes(), Ok(64 * 1024));
        // 64K, 48-bit IPA from level 2 needs 2^19 entries: too many.
        let c = S2Cfg { tg: S2Granule::G64K, t0sz: 16, sl0: 1, ..s2cfg() };
        assert!(c.root_table_bytes().is_err());
        assert!(matches!(Ste::s2(&S2Cfg { ps: 7, ..s2cfg() }), Err(SteError::BadPs { ps: 7 })));
        assert!(matches!(Ste::s2(&S2Cfg { t0sz: 40, ..s2cfg() }), Err(SteError::BadT0sz { .. })));
        // L1 descriptors
        assert_eq!(l1_desc(0x8000_4000, 9), Ok(0x8000_4000 | 9));
        assert!(matches!(l1_desc(0x8000_2000, 9), Err(SteError::L2TableMisaligned { .. })));
        assert!(matches!(l1_desc(0x8000_0000, 0), Err(SteError::BadSpan { .. })));
        assert!(matches!(l1_desc(0x8000_0000, 13), Err(SteError::BadSpan { .. })));
    }

    fn ste_run(old: &Ste, new: &Ste) -> (UpdateKind, Vec<Op>) {
        run(old.words(), new.words(), ste_used, STE0_V)
    }

    #[test]
    fn abort_to_bypass_is_hitless() {
        let (old, new) = (Ste::abort(), Ste::bypass());
        let (kind, ops) = ste_run(&old, &new);
        assert_eq!(kind, UpdateKind::Hitless { critical: 0 });
        // SHCFG (unused by abort) first, then qword 0.
        assert_eq!(ops, [Op::W(1, 1 << 44), Op::Sync, Op::W(0, new.words()[0]), Op::Sync]);
    }

    #[test]
    fn invalid_to_abort_and_bypass() {
        let (kind, ops) = ste_run(&Ste::invalid(), &Ste::abort());
        assert_eq!(kind, UpdateKind::Hitless { critical: 0 });
        assert_eq!(ops, [Op::W(0, 1), Op::Sync]);
        let (_, ops) = ste_run(&Ste::invalid(), &Ste::bypass());
        assert_eq!(ops, [Op::W(1, 1 << 44), Op::Sync, Op::W(0, 0b1001), Op::Sync]);
    }

    #[test]
    fn bypass_to_s1_is_hitless() {
        let old = Ste::bypass();
        let new = Ste::s1(&s1cfg(0x4000_0000)).unwrap();
        let (kind, ops) = ste_run(&old, &new);
        assert_eq!(kind, UpdateKind::Hitless { critical: 0 });
        let w1 = new.words()[1];
        assert_eq!(
            ops,
            [
                // S1 fields written while bypass still uses SHCFG=incoming.
                Op::W(1, w1 | (1 << 44)),
                Op::Sync,
                Op::W(0, new.words()[0]),
                Op::Sync,
                // Clean the now unused SHCFG.
                Op::W(1, w1),
                Op::Sync,
            ]
        );
    }

    #[test]
    fn s1_to_s2_breaks_before_make() {
        let old = Ste::s1(&s1cfg(0x4000_0000)).unwrap();
        let new = Ste::s2(&s2cfg()).unwrap();
        let (kind, ops) = ste_run(&old, &new);
        assert_eq!(kind, UpdateKind::BreakBeforeMake);
        let n = new.words();
        assert_eq!(
            ops,
            [Op::W(0, 0), Op::Sync, Op::W(1, n[1]), Op::W(2, n[2]), Op::W(3, n[3]), Op::Sync, Op::W(0, n[0]), Op::Sync]
        );
    }

    #[test]
    fn s1_to_other_cd_table_single_write() {
        let old = Ste::s1(&s1cfg(0x4000_0000)).unwrap();
        let new = Ste::s1(&s1cfg(0x4000_1000)).unwrap();
        let (kind, ops) = ste_run(&old, &new);
        assert_eq!(kind, UpdateKind::Hitless { critical: 0 });
        assert_eq!(ops, [Op::W(0, new.words()[0]), Op::Sync]);
    }

    #[test]
    fn s2_to_bypass_and_back_and_no_change() {
        let s2 = Ste::s2(&s2cfg()).unwrap();
        let (kind, _) = ste_run(&s2, &Ste::bypass());
        // Only qword 0 is used differently (SHCFG identical) -> hitless.
        assert_eq!(kind, UpdateKind::Hitless { critical: 0 });
        let (kind, _) = ste_run(&Ste::bypass(), &s2);
        assert_eq!(kind, UpdateKind::Hitless { critical: 0 });
        let (kind, ops) = ste_run(&s2, &s2);
        assert_eq!(kind, UpdateKind::NoChange);
        assert!(ops.is_empty());
        // Different VMID + different table: two qwords used by S2 change -> break.
        let other = Ste::s2(&S2Cfg { vmid: 9, vttbr: 0x9000_0000, ..s2cfg() }).unwrap();
        let (kind, _) = ste_run(&s2, &other);
        assert_eq!(kind, UpdateKind::BreakBeforeMake);
        // To abort: hitless (abort uses only V and Config).
        let (kind, _) = ste_run(&other, &Ste::abort());
        assert_eq!(kind, UpdateKind::Hitless { critical: 0 });
    }

    #[test]
    fn exhaustive_pairs_never_tear() {
        let s2b = S2Cfg { vmid: 7, tg: S2Granule::G64K, t0sz: 22, sl0: 1, vttbr: 0x1_0000, ..s2cfg() };
        let all = [
            Ste::invalid(),
            Ste::abort(),
            Ste::bypass(),
            Ste::s1(&s1cfg(0x4000_0000)).unwrap(),
            Ste::s1(&S1Cfg { s1cdmax: 4, s1dss: S1Dss::Bypass, ..s1cfg(0x4000_1000) }).unwrap(),
            Ste::s1(&s1cfg(0x40)).unwrap().with_vmid(2),
            Ste::s2(&s2cfg()).unwrap(),
            Ste::s2(&s2b).unwrap(),
            Ste::nested(&s1cfg(0x2000), &s2cfg()).unwrap(),
        ];
        for a in &all {
            for b in &all {
                // Recorder asserts old/new/invalid at every sync.
                ste_run(a, b);
            }
        }
    }
}
