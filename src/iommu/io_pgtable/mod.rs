//! VMSAv8-64 (LPAE) I/O page tables for the SMMUv3, stage 1 and stage 2.
//!
//! * Granules 4K / 16K / 64K, input 32..=48 bits, output 32..=48 bits.
//! * Leaves: pages at level 3, blocks where the architecture allows them without 52-bit
//!   addressing (4K: 2 MiB and 1 GiB; 16K: 32 MiB; 64K: 512 MiB). `map` uses the largest
//!   leaf that the alignment of both IOVA and PA allows at every step.
//! * Stage 2 starts one level lower with 2..=16 concatenated root tables whenever the natural
//!   root would have <= 16 entries and at least two levels remain (as KVM does), e.g. 4K/40-bit:
//!   2 concatenated level-1 tables, SL0 = 1.
//! * Walks are done once per table: `map`/`unmap` descend once to the deepest table holding the
//!   whole range, then iterate the entries of each table and recurse (depth <= 3) only into
//!   the tables they touch; runs of pages inside one leaf table and runs of whole blocks take
//!   straight-line fast paths, and unmapping exactly one entry that holds a table detaches that
//!   table whole (one scan, no per-entry writes).
//! * One page or one block (the DMA API's common case) whose tables exist, and stay linked on
//!   unmap, takes a straight walk and one store (`map_one`, `unmap_one`); anything else,
//!   errors included, the general path. For pages the walk is usually skipped: the last
//!   page table such a walk reached, and the entry pointing to it, are remembered
//!   (`WalkCache`) until any table leaves the tree.
//! * No heap allocation at all: tables allocated ahead of an operation and tables awaiting
//!   their deferred free are linked through their own entry 0. `tests/bench_pgtable.rs`
//!   (`make bench-host`) times all this against `aarch64-paging`.
//! * No hardware table updates (HTTU) are assumed: AF is set in every leaf, so the CD/STE must
//!   leave HA/HD (and HAFT) disabled.
//! * Live-entry counts of every non-root table live in IGNORED bits of the table descriptor
//!   that points to it (see `desc::table_count`), so a table that becomes empty is detected in
//!   O(1) and freed (deferred, see below).
//! * Retained tables ([`IoPageTable::set_retain_empty_tables`], for DMA domains): a table that
//!   becomes empty through unmaps of parts of it stays linked (count 0), as Linux's
//!   io-pgtable-arm keeps them, so mapping a page there again allocates, zeroes and cleans
//!   nothing. An unmap covering a whole table entry still detaches (and frees) the table;
//!   [`IoPageTable::trim`] unlinks every empty table. A block mapped where an empty table is
//!   retained is mapped as next-level entries inside that table (replacing the table by a
//!   block would need a walk-cache invalidation first).
//!
//! ## Atomicity
//! `map` first walks the range read-only (refusing `AlreadyMapped` before anything changes),
//! counts the tables it needs and allocates all of them; only then does it write. So `map`
//! either maps the whole range or changes nothing. `unmap` pre-allocates the tables needed to
//! split the (at most two) blocks at the range edges, so it cannot fail half-way either.
//!
//! ## Unmap, deferred frees and block splitting (break-before-make)
//! `unmap` writes invalid descriptors and records in a [`Gather`] which IOVA range must be
//! invalidated. Tables that are detached (range covers them) or become empty are unlinked and
//! queued in the gather; they are handed back to [`TableMemory::free_table`] only by
//! [`IoPageTable::complete`], which the driver calls after its TLB invalidation + CMD_SYNC,
//! so the walker can never follow a stale walk-cache entry into reused memory.
//!
//! Unmapping part of a block splits it with strict break-before-make, without callbacks:
//! 1. `unmap` builds (and cleans to PoC if needed) a complete next-level table mapping the
//!    rest of the block, then replaces the block by an *invalid* descriptor (bit 0 clear; the
//!    software bits remember the prepared table) and adds the whole block to the gather;
//! 2. the driver invalidates the gather's range and syncs;
//! 3. `complete` writes the table descriptor (invalid -> valid needs no invalidation).
//!
//! Between 1 and 3 the rest of the block is unmapped (DMA there faults) and further
//! `map`/`unmap` calls return [`PgtError::SplitPending`]. Unmaps that split nothing never block
//! anything.
//!
//! ## Unmap of holes
//! Holes inside the range are skipped; `unmap` returns the number of bytes that were mapped.
//! If nothing at all was mapped it returns `Err(NotMapped { iova })` and touches nothing;
//! only with retained tables, a range whose whole-entry tables held nothing but empty tables
//! detaches them and returns `Ok(0)` (the gather then needs its invalidation and `complete`).
#![deny(unsafe_op_in_unsafe_fn)]

mod desc;
mod error;
mod gather;
mod geometry;
mod memory;
#[cfg(test)]
mod tests;

pub use desc::{MAIR, MemType, Prot, Shareability};
pub use error::PgtError;
pub use gather::Gather;
pub use geometry::{Config, Granule, S1Tcr, S2Vtcr, Stage};
pub use memory::TableMemory;

use desc::{
    ADDR_MASK, DESC_BLOCK, DESC_PAGE, DESC_PENDING, DESC_TABLE, DESC_TYPE_MASK, DESC_VALID, LEAF_ATTR_MASK, count_down,
    count_up, leaf_attrs, leaf_type, table_count, table_desc, with_count,
};
use gather::PendingInstall;
use geometry::{Geometry, LEAF_LEVEL, ps_encoding};
use memory::{TablePtr, publish_barrier};

/// A table descriptor on a walk: (its table, index, value).
type ParentEntry = (TablePtr, usize, u64);

/// Tables allocated ahead of a write pass, linked through entry 0 (`head` = first PA).
struct Stash {
    head: u64,
    len: usize,
}

/// A leaf entry, as [`IoPageTable::leaf`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// Output address of the entry's first byte.
    pub pa: u64,
    /// Bytes the entry maps (page or block size).
    pub size: u64,
    /// Its attribute bits: what `map` writes for a `Prot` (see [`IoPageTable::attrs`]).
    pub attrs: u64,
}

/// One I/O address space: a VMSAv8-64 translation table tree in [`TableMemory`].
///
/// Dropping it frees every table, the root included; the driver must first make sure the SMMU
/// no longer uses it (CD/STE invalidated and synced) and must have `complete`d its gathers
/// (tables still queued in a gather are leaked, not freed twice).
pub struct IoPageTable<M: TableMemory> {
    cfg: Config,
    geo: Geometry,
    mem: M,
    root_pa: u64,
    root_va: *mut u64,
    /// Non-root tables allocated and not yet freed (including those waiting in gathers).
    live: usize,
    /// Splits waiting for `complete`.
    pending_splits: usize,
    /// Keep tables that become empty linked (see the module docs).
    retain: bool,
    /// The last page table (level 3) a one-page map or unmap walked to: see [`WalkCache`].
    walk_cache: WalkCache,
}

/// The leaf table of one last-level block's worth of IOVA (2 MiB with 4K pages) and the
/// table entry pointing to it, remembered by the walk that found them: the DMA API maps and
/// unmaps single pages near each other, and a walk from the root costs a load and a check
/// per level. A table only leaves the tree through `defer` or `free_now`, and both forget
/// the cache, so a remembered table is always still linked where it was found (tables are
/// only ever added below existing ones, and a split never concerns a range held by a table).
#[derive(Clone, Copy)]
struct WalkCache {
    /// `iova >> shift(LEAF_LEVEL - 1)` of the cached range; `NONE` when empty.
    key: u64,
    leaf: TablePtr,
    /// The table holding the entry that points to `leaf`, and the entry's index.
    parent: TablePtr,
    pidx: usize,
}

