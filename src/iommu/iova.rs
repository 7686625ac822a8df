//! IOVA space allocator for one translation domain (Linux `iova.c`-like).
//!
//! * The aperture is `[base, limit]` (inclusive), in units of a power-of-two `granule`.
//! * **Size-aligned** allocation, as Linux `alloc_iova(.., size_aligned = true)`: an
//!   allocation of `n` granules starts at an IOVA aligned to `n.next_power_of_two()`
//!   granules (alignment is absolute, i.e. relative to IOVA 0, not to `base`).
//!   Allocations of up to [`RCACHE_MAX_PAGES`] granules are additionally rounded up to
//!   a power of two (as Linux `alloc_iova_fast` does) so that freed ranges can be reused
//!   through the per-size cache; [`IovaAllocator::free`] returns the rounded size.
//! * **Top-down**: the highest fitting address at or below the per-call limit (e.g. a
//!   device's 32-bit DMA mask) is returned.
//! * Reserved ranges (MSI doorbells, firmware direct maps) are removed from the free space
//!   and never handed out.
//!
//! Data structures: free ranges keyed by start (`BTreeMap`) plus a `(size, start)`
//! index (`BTreeSet`) for O(log n) exhaustion checks; live allocations of up to
//! [`RCACHE_MAX_PAGES`] granules (always a power of two, size-aligned) in a hash table
//! keyed by start (O(1) insert, free and lookup: the containing allocation of an address
//! starts at the address rounded down to its size, one probe per size class), larger ones
//! keyed by start (`BTreeMap`, O(log n)); and an "rcache" (Linux's per-size magazines):
//! per power-of-two size class (1..=32 granules) a bounded stack of recently freed ranges
//! that are handed out again in O(1) without touching the trees. So the DMA API's hot
//! path (a small map, then its unmap) is O(1) end to end. Tree allocation walks free
//! ranges downwards from the limit and takes the first that fits: O(log n) when the
//! topmost candidate fits (the common case), O(k log n) when k higher free ranges are too
//! small. On exhaustion the rcache is flushed back into the trees and the search retried.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

/// Largest allocation (in granules) served by the rcache.
pub const RCACHE_MAX_PAGES: u64 = 32;
const RCACHE_CLASSES: usize = 6; // 1, 2, 4, 8, 16, 32 granules
/// Per-class cache depth: a whole lazy-mode batch (`dma::LAZY_BATCH` = 256 unmaps freed
/// together by one flush) of same-size IOVAs fits, so the next batch is served from the
/// cache instead of the trees (a tree insert + merge and a tree search cost ~2 us in QEMU).
pub const RCACHE_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IovaError {
    ZeroSize,
    /// No free range of `size` bytes (after rounding) fits below the limit.
    Exhausted {
        size: u64,
    },
    /// `iova` is not the start of a live allocation (unknown address or double free).
    NotAllocated {
        iova: u64,
    },
    /// A reservation overlaps a live allocation.
    ReservedOverlap {
        start: u64,
        size: u64,
    },
    /// Aperture base or end not aligned to the granule.
    Misaligned {
        value: u64,
    },
    /// Granule not a power of two, limit below base, or the aperture covers all 2^64 bytes.
    BadRange,
}

impl fmt::Display for IovaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IovaError::ZeroSize => f.write_str("zero-sized IOVA request"),
            IovaError::Exhausted { size } => write!(f, "IOVA space exhausted for {size:#x} bytes"),
            IovaError::NotAllocated { iova } => write!(f, "IOVA {iova:#x} is not allocated"),
            IovaError::ReservedOverlap { start, size } => {
                write!(f, "reservation {start:#x}+{size:#x} overlaps a live allocation")
            }
            IovaError::Misaligned { value } => write!(f, "{value:#x} not aligned to the IOVA granule"),
            IovaError::BadRange => f.write_str("bad IOVA aperture or granule"),
        }
    }
}

