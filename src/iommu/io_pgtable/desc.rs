//! VMSAv8-64 descriptor formats (Arm ARM D8.3, "Translation table descriptor formats"),
//! restricted to 48-bit output addresses (no FEAT_LPA / FEAT_LPA2).

use super::error::PgtError;
use super::geometry::Stage;

/// Bit 0: the descriptor is valid.
pub const DESC_VALID: u64 = 1 << 0;
/// Bits[1:0].
pub const DESC_TYPE_MASK: u64 = 0b11;
/// Bits[1:0] of a table descriptor (levels 0..=2).
pub const DESC_TABLE: u64 = 0b11;
/// Bits[1:0] of a page descriptor (level 3).
pub const DESC_PAGE: u64 = 0b11;
/// Bits[1:0] of a block descriptor (levels 1..=2).
pub const DESC_BLOCK: u64 = 0b01;
/// Bits[1:0] = 0b10: software-only encoding of an *invalid* descriptor (bit 0 clear, so the
/// walker faults; bits[63:1] of an invalid descriptor are IGNORED by hardware) that holds a
/// split table waiting for `IoPageTable::complete`. Never seen at level 3.
pub const DESC_PENDING: u64 = 0b10;
/// Bits[1:0] of a leaf descriptor at `level`: a page at level 3, a block above.
#[inline(always)]
pub fn leaf_type(level: u32) -> u64 {
    if level == super::geometry::LEAF_LEVEL { DESC_PAGE } else { DESC_BLOCK }
}

/// Output / next-level address, bits[47:12] (the low bits up to the granule are zero).
pub const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// SH[1:0], bits[9:8], of leaf descriptors.
pub const SH_SHIFT: u32 = 8;
/// Access flag, bit 10 (set: no hardware access-flag management).
pub const AF: u64 = 1 << 10;

/// Stage 1: AttrIndx[2:0], bits[4:2] (index into [`MAIR`]).
pub const S1_ATTRINDX_SHIFT: u32 = 2;
/// Stage 1: AP[1], bit 6: unprivileged (EL0) access allowed.
pub const S1_AP_UNPRIV: u64 = 1 << 6;
/// Stage 1: AP[2], bit 7: read-only.
pub const S1_AP_RDONLY: u64 = 1 << 7;
/// Stage 1: nG, bit 11: not global (TLB entries tagged with the ASID).
pub const S1_NG: u64 = 1 << 11;
/// Stage 1: PXN, bit 53.
pub const S1_PXN: u64 = 1 << 53;
/// Stage 1: UXN / XN, bit 54.
pub const S1_UXN: u64 = 1 << 54;

/// Stage 2: MemAttr[3:0], bits[5:2].
pub const S2_MEMATTR_SHIFT: u32 = 2;
/// Stage 2: S2AP[0], bit 6: read allowed.
pub const S2_AP_READ: u64 = 1 << 6;
/// Stage 2: S2AP[1], bit 7: write allowed.
pub const S2_AP_WRITE: u64 = 1 << 7;
/// Stage 2: XN[1], bit 54 (XN[1:0] = 0b10: execute-never at every EL, with or without FEAT_XNX).
pub const S2_XN: u64 = 1 << 54;

/// MAIR attribute index of Normal write-back cacheable memory.
pub const MAIR_IDX_NORMAL_WB: u64 = 0;
/// MAIR attribute index of Normal non-cacheable memory.
pub const MAIR_IDX_NORMAL_NC: u64 = 1;
/// MAIR attribute index of Device-nGnRE memory.
pub const MAIR_IDX_DEVICE: u64 = 2;
/// Stage-1 MAIR value: Attr0 = 0xff (Normal, inner/outer write-back non-transient,
/// read/write-allocate), Attr1 = 0x44 (Normal inner/outer non-cacheable),
/// Attr2 = 0x04 (Device-nGnRE), Attr3..7 = 0 (Device-nGnRnE, unused).
pub const MAIR: u64 = 0xff | (0x44 << 8) | (0x04 << 16);

/// Stage-2 MemAttr values.
pub const S2_MEMATTR_NORMAL_WB: u64 = 0b1111;
pub const S2_MEMATTR_NORMAL_NC: u64 = 0b0101;
pub const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001;

/// Software bookkeeping kept in IGNORED bits of *table* descriptors: the number of valid
/// (or split-pending) entries of the next-level table. Low 6 bits in bits[7:2], high 8 bits in
/// bits[58:51]; both ranges are IGNORED in VMSAv8-64 table descriptors (bits[9:8] and bit 10
/// are avoided because FEAT_LPA2 / FEAT_HAFT give them meaning). Up to 16383 >= 8192 entries.
const CNT_LO_SHIFT: u32 = 2;
const CNT_LO_MASK: u64 = 0x3f << CNT_LO_SHIFT;
const CNT_HI_SHIFT: u32 = 51;
const CNT_HI_MASK: u64 = 0xff << CNT_HI_SHIFT;

/// Number of live entries recorded in a table descriptor.
#[inline(always)]
pub fn table_count(d: u64) -> u32 {
    (((d & CNT_LO_MASK) >> CNT_LO_SHIFT) | (((d & CNT_HI_MASK) >> CNT_HI_SHIFT) << 6)) as u32
}

