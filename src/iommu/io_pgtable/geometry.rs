//! Configuration, level geometry and the TCR / VTCR values the SMMU needs.

use super::error::PgtError;

/// Translation granule (page size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB pages; blocks of 2 MiB (level 2) and 1 GiB (level 1).
    K4,
    /// 16 KiB pages; blocks of 32 MiB (level 2).
    K16,
    /// 64 KiB pages; blocks of 512 MiB (level 2).
    K64,
}

impl Granule {
    /// log2 of the page size.
    pub const fn shift(self) -> u32 {
        match self {
            Granule::K4 => 12,
            Granule::K16 => 14,
            Granule::K64 => 16,
        }
    }

    /// Page size in bytes.
    pub const fn size(self) -> u64 {
        1 << self.shift()
    }

    /// The granule a boot argument names (`iommu.granule=4k|16k|64k`, case ignored).
    pub fn from_arg(v: &str) -> Option<Granule> {
        [Granule::K4, Granule::K16, Granule::K64].into_iter().find(|g| v.eq_ignore_ascii_case(g.name()))
    }

    /// "4k", "16k" or "64k", as `from_arg` reads it.
    pub const fn name(self) -> &'static str {
        match self {
            Granule::K4 => "4k",
            Granule::K16 => "16k",
            Granule::K64 => "64k",
        }
    }

    /// TG encoding shared by CD.TG0 and STE.S2TG: 0 = 4K, 1 = 64K, 2 = 16K.
    pub const fn tg_encoding(self) -> u8 {
        match self {
            Granule::K4 => 0,
            Granule::K64 => 1,
            Granule::K16 => 2,
        }
    }
}

/// Translation stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Stage 1: VA -> PA (or IPA), referenced from a Context Descriptor.
    S1,
    /// Stage 2: IPA -> PA, referenced from a Stream Table Entry.
    S2,
}

/// Page-table configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub stage: Stage,
    pub granule: Granule,
    /// Input (VA for stage 1, IPA for stage 2) address bits, 32..=48.
    pub ias: u8,
    /// Output address bits, 32..=48. Output addresses and table addresses must be below `1 << oas`.
    pub oas: u8,
    /// The SMMU's table walker is cache coherent (SMMU_IDR0.COHACC and a coherent
    /// interconnect). When false every table write is followed by `sync_for_device`.
    pub coherent_walk: bool,
}

/// Values for the stage-1 Context Descriptor (the TCR-like fields of CD word 0 and 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S1Tcr {
    /// CD.T0SZ = 64 - ias.
    pub t0sz: u8,
    /// CD.TG0: 0 = 4K, 1 = 64K, 2 = 16K.
    pub tg0: u8,
    /// CD.IR0: 1 = write-back write-allocate (coherent walk), 0 = non-cacheable.
    pub irgn0: u8,
    /// CD.OR0: like `irgn0`.
    pub orgn0: u8,
    /// CD.SH0: 3 = inner shareable (coherent walk), 2 = outer shareable.
    pub sh0: u8,
    /// CD.IPS: 0 = 32, 1 = 36, 2 = 40, 3 = 42, 4 = 44, 5 = 48 bits (smallest size >= oas).
    pub ips: u8,
    /// CD.EPD0: always false (TTB0 walks enabled).
    pub epd0: bool,
    /// CD.EPD1: always true (no TTB1 table).
    pub epd1: bool,
}

/// Values for the stage-2 fields of a Stream Table Entry (VTCR-like S2T0SZ .. S2PS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2Vtcr {
    /// STE.S2T0SZ = 64 - ias.
    pub t0sz: u8,
    /// STE.S2SL0 encoded as VTCR_EL2.SL0: 4K: 0 = level 2, 1 = level 1, 2 = level 0;
    /// 16K/64K: 0 = level 3, 1 = level 2, 2 = level 1.
    pub sl0: u8,
    /// STE.S2TG: 0 = 4K, 1 = 64K, 2 = 16K.
    pub tg: u8,
    /// STE.S2IR0.
    pub irgn: u8,
    /// STE.S2OR0.
    pub orgn: u8,
    /// STE.S2SH0.
    pub sh: u8,
    /// STE.S2PS, same encoding as `S1Tcr::ips`.
    pub ps: u8,
}

/// Last (page) level.
pub(crate) const LEAF_LEVEL: u32 = 3;

/// Derived shape of the table tree. Levels use Arm numbering (0..=3, 3 = pages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub granule: Granule,
    pub pg_shift: u32,
    /// Index bits per (non-root) table: pg_shift - 3.
    pub bpl: u32,
    /// Level of the root table.
    pub start: u32,
    /// Number of granule-sized tables that form the root (1, or 2..=16 for stage-2 concatenation).
    pub concat: u32,
    pub ias: u32,
    pub oas: u32,
    /// Granule size in bytes (`1 << pg_shift`).
    pub page: u64,
    /// `shift(level)` for levels 0..=3, precomputed (the walks use it at every step).
    shifts: [u32; 4],
    /// Index mask of a table at each level (the root's is wider when concatenated).
    idx_masks: [usize; 4],
    /// Lowest level that may hold a leaf (see `leaf_ok`).
    leaf_min: u32,
    /// `[s]`: the level (>= start) whose leaf entries are 2^s bytes, 0 if none (level 0 never
    /// holds leaves).
    leaf_level_of_shift: [u8; 64],
}