pub struct IovaAllocator {
    base: u64,
    limit: u64,
    shift: u32,
    /// free start pfn -> pages
    free_by_start: BTreeMap<u64, u64>,
    /// (pages, start pfn)
    free_by_size: BTreeSet<(u64, u64)>,
    /// live allocations of up to RCACHE_MAX_PAGES pages: start pfn -> size class
    small: SmallAllocs,
    /// live larger allocations: start pfn -> pages
    allocated: BTreeMap<u64, u64>,
    /// reserved byte ranges inside the aperture, start -> size (merged)
    reserved: BTreeMap<u64, u64>,
    /// rcache[k]: start pfns of cached free ranges of 2^k pages
    rcache: [Vec<u64>; RCACHE_CLASSES],
    free_pages: u64,
    cached_pages: u64,
    allocated_pages: u64,
}

impl fmt::Debug for IovaAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IovaAllocator")
            .field("base", &format_args!("{:#x}", self.base))
            .field("limit", &format_args!("{:#x}", self.limit))
            .field("granule", &format_args!("{:#x}", self.granule()))
            .field("free_ranges", &self.free_by_start.len())
            .field("allocations", &self.allocations())
            .field("cached_pages", &self.cached_pages)
            .finish()
    }
}

impl IovaAllocator {
    /// New allocator over `[base, limit_inclusive]`; `granule` must be a power of two,
    /// `base` and `limit_inclusive + 1` multiples of it.
    pub fn new(base: u64, limit_inclusive: u64, granule: u64) -> Result<Self, IovaError> {
        if granule == 0 || !granule.is_power_of_two() || limit_inclusive < base {
            return Err(IovaError::BadRange);
        }
        if base & (granule - 1) != 0 {
            return Err(IovaError::Misaligned { value: base });
        }
        if limit_inclusive != u64::MAX && (limit_inclusive + 1) & (granule - 1) != 0 {
            return Err(IovaError::Misaligned { value: limit_inclusive });
        }
        if base == 0 && limit_inclusive == u64::MAX {
            return Err(IovaError::BadRange);
        }
        let shift = granule.trailing_zeros();
        let first = base >> shift;
        let last = limit_inclusive >> shift;
        let mut a = IovaAllocator {
            base,
            limit: limit_inclusive,
            shift,
            free_by_start: BTreeMap::new(),
            free_by_size: BTreeSet::new(),
            small: SmallAllocs::new(),
            allocated: BTreeMap::new(),
            reserved: BTreeMap::new(),
            rcache: Default::default(),
            free_pages: 0,
            cached_pages: 0,
            allocated_pages: 0,
        };
        a.insert_free_raw(first, last - first + 1);
        Ok(a)
    }

    pub fn granule(&self) -> u64 {
        1 << self.shift
    }

    /// `(base, limit_inclusive)`.
    pub fn aperture(&self) -> (u64, u64) {
        (self.base, self.limit)
    }

    /// Remove `[start, start + size)` (rounded outward to granules, clipped to the
    /// aperture) from the allocatable space. Parts outside the aperture are ignored.
    /// Fails if it overlaps a live allocation; re-reserving is harmless.
    pub fn reserve(&mut self, start: u64, size: u64) -> Result<(), IovaError> {
        if size == 0 {
            return Err(IovaError::ZeroSize);
        }
        let end = start.saturating_add(size - 1);
        if end < self.base || start > self.limit {
            return Ok(());
        }
        let s = (start.max(self.base)) >> self.shift;
        let e = (end.min(self.limit)) >> self.shift;
        if let Some((&a_start, &a_pages)) = self.allocated.range(..=e).next_back()
            && a_start + (a_pages - 1) >= s
        {
            return Err(IovaError::ReservedOverlap { start, size });
        }
        // Rare (domain set-up): a scan of the small allocations is fine.
        if self.small.iter().any(|(a_start, k)| a_start <= e && a_start + ((1u64 << k) - 1) >= s) {
            return Err(IovaError::ReservedOverlap { start, size });
        }
        self.flush_rcache();
        // Free ranges overlapping [s, e]: walk down from e while they reach s.
        let mut hits: Vec<(u64, u64)> = Vec::new();
        for (&fs, &fp) in self.free_by_start.range(..=e).rev() {
            if fs + (fp - 1) < s {
                break;
            }
            hits.push((fs, fp));
        }
        for (fs, fp) in hits {
            let fe = fs + (fp - 1);
            self.remove_free(fs, fp);
            if fs < s {
                self.insert_free_raw(fs, s - fs);
            }
            if fe > e {
                self.insert_free_raw(e + 1, fe - e);
            }
        }
        self.add_reserved(s << self.shift, (e - s + 1) << self.shift);
        Ok(())
    }

