//! Invalidation bookkeeping for unmap.

/// A split table waiting to replace an invalidated block (second half of break-before-make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingInstall {
    /// PA of the table holding the entry (for `phys_to_virt`).
    pub table_pa: u64,
    pub idx: usize,
    /// The table descriptor to install.
    pub desc: u64,
}

/// What one or more `unmap` calls require from the driver before the freed page-table memory
/// may be reused and split blocks may be re-established.
///
/// Protocol (see [`IoPageTable::complete`](super::IoPageTable::complete)):
/// 1. `unmap(.., &mut gather)` (any number of times on the same table).
/// 2. If `!gather.is_empty()`: invalidate TLBs for `[start, end)` (by VA for stage 1 with
///    the ASID, by IPA for stage 2 with the VMID; `leaf_only` selects the leaf hint and
///    `pgsize` the step / TTL hint), then CMD_SYNC and wait for it.
/// 3. `pgt.complete(&mut gather)`: installs split tables, frees detached tables, resets the
///    gather. Dropping a gather that `needs_complete()` leaks its tables (no unsafety).
#[derive(Debug)]
pub struct Gather {
    /// Lowest IOVA needing invalidation (meaningless while `is_empty()`).
    pub start: u64,
    /// End (exclusive) of the range needing invalidation.
    pub end: u64,
    /// True when only leaf entries were removed (the TLBI "leaf" hint is allowed). False when a
    /// table descriptor was removed: walk caches must be invalidated too.
    pub leaf_only: bool,
    /// Size of the leaf entries removed when they all had the same size (use it as the
    /// invalidation step and TTL hint); the granule when sizes were mixed; 0 when empty.
    pub pgsize: u64,
    pub(crate) granule: u64,
    /// Identity (root CPU address) of the page table this gather is bound to.
    pub(crate) owner: Option<usize>,
    /// Detached tables, linked through their entry 0 (written as an invalid descriptor).
    pub(crate) deferred_head: u64,
    pub(crate) deferred_len: usize,
    pub(crate) pending: [Option<PendingInstall>; 2],
}

impl Default for Gather {
    fn default() -> Self {
        Self::new()
    }
}

impl Gather {
    /// An empty gather.
    pub const fn new() -> Self {
        Gather {
            start: 0,
            end: 0,
            leaf_only: true,
            pgsize: 0,
            granule: 0,
            owner: None,
            deferred_head: 0,
            deferred_len: 0,
            pending: [None, None],
        }
    }

    /// No invalidation needed.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// `[start, end)` as a size.
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// `IoPageTable::complete` has work to do (tables to free or split tables to install).
    pub fn needs_complete(&self) -> bool {
        self.deferred_len != 0 || self.pending.iter().any(Option::is_some)
    }

    /// Number of tables waiting to be freed.
    pub fn deferred_tables(&self) -> usize {
        self.deferred_len
    }

    /// Number of split tables waiting to be installed.
    pub fn pending_splits(&self) -> usize {
        self.pending.iter().filter(|p| p.is_some()).count()
    }

    #[inline]
    pub(crate) fn add_range(&mut self, start: u64, end: u64) {
        if self.is_empty() {
            self.start = start;
            self.end = end;
        } else {
            self.start = self.start.min(start);
            self.end = self.end.max(end);
        }
    }

    /// Record removed leaves of `size` bytes covering `[start, end)`.
    #[inline]
    pub(crate) fn note_leaf(&mut self, start: u64, end: u64, size: u64) {
        self.add_range(start, end);
        self.note_size(size);
    }

    #[inline]
    pub(crate) fn note_size(&mut self, size: u64) {
        if self.pgsize == 0 {
            self.pgsize = size;
        } else if self.pgsize != size {
            self.pgsize = self.granule;
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Gather::new();
    }
}