impl WalkCache {
    const NONE: u64 = u64::MAX;
    const EMPTY: WalkCache =
        WalkCache { key: WalkCache::NONE, leaf: TablePtr::DANGLING, parent: TablePtr::DANGLING, pidx: 0 };
}

// SAFETY: the raw pointers refer to table memory owned exclusively by this value; it is
// written only through `&mut self` and read through `&self`, so moving the whole value to
// another thread is as safe as moving `M`.
unsafe impl<M: TableMemory + Send> Send for IoPageTable<M> {}
// SAFETY: `&self` methods only read table memory; writes need `&mut self`.
unsafe impl<M: TableMemory + Sync> Sync for IoPageTable<M> {}

impl<M: TableMemory> IoPageTable<M> {
    /// Validate `cfg` and allocate the (possibly concatenated) root table.
    pub fn new(cfg: Config, mut mem: M) -> Result<Self, PgtError> {
        let geo = Geometry::new(&cfg)?;
        let bytes = geo.root_bytes();
        let (pa, va) = mem.alloc_table(bytes).ok_or(PgtError::NoMemory)?;
        if !table_mem_ok(pa, va, bytes, geo.oas) {
            mem.free_table(pa, va, bytes);
            return Err(PgtError::BadTableMemory { pa });
        }
        if !cfg.coherent_walk {
            mem.sync_for_device(va, bytes);
        }
        Ok(IoPageTable {
            cfg,
            geo,
            mem,
            root_pa: pa,
            root_va: va,
            live: 0,
            pending_splits: 0,
            retain: false,
            walk_cache: WalkCache::EMPTY,
        })
    }

    /// Keep (true) or free (false, the default) tables that become empty through unmaps of
    /// parts of them. Retaining makes remapping near a recent mapping cheap (DMA domains map
    /// and unmap single pages all the time); [`trim`](Self::trim) gives the memory back.
    /// Turning it off does not free tables already retained: call `trim`.
    pub fn set_retain_empty_tables(&mut self, on: bool) {
        self.retain = on;
    }