    /// Allocate `size` bytes (rounded up to granules, see module docs) ending at or below
    /// `min(limit_inclusive, aperture limit)`. Returns the IOVA.
    pub fn alloc(&mut self, size: u64, limit_inclusive: u64) -> Result<u64, IovaError> {
        if size == 0 {
            return Err(IovaError::ZeroSize);
        }
        let exhausted = IovaError::Exhausted { size };
        let mut pages = ((size - 1) >> self.shift) + 1;
        if pages <= RCACHE_MAX_PAGES {
            pages = pages.next_power_of_two();
        }
        let align = pages.checked_next_power_of_two().ok_or(exhausted)?;
        let lim = limit_inclusive.min(self.limit);
        let limit_pfn = if lim == u64::MAX {
            lim >> self.shift
        } else {
            ((lim + 1) >> self.shift).checked_sub(1).ok_or(exhausted)?
        };
        if limit_pfn < (self.base >> self.shift) {
            return Err(exhausted);
        }
        if let Some(pfn) = self.rcache_get(pages, limit_pfn) {
            self.record(pfn, pages);
            return Ok(pfn << self.shift);
        }
        let pfn = match self.tree_alloc(pages, align, limit_pfn) {
            Some(p) => p,
            None if self.cached_pages > 0 => {
                self.flush_rcache();
                self.tree_alloc(pages, align, limit_pfn).ok_or(exhausted)?
            }
            None => return Err(exhausted),
        };
        self.record(pfn, pages);
        Ok(pfn << self.shift)
    }

    /// Free the allocation starting exactly at `iova`; returns its size in bytes.
    pub fn free(&mut self, iova: u64) -> Result<u64, IovaError> {
        if iova & (self.granule() - 1) != 0 {
            return Err(IovaError::NotAllocated { iova });
        }
        let pfn = iova >> self.shift;
        let pages = match self.small.remove(pfn) {
            Some(k) => 1u64 << k,
            None => self.allocated.remove(&pfn).ok_or(IovaError::NotAllocated { iova })?,
        };
        self.allocated_pages -= pages;
        if !self.rcache_put(pfn, pages) {
            self.insert_free(pfn, pages);
        }
        Ok(pages << self.shift)
    }

    /// `find` for a caller that knows the allocation's size (the DMA API's unmap is given the
    /// length it mapped): the one size class that fits is probed first, one hash lookup in
    /// the common case; anything else falls back to the full search.
    pub fn find_sized(&self, iova: u64, size: u64) -> Option<(u64, u64)> {
        let pages = size.div_ceil(1u64 << self.shift).max(1);
        if pages <= RCACHE_MAX_PAGES {
            let k = pages.next_power_of_two().trailing_zeros();
            let s = (iova >> self.shift) & !((1u64 << k) - 1);
            if self.small.get(s) == Some(k as u8) {
                return Some((s << self.shift, (1u64 << k) << self.shift));
            }
        }
        self.find(iova)
    }

    /// The live allocation containing `iova`, as `(start, size)` in bytes.
    pub fn find(&self, iova: u64) -> Option<(u64, u64)> {
        let pfn = iova >> self.shift;
        // A small allocation of 2^k pages containing pfn starts at pfn rounded down to 2^k;
        // k = 0 first: the DMA API asks with the first page of the allocation.
        if !self.small.is_empty() {
            for k in 0..RCACHE_CLASSES as u32 {
                let s = pfn & !((1u64 << k) - 1);
                if let Some(c) = self.small.get(s)
                    && pfn - s < 1u64 << c
                {
                    return Some((s << self.shift, (1u64 << c) << self.shift));
                }
            }
        }
        let (&s, &p) = self.allocated.range(..=pfn).next_back()?;
        (pfn - s < p).then(|| (s << self.shift, p << self.shift))
    }

    pub fn allocated_bytes(&self) -> u64 {
        self.allocated_pages << self.shift
    }

