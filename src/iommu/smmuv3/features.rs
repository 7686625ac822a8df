//! SMMUv3 feature discovery (SMMU_IDR0..5, SMMU_AIDR).
//!
//! Pure decoding: [`Features::decode`] takes raw register values, so it is host-testable.
//! The register layout itself is in `regs.rs`.
//! Field positions follow the Arm SMMUv3 architecture specification (IHI 0070, chapter 6
//! "Memory map and registers") and were cross-checked against Linux
//! `drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h` and FreeBSD `sys/arm64/iommu/smmureg.h`.

use core::fmt;

// IDR0 fields.
const IDR0_S2P: u32 = 1 << 0;
const IDR0_S1P: u32 = 1 << 1;
const IDR0_TTF_SHIFT: u32 = 2;
const IDR0_COHACC: u32 = 1 << 4;
const IDR0_BTM: u32 = 1 << 5;
const IDR0_HTTU_SHIFT: u32 = 6;
const IDR0_DORMHINT: u32 = 1 << 8;
const IDR0_HYP: u32 = 1 << 9;
const IDR0_ATS: u32 = 1 << 10;
const IDR0_NS1ATS: u32 = 1 << 11;
const IDR0_ASID16: u32 = 1 << 12;
const IDR0_MSI: u32 = 1 << 13;
const IDR0_SEV: u32 = 1 << 14;
const IDR0_ATOS: u32 = 1 << 15;
const IDR0_PRI: u32 = 1 << 16;
const IDR0_VMW: u32 = 1 << 17;
const IDR0_VMID16: u32 = 1 << 18;
const IDR0_CD2L: u32 = 1 << 19;
const IDR0_VATOS: u32 = 1 << 20;
const IDR0_TTENDIAN_SHIFT: u32 = 21;
const IDR0_STALL_MODEL_SHIFT: u32 = 24;
const IDR0_TERM_MODEL: u32 = 1 << 26;
const IDR0_ST_LEVEL_SHIFT: u32 = 27;
// IDR1 fields.
const IDR1_SIDSIZE_MASK: u32 = 0x3f;
const IDR1_SSIDSIZE_SHIFT: u32 = 6;
const IDR1_PRIQS_SHIFT: u32 = 11;
const IDR1_EVTQS_SHIFT: u32 = 16;
const IDR1_CMDQS_SHIFT: u32 = 21;
const IDR1_ATTR_PERMS_OVR: u32 = 1 << 26;
const IDR1_ATTR_TYPES_OVR: u32 = 1 << 27;
const IDR1_REL: u32 = 1 << 28;
const IDR1_QUEUES_PRESET: u32 = 1 << 29;
const IDR1_TABLES_PRESET: u32 = 1 << 30;
const IDR1_ECMDQ: u32 = 1 << 31;
// IDR3 fields.
const IDR3_RIL: u32 = 1 << 10;
// IDR5 fields.
const IDR5_OAS_MASK: u32 = 0x7;
const IDR5_GRAN4K: u32 = 1 << 4;
const IDR5_GRAN16K: u32 = 1 << 5;
const IDR5_GRAN64K: u32 = 1 << 6;
const IDR5_VAX_SHIFT: u32 = 10;
const IDR5_STALL_MAX_SHIFT: u32 = 16;

/// Translation table formats (IDR0.TTF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttf {
    Reserved,
    AArch32,
    AArch64,
    Both,
}

/// Hardware translation table update (IDR0.HTTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Httu {
    None,
    Access,
    AccessDirty,
    Reserved,
}

/// Translation table endianness support (IDR0.TTENDIAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtEndian {
    Mixed,
    Reserved,
    Little,
    Big,
}

/// Stall model (IDR0.STALL_MODEL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallModel {
    /// Stall and Terminate models both supported.
    StallAndTerminate,
    /// Terminate model only: stalling is not supported.
    TerminateOnly,
    /// Stall is forced (STE.S1STALLD / CD.S cannot disable it).
    StallForced,
    Reserved,
}