    /// Tables that become empty are kept (see [`set_retain_empty_tables`](Self::set_retain_empty_tables)).
    pub fn retains_empty_tables(&self) -> bool {
        self.retain
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The table memory provider.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// PA of the root table: CD.TTB0 (stage 1) or STE.S2TTB (stage 2).
    pub fn root_pa(&self) -> u64 {
        self.root_pa
    }

    /// Level (0..=2) of the root table.
    pub fn start_level(&self) -> u32 {
        self.geo.start
    }

    /// Number of granule-sized tables forming the root (2..=16 when concatenated, else 1).
    pub fn root_tables(&self) -> usize {
        self.geo.concat as usize
    }

    /// Granule-sized non-root tables currently allocated: the root is *excluded*; tables
    /// waiting in a gather for `complete` are included.
    pub fn tables_in_use(&self) -> usize {
        self.live
    }

    /// `tables_in_use() + root_tables()`.
    pub fn tables_in_use_with_root(&self) -> usize {
        self.live + self.geo.concat as usize
    }

    /// A block split waits for `complete`.
    pub fn is_split_pending(&self) -> bool {
        self.pending_splits != 0
    }

    /// Stage-1 MAIR value that the `Prot::mem` encodings index (CD.MAIR0/1).
    pub fn mair(&self) -> u64 {
        MAIR
    }

    /// CD fields for a stage-1 table (`None` for stage 2).
    pub fn s1_tcr(&self) -> Option<S1Tcr> {
        if self.cfg.stage != Stage::S1 {
            return None;
        }
        let (rgn, sh) = self.walk_attrs();
        Some(S1Tcr {
            t0sz: 64 - self.cfg.ias,
            tg0: self.cfg.granule.tg_encoding(),
            irgn0: rgn,
            orgn0: rgn,
            sh0: sh,
            ips: ps_encoding(self.geo.oas),
            epd0: false,
            epd1: true,
        })
    }

    /// STE stage-2 fields for a stage-2 table (`None` for stage 1).
    pub fn s2_vtcr(&self) -> Option<S2Vtcr> {
        if self.cfg.stage != Stage::S2 {
            return None;
        }
        let (rgn, sh) = self.walk_attrs();
        Some(S2Vtcr {
            t0sz: 64 - self.cfg.ias,
            sl0: self.geo.sl0(),
            tg: self.cfg.granule.tg_encoding(),
            irgn: rgn,
            orgn: rgn,
            sh,
            ps: ps_encoding(self.geo.oas),
        })
    }

    /// Walk cacheability and shareability: write-back write-allocate inner shareable for a
    /// coherent walker, non-cacheable outer shareable otherwise (as Linux does).
    fn walk_attrs(&self) -> (u8, u8) {
        if self.cfg.coherent_walk { (1, 3) } else { (0, 2) }
    }

    /// Map `[iova, iova + size)` to `[pa, pa + size)`. All three must be granule aligned.
    /// Either the whole range is mapped or nothing changes (see the module docs).
    #[inline]
    pub fn map(&mut self, iova: u64, pa: u64, size: u64, prot: Prot) -> Result<(), PgtError> {
        // Fast path (the DMA API's one page, or one block): a single leaf entry below tables
        // that already exist. Everything else, errors included, takes the general path.
        if let Some((leaf, attrs)) = self.one_leaf(iova, pa, size, &prot)
            && self.map_one(leaf, iova, pa, attrs)
        {
            return Ok(());
        }
        self.map_slow(iova, pa, size, prot)
    }

    /// The level and attributes of the single leaf entry that maps `[iova, iova + size)` to
    /// `pa` with `prot`, if one entry can (a page or a block, all aligned, all in range).
    #[inline(always)]
    fn one_leaf(&self, iova: u64, pa: u64, size: u64, prot: &Prot) -> Option<(u32, u64)> {
        if self.pending_splits != 0 {
            return None;
        }
        let leaf = self.geo.single_leaf(iova, size)?;
        if pa & (size - 1) != 0 || pa >> self.geo.oas != 0 {
            return None;
        }
        Some((leaf, leaf_attrs(self.cfg.stage, prot).ok()?))
    }

    /// `map` when the one-entry fast path did not do it: one leaf below missing tables, or
    /// the general path. Kept out of line so that the fast path stays small.
    #[inline(never)]
    fn map_slow(&mut self, iova: u64, pa: u64, size: u64, prot: Prot) -> Result<(), PgtError> {
        if let Some((leaf, attrs)) = self.one_leaf(iova, pa, size, &prot)
            && let Some(r) = self.map_one_new_tables(leaf, iova, pa, attrs)
        {
            return r;
        }
        self.map_general(iova, pa, size, prot)
    }

    /// The DMA API's one-page map: `iova` -> `pa` (both granule aligned) with `attrs` as
    /// [`attrs`](Self::attrs) returned them, when the page's table exists and its entry is
    /// free (the common case, with the walk cache: no walk). false: nothing changed, and
    /// [`map`](Self::map) does the rest (allocates tables, or says why it cannot).
    #[inline]
    pub fn map_page(&mut self, iova: u64, pa: u64, attrs: u64) -> bool {
        let g = &self.geo;
        self.pending_splits == 0
            && (iova | pa) & (g.page - 1) == 0
            && iova >> g.ias == 0
            && pa >> g.oas == 0
            && attrs & desc::AF != 0
            && self.map_one(LEAF_LEVEL, iova, pa, attrs & LEAF_ATTR_MASK)
    }

    #[inline]
    fn map_general(&mut self, iova: u64, pa: u64, size: u64, prot: Prot) -> Result<(), PgtError> {
        if self.pending_splits != 0 {
            return Err(PgtError::SplitPending);
        }
        self.check_iova_range(iova, size)?;
        let gran = self.geo.page;
        if pa & (gran - 1) != 0 {
            return Err(PgtError::Unaligned { what: "pa", value: pa, align: gran });
        }
        match pa.checked_add(size) {
            Some(e) if e <= 1u64 << self.geo.oas => {}
            _ => {
                return Err(PgtError::OutOfRange { what: "pa", addr: pa, size, bits: self.cfg.oas });
            }
        }
        let attrs = leaf_attrs(self.cfg.stage, &prot)?;
        // Descend once to the deepest table that has one entry covering the whole range; the
        // passes below start there, and only that table's parent entry needs a count update.
        let end = iova + size;
        let (mut level, mut t) = (self.geo.start, self.root());
        let mut parent = None;
        while level < LEAF_LEVEL && self.geo.same_entry(level, iova, end - 1) {
            let idx = self.geo.index(level, iova);
            let d = t.get(idx);
            if d & DESC_TYPE_MASK != DESC_TABLE {
                break;
            }
            parent = Some((t, idx));
            t = self.table(d & ADDR_MASK);
            level += 1;
        }
        if level == LEAF_LEVEL {
            // Fast path (e.g. page-by-page mapping): pages inside one existing leaf table.
            let added = self.map_leaf_run(t, iova, pa, size, attrs)?;
            if let Some((pt, pidx)) = parent {
                let d = pt.get(pidx);
                pt.set(pidx, with_count(d, table_count(d) + added));
            }
            return Ok(());
        }
        // Fast path (e.g. one 1 GiB or a run of 2 MiB mappings): whole, aligned blocks into
        // invalid entries of this table.
        let esz = self.geo.entry_size(level);
        if self.geo.leaf_ok(level)
            && (iova | pa | size) & (esz - 1) == 0
            && let Some(added) = self.map_block_run(level, t, iova, pa, size, attrs)
        {
            if let Some((pt, pidx)) = parent {
                let d = pt.get(pidx);
                pt.set(pidx, with_count(d, table_count(d) + added));
            }
            return Ok(());
        }
        let need = self.map_check(level, t, iova, pa, size)?;
        let mut stash = if need == 0 { Stash { head: 0, len: 0 } } else { self.stash_fill(need)? };
        let mut added = 0;
        let r = self.map_level(level, t, false, iova, pa, size, attrs, &mut stash, &mut added);
        if let Some((pt, pidx)) = parent
            && added != 0
        {
            // Only IGNORED bits change: no sync needed for the walker.
            let d = pt.get(pidx);
            pt.set(pidx, with_count(d, table_count(d) + added));
        }
        debug_assert_eq!(stash.len, 0, "map pre-count was not exact");
        self.stash_drain(&mut stash);
        r
    }

    /// Unmap every mapping inside `[iova, iova + size)` (granule aligned), splitting blocks that
    /// straddle the range edges. Returns the number of bytes that were mapped; holes are
    /// skipped; `Err(NotMapped)` if nothing was mapped. The gather must then be invalidated
    /// and passed to [`complete`](Self::complete) (see [`Gather`]). Errors other than
    /// `NotMapped` are returned before anything changes.
    #[inline]
    pub fn unmap(&mut self, iova: u64, size: u64, gather: &mut Gather) -> Result<u64, PgtError> {
        // Fast path (the DMA API's one page, or one block): a single leaf entry whose table
        // stays linked. Everything else, errors included, takes the general path.
        if self.pending_splits == 0
            && !self.foreign(gather)
            && let Some(leaf) = self.geo.single_leaf(iova, size)
            && self.unmap_one(leaf, iova, gather).is_some()
        {
            return Ok(size);
        }
        self.unmap_general(iova, size, gather)
    }

    /// [`unmap`](Self::unmap), also returning the leaf entry that translated `iova` until
    /// now (None if none did): what a TLB may still hold for it, as lazy mode's flush queue
    /// needs to know. One walk on the fast path.
    pub fn unmap_leaf(&mut self, iova: u64, size: u64, gather: &mut Gather) -> Result<(u64, Option<Leaf>), PgtError> {
        if self.pending_splits == 0
            && !self.foreign(gather)
            && let Some(level) = self.geo.single_leaf(iova, size)
            && let Some(d) = self.unmap_one(level, iova, gather)
        {
            // `size` is the entry's size here: a page or a block.
            return Ok((size, Some(Leaf { pa: d & ADDR_MASK & !(size - 1), size, attrs: d & LEAF_ATTR_MASK })));
        }
        let leaf = self.leaf(iova);
        Ok((self.unmap_general(iova, size, gather)?, leaf))
    }

    /// The DMA API's one-page unmap (lazy mode's): clear the page entry at `iova` (granule
    /// aligned) when its table stays linked, recording it in `gather`, and return what it
    /// held. None: nothing changed, and [`unmap_leaf`](Self::unmap_leaf) does the rest.
    #[inline]
    pub fn unmap_page(&mut self, iova: u64, gather: &mut Gather) -> Option<Leaf> {
        let page = self.geo.page;
        if self.pending_splits != 0 || self.foreign(gather) || iova & (page - 1) != 0 || iova >> self.geo.ias != 0 {
            return None;
        }
        let d = self.unmap_one(LEAF_LEVEL, iova, gather)?;
        Some(Leaf { pa: d & ADDR_MASK, size: page, attrs: d & LEAF_ATTR_MASK })
    }

    #[inline]
    fn unmap_general(&mut self, iova: u64, size: u64, gather: &mut Gather) -> Result<u64, PgtError> {
        if self.pending_splits != 0 {
            return Err(PgtError::SplitPending);
        }
        if self.foreign(gather) {
            return Err(PgtError::ForeignGather);
        }
        self.check_iova_range(iova, size)?;
        // Descend once to the deepest table with one entry covering the whole range,
        // remembering the path for the upward count updates. A range that is exactly one
        // entry stops there: a table below it is detached whole, not emptied entry by entry.
        let end = iova + size;
        let (mut level, mut t, mut t_pa) = (self.geo.start, self.root(), self.root_pa);
        let mut path = [(t, 0usize); 4];
        let mut depth = 0;
        while level < LEAF_LEVEL && self.geo.same_entry(level, iova, end - 1) && size != self.geo.entry_size(level) {
            let idx = self.geo.index(level, iova);
            let d = t.get(idx);
            if d & DESC_TYPE_MASK != DESC_TABLE {
                break;
            }
            path[depth] = (t, idx);
            depth += 1;
            t_pa = d & ADDR_MASK;
            t = self.table(t_pa);
            level += 1;
        }
        // Edges on entry boundaries of this level cut no block (blocks here are whole entries,
        // deeper ones lie inside one entry): nothing to split. Always so in a leaf table.
        let aligned = (iova | size) & (self.geo.entry_size(level) - 1) == 0;
        let blocks = level < LEAF_LEVEL && aligned && self.whole_blocks(level, t, iova, size);
        let need = if aligned { 0 } else { self.split_check(level, t, iova, end) };
        let mut stash = if need == 0 { Stash { head: 0, len: 0 } } else { self.stash_fill(need)? };
        let was_bound = gather.owner.is_some();
        let deferred_before = gather.deferred_len;
        self.bind(gather);
        let mut bytes = 0;
        let mut removed = 0;
        let r = if level == LEAF_LEVEL || blocks {
            self.unmap_run(level, t, iova, size, gather, &mut bytes, &mut removed);
            Ok(())
        } else {
            self.unmap_level(level, t, t_pa, iova, size, gather, &mut stash, &mut bytes, &mut removed)
        };
        // Propagate emptiness upwards: a table whose count drops to 0 is unlinked and queued.
        let mut child = t;
        for &(pt, pidx) in path[..depth].iter().rev() {
            if removed == 0 {
                break;
            }
            let d = pt.get(pidx);
            let left = table_count(d).saturating_sub(removed);
            if left == 0 && !self.retain {
                pt.set(pidx, 0);
                self.sync(pt, pidx, 1);
                self.defer(gather, d & ADDR_MASK, child);
                gather.leaf_only = false;
                removed = 1;
            } else {
                // Only IGNORED bits change: no sync needed for the walker.
                pt.set(pidx, with_count(d, left));
                removed = 0;
            }
            child = pt;
        }
        debug_assert_eq!(stash.len, 0, "split pre-count was not exact");
        self.stash_drain(&mut stash);
        r?;
        // Only retained empty tables can be detached while nothing was mapped (module docs).
        if bytes == 0 && gather.deferred_len == deferred_before {
            if !was_bound {
                gather.reset();
            }
            return Err(PgtError::NotMapped { iova });
        }
        Ok(bytes)
    }

    /// Finish the unmaps recorded in `gather`, to be called once the TLB invalidation of
    /// `[gather.start, gather.end)` has completed (CMD_SYNC done): installs split tables, frees
    /// detached tables and resets the gather for reuse.
    #[inline]
    pub fn complete(&mut self, gather: &mut Gather) -> Result<(), PgtError> {
        // Fast path: nothing to install or free (leaf unmaps).
        if gather.deferred_len == 0 && self.pending_splits == 0 && !self.foreign(gather) {
            gather.reset();
            return Ok(());
        }
        self.complete_general(gather)
    }

    #[inline]
    fn complete_general(&mut self, gather: &mut Gather) -> Result<(), PgtError> {
        if self.foreign(gather) {
            return Err(PgtError::ForeignGather);
        }
        if gather.owner.is_none() {
            gather.reset();
            return Ok(());
        }
        // A gather with split tables to install has raised `pending_splits`.
        let splits = self.pending_splits != 0;
        for slot in gather.pending.iter_mut().filter(|_| splits) {
            if let Some(p) = slot.take() {
                let t = if p.table_pa == self.root_pa { self.root() } else { self.table(p.table_pa) };
                if t.get(p.idx) == p.desc & !DESC_VALID {
                    publish_barrier();
                    t.set(p.idx, p.desc);
                    self.sync(t, p.idx, 1);
                }
                self.pending_splits = self.pending_splits.saturating_sub(1);
            }
        }
        let mut pa = gather.deferred_head;
        for _ in 0..gather.deferred_len {
            let t = self.table(pa);
            let next = t.get(0);
            self.free_now(pa, t);
            pa = next;
        }
        gather.reset();
        Ok(())
    }

    /// Unlink every empty table (possible only with retained tables), bottom-up, so a table
    /// whose entries were all empty tables goes too. Like `unmap`, the unlinked tables wait in
    /// `gather` (range of the tables, not leaf-only) for the invalidation and `complete`.
    /// Returns the number of tables queued; 0 leaves an unbound gather untouched.
    pub fn trim(&mut self, gather: &mut Gather) -> Result<usize, PgtError> {
        if self.foreign(gather) {
            return Err(PgtError::ForeignGather);
        }
        let was_bound = gather.owner.is_some();
        let before = gather.deferred_len;
        self.bind(gather);
        self.trim_level(self.geo.start, self.root(), 0, gather);
        let n = gather.deferred_len - before;
        if n == 0 && !was_bound {
            gather.reset();
        }
        Ok(n)
    }

    /// `trim` below table `t` at `level` mapping from IOVA `base`: returns how many entries of
    /// `t` it cleared.
    fn trim_level(&mut self, level: u32, t: TablePtr, base: u64, gather: &mut Gather) -> u32 {
        if level == LEAF_LEVEL {
            return 0;
        }
        let esz = self.geo.entry_size(level);
        let (mut lo, mut hi, mut cleared) = (usize::MAX, 0, 0);
        for i in 0..t.entries() {
            let d = t.get(i);
            // Split-pending entries are live: never empty.
            if d & DESC_TYPE_MASK != DESC_TABLE {
                continue;
            }
            let (cpa, cbase) = (d & ADDR_MASK, base + i as u64 * esz);
            let child = self.table(cpa);
            let gone = self.trim_level(level + 1, child, cbase, gather);
            let left = table_count(d).saturating_sub(gone);
            if left == 0 {
                t.set(i, 0);
                self.defer(gather, cpa, child);
                gather.add_range(cbase, cbase + esz);
                gather.leaf_only = false;
                cleared += 1;
                lo = lo.min(i);
                hi = i;
            } else if gone != 0 {
                // Only IGNORED bits change: no sync needed for the walker.
                t.set(i, with_count(d, left));
            }
        }
        if lo <= hi {
            self.sync(t, lo, hi + 1 - lo);
        }
        cleared
    }

    /// The attribute bits `map` writes in leaf entries for `prot` (compare with [`Leaf::attrs`]).
    pub fn attrs(&self, prot: &Prot) -> Result<u64, PgtError> {
        leaf_attrs(self.cfg.stage, prot)
    }

    /// Software walk: the output address `iova` translates to, as the SMMU would see it now.
    pub fn iova_to_phys(&self, iova: u64) -> Option<u64> {
        self.leaf(iova).map(|l| l.pa | (iova & (l.size - 1)))
    }

    /// The leaf entry (page or block) that translates `iova`, as the SMMU would see it now.
    pub fn leaf(&self, iova: u64) -> Option<Leaf> {
        let g = &self.geo;
        if iova >> g.ias != 0 {
            return None;
        }
        let (mut level, mut t) = (g.start, self.root());
        // A page table the last one-page map or unmap walked to covers `iova`: start there.
        if g.start < LEAF_LEVEL && self.walk_cache.key == iova >> g.shift(LEAF_LEVEL - 1) {
            (level, t) = (LEAF_LEVEL, self.walk_cache.leaf);
        }
        loop {
            let d = t.get(g.index(level, iova));
            let size = g.entry_size(level);
            match d & DESC_TYPE_MASK {
                DESC_PAGE if level == LEAF_LEVEL => {
                    return Some(Leaf { pa: d & ADDR_MASK, size, attrs: d & LEAF_ATTR_MASK });
                }
                DESC_TABLE if level < LEAF_LEVEL => {
                    t = self.table(d & ADDR_MASK);
                    level += 1;
                }
                DESC_BLOCK if level < LEAF_LEVEL && g.leaf_ok(level) => {
                    return Some(Leaf { pa: d & ADDR_MASK & !(size - 1), size, attrs: d & LEAF_ATTR_MASK });
                }
                _ => return None,
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    /// Identity for gathers: the root's CPU address (unique among live tables).
    fn id(&self) -> usize {
        self.root_va as usize
    }

    /// `gather` is bound to another table (`ForeignGather`).
    #[inline(always)]
    fn foreign(&self, gather: &Gather) -> bool {
        gather.owner.is_some_and(|o| o != self.id())
    }

    /// Bind `gather` to this table (the unmaps it records are in this table's granule).
    #[inline(always)]
    fn bind(&self, gather: &mut Gather) {
        gather.owner = Some(self.id());
        gather.granule = self.geo.page;
    }

    fn check_iova_range(&self, iova: u64, size: u64) -> Result<(), PgtError> {
        let gran = self.geo.page;
        if size == 0 {
            return Err(PgtError::ZeroSize);
        }
        if iova & (gran - 1) != 0 {
            return Err(PgtError::Unaligned { what: "iova", value: iova, align: gran });
        }
        if size & (gran - 1) != 0 {
            return Err(PgtError::Unaligned { what: "size", value: size, align: gran });
        }
        match iova.checked_add(size) {
            Some(e) if e <= 1u64 << self.geo.ias => Ok(()),
            _ => Err(PgtError::OutOfRange { what: "iova", addr: iova, size, bits: self.cfg.ias }),
        }
    }

    #[inline(always)]
    fn root(&self) -> TablePtr {
        // SAFETY: the root was allocated in `new` with `root_bytes` bytes (= entries(start)
        // descriptors) and is freed only in `drop`.
        unsafe { TablePtr::new(self.root_va, self.geo.entries(self.geo.start)) }
    }

    /// A non-root table by PA.
    #[inline(always)]
    fn table(&self, pa: u64) -> TablePtr {
        let va = self.mem.phys_to_virt(pa);
        // SAFETY: `pa` always comes from a table descriptor, pending marker, stash link or
        // deferred link written by this module, i.e. from a granule-sized table returned by
        // `alloc_table` and not yet freed; `phys_to_virt` maps it back (TableMemory contract).
        unsafe { TablePtr::new(va, 1usize << self.geo.bpl) }
    }

    fn alloc(&mut self) -> Result<(u64, TablePtr), PgtError> {
        let bytes = self.geo.granule_bytes();
        let (pa, va) = self.mem.alloc_table(bytes).ok_or(PgtError::NoMemory)?;
        if !table_mem_ok(pa, va, bytes, self.geo.oas) {
            self.mem.free_table(pa, va, bytes);
            return Err(PgtError::BadTableMemory { pa });
        }
        self.live += 1;
        // SAFETY: fresh allocation of `bytes` = 8 * 2^bpl bytes, checked non-null and aligned.
        Ok((pa, unsafe { TablePtr::new(va, 1usize << self.geo.bpl) }))
    }

    fn free_now(&mut self, pa: u64, t: TablePtr) {
        self.walk_cache = WalkCache::EMPTY;
        self.mem.free_table(pa, t.va(), self.geo.granule_bytes());
        self.live = self.live.saturating_sub(1);
    }

    /// Free the table at `level` and every table below it, immediately (only for tables the
    /// walker cannot reach: never published, or the whole tree being dropped).
    fn free_subtree_now(&mut self, level: u32, pa: u64) {
        let t = self.table(pa);
        if level < LEAF_LEVEL {
            for i in 0..t.entries() {
                let d = t.get(i);
                if matches!(d & DESC_TYPE_MASK, DESC_TABLE | DESC_PENDING) {
                    self.free_subtree_now(level + 1, d & ADDR_MASK);
                }
            }
        }
        self.free_now(pa, t);
    }

    #[inline(always)]
    fn sync(&self, t: TablePtr, first: usize, n: usize) {
        if !self.cfg.coherent_walk && n != 0 {
            self.mem.sync_for_device(t.entry_ptr(first), n * 8);
        }
    }

    #[inline]
    fn stash_fill(&mut self, need: usize) -> Result<Stash, PgtError> {
        let mut s = Stash { head: 0, len: 0 };
        for _ in 0..need {
            match self.alloc() {
                Ok((pa, t)) => {
                    t.set(0, s.head);
                    s.head = pa;
                    s.len += 1;
                }
                Err(e) => {
                    self.stash_drain(&mut s);
                    return Err(e);
                }
            }
        }
        Ok(s)
    }

    /// A zeroed table: from the stash, or freshly allocated should a pre-count ever be short.
    fn stash_take(&mut self, s: &mut Stash) -> Result<(u64, TablePtr), PgtError> {
        if s.len == 0 {
            return self.alloc();
        }
        let pa = s.head;
        let t = self.table(pa);
        s.head = t.get(0);
        t.set(0, 0);
        s.len -= 1;
        Ok((pa, t))
    }

    fn stash_drain(&mut self, s: &mut Stash) {
        while s.len != 0 {
            let pa = s.head;
            let t = self.table(pa);
            s.head = t.get(0);
            s.len -= 1;
            self.free_now(pa, t);
        }
    }

    /// Queue a table unlinked from the tree for freeing by `complete`. Entry 0 becomes the
    /// link; a PA is granule aligned, so it reads as an invalid descriptor to a walker still
    /// using a stale walk-cache entry (the range is being unmapped anyway).
    fn defer(&mut self, gather: &mut Gather, pa: u64, t: TablePtr) {
        self.walk_cache = WalkCache::EMPTY;
        t.set(0, gather.deferred_head);
        gather.deferred_head = pa;
        gather.deferred_len += 1;
    }

    // ---------------------------------------------------------------- map

    /// Read-only pass: `AlreadyMapped` if anything in the range is mapped; otherwise the
    /// number of tables the write pass will allocate.
    fn map_check(&self, level: u32, t: TablePtr, iova: u64, pa: u64, size: u64) -> Result<usize, PgtError> {
        let g = &self.geo;
        let mut idx = g.index(level, iova);
        if level == LEAF_LEVEL {
            let n = (size >> g.pg_shift) as usize;
            for i in 0..n {
                let d = t.get(idx + i);
                if d != 0 {
                    return Err(if d & DESC_VALID != 0 {
                        PgtError::AlreadyMapped { iova: iova + ((i as u64) << g.pg_shift) }
                    } else {
                        PgtError::SplitPending
                    });
                }
            }
            return Ok(0);
        }
        let esz = g.entry_size(level);
        let end = iova + size;
        let mut need = 0usize;
        let mut cur = iova;
        while cur < end {
            let chunk_end = ((cur | (esz - 1)) + 1).min(end);
            let cpa = pa + (cur - iova);
            let d = t.get(idx);
            let n = match d & DESC_TYPE_MASK {
                _ if d == 0 => self.fresh_need(level, cur, cpa, chunk_end - cur),
                DESC_TABLE => self.map_check(level + 1, self.table(d & ADDR_MASK), cur, cpa, chunk_end - cur)?,
                DESC_BLOCK => return Err(PgtError::AlreadyMapped { iova: cur }),
                _ => return Err(PgtError::SplitPending),
            };
            need = need.saturating_add(n);
            idx += 1;
            cur = chunk_end;
        }
        Ok(need)
    }

    /// The table at level `leaf` on the walk to `iova`, and the entry pointing to it (table,
    /// index, descriptor; `None` for the root), if tables lead all the way there.
    #[inline(always)]
    fn leaf_table(&self, leaf: u32, iova: u64) -> Option<(TablePtr, Option<ParentEntry>)> {
        let (level, t, parent) = self.walk_tables(leaf, iova);
        (level == leaf).then_some((t, parent))
    }

    /// Walk towards `iova` through table entries, down to level `leaf` at most: the level
    /// reached, its table, and the entry pointing to that table (`None` for the root). Below
    /// `leaf`, the walk stopped at an entry that is not a table.
    #[inline(always)]
    fn walk_tables(&self, leaf: u32, iova: u64) -> (u32, TablePtr, Option<ParentEntry>) {
        let g = &self.geo;
        let (mut level, mut t) = (g.start, self.root());
        let mut parent = None;
        while level < leaf {
            let idx = g.index(level, iova);
            let d = t.get(idx);
            if d & DESC_TYPE_MASK != DESC_TABLE {
                break;
            }
            parent = Some((t, idx, d));
            t = self.table(d & ADDR_MASK);
            level += 1;
        }
        (level, t, parent)
    }

    /// `leaf_table`, through the walk cache for pages (level 3 below at least one table),
    /// filling it on a miss.
    #[inline(always)]
    fn leaf_table_cached(&mut self, leaf: u32, iova: u64) -> Option<(TablePtr, Option<ParentEntry>)> {
        if leaf != LEAF_LEVEL || self.geo.start == LEAF_LEVEL {
            return self.leaf_table(leaf, iova);
        }
        let key = iova >> self.geo.shift(LEAF_LEVEL - 1);
        let c = &self.walk_cache;
        if c.key == key {
            return Some((c.leaf, Some((c.parent, c.pidx, c.parent.get(c.pidx)))));
        }
        let (t, parent) = self.leaf_table(leaf, iova)?;
        if let Some((pt, pidx, _)) = parent {
            self.walk_cache = WalkCache { key, leaf: t, parent: pt, pidx };
        }
        Some((t, parent))
    }

    /// Map one leaf entry at level `leaf` (`iova` and `pa` aligned to it) if every table above
    /// it exists and the entry is invalid; otherwise change nothing and return false (the
    /// general path then allocates, reports, or maps inside a retained empty table).
    #[inline(always)]
    fn map_one(&mut self, leaf: u32, iova: u64, pa: u64, attrs: u64) -> bool {
        let Some((t, parent)) = self.leaf_table_cached(leaf, iova) else { return false };
        let g = &self.geo;
        let idx = g.index(leaf, iova);
        if t.get(idx) != 0 {
            return false;
        }
        let kind = leaf_type(leaf);
        t.set(idx, attrs | kind | pa);
        self.sync(t, idx, 1);
        if let Some((pt, pidx, d)) = parent {
            // Only IGNORED bits change: no sync needed for the walker.
            pt.set(pidx, count_up(d));
        }
        true
    }

    /// `map_one` where tables are missing on the way (the first map into an empty part of
    /// the tree: a new domain, a fresh 2 MiB of IOVA): the walk ends at an invalid entry of
    /// an existing table; allocate the tables below it, each holding just the entry on the
    /// path, and publish them with one store, as `map_level` publishes a fresh subtree. One
    /// pass instead of the general path's check, pre-count and write passes. None: the walk
    /// met something else (a block, a split in progress, or a leaf entry in use), and the
    /// general path reports or handles it. Out of memory changes nothing.
    fn map_one_new_tables(&mut self, leaf: u32, iova: u64, pa: u64, attrs: u64) -> Option<Result<(), PgtError>> {
        let (level, t, parent) = self.walk_tables(leaf, iova);
        let idx = self.geo.index(level, iova);
        if level == leaf || t.get(idx) != 0 {
            return None;
        }
        // New tables for levels level+1 ..= leaf (at most three), all or none.
        let need = (leaf - level) as usize;
        let mut new = [(0u64, TablePtr::DANGLING); 3];
        for i in 0..need {
            match self.alloc() {
                Ok(x) => new[i] = x,
                Err(e) => {
                    for &(tpa, nt) in &new[..i] {
                        self.free_now(tpa, nt);
                    }
                    return Some(Err(e));
                }
            }
        }
        // Bottom up: the leaf, then each table entry pointing one level down.
        let (_, lt) = new[need - 1];
        lt.set(self.geo.index(leaf, iova), attrs | leaf_type(leaf) | pa);
        self.sync(lt, 0, lt.entries());
        for i in (0..need - 1).rev() {
            let (_, nt) = new[i];
            nt.set(self.geo.index(level + 1 + i as u32, iova), table_desc(new[i + 1].0, 1));
            self.sync(nt, 0, nt.entries());
        }
        publish_barrier();
        t.set(idx, table_desc(new[0].0, 1));
        self.sync(t, idx, 1);
        if let Some((pt, pidx, d)) = parent {
            // Only IGNORED bits change: no sync needed for the walker.
            pt.set(pidx, count_up(d));
        }
        Some(Ok(()))
    }

    /// Map a run of pages inside one existing leaf table: check that all are free, then write.
    /// Returns the number of entries added.
    #[inline(always)]
    fn map_leaf_run(&mut self, t: TablePtr, iova: u64, pa: u64, size: u64, attrs: u64) -> Result<u32, PgtError> {
        let g = &self.geo;
        let first = g.index(LEAF_LEVEL, iova);
        let n = (size >> g.pg_shift) as usize;
        for i in first..first + n {
            let d = t.get(i);
            if d != 0 {
                let at = iova + (((i - first) as u64) << g.pg_shift);
                return Err(if d & DESC_VALID != 0 {
                    PgtError::AlreadyMapped { iova: at }
                } else {
                    PgtError::SplitPending
                });
            }
        }
        let page = attrs | DESC_PAGE;
        let mut out = pa;
        for i in first..first + n {
            t.set(i, page | out);
            out += 1 << g.pg_shift;
        }
        self.sync(t, first, n);
        Ok(n as u32)
    }

    /// Map `[iova, iova + size)`, whole `level` entries inside table `t` with `pa` aligned to
    /// them, as blocks if every entry is invalid (returns how many); `None`, changing nothing,
    /// if any entry is in use (the general path then reports or recurses).
    #[inline(always)]
    fn map_block_run(&mut self, level: u32, t: TablePtr, iova: u64, pa: u64, size: u64, attrs: u64) -> Option<u32> {
        let g = &self.geo;
        let first = g.index(level, iova);
        let shift = g.shift(level);
        let n = (size >> shift) as usize;
        if (first..first + n).any(|i| t.get(i) != 0) {
            return None;
        }
        let blk = attrs | DESC_BLOCK;
        for k in 0..n {
            t.set(first + k, blk | (pa + ((k as u64) << shift)));
        }
        self.sync(t, first, n);
        Some(n as u32)
    }

    /// Tables needed to map `[iova, iova + size)` (inside one entry at `level`, currently
    /// invalid). Mirrors `map_level`'s leaf choice; O(levels^2), independent of the size.
    fn fresh_need(&self, level: u32, iova: u64, pa: u64, size: u64) -> usize {
        let g = &self.geo;
        let esz = g.entry_size(level);
        if level == LEAF_LEVEL || (size == esz && g.leaf_ok(level) && pa & (esz - 1) == 0) {
            return 0;
        }
        let c = level + 1;
        let csz = g.entry_size(c);
        let end = iova + size;
        let first_end = ((iova | (csz - 1)) + 1).min(end);
        let mut n = 1usize.saturating_add(self.fresh_need(c, iova, pa, first_end - iova));
        if first_end < end {
            let last = ((end - 1) & !(csz - 1)).max(first_end);
            // All full child entries in between share the PA alignment, hence the need.
            let mid = ((last - first_end) / csz) as usize;
            if mid != 0 {
                let each = self.fresh_need(c, first_end, pa + (first_end - iova), csz);
                n = n.saturating_add(mid.saturating_mul(each));
            }
            n = n.saturating_add(self.fresh_need(c, last, pa + (last - iova), end - last));
        }
        n
    }

    /// Write pass. `fresh`: `t` is a new, unpublished table (the caller cleans it whole).
    /// `added` counts entries of `t` that became valid (even when an error is returned).
    #[allow(clippy::too_many_arguments)]
    fn map_level(
        &mut self,
        level: u32,
        t: TablePtr,
        fresh: bool,
        iova: u64,
        pa: u64,
        size: u64,
        attrs: u64,
        stash: &mut Stash,
        added: &mut u32,
    ) -> Result<(), PgtError> {
        // Scalars, not a copy of the whole Geometry (this runs at every level).
        let g = &self.geo;
        let (first, pg_shift, granule) = (g.index(level, iova), g.pg_shift, g.page);
        let (esz, leaf_ok, shift) = (g.entry_size(level), g.leaf_ok(level), g.shift(level));
        if level == LEAF_LEVEL {
            // The pre-check proved every entry invalid: plain stores, no reads.
            let n = (size >> pg_shift) as usize;
            let page = attrs | DESC_PAGE;
            let step = granule;
            let mut out = pa;
            for i in first..first + n {
                t.set(i, page | out);
                out += step;
            }
            *added += n as u32;
            if !fresh {
                self.sync(t, first, n);
            }
            return Ok(());
        }
        let end = iova + size;
        let mut idx = first;
        let mut cur = iova;
        let mut res = Ok(());
        while cur < end {
            let chunk_end = ((cur | (esz - 1)) + 1).min(end);
            let chunk = chunk_end - cur;
            let cpa = pa + (cur - iova);
            let d = if fresh { 0 } else { t.get(idx) };
            if d == 0 && chunk == esz && leaf_ok && cpa & (esz - 1) == 0 {
                // A run of whole, aligned, invalid entries: blocks in a straight loop.
                let whole = ((end - cur) >> shift) as usize;
                let k = if fresh { whole } else { (1..whole).find(|&k| t.get(idx + k) != 0).unwrap_or(whole) };
                let (blk, mut out) = (attrs | DESC_BLOCK, cpa);
                for i in idx..idx + k {
                    t.set(i, blk | out);
                    out += esz;
                }
                *added += k as u32;
                idx += k;
                cur += k as u64 * esz;
                continue;
            } else if d & DESC_TYPE_MASK == DESC_TABLE {
                let child = self.table(d & ADDR_MASK);
                let mut n = 0;
                let r = self.map_level(level + 1, child, false, cur, cpa, chunk, attrs, stash, &mut n);
                if n != 0 {
                    // Only IGNORED bits change: no break-before-make needed.
                    t.set(idx, with_count(d, table_count(d) + n));
                }
                if r.is_err() {
                    res = r;
                    idx += 1;
                    break;
                }
            } else if d == 0 {
                let (tpa, child) = match self.stash_take(stash) {
                    Ok(x) => x,
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                };
                let mut n = 0;
                let r = self.map_level(level + 1, child, true, cur, cpa, chunk, attrs, stash, &mut n);
                if n == 0 {
                    self.free_now(tpa, child);
                } else {
                    // Fill, clean, order, then publish with one store.
                    self.sync(child, 0, child.entries());
                    publish_barrier();
                    t.set(idx, table_desc(tpa, n));
                    *added += 1;
                }
                if r.is_err() {
                    res = r;
                    idx += 1;
                    break;
                }
            } else {
                res = Err(if d & DESC_VALID != 0 {
                    PgtError::AlreadyMapped { iova: cur }
                } else {
                    PgtError::SplitPending
                });
                break;
            }
            idx += 1;
            cur = chunk_end;
        }
        if !fresh {
            self.sync(t, first, idx - first);
        }
        res
    }

    // ---------------------------------------------------------------- unmap

    /// Tables needed to split the blocks straddling the edges of `[start, end)`, walking from
    /// table `t` at `level` (which contains the whole range).
    fn split_check(&self, level: u32, t: TablePtr, start: u64, end: u64) -> usize {
        let (need, stop) = self.edge_split_need(level, t, start, start, end);
        if end > stop { need + self.edge_split_need(level, t, end - 1, start, end).0 } else { need }
    }

    /// Walk towards `addr`. Returns the tables needed if the walk ends at a block only partly
    /// inside `[start, end)`, and the end of the entry where the walk stopped.
    fn edge_split_need(&self, mut level: u32, mut t: TablePtr, addr: u64, start: u64, end: u64) -> (usize, u64) {
        let g = &self.geo;
        loop {
            let esz = g.entry_size(level);
            let base = addr & !(esz - 1);
            let d = t.get(g.index(level, addr));
            match d & DESC_TYPE_MASK {
                DESC_TABLE if level < LEAF_LEVEL => {
                    t = self.table(d & ADDR_MASK);
                    level += 1;
                }
                DESC_BLOCK if level < LEAF_LEVEL && g.leaf_ok(level) => {
                    let (hs, he) = (start.max(base), end.min(base + esz));
                    let full = hs == base && he == base + esz;
                    let need = if full { 0 } else { self.split_need(level, hs, he) };
                    return (need, base + esz);
                }
                _ => return (0, base + esz),
            }
        }
    }

    /// Tables `build_split` allocates to replace the block at `level` that contains the hole
    /// `[hs, he)`, minus the hole.
    fn split_need(&self, level: u32, hs: u64, he: u64) -> usize {
        let c = level + 1;
        let mut n = 1;
        if c < LEAF_LEVEL {
            let csz = self.geo.entry_size(c);
            let cb = hs & !(csz - 1);
            if hs != cb || he < cb + csz {
                n += self.split_need(c, hs, he.min(cb + csz));
            }
            let cb2 = (he - 1) & !(csz - 1);
            if cb2 != cb && he < cb2 + csz {
                n += self.split_need(c, cb2, he);
            }
        }
        n
    }

    /// Build, fully populated and cleaned, the table replacing the block at `level` (base IOVA
    /// `base`, output `blk_pa`, leaf attributes `attrs`) minus the hole `[hs, he)`.
    /// Returns its PA and live-entry count (>= 1: the hole is a strict subset).
    #[allow(clippy::too_many_arguments)]
    fn build_split(
        &mut self,
        level: u32,
        base: u64,
        blk_pa: u64,
        attrs: u64,
        hs: u64,
        he: u64,
        stash: &mut Stash,
    ) -> Result<(u64, u32), PgtError> {
        let c = level + 1;
        let csz = self.geo.entry_size(c);
        let (tpa, t) = self.stash_take(stash)?;
        let kind = leaf_type(c);
        let mut cnt = 0;
        for j in 0..t.entries() {
            let off = j as u64 * csz;
            let (cb, ce) = (base + off, base + off + csz);
            if ce <= hs || cb >= he {
                t.set(j, attrs | kind | (blk_pa + off));
                cnt += 1;
            } else if hs > cb || he < ce {
                match self.build_split(c, cb, blk_pa + off, attrs, hs.max(cb), he.min(ce), stash) {
                    Ok((spa, scnt)) => {
                        t.set(j, table_desc(spa, scnt));
                        cnt += 1;
                    }
                    Err(e) => {
                        self.free_subtree_now(c, tpa);
                        return Err(e);
                    }
                }
            }
        }
        self.sync(t, 0, t.entries());
        Ok((tpa, cnt))
    }

    /// Break-before-make, first half: prepare the replacement table, invalidate the block
    /// (pending marker) and queue the install in the gather.
    #[allow(clippy::too_many_arguments)]
    fn split_block(
        &mut self,
        level: u32,
        t: TablePtr,
        t_pa: u64,
        idx: usize,
        d: u64,
        hs: u64,
        he: u64,
        gather: &mut Gather,
        stash: &mut Stash,
    ) -> Result<(), PgtError> {
        let slot = gather.pending.iter().position(Option::is_none).ok_or(PgtError::SplitPending)?;
        let esz = self.geo.entry_size(level);
        let base = hs & !(esz - 1);
        let blk_pa = d & ADDR_MASK & !(esz - 1);
        let (spa, cnt) = self.build_split(level, base, blk_pa, d & LEAF_ATTR_MASK, hs, he, stash)?;
        let desc = table_desc(spa, cnt);
        t.set(idx, desc & !DESC_VALID);
        gather.pending[slot] = Some(PendingInstall { table_pa: t_pa, idx, desc });
        self.pending_splits += 1;
        gather.note_leaf(base, base + esz, esz);
        Ok(())
    }

    /// Unlink-time accounting of a whole subtree (its parent entry is already cleared):
    /// queue all its tables for freeing and return the bytes it mapped.
    fn detach(&mut self, level: u32, pa: u64, count: u32, gather: &mut Gather) -> u64 {
        let g = self.geo;
        let t = self.table(pa);
        let mut bytes = 0;
        if level == LEAF_LEVEL {
            if count != 0 {
                bytes = u64::from(count) * g.page;
                gather.note_size(g.page);
            }
        } else {
            let esz = g.entry_size(level);
            // SAFETY: the table is unlinked and owned by `&mut self`; nothing writes it while
            // the slice lives (the walker only reads it: no HTTU).
            let entries = unsafe { t.as_slice() };
            // Bit 1 is set only in table and split-pending descriptors (blocks are 0b01; invalid
            // entries 0): one OR over the table (vectorisable) says whether anything is below.
            // Without, every live entry is a block and the count says how many.
            let below = entries.iter().fold(0, |acc, &d| acc | d) & 0b10 != 0;
            let mut blocks = if below || !g.leaf_ok(level) { 0 } else { count };
            if below {
                let mut seen = 0;
                for &d in entries {
                    if seen == count {
                        break;
                    }
                    match d & DESC_TYPE_MASK {
                        DESC_BLOCK if g.leaf_ok(level) => blocks += 1,
                        DESC_TABLE | DESC_PENDING => {
                            bytes += self.detach(level + 1, d & ADDR_MASK, table_count(d), gather);
                        }
                        _ => continue,
                    }
                    seen += 1;
                }
            }
            if blocks != 0 {
                bytes += u64::from(blocks) * esz;
                gather.note_size(esz);
            }
        }
        self.defer(gather, pa, t);
        bytes
    }

    /// Is `[iova, iova + size)` whole entries of table `t` at `level`, each a block or invalid?
    #[inline(always)]
    fn whole_blocks(&self, level: u32, t: TablePtr, iova: u64, size: u64) -> bool {
        let g = &self.geo;
        if !g.leaf_ok(level) || (iova | size) & (g.entry_size(level) - 1) != 0 {
            return false;
        }
        let first = g.index(level, iova);
        let n = (size >> g.shift(level)) as usize;
        (first..first + n).all(|i| {
            let d = t.get(i);
            d == 0 || d & DESC_TYPE_MASK == DESC_BLOCK
        })
    }

    /// Unmap the leaf entry (page or block) at level `leaf` that maps exactly `iova` (aligned
    /// to it) when its table stays linked afterwards (tables are retained, or it holds other
    /// entries), returning the entry it cleared; otherwise change nothing and return None
    /// (the general path then detaches a table found there, frees an emptied one, or reports
    /// `NotMapped`).
    #[inline(always)]
    fn unmap_one(&mut self, leaf: u32, iova: u64, gather: &mut Gather) -> Option<u64> {
        let (t, parent) = self.leaf_table_cached(leaf, iova)?;
        let g = &self.geo;
        let idx = g.index(leaf, iova);
        let kind = leaf_type(leaf);
        let old = t.get(idx);
        if old & DESC_TYPE_MASK != kind {
            return None;
        }
        if let Some((pt, pidx, d)) = parent {
            if !self.retain && table_count(d) <= 1 {
                return None;
            }
            // Only IGNORED bits change: no sync needed for the walker.
            pt.set(pidx, count_down(d));
        }
        t.set(idx, 0);
        self.sync(t, idx, 1);
        let size = g.entry_size(leaf);
        self.bind(gather);
        gather.note_leaf(iova, iova + size, size);
        Some(old)
    }

    /// Clear the live entries of `[iova, iova + size)`, whole entries of table `t` at `level`:
    /// pages of a leaf table (live = valid), or blocks `whole_blocks` accepted (live = non-zero).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn unmap_run(
        &mut self,
        level: u32,
        t: TablePtr,
        iova: u64,
        size: u64,
        gather: &mut Gather,
        bytes: &mut u64,
        removed: &mut u32,
    ) {
        let live = if level == LEAF_LEVEL { DESC_VALID } else { u64::MAX };
        let g = &self.geo;
        let first = g.index(level, iova);
        let shift = g.shift(level);
        let n = (size >> shift) as usize;
        let (mut lo, mut hi, mut cnt) = (usize::MAX, 0, 0u32);
        for i in 0..n {
            if t.get(first + i) & live != 0 {
                t.set(first + i, 0);
                cnt += 1;
                lo = lo.min(i);
                hi = i;
            }
        }
        if cnt != 0 {
            let esz = 1u64 << shift;
            gather.note_leaf(iova + lo as u64 * esz, iova + (hi as u64 + 1) * esz, esz);
            *bytes += u64::from(cnt) * esz;
            *removed += cnt;
            self.sync(t, first + lo, hi + 1 - lo);
        }
    }

    /// Write pass of unmap. `removed` counts entries of `t` that stopped being live.
    #[allow(clippy::too_many_arguments)]
    fn unmap_level(
        &mut self,
        level: u32,
        t: TablePtr,
        t_pa: u64,
        iova: u64,
        size: u64,
        gather: &mut Gather,
        stash: &mut Stash,
        bytes: &mut u64,
        removed: &mut u32,
    ) -> Result<(), PgtError> {
        let g = self.geo;
        let first = g.index(level, iova);
        if level == LEAF_LEVEL {
            self.unmap_run(LEAF_LEVEL, t, iova, size, gather, bytes, removed);
            return Ok(());
        }
        let esz = g.entry_size(level);
        let end = iova + size;
        let (mut lo, mut hi) = (usize::MAX, 0);
        let mut idx = first;
        let mut cur = iova;
        let mut res = Ok(());
        while cur < end {
            let chunk_end = ((cur | (esz - 1)) + 1).min(end);
            let chunk = chunk_end - cur;
            let full = chunk == esz;
            let d = t.get(idx);
            match d & DESC_TYPE_MASK {
                DESC_BLOCK if g.leaf_ok(level) => {
                    if full {
                        t.set(idx, 0);
                        *removed += 1;
                        *bytes += esz;
                        gather.note_leaf(cur, chunk_end, esz);
                    } else if let Err(e) = self.split_block(level, t, t_pa, idx, d, cur, chunk_end, gather, stash) {
                        res = Err(e);
                        break;
                    } else {
                        // The entry stays live (pending) in the count.
                        *bytes += chunk;
                    }
                    lo = lo.min(idx);
                    hi = idx;
                }
                DESC_TABLE => {
                    let cpa = d & ADDR_MASK;
                    if full {
                        t.set(idx, 0);
                        *removed += 1;
                        *bytes += self.detach(level + 1, cpa, table_count(d), gather);
                        gather.add_range(cur, chunk_end);
                        gather.leaf_only = false;
                        lo = lo.min(idx);
                        hi = idx;
                    } else {
                        let child = self.table(cpa);
                        let mut r = 0;
                        let rr = self.unmap_level(level + 1, child, cpa, cur, chunk, gather, stash, bytes, &mut r);
                        if r != 0 {
                            let left = table_count(d).saturating_sub(r);
                            if left == 0 && !self.retain {
                                t.set(idx, 0);
                                *removed += 1;
                                self.defer(gather, cpa, child);
                                gather.leaf_only = false;
                            } else {
                                t.set(idx, with_count(d, left));
                            }
                            lo = lo.min(idx);
                            hi = idx;
                        }
                        if rr.is_err() {
                            res = rr;
                            break;
                        }
                    }
                }
                // Invalid: a hole.
                _ => {}
            }
            idx += 1;
            cur = chunk_end;
        }
        if lo <= hi {
            self.sync(t, lo, hi + 1 - lo);
        }
        res
    }
}

impl<M: TableMemory> Drop for IoPageTable<M> {
    fn drop(&mut self) {
        let root = self.root();
        for i in 0..root.entries() {
            let d = root.get(i);
            if matches!(d & DESC_TYPE_MASK, DESC_TABLE | DESC_PENDING) {
                self.free_subtree_now(self.geo.start + 1, d & ADDR_MASK);
            }
        }
        self.mem.free_table(self.root_pa, self.root_va, self.geo.root_bytes());
    }
}

/// Is `(pa, va)` usable as a table of `bytes` bytes below `1 << oas`?
fn table_mem_ok(pa: u64, va: *mut u64, bytes: usize, oas: u32) -> bool {
    !va.is_null()
        && (va as usize).is_multiple_of(8)
        && pa.is_multiple_of(bytes as u64)
        && pa.checked_add(bytes as u64).is_some_and(|e| e <= 1u64 << oas)
}