    /// Allocatable bytes (free tree plus rcache).
    pub fn free_bytes(&self) -> u64 {
        (self.free_pages + self.cached_pages) << self.shift
    }

    /// Reserved ranges inside the aperture, `(start, size)` in bytes, sorted and merged.
    pub fn reserved(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.reserved.iter().map(|(&s, &z)| (s, z))
    }

    /// Number of live allocations.
    pub fn allocations(&self) -> usize {
        self.small.len() + self.allocated.len()
    }

    /// Return every cached range to the free trees.
    pub fn flush_rcache(&mut self) {
        for k in 0..RCACHE_CLASSES {
            let pages = 1u64 << k;
            while let Some(pfn) = self.rcache[k].pop() {
                self.cached_pages -= pages;
                self.insert_free(pfn, pages);
            }
        }
    }

    // ---- internals ----

    fn record(&mut self, pfn: u64, pages: u64) {
        if pages <= RCACHE_MAX_PAGES && pages.is_power_of_two() {
            self.small.insert(pfn, pages.trailing_zeros() as u8);
        } else {
            self.allocated.insert(pfn, pages);
        }
        self.allocated_pages += pages;
    }

    fn rcache_get(&mut self, pages: u64, limit_pfn: u64) -> Option<u64> {
        if pages > RCACHE_MAX_PAGES {
            return None;
        }
        let k = pages.trailing_zeros() as usize;
        let bucket = self.rcache.get_mut(k)?;
        let i = bucket.iter().rposition(|&pfn| pfn + (pages - 1) <= limit_pfn)?;
        let pfn = bucket.remove(i);
        self.cached_pages -= pages;
        Some(pfn)
    }

    fn rcache_put(&mut self, pfn: u64, pages: u64) -> bool {
        if pages > RCACHE_MAX_PAGES || !pages.is_power_of_two() {
            return false;
        }
        let k = pages.trailing_zeros() as usize;
        match self.rcache.get_mut(k) {
            Some(bucket) if bucket.len() < RCACHE_DEPTH => {
                bucket.push(pfn);
                self.cached_pages += pages;
                true
            }
            _ => false,
        }
    }

    /// Highest `align`-aligned run of `pages` free pages ending at or below `limit_pfn`.
    fn tree_alloc(&mut self, pages: u64, align: u64, limit_pfn: u64) -> Option<u64> {
        // O(log n): nothing big enough anywhere.
        let &(largest, _) = self.free_by_size.last()?;
        if largest < pages {
            return None;
        }
        let mut found = None;
        for (&s, &p) in self.free_by_start.range(..=limit_pfn).rev() {
            if p < pages {
                continue;
            }
            let top = (s + (p - 1)).min(limit_pfn);
            if top - s < pages - 1 {
                continue;
            }
            let cand = (top - (pages - 1)) & !(align - 1);
            if cand >= s {
                found = Some((s, p, cand));
                break;
            }
        }
        let (s, p, a) = found?;
        let e = s + (p - 1);
        let a_end = a + (pages - 1);
        self.remove_free(s, p);
        if a > s {
            self.insert_free_raw(s, a - s);
        }
        if a_end < e {
            self.insert_free_raw(a_end + 1, e - a_end);
        }
        Some(a)
    }

    fn remove_free(&mut self, s: u64, p: u64) {
        self.free_by_start.remove(&s);
        self.free_by_size.remove(&(p, s));
        self.free_pages -= p;
    }

    fn insert_free_raw(&mut self, s: u64, p: u64) {
        self.free_by_start.insert(s, p);
        self.free_by_size.insert((p, s));
        self.free_pages += p;
    }

    /// Insert with coalescing of adjacent free ranges.
    fn insert_free(&mut self, mut s: u64, mut p: u64) {
        if let Some((&ps, &pp)) = self.free_by_start.range(..s).next_back()
            && ps + pp == s
        {
            self.remove_free(ps, pp);
            s = ps;
            p += pp;
        }
        if let Some(next) = s.checked_add(p)
            && let Some(&np) = self.free_by_start.get(&next)
        {
            self.remove_free(next, np);
            p += np;
        }
        self.insert_free_raw(s, p);
    }