/// Stream table levels supported (IDR0.ST_LEVEL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StLevel {
    Linear,
    TwoLevel,
    Reserved(u8),
}

/// Decoded SMMUv3 identification registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    // IDR0
    pub stage1: bool,
    pub stage2: bool,
    pub ttf: Ttf,
    /// Coherent access to tables, queues and translations (IDR0.COHACC).
    pub cohacc: bool,
    /// Broadcast TLB maintenance (IDR0.BTM).
    pub btm: bool,
    pub httu: Httu,
    pub dormhint: bool,
    /// Hypervisor stage-1 contexts (EL2/E2H StreamWorlds) (IDR0.HYP).
    pub hyp: bool,
    pub ats: bool,
    pub ns1ats: bool,
    /// 8 or 16.
    pub asid_bits: u8,
    pub msi: bool,
    pub sev: bool,
    pub atos: bool,
    pub pri: bool,
    pub vmw: bool,
    /// 8 or 16.
    pub vmid_bits: u8,
    /// 2-level context descriptor tables (IDR0.CD2L).
    pub cd2l: bool,
    pub vatos: bool,
    pub ttendian: TtEndian,
    pub stall_model: StallModel,
    pub term_model: bool,
    pub st_level: StLevel,
    // IDR1
    pub sid_bits: u8,
    pub ssid_bits: u8,
    /// log2 of the maximum number of entries per queue.
    pub priq_log2: u8,
    pub evtq_log2: u8,
    pub cmdq_log2: u8,
    pub attr_perms_ovr: bool,
    pub attr_types_ovr: bool,
    /// Base addresses in IDRs/bases are relative (IDR1.REL).
    pub rel: bool,
    pub queues_preset: bool,
    pub tables_preset: bool,
    /// Enhanced command queues (IDR1.ECMDQ). Decoded only; not used.
    pub ecmdq: bool,
    // IDR3
    /// Range-based invalidation (IDR3.RIL).
    pub ril: bool,
    // IDR5
    /// Output address size in bits; `None` if IDR5.OAS holds a reserved encoding.
    pub oas_bits: Option<u8>,
    pub gran4k: bool,
    pub gran16k: bool,
    pub gran64k: bool,
    /// 52-bit virtual addresses (IDR5.VAX == 1).
    pub vax52: bool,
    pub stall_max: u16,
    // AIDR
    pub arch_major: u8,
    pub arch_minor: u8,
    /// Raw values as read.
    pub raw_idr: [u32; 6],
    pub raw_aidr: u32,
}

#[inline]
const fn field(v: u32, shift: u32, width: u32) -> u32 {
    (v >> shift) & ((1 << width) - 1)
}