impl Geometry {
    pub(crate) fn new(cfg: &Config) -> Result<Self, PgtError> {
        if !(32..=48).contains(&cfg.ias) {
            return Err(PgtError::BadConfig("ias must be 32..=48"));
        }
        if !(32..=48).contains(&cfg.oas) {
            return Err(PgtError::BadConfig("oas must be 32..=48"));
        }
        let pg_shift = cfg.granule.shift();
        let bpl = pg_shift - 3;
        let ias = u32::from(cfg.ias);
        let va_bits = ias - pg_shift;
        let mut levels = va_bits.div_ceil(bpl);
        let mut root_bits = va_bits - (levels - 1) * bpl;
        let mut concat = 1;
        // Stage 2 may start one level lower with up to 16 concatenated root tables
        // (Arm ARM "Concatenated translation tables for the initial stage 2 lookup").
        // Like KVM (levels for ias - 4 bits, at least 2 levels), do it whenever the natural
        // root has <= 16 entries and the walk keeps at least two levels. This also turns the
        // 16K/48-bit level-0 start (SL0 = 3, LPA2 only) into 2 concatenated level-1 tables.
        if cfg.stage == Stage::S2 && root_bits <= 4 && levels > 2 {
            concat = 1 << root_bits;
            levels -= 1;
            root_bits += bpl;
        }
        let start = 4 - levels;
        if cfg.stage == Stage::S2 && cfg.granule != Granule::K4 && start == 0 {
            return Err(PgtError::BadConfig("stage-2 level-0 start needs 52-bit support"));
        }
        let shifts = [0, 1, 2, 3].map(|l| pg_shift + (LEAF_LEVEL - l) * bpl);
        // Index bits of the root table are `root_bits` (more than `bpl` when concatenated).
        let idx_masks = [0, 1, 2, 3].map(|l| if l == start { (1usize << root_bits) - 1 } else { (1usize << bpl) - 1 });
        let leaf_min = match cfg.granule {
            Granule::K4 => 1,
            Granule::K16 | Granule::K64 => 2,
        };
        let mut leaf_level_of_shift = [0u8; 64];
        for l in leaf_min.max(start)..=LEAF_LEVEL {
            leaf_level_of_shift[shifts[l as usize] as usize] = l as u8;
        }
        Ok(Geometry {
            granule: cfg.granule,
            pg_shift,
            bpl,
            start,
            concat,
            ias,
            oas: u32::from(cfg.oas),
            page: 1 << pg_shift,
            shifts,
            idx_masks,
            leaf_min,
            leaf_level_of_shift,
        })
    }

    /// Bit position of the lowest input-address bit indexed at `level`.
    #[inline(always)]
    pub(crate) fn shift(&self, level: u32) -> u32 {
        self.shifts[(level & 3) as usize]
    }

    /// Bytes covered by one entry at `level`.
    #[inline(always)]
    pub(crate) fn entry_size(&self, level: u32) -> u64 {
        1u64 << self.shift(level)
    }

    /// Number of entries in a table at `level`.
    #[inline(always)]
    pub(crate) fn entries(&self, level: u32) -> usize {
        self.idx_masks[(level & 3) as usize] + 1
    }

    /// Index of `iova` in the table at `level`.
    #[inline(always)]
    pub(crate) fn index(&self, level: u32, iova: u64) -> usize {
        ((iova >> self.shift(level)) as usize) & self.idx_masks[(level & 3) as usize]
    }

    /// Do `a` and `b` lie in the same entry at `level`?
    #[inline(always)]
    pub(crate) fn same_entry(&self, level: u32, a: u64, b: u64) -> bool {
        (a ^ b) >> self.shift(level) == 0
    }

    /// Bytes of one granule-sized table.
    #[inline(always)]
    pub(crate) fn granule_bytes(&self) -> usize {
        1usize << self.pg_shift
    }

    /// Bytes of the (possibly concatenated) root.
    pub(crate) fn root_bytes(&self) -> usize {
        self.granule_bytes() * self.concat as usize
    }

    /// May a leaf (page or block) descriptor be used at `level`? Level 3 holds pages; blocks
    /// are 4K: levels 1 and 2, 16K and 64K: level 2 (larger ones need 52-bit addressing).
    #[inline(always)]
    pub(crate) fn leaf_ok(&self, level: u32) -> bool {
        level >= self.leaf_min
    }

    /// The level whose leaf entries (pages, or blocks where blocks are allowed) are exactly
    /// `size` bytes, when `[iova, iova + size)` is one such entry inside the input range: the
    /// single-entry fast paths of `map` and `unmap`. A table lookup, no loop.
    #[inline(always)]
    pub(crate) fn single_leaf(&self, iova: u64, size: u64) -> Option<u32> {
        if size == self.page {
            // One page, the DMA API's everyday case: no lookup.
            return (iova & (size - 1) == 0 && iova >> self.ias == 0).then_some(LEAF_LEVEL);
        }
        let level = self.leaf_level_of_shift[(size.trailing_zeros() & 63) as usize];
        (level != 0 && size.is_power_of_two() && iova & (size - 1) == 0 && iova >> self.ias == 0)
            .then_some(u32::from(level))
    }

    /// SL0 value for this start level (VTCR_EL2.SL0 encoding).
    pub(crate) fn sl0(&self) -> u8 {
        match self.granule {
            Granule::K4 => (2 - self.start) as u8,
            Granule::K16 | Granule::K64 => (3 - self.start) as u8,
        }
    }
}

/// IPS / PS encoding: the smallest supported size that is >= `bits`.
pub(crate) fn ps_encoding(bits: u32) -> u8 {
    match bits {
        0..=32 => 0,
        33..=36 => 1,
        37..=40 => 2,
        41..=42 => 3,
        43..=44 => 4,
        _ => 5,
    }
}