    fn add_reserved(&mut self, mut start: u64, size: u64) {
        let mut end = start + (size - 1);
        // Merge with overlapping or adjacent reserved ranges.
        let mut merge: Vec<(u64, u64)> = Vec::new();
        for (&rs, &rz) in self.reserved.range(..=end.saturating_add(1)).rev() {
            let re = rs + (rz - 1);
            if re.saturating_add(1) < start {
                break;
            }
            merge.push((rs, re));
        }
        for (rs, re) in merge {
            self.reserved.remove(&rs);
            start = start.min(rs);
            end = end.max(re);
        }
        self.reserved.insert(start, end - start + 1);
    }
}

/// Start pfn -> size class of the live small allocations: open addressing with linear
/// probing (Fibonacci hashing), deletion by backward shift (no tombstones), load <= 1/2.
/// Allocations are distinct, so starts are unique keys.
struct SmallAllocs {
    /// `(start pfn, class)`; class `EMPTY` marks a free slot.
    slots: Vec<(u64, u8)>,
    len: usize,
}

const EMPTY: u8 = u8::MAX;
const SMALL_MIN_SLOTS: usize = 64;

impl SmallAllocs {
    const fn new() -> Self {
        SmallAllocs { slots: Vec::new(), len: 0 }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, pfn: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.slots.iter().copied().filter(|&(_, k)| k != EMPTY)
    }