impl Features {
    /// Decode raw IDR0..IDR5 (`idr[n]` = SMMU_IDRn) and SMMU_AIDR.
    pub fn decode(idr: [u32; 6], aidr: u32) -> Features {
        let [i0, i1, _i2, i3, _i4, i5] = idr;
        let ttf = match field(i0, IDR0_TTF_SHIFT, 2) {
            1 => Ttf::AArch32,
            2 => Ttf::AArch64,
            3 => Ttf::Both,
            _ => Ttf::Reserved,
        };
        let httu = match field(i0, IDR0_HTTU_SHIFT, 2) {
            0 => Httu::None,
            1 => Httu::Access,
            2 => Httu::AccessDirty,
            _ => Httu::Reserved,
        };
        let ttendian = match field(i0, IDR0_TTENDIAN_SHIFT, 2) {
            0 => TtEndian::Mixed,
            2 => TtEndian::Little,
            3 => TtEndian::Big,
            _ => TtEndian::Reserved,
        };
        let stall_model = match field(i0, IDR0_STALL_MODEL_SHIFT, 2) {
            0 => StallModel::StallAndTerminate,
            1 => StallModel::TerminateOnly,
            2 => StallModel::StallForced,
            _ => StallModel::Reserved,
        };
        let st_level = match field(i0, IDR0_ST_LEVEL_SHIFT, 2) {
            0 => StLevel::Linear,
            1 => StLevel::TwoLevel,
            x => StLevel::Reserved(x as u8),
        };
        let oas_bits = match i5 & IDR5_OAS_MASK {
            0 => Some(32),
            1 => Some(36),
            2 => Some(40),
            3 => Some(42),
            4 => Some(44),
            5 => Some(48),
            6 => Some(52),
            _ => None,
        };
        Features {
            stage1: i0 & IDR0_S1P != 0,
            stage2: i0 & IDR0_S2P != 0,
            ttf,
            cohacc: i0 & IDR0_COHACC != 0,
            btm: i0 & IDR0_BTM != 0,
            httu,
            dormhint: i0 & IDR0_DORMHINT != 0,
            hyp: i0 & IDR0_HYP != 0,
            ats: i0 & IDR0_ATS != 0,
            ns1ats: i0 & IDR0_NS1ATS != 0,
            asid_bits: if i0 & IDR0_ASID16 != 0 { 16 } else { 8 },
            msi: i0 & IDR0_MSI != 0,
            sev: i0 & IDR0_SEV != 0,
            atos: i0 & IDR0_ATOS != 0,
            pri: i0 & IDR0_PRI != 0,
            vmw: i0 & IDR0_VMW != 0,
            vmid_bits: if i0 & IDR0_VMID16 != 0 { 16 } else { 8 },
            cd2l: i0 & IDR0_CD2L != 0,
            vatos: i0 & IDR0_VATOS != 0,
            ttendian,
            stall_model,
            term_model: i0 & IDR0_TERM_MODEL != 0,
            st_level,
            sid_bits: (i1 & IDR1_SIDSIZE_MASK) as u8,
            ssid_bits: field(i1, IDR1_SSIDSIZE_SHIFT, 5) as u8,
            priq_log2: field(i1, IDR1_PRIQS_SHIFT, 5) as u8,
            evtq_log2: field(i1, IDR1_EVTQS_SHIFT, 5) as u8,
            cmdq_log2: field(i1, IDR1_CMDQS_SHIFT, 5) as u8,
            attr_perms_ovr: i1 & IDR1_ATTR_PERMS_OVR != 0,
            attr_types_ovr: i1 & IDR1_ATTR_TYPES_OVR != 0,
            rel: i1 & IDR1_REL != 0,
            queues_preset: i1 & IDR1_QUEUES_PRESET != 0,
            tables_preset: i1 & IDR1_TABLES_PRESET != 0,
            ecmdq: i1 & IDR1_ECMDQ != 0,
            ril: i3 & IDR3_RIL != 0,
            oas_bits,
            gran4k: i5 & IDR5_GRAN4K != 0,
            gran16k: i5 & IDR5_GRAN16K != 0,
            gran64k: i5 & IDR5_GRAN64K != 0,
            vax52: field(i5, IDR5_VAX_SHIFT, 2) == 1,
            stall_max: field(i5, IDR5_STALL_MAX_SHIFT, 16) as u16,
            arch_major: field(aidr, 4, 4) as u8,
            arch_minor: field(aidr, 0, 4) as u8,
            raw_idr: idr,
            raw_aidr: aidr,
        }
    }

    /// Both stages present: nested (Config = 0b111) STEs are possible.
    pub fn nested(&self) -> bool {
        self.stage1 && self.stage2
    }

    /// AArch64 translation tables supported.
    pub fn aarch64_tables(&self) -> bool {
        matches!(self.ttf, Ttf::AArch64 | Ttf::Both)
    }

    /// 2-level stream table supported.
    pub fn two_level_st(&self) -> bool {
        self.st_level == StLevel::TwoLevel
    }

    /// Architecture version `(3, minor)`: SMMU_AIDR\[7:0\] = 0x00 is SMMUv3.0, 0x01 SMMUv3.1,
    /// 0x02 SMMUv3.2, 0x03 SMMUv3.3 (ArchMajorRev = 0b0000 means SMMUv3.x).
    pub fn version(&self) -> (u8, u8) {
        (3, self.arch_minor)
    }