/// `d` with its live-entry count replaced by `count`.
#[inline(always)]
pub fn with_count(d: u64, count: u32) -> u64 {
    let c = u64::from(count);
    (d & !(CNT_LO_MASK | CNT_HI_MASK))
        | ((c << CNT_LO_SHIFT) & CNT_LO_MASK)
        | (((c >> 6) << CNT_HI_SHIFT) & CNT_HI_MASK)
}

/// `d` with its live-entry count one higher (the caller knows it stays below 16384): one
/// add unless the low field carries.
#[inline(always)]
pub fn count_up(d: u64) -> u64 {
    if d & CNT_LO_MASK != CNT_LO_MASK { d + (1 << CNT_LO_SHIFT) } else { with_count(d, table_count(d) + 1) }
}

/// `d` with its live-entry count one lower, or unchanged at 0: one subtraction unless the
/// low field borrows.
#[inline(always)]
pub fn count_down(d: u64) -> u64 {
    if d & CNT_LO_MASK != 0 { d - (1 << CNT_LO_SHIFT) } else { with_count(d, table_count(d).saturating_sub(1)) }
}

/// A table descriptor pointing at `pa` whose table has `count` live entries.
/// NSTable / APTable / XNTable / PXNTable (bits 63:59) are zero: no hierarchical limits.
#[inline(always)]
pub fn table_desc(pa: u64, count: u32) -> u64 {
    with_count((pa & ADDR_MASK) | DESC_TABLE, count)
}

/// Leaf attribute bits kept when a block is split (everything but address and type).
pub const LEAF_ATTR_MASK: u64 = !(ADDR_MASK | DESC_TYPE_MASK);

/// Memory type of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Normal, inner and outer write-back cacheable (read/write allocate).
    Normal,
    /// Normal, non-cacheable.
    NormalNonCacheable,
    /// Device-nGnRE (MMIO).
    Device,
}

/// Shareability domain of a mapping (SH\[1:0\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shareability {
    /// Inner shareable (0b11).
    Inner,
    /// Outer shareable (0b10).
    Outer,
    /// Non-shareable (0b00).
    Non,
}

impl Shareability {
    const fn bits(self) -> u64 {
        match self {
            Shareability::Inner => 0b11,
            Shareability::Outer => 0b10,
            Shareability::Non => 0b00,
        }
    }
}

/// Access permissions and attributes of a mapping.
///
/// Stage 1 cannot express write-without-read: `write && !read` is mapped read/write.
/// A mapping with neither read nor write is refused (`PgtError::BadProt`) in both stages.
/// `privileged` only matters for stage 1 (AP\[1\] clear: privileged-only access).
/// The requested shareability is encoded as given; the architecture treats Device and
/// Normal non-cacheable memory as outer shareable regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    /// false => execute-never (stage 1: UXN and PXN; stage 2: XN).
    pub exec: bool,
    /// Stage 1: privileged-only (AP\[1\] = 0). Otherwise AP\[1\] = 1.
    pub privileged: bool,
    pub mem: MemType,
    pub shareable: Shareability,
}

impl Prot {
    /// Read/write, not executable, unprivileged, Normal write-back, inner shareable.
    pub const RW: Prot = Prot {
        read: true,
        write: true,
        exec: false,
        privileged: false,
        mem: MemType::Normal,
        shareable: Shareability::Inner,
    };
    /// Read-only, otherwise like [`Prot::RW`].
    pub const RO: Prot = Prot { write: false, ..Prot::RW };
    /// Read/write Device-nGnRE (MMIO), outer shareable, not executable.
    pub const DEVICE_RW: Prot = Prot { mem: MemType::Device, shareable: Shareability::Outer, ..Prot::RW };
}

impl Default for Prot {
    fn default() -> Self {
        Prot::RW
    }
}

/// Leaf attribute bits (no address, no type bits) for `prot` at `stage`.
pub fn leaf_attrs(stage: Stage, prot: &Prot) -> Result<u64, PgtError> {
    if !prot.read && !prot.write {
        return Err(PgtError::BadProt("mapping needs read or write permission"));
    }
    let mut a = AF | (prot.shareable.bits() << SH_SHIFT);
    match stage {
        Stage::S1 => {
            let idx = match prot.mem {
                MemType::Normal => MAIR_IDX_NORMAL_WB,
                MemType::NormalNonCacheable => MAIR_IDX_NORMAL_NC,
                MemType::Device => MAIR_IDX_DEVICE,
            };
            a |= (idx << S1_ATTRINDX_SHIFT) | S1_NG;
            if !prot.privileged {
                a |= S1_AP_UNPRIV;
            }
            if !prot.write {
                a |= S1_AP_RDONLY;
            }
            if !prot.exec {
                a |= S1_UXN | S1_PXN;
            }
        }
        Stage::S2 => {
            let attr = match prot.mem {
                MemType::Normal => S2_MEMATTR_NORMAL_WB,
                MemType::NormalNonCacheable => S2_MEMATTR_NORMAL_NC,
                MemType::Device => S2_MEMATTR_DEVICE_NGNRE,
            };
            a |= attr << S2_MEMATTR_SHIFT;
            if prot.read {
                a |= S2_AP_READ;
            }
            if prot.write {
                a |= S2_AP_WRITE;
            }
            if !prot.exec {
                a |= S2_XN;
            }
        }
    }
    Ok(a)
}