    fn slot_of(&self, pfn: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(pfn);
        loop {
            let (p, k) = self.slots[i];
            if k == EMPTY {
                return None;
            }
            if p == pfn {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn get(&self, pfn: u64) -> Option<u8> {
        self.slot_of(pfn).map(|i| self.slots[i].1)
    }

    fn insert(&mut self, pfn: u64, class: u8) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(pfn);
        while self.slots[i].1 != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = (pfn, class);
        self.len += 1;
    }

    fn remove(&mut self, pfn: u64) -> Option<u8> {
        let mut i = self.slot_of(pfn)?;
        let class = self.slots[i].1;
        let mask = self.slots.len() - 1;
        self.slots[i].1 = EMPTY;
        self.len -= 1;
        // Backward shift: move later members of the probe run into the hole when their
        // home does not lie cyclically in (hole, j].
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let (p, k) = self.slots[j];
            if k == EMPTY {
                break;
            }
            let h = self.home(p);
            let stays = if i <= j { i < h && h <= j } else { i < h || h <= j };
            if !stays {
                self.slots[i] = (p, k);
                self.slots[j].1 = EMPTY;
                i = j;
            }
        }
        Some(class)
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(SMALL_MIN_SLOTS);
        let old = core::mem::replace(&mut self.slots, alloc::vec![(0, EMPTY); n]);
        self.len = 0;
        for (p, k) in old {
            if k != EMPTY {
                self.insert(p, k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 4096;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn total(a: &IovaAllocator) -> u64 {
        let (b, l) = a.aperture();
        l - b + 1
    }

    fn reserved_bytes(a: &IovaAllocator) -> u64 {
        a.reserved().map(|(_, z)| z).sum()
    }

    #[test]
    fn construction() {
        assert_eq!(IovaAllocator::new(0, 0xffff, 3).err(), Some(IovaError::BadRange));
        assert_eq!(IovaAllocator::new(0x2000, 0x1fff, G).err(), Some(IovaError::BadRange));
        assert_eq!(IovaAllocator::new(0x800, 0xffff, G).err(), Some(IovaError::Misaligned { value: 0x800 }));
        assert_eq!(IovaAllocator::new(0, 0x1_0000, G).err(), Some(IovaError::Misaligned { value: 0x1_0000 }));
        assert_eq!(IovaAllocator::new(0, u64::MAX, G).err(), Some(IovaError::BadRange));
        let a = IovaAllocator::new(G, u64::MAX, G).unwrap();
        assert_eq!(a.free_bytes(), u64::MAX - G + 1);
        let a = IovaAllocator::new(0, (1 << 48) - 1, G).unwrap();
        assert_eq!(a.free_bytes(), 1 << 48);
        assert_eq!(a.allocated_bytes(), 0);
    }

    #[test]
    fn top_down_and_aligned() {
        let mut a = IovaAllocator::new(0x1000_0000, 0xffff_ffff, G).unwrap();
        assert_eq!(a.alloc(G, u64::MAX), Ok(0xffff_f000));
        assert_eq!(a.alloc(2 * G, u64::MAX), Ok(0xffff_c000));
        // 3 pages round to 4 (rcache class) and align to 16K
        assert_eq!(a.alloc(3 * G, u64::MAX), Ok(0xffff_8000));
        assert_eq!(a.find(0xffff_a123), Some((0xffff_8000, 4 * G)));
        // 1 byte -> one page, goes in the hole at 0xffff_e000
        assert_eq!(a.alloc(1, u64::MAX), Ok(0xffff_e000));
        // 33 pages: not rounded, aligned to 64 pages (256K)
        let big = a.alloc(33 * G, u64::MAX).unwrap();
        assert_eq!(big % (64 * G), 0);
        assert_eq!(a.find(big), Some((big, 33 * G)));
        assert_eq!(big, 0xfffc_0000);
        // 1 MiB aligned to 1 MiB
        let m = a.alloc(1 << 20, u64::MAX).unwrap();
        assert_eq!(m % (1 << 20), 0);
        assert!(m + (1 << 20) - 1 <= 0xffff_ffff);
    }

    #[test]
    fn per_call_limit() {
        let mut a = IovaAllocator::new(0x1000, (1 << 40) - 1, G).unwrap();
        let hi = a.alloc(8 * G, u64::MAX).unwrap();
        assert_eq!(hi, (1 << 40) - 8 * G);
        let lo = a.alloc(8 * G, 0xffff_ffff).unwrap();
        assert_eq!(lo, 0x1_0000_0000 - 8 * G);
        // limit not at a granule boundary: page must end at or below it
        let x = a.alloc(G, 0x5000).unwrap();
        assert_eq!(x, 0x4000);
        // limit below base: exhausted
        assert_eq!(a.alloc(G, 0xfff), Err(IovaError::Exhausted { size: G }));
        // rcache honours the per-call limit too
        a.free(hi).unwrap();
        let y = a.alloc(8 * G, 0xffff_ffff).unwrap();
        assert!(y + 8 * G - 1 <= 0xffff_ffff);
        assert_ne!(y, hi);
        assert_eq!(a.alloc(8 * G, u64::MAX), Ok(hi)); // now reused from the cache
    }

    #[test]
    fn reserved_never_returned() {
        let mut a = IovaAllocator::new(0, 0xffff_ffff, G).unwrap();
        // MSI window at the top and a firmware direct map in the middle
        a.reserve(0xfee0_0000, 0x10_0000).unwrap();
        a.reserve(0x8000_0800, 0x1000).unwrap(); // rounded outward to 2 pages
        a.reserve(0x1_0000_0000, 0x1000).unwrap(); // outside: ignored
        let r: Vec<_> = a.reserved().collect();
        assert_eq!(r, [(0x8000_0000, 0x2000), (0xfee0_0000, 0x10_0000)]);
        assert_eq!(a.free_bytes() + reserved_bytes(&a), total(&a));
        // The MSI window is below the top, so the first allocation is at the very top.
        let x = a.alloc(G, u64::MAX).unwrap();
        assert_eq!(x, 0xffff_f000);
        // Allocation overlapping a reservation is refused.
        assert_eq!(a.reserve(0xffff_f000, 1), Err(IovaError::ReservedOverlap { start: 0xffff_f000, size: 1 }));
        // Merging
        a.reserve(0x8000_2000, 0x1000).unwrap();
        a.reserve(0x8000_1000, 0x1000).unwrap();
        let r: Vec<_> = a.reserved().collect();
        assert_eq!(r[0], (0x8000_0000, 0x3000));
        assert_eq!(a.reserve(0, 0), Err(IovaError::ZeroSize));
    }

    #[test]
    fn exhaustion_double_free_and_no_leak() {
        let mut a = IovaAllocator::new(0x10_0000, 0x10_0000 + 64 * G - 1, G).unwrap();
        let start_free = a.free_bytes();
        let mut v = Vec::new();
        for _ in 0..64 {
            v.push(a.alloc(G, u64::MAX).unwrap());
        }
        assert_eq!(a.alloc(G, u64::MAX), Err(IovaError::Exhausted { size: G }));
        assert_eq!(a.alloc(u64::MAX, u64::MAX), Err(IovaError::Exhausted { size: u64::MAX }));
        assert_eq!(a.alloc(0, u64::MAX), Err(IovaError::ZeroSize));
        assert_eq!(a.free_bytes(), 0);
        assert_eq!(a.allocated_bytes(), 64 * G);
        // free all but one: a 32-page request fits only after coalescing (rcache flush)
        for &x in &v[1..] {
            assert_eq!(a.free(x), Ok(G));
        }
        assert_eq!(a.free(v[1]), Err(IovaError::NotAllocated { iova: v[1] }));
        assert_eq!(a.free(v[0] + 1), Err(IovaError::NotAllocated { iova: v[0] + 1 }));
        assert_eq!(a.free(0x5000), Err(IovaError::NotAllocated { iova: 0x5000 }));
        let big = a.alloc(32 * G, u64::MAX).unwrap();
        assert_eq!(big % (32 * G), 0);
        a.free(big).unwrap();
        a.free(v[0]).unwrap();
        assert_eq!(a.allocations(), 0);
        assert_eq!(a.free_bytes(), start_free);
        a.flush_rcache();
        // Fully coalesced back into one range.
        assert_eq!(a.alloc(64 * G, u64::MAX), Ok(0x10_0000));
    }

    #[test]
    fn property_random_alloc_free() {
        for seed in [1u64, 0xdead_beef, 0x1234_5678_9abc] {
            let mut rng = Rng(seed);
            let base = 0x1000_0000u64;
            let limit = 0x1_ffff_ffffu64;
            let mut a = IovaAllocator::new(base, limit, G).unwrap();
            let res = [(0xfee0_0000u64, 0x10_0000u64), (0x1_2345_6000, 0x80_0000), (0x1000_0000, 0x1000)];
            for (s, z) in res {
                a.reserve(s, z).unwrap();
            }
            let start_free = a.free_bytes();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for step in 0..6000 {
                let r = rng.below(100);
                if r < 55 || model.is_empty() {
                    let pages = match rng.below(10) {
                        0..=6 => rng.below(8) + 1,
                        7 | 8 => rng.below(64) + 1,
                        _ => rng.below(4096) + 1,
                    };
                    let size = pages * G - rng.below(G); // not always a multiple
                    let call_limit = if rng.below(3) == 0 { 0xffff_ffff } else { u64::MAX };
                    match a.alloc(size, call_limit) {
                        Ok(x) => {
                            let (fs, fz) = a.find(x).unwrap();
                            assert_eq!(fs, x);
                            assert!(fz >= size);
                            let align = (fz / G).next_power_of_two() * G;
                            assert_eq!(x % align, 0, "alignment step {step}");
                            let end = x + fz - 1;
                            assert!(x >= base && end <= limit.min(call_limit), "bounds");
                            for (s, z) in res {
                                assert!(end < s || x > s + z - 1, "reserved {x:#x}");
                            }
                            if let Some((&ps, &pz)) = model.range(..=end).next_back() {
                                assert!(ps + pz - 1 < x, "overlap {x:#x} with {ps:#x}");
                            }
                            model.insert(x, fz);
                        }
                        Err(IovaError::Exhausted { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                } else if r < 97 {
                    let i = rng.below(model.len() as u64) as usize;
                    let (&x, &z) = model.iter().nth(i).unwrap();
                    assert_eq!(a.free(x), Ok(z));
                    model.remove(&x);
                    assert_eq!(a.free(x), Err(IovaError::NotAllocated { iova: x }));
                } else {
                    let q = base + rng.below(limit - base);
                    let m = model.range(..=q).next_back().filter(|(s, z)| q < *s + *z).map(|(s, z)| (*s, *z));
                    assert_eq!(a.find(q), m);
                    // With any size hint (right, too small, too big) the answer is the same.
                    let hint = match (m, rng.below(3)) {
                        (Some((s, z)), 0) => s + z - q,
                        (_, 1) => rng.below(G) + 1,
                        _ => rng.below(64 * G) + 1,
                    };
                    assert_eq!(a.find_sized(q, hint), m, "find_sized({q:#x}, {hint:#x})");
                }
                let used: u64 = model.values().sum();
                assert_eq!(a.allocated_bytes(), used);
                assert_eq!(a.allocated_bytes() + a.free_bytes(), start_free);
            }
            for (&x, _) in model.iter() {
                a.free(x).unwrap();
            }
            assert_eq!(a.free_bytes(), start_free);
            assert_eq!(a.allocated_bytes(), 0);
            a.flush_rcache();
            assert_eq!(a.free_bytes() + reserved_bytes(&a), total(&a));
            // After flushing, the free space is fully coalesced: 4 free ranges around 3 reservations
            // (one at the very bottom leaves no hole below it).
            assert_eq!(a.free_by_start.len(), 3);
        }
    }

    #[test]
    fn small_table_matches_model() {
        // Keys from a narrow range and their multiples of large powers of two collide and
        // wrap around the table; every get, insert and remove is checked against a model.
        let mut rng = Rng(0x5eed);
        let mut t = SmallAllocs::new();
        let mut model: BTreeMap<u64, u8> = BTreeMap::new();
        for step in 0..40_000 {
            let key = match rng.below(3) {
                0 => rng.below(300),
                1 => rng.below(300) << 32,
                _ => u64::MAX - rng.below(300),
            };
            match rng.below(3) {
                0 if !model.contains_key(&key) => {
                    let class = rng.below(6) as u8;
                    t.insert(key, class);
                    model.insert(key, class);
                }
                1 => assert_eq!(t.remove(key), model.remove(&key), "remove {key:#x} step {step}"),
                _ => assert_eq!(t.get(key), model.get(&key).copied(), "get {key:#x} step {step}"),
            }
            assert_eq!(t.len(), model.len());
            assert!(t.len() * 2 <= t.slots.len().max(1));
            // Shrink the model now and then so the table also runs nearly empty.
            if step % 5000 == 4999 {
                let keys: Vec<u64> = model.keys().copied().collect();
                for k in keys.iter().step_by(2) {
                    assert_eq!(t.remove(*k), model.remove(k));
                }
            }
        }
        let mut all: Vec<(u64, u8)> = t.iter().collect();
        all.sort_unstable();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn small_allocations_block_reservations_and_double_frees() {
        let mut a = IovaAllocator::new(0x1000_0000, 0xffff_ffff, G).unwrap();
        let x = a.alloc(4 * G, u64::MAX).unwrap();
        assert_eq!(a.allocations(), 1);
        // Overlapping its last page only.
        let e = IovaError::ReservedOverlap { start: x + 3 * G, size: 1 };
        assert_eq!(a.reserve(x + 3 * G, 1), Err(e));
        a.reserve(x + 4 * G, G).unwrap();
        // Interior addresses find it; the page above does not.
        assert_eq!(a.find(x + 2 * G + 5), Some((x, 4 * G)));
        assert_eq!(a.find(x + 4 * G), None);
        // Only its start frees it, once.
        assert_eq!(a.free(x + G), Err(IovaError::NotAllocated { iova: x + G }));
        assert_eq!(a.free(x), Ok(4 * G));
        assert_eq!(a.free(x), Err(IovaError::NotAllocated { iova: x }));
        assert_eq!(a.find(x), None);
        assert_eq!(a.allocations(), 0);
        assert_eq!(a.allocated_bytes(), 0);
    }

    #[test]
    fn tiny_granule_and_top_of_space() {
        let mut a = IovaAllocator::new(1, u64::MAX, 1).unwrap();
        assert_eq!(a.alloc(1, u64::MAX), Ok(u64::MAX));
        assert_eq!(a.alloc(2, u64::MAX), Ok(u64::MAX - 3));
        assert_eq!(a.free(u64::MAX), Ok(1));
        a.flush_rcache();
        assert_eq!(a.alloc(1, u64::MAX), Ok(u64::MAX));
        a.reserve(0, u64::MAX).unwrap_err();
        let mut b = IovaAllocator::new(1 << 63, u64::MAX, 1 << 63).unwrap();
        assert_eq!(b.alloc(1, u64::MAX), Ok(1 << 63));
        assert_eq!(b.alloc(1, u64::MAX), Err(IovaError::Exhausted { size: 1 }));
    }
}