    /// Bitmap of supported leaf page and block sizes (like Linux `pgsize_bitmap`).
    pub fn pgsize_bitmap(&self) -> u64 {
        let mut m = 0u64;
        if self.gran4k {
            m |= (1 << 12) | (1 << 21) | (1 << 30);
        }
        if self.gran16k {
            m |= (1 << 14) | (1 << 25);
        }
        if self.gran64k {
            m |= (1 << 16) | (1 << 29);
        }
        m
    }

    /// Whether table walks and queue accesses may be cache-coherent: only if the DT
    /// says `dma-coherent` *and* the SMMU reports COHACC, unless forced off. Everything
    /// else gets non-cacheable attributes and CPU cache maintenance.
    pub fn coherent_walk(&self, dt_coherent: bool, force_non_coherent: bool) -> bool {
        dt_coherent && self.cohacc && !force_non_coherent
    }

    /// Smallest supported granule as log2 (12, 14 or 16), if any.
    pub fn smallest_granule_log2(&self) -> Option<u8> {
        if self.gran4k {
            Some(12)
        } else if self.gran16k {
            Some(14)
        } else if self.gran64k {
            Some(16)
        } else {
            None
        }
    }

    /// Stall supported in some form.
    pub fn stalls(&self) -> bool {
        matches!(self.stall_model, StallModel::StallAndTerminate | StallModel::StallForced)
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (maj, min) = self.version();
        write!(f, "SMMUv{maj}.{min}")?;
        if self.arch_major != 0 {
            write!(f, " (AIDR.ArchMajorRev={})", self.arch_major)?;
        }
        f.write_str(":")?;
        if self.stage1 {
            f.write_str(" S1")?;
        }
        if self.stage2 {
            f.write_str(" S2")?;
        }
        if self.nested() {
            f.write_str(" nested")?;
        }
        if !self.stage1 && !self.stage2 {
            f.write_str(" no-translation")?;
        }
        let ttf = match self.ttf {
            Ttf::AArch32 => "AArch32",
            Ttf::AArch64 => "AArch64",
            Ttf::Both => "AArch32+AArch64",
            Ttf::Reserved => "reserved",
        };
        write!(f, " | {ttf} TTF")?;
        f.write_str(if self.cohacc { " | coherent" } else { " | non-coherent" })?;
        match self.st_level {
            StLevel::Linear => f.write_str(" | linear ST")?,
            StLevel::TwoLevel => f.write_str(" | 2-level ST")?,
            StLevel::Reserved(x) => write!(f, " | ST_LEVEL reserved({x})")?,
        }
        if self.cd2l {
            f.write_str(" | 2-level CD")?;
        }
        let endian = match self.ttendian {
            TtEndian::Mixed => "mixed",
            TtEndian::Little => "LE",
            TtEndian::Big => "BE",
            TtEndian::Reserved => "reserved",
        };
        write!(f, " | endian {endian}")?;
        writeln!(f)?;

        write!(
            f,
            "  SID {} bits, SSID {} | ASID {}, VMID {}",
            self.sid_bits, self.ssid_bits, self.asid_bits, self.vmid_bits
        )?;
        match self.oas_bits {
            Some(b) => write!(f, " | OAS {b}")?,
            None => f.write_str(" | OAS reserved")?,
        }
        if self.vax52 {
            f.write_str(" | VA 52")?;
        }
        f.write_str(" | granules")?;
        if self.gran4k {
            f.write_str(" 4K")?;
        }
        if self.gran16k {
            f.write_str(" 16K")?;
        }
        if self.gran64k {
            f.write_str(" 64K")?;
        }
        if !(self.gran4k || self.gran16k || self.gran64k) {
            f.write_str(" none")?;
        }
        f.write_str(if self.ril { " | RIL" } else { " | no RIL" })?;
        writeln!(f)?;

        write!(f, "  CMDQ 2^{} EVTQ 2^{}", self.cmdq_log2, self.evtq_log2)?;
        if self.pri {
            write!(f, " PRIQ 2^{}", self.priq_log2)?;
        }
        f.write_str(if self.msi { " | MSI" } else { " | wired IRQ" })?;
        match (self.ats, self.pri) {
            (false, false) => f.write_str(" | no ATS/PRI")?,
            (true, false) => f.write_str(" | ATS")?,
            (false, true) => f.write_str(" | PRI")?,
            (true, true) => f.write_str(" | ATS PRI")?,
        }
        let httu = match self.httu {
            Httu::None => "none",
            Httu::Access => "AF",
            Httu::AccessDirty => "AF+dirty",
            Httu::Reserved => "reserved",
        };
        write!(f, " | HTTU {httu}")?;
        let stall = match self.stall_model {
            StallModel::StallAndTerminate => "stall+term",
            StallModel::TerminateOnly => "term only",
            StallModel::StallForced => "stall forced",
            StallModel::Reserved => "reserved",
        };
        write!(f, " | stall {stall}")?;
        let flags: [(bool, &str); 11] = [
            (self.btm, "BTM"),
            (self.sev, "SEV"),
            (self.hyp, "HYP"),
            (self.atos, "ATOS"),
            (self.vatos, "VATOS"),
            (self.vmw, "VMW"),
            (self.attr_types_ovr, "ATTR_TYPES_OVR"),
            (self.tables_preset, "TABLES_PRESET"),
            (self.queues_preset, "QUEUES_PRESET"),
            (self.rel, "REL"),
            (self.ecmdq, "ECMDQ"),
        ];
        for (on, name) in flags {
            if on {
                write!(f, " | {name}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    /// QEMU virt `arm-smmuv3` (stage-1) style ID values.
    fn qemu_like() -> ([u32; 6], u32) {
        // IDR0: S1P, TTF=AArch64, COHACC, ASID16, TTENDIAN=LE, STALL_MODEL=1? (QEMU: term only), ST_LEVEL=2lvl
        let idr0 = IDR0_S1P | (2 << 2) | IDR0_COHACC | IDR0_ASID16 | (2 << 21) | (1 << 24) | (1 << 27);
        // IDR1: SIDSIZE=16, EVENTQS=19, CMDQS=19
        let idr1 = 16 | (19 << 16) | (19 << 21);
        let idr3 = IDR3_RIL;
        let idr5 = 4 | IDR5_GRAN4K | IDR5_GRAN64K;
        ([idr0, idr1, 0, idr3, 0, idr5], 0x01)
    }

    #[test]
    fn decode_qemu_like() {
        let (idr, aidr) = qemu_like();
        let f = Features::decode(idr, aidr);
        assert!(f.stage1 && !f.stage2 && !f.nested());
        assert_eq!(f.ttf, Ttf::AArch64);
        assert!(f.cohacc && !f.btm);
        assert_eq!(f.st_level, StLevel::TwoLevel);
        assert_eq!(f.sid_bits, 16);
        assert_eq!(f.ssid_bits, 0);
        assert_eq!(f.asid_bits, 16);
        assert_eq!(f.vmid_bits, 8);
        assert_eq!(f.oas_bits, Some(44));
        assert!(f.gran4k && !f.gran16k && f.gran64k);
        assert!(f.ril);
        assert_eq!(f.cmdq_log2, 19);
        assert_eq!(f.evtq_log2, 19);
        assert_eq!(f.stall_model, StallModel::TerminateOnly);
        assert_eq!(f.ttendian, TtEndian::Little);
        assert_eq!(f.version(), (3, 1));
        assert_eq!(f.smallest_granule_log2(), Some(12));
        let s = format!("{f}");
        assert!(s.starts_with("SMMUv3.1: S1 | AArch64 TTF | coherent | 2-level ST"), "{s}");
        assert!(s.contains("SID 16 bits, SSID 0 | ASID 16, VMID 8 | OAS 44 | granules 4K 64K | RIL"), "{s}");
        assert!(s.contains("CMDQ 2^19 EVTQ 2^19 | wired IRQ | no ATS/PRI | HTTU none"), "{s}");
    }

    #[test]
    fn decode_every_single_bit() {
        // Each IDR0 single-bit flag lands in exactly the expected field.
        type Getter = fn(&Features) -> bool;
        let cases: [(u32, Getter); 17] = [
            (0, |f| f.stage2),
            (1, |f| f.stage1),
            (4, |f| f.cohacc),
            (5, |f| f.btm),
            (8, |f| f.dormhint),
            (9, |f| f.hyp),
            (10, |f| f.ats),
            (11, |f| f.ns1ats),
            (12, |f| f.asid_bits == 16),
            (13, |f| f.msi),
            (14, |f| f.sev),
            (15, |f| f.atos),
            (16, |f| f.pri),
            (17, |f| f.vmw),
            (18, |f| f.vmid_bits == 16),
            (19, |f| f.cd2l),
            (20, |f| f.vatos),
        ];
        for (bit, get) in cases {
            assert!(get(&Features::decode([1 << bit, 0, 0, 0, 0, 0], 0)), "IDR0 bit {bit}");
            // and not set by any other bit
            for other in (0..32).filter(|&o| o != bit) {
                let f = Features::decode([1 << other, 0, 0, 0, 0, 0], 0);
                assert!(!get(&f), "IDR0 bit {other} leaked into bit {bit}");
            }
        }
        let f = Features::decode([0, 1 << 30 | 1 << 29 | 1 << 28 | 1 << 27, 0, 0, 0, 0], 0);
        assert!(f.tables_preset && f.queues_preset && f.rel && f.attr_types_ovr && !f.ecmdq);
        let f = Features::decode([0, (7 << 11) | (5 << 6) | 32, 0, 0, 0, 0], 0);
        assert_eq!((f.priq_log2, f.ssid_bits, f.sid_bits), (7, 5, 32));
    }

    #[test]
    fn oas_and_versions() {
        let bits = [32, 36, 40, 42, 44, 48, 52];
        for (enc, b) in bits.iter().enumerate() {
            let f = Features::decode([0, 0, 0, 0, 0, enc as u32], 0);
            assert_eq!(f.oas_bits, Some(*b));
        }
        assert_eq!(Features::decode([0, 0, 0, 0, 0, 7], 0).oas_bits, None);
        for minor in 0..4 {
            let f = Features::decode([0; 6], minor);
            assert_eq!(f.version(), (3, minor as u8));
            assert!(format!("{f}").starts_with(&format!("SMMUv3.{minor}: no-translation")));
        }
        let f = Features::decode([(3 << 6) | (3 << 2), 0, 0, 0, 0, 0], 0);
        assert_eq!(f.httu, Httu::Reserved);
        assert_eq!(f.ttf, Ttf::Both);
        let f = Features::decode([(2 << 6) | (1 << 27) | (2 << 24), 0, 0, 0, 0, 0], 0);
        assert_eq!(f.httu, Httu::AccessDirty);
        assert_eq!(f.stall_model, StallModel::StallForced);
        // All-ones must not panic and must render.
        let f = Features::decode([u32::MAX; 6], u32::MAX);
        let _ = format!("{f}");
    }

    /// Boards whose DT lacks `dma-coherent` (RK3588) get the non-coherent path even
    /// though the SMMU itself could snoop; D05's coherent SMMUs keep coherent walks.
    #[test]
    fn coherency_follows_dt_and_cohacc() {
        let cohacc = Features::decode([1 << 4, 0, 0, 0, 0, 0], 0);
        let no_cohacc = Features::decode([0; 6], 0);
        let rock = crate::dt::describe(include_bytes!("../../../tests/dt/boards/rk3588-rock-5b.dtb")).unwrap();
        let d05 = crate::dt::describe(include_bytes!("../../../tests/dt/boards/hip07-d05.dtb")).unwrap();
        for s in &rock.smmus {
            assert!(!cohacc.coherent_walk(s.coherent, false), "{}", s.node);
        }
        for s in &d05.smmus {
            assert!(cohacc.coherent_walk(s.coherent, false), "{}", s.node);
            assert!(!no_cohacc.coherent_walk(s.coherent, false), "{}", s.node);
            assert!(!cohacc.coherent_walk(s.coherent, true), "{}: forced non-coherent", s.node);
        }
    }
}
