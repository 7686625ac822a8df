//! Lazy mode's flush queue (Linux's `iova_fq`): IOVAs unmapped from the table whose TLB
//! invalidation is still owed. The allocator may not hand one out again before the flush
//! that invalidates it, or the device could reach the new buffer through a stale entry.
//!
//! One exception is safe, and this queue serves it: mapping *the same pages with the same
//! attributes* again may take back a waiting IOVA (`FlushQueue::take_identical`).
//! Whatever the SMMU's TLB still holds for that IOVA is then exactly the new mapping, so no
//! invalidation is owed for it. The map allocates no IOVA, and the device's TLB entry keeps
//! translating: drivers that map the same buffers again and again (buffer pools, bounce
//! buffers) pay neither an allocation nor a TLB miss per map. Taken IOVAs stay in the queue
//! (marked) until it is drained or compacted, but they are never freed.
//!
//! The same reasoning tells when an invalidation is owed at all: only for ranges unmapped
//! since the last one and not taken back since (`FlushQueue::stale`). A queue whose every
//! range was taken back owes nothing and frees nothing: `FlushQueue::compact` drops those
//! entries instead of flushing (a buffer cycled through map and unmap then never makes the
//! SMMU drop its TLB entries, the rings' included).
//!
//! Pure logic (host-tested); the domain layer (`domain.rs`) owns one queue per DMA domain.

use alloc::vec;
use alloc::vec::Vec;

/// An unmapped range waiting for its invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub iova: u64,
    /// Output address of the range's first byte (physical, or IPA under nesting).
    pub pa: u64,
    pub size: u64,
    /// The leaf attribute bits its table entries had (`desc::LEAF_ATTR_MASK`), or
    /// [`Waiting::UNKNOWN`].
    pub attrs: u64,
}

impl Waiting {
    /// Attributes no leaf has (the descriptor type bits are set): the range only waits to be
    /// freed, nothing can take it back.
    pub const UNKNOWN: u64 = u64::MAX;

    /// A range whose mapping is not known (its first page was not mapped, or a map of it
    /// failed half-way): freed by the next drain, never taken back.
    pub fn unknown(iova: u64, size: u64) -> Waiting {
        Waiting { iova, pa: 0, size, attrs: Waiting::UNKNOWN }
    }
}

/// Index slots: twice the entries it indexes (linear probing stays short); entries beyond
/// half of it are queued but cannot be taken back.
const SLOTS: usize = 512;
const EMPTY: u16 = 0;
/// Slots an entry may lie from its home; pushes beyond go unindexed.
const MAX_PROBE: usize = 8;

/// A queued range and whether an identical map took it back (then it is not freed).
#[derive(Debug, Clone, Copy)]
struct Entry {
    w: Waiting,
    taken: bool,
    /// `FlushQueue::epoch` when it was queued: stale until that epoch ends.
    epoch: u64,
}

#[derive(Debug)]
pub struct FlushQueue {
    entries: Vec<Entry>,
    /// Open addressing by `pa`: entry index + 1, or EMPTY. Emptied only by `drain` and
    /// `compact` (a slot naming a taken entry is reused by the next entry indexed there),
    /// so it fills at most SLOTS / 2 slots.
    index: Vec<u16>,
    indexed: usize,
    /// Entries before this one went through `index_entry` (pushes are indexed lazily, by
    /// the first lookup the last entry cannot answer).
    index_upto: usize,
    /// Invalidations of the TLB since the queue was created ([`FlushQueue::invalidated`]).
    epoch: u64,
    /// Entries not taken back: what a drain frees.
    untaken: usize,
    /// Entries not taken back and queued in this epoch: what the TLB may hold stale.
    stale: usize,
}

impl Default for FlushQueue {
    fn default() -> Self {
        FlushQueue::new()
    }
}

impl FlushQueue {
    pub fn new() -> FlushQueue {
        FlushQueue {
            entries: Vec::new(),
            index: vec![EMPTY; SLOTS],
            indexed: 0,
            index_upto: 0,
            epoch: 0,
            untaken: 0,
            stale: 0,
        }
    }

    /// Unmaps queued since the last drain or compaction, taken back or not (what fills a
    /// lazy batch).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queued and not taken back: what the next drain frees.
    pub fn waiting(&self) -> usize {
        self.untaken
    }

    /// Some queued range may still translate through the TLB although its mapping is gone:
    /// unmapped since the last invalidation and not mapped identically again.
    pub fn stale(&self) -> bool {
        self.stale != 0
    }

    /// The TLB was invalidated for everything queued so far (the flush timer does this
    /// without draining): nothing queued is stale any more, though it all still waits to be
    /// freed by the next drain.
    pub fn invalidated(&mut self) {
        self.epoch += 1;
        self.stale = 0;
    }

    /// Drop the entries taken back (nothing to free, nothing owed for them) and return how
    /// many still wait. The lazy batch bound counts these: a buffer mapped again and again
    /// fills the queue with taken entries, which need no flush to go.
    pub fn compact(&mut self) -> usize {
        if self.untaken == self.entries.len() {
            return self.untaken;
        }
        self.entries.retain(|e| !e.taken);
        self.clear_index();
        self.untaken
    }

    fn home(pa: u64) -> usize {
        ((pa >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
    }

    pub fn push(&mut self, w: Waiting) {
        self.entries.push(Entry { w, taken: false, epoch: self.epoch });
        self.untaken += 1;
        self.stale += 1;
    }

    /// Forget every indexed entry (their places in `entries` change or end).
    fn clear_index(&mut self) {
        if self.indexed > 0 {
            self.index.fill(EMPTY);
            self.indexed = 0;
        }
        self.index_upto = 0;
    }

    /// Index the entries pushed since the last lookup that needed the index.
    fn index_pending(&mut self) {
        while self.index_upto < self.entries.len() {
            if !self.entries[self.index_upto].taken {
                self.index_entry(self.index_upto);
            }
            self.index_upto += 1;
        }
    }

    /// Index entry `i` (by its `pa`) if it can be taken back and there is room.
    fn index_entry(&mut self, i: usize) {
        let w = self.entries[i].w;
        if w.attrs == Waiting::UNKNOWN || self.indexed >= SLOTS / 2 || i + 1 > u16::MAX as usize {
            return;
        }
        // The first slot that is empty or names a taken entry: a buffer mapped and unmapped
        // over and over keeps one slot instead of lengthening its probe chain every time.
        // Within MAX_PROBE of home, or not indexed: the same pages unmapped many times
        // over (one buffer mapped for many descriptors) must not make every indexing and
        // lookup walk a long chain.
        let mut s = FlushQueue::home(w.pa);
        for _ in 0..MAX_PROBE {
            match self.index[s] {
                EMPTY => {
                    self.indexed += 1;
                    self.index[s] = (i + 1) as u16;
                    return;
                }
                slot if self.entries[slot as usize - 1].taken => {
                    self.index[s] = (i + 1) as u16;
                    return;
                }
                _ => s = (s + 1) % SLOTS,
            }
        }
    }

    /// The IOVA of a waiting range mapped exactly like `[pa, pa + size)` with `attrs`, and
    /// ending at or below `limit` (the device's mask), taken out of the queue's frees; the
    /// caller maps it again. None when no such range waits.
    pub fn take_identical(&mut self, pa: u64, size: u64, attrs: u64, limit: u64) -> Option<u64> {
        // The last unmap first: a buffer cycled through map and unmap (the common case)
        // takes back what it just left, with no hashing.
        if let Some(i) = self.entries.len().checked_sub(1)
            && let Some(iova) = self.take_if(i, pa, size, attrs, limit)
        {
            return Some(iova);
        }
        self.index_pending();
        let mut s = FlushQueue::home(pa);
        for _ in 0..MAX_PROBE {
            let slot = self.index[s];
            if slot == EMPTY {
                return None;
            }
            if let Some(iova) = self.take_if(slot as usize - 1, pa, size, attrs, limit) {
                return Some(iova);
            }
            s = (s + 1) % SLOTS;
        }
        None
    }

    /// Take entry `i` back if it waits with exactly this mapping, within `limit`.
    fn take_if(&mut self, i: usize, pa: u64, size: u64, attrs: u64, limit: u64) -> Option<u64> {
        let e = &mut self.entries[i];
        let w = e.w;
        let same = !e.taken && w.pa == pa && w.size == size && w.attrs == attrs && attrs != Waiting::UNKNOWN;
        if !same || w.iova.checked_add(size - 1).is_none_or(|end| end > limit) {
            return None;
        }
        e.taken = true;
        let stale = e.epoch == self.epoch;
        self.untaken -= 1;
        if stale {
            self.stale -= 1;
        }
        Some(w.iova)
    }

    /// Empty the queue after its invalidation completed: `free` gets every IOVA not taken
    /// back. Keeps the capacity.
    pub fn drain(&mut self, mut free: impl FnMut(u64)) {
        for e in self.entries.drain(..) {
            if !e.taken {
                free(e.w.iova);
            }
        }
        self.clear_index();
        self.untaken = 0;
        self.stale = 0;
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(iova: u64, pa: u64) -> Waiting {
        Waiting { iova, pa, size: 0x1000, attrs: 0x740 }
    }

    fn drained(q: &mut FlushQueue) -> Vec<u64> {
        let mut v = Vec::new();
        q.drain(|i| v.push(i));
        v
    }

    #[test]
    fn identical_mapping_takes_its_iova_back_once() {
        let mut q = FlushQueue::new();
        q.push(w(0x10_0000, 0x4000_0000));
        q.push(w(0x10_1000, 0x4000_1000));
        assert_eq!(q.take_identical(0x4000_1000, 0x1000, 0x740, u64::MAX), Some(0x10_1000));
        // Taken once: a second map of the same pages needs another IOVA.
        assert_eq!(q.take_identical(0x4000_1000, 0x1000, 0x740, u64::MAX), None);
        assert_eq!((q.len(), q.waiting()), (2, 1));
        // The drain frees only what still waits, and empties the index.
        assert_eq!(drained(&mut q), [0x10_0000]);
        assert!(q.is_empty());
        assert_eq!(q.take_identical(0x4000_0000, 0x1000, 0x740, u64::MAX), None);
    }

    #[test]
    fn anything_different_is_not_identical() {
        let mut q = FlushQueue::new();
        q.push(Waiting { iova: 0x20_0000, pa: 0x4000_0000, size: 0x2000, attrs: 0x740 });
        assert_eq!(q.take_identical(0x4000_0000, 0x1000, 0x740, u64::MAX), None, "size");
        assert_eq!(q.take_identical(0x4000_0000, 0x2000, 0x7c0, u64::MAX), None, "attributes");
        assert_eq!(q.take_identical(0x4000_1000, 0x2000, 0x740, u64::MAX), None, "pages");
        assert_eq!(q.take_identical(0x4000_0000, 0x2000, 0x740, 0x20_0fff), None, "beyond the mask");
        assert_eq!(q.take_identical(0x4000_0000, 0x2000, 0x740, 0x20_1fff), Some(0x20_0000));
    }

    #[test]
    fn same_pages_queued_twice_and_a_full_index() {
        let mut q = FlushQueue::new();
        q.push(w(0x1000, 0x8000));
        q.push(w(0x2000, 0x8000));
        let a = q.take_identical(0x8000, 0x1000, 0x740, u64::MAX);
        let b = q.take_identical(0x8000, 0x1000, 0x740, u64::MAX);
        // Either order will do (the last unmap is looked at first).
        assert_eq!((a, b), (Some(0x2000), Some(0x1000)));
        assert!(drained(&mut q).is_empty());
        // Beyond half the slots entries are queued (and freed) but not indexed: every lookup
        // still ends at an empty slot.
        for k in 0..SLOTS as u64 {
            q.push(w(0x100_0000 + k * 0x1000, k * 0x1000));
        }
        assert_eq!(q.take_identical(0, 0x1000, 0x740, u64::MAX), Some(0x100_0000));
        // Not indexed (and not the last unmap either, which is looked at first).
        assert_eq!(q.take_identical((SLOTS as u64 - 2) * 0x1000, 0x1000, 0x740, u64::MAX), None);
        assert_eq!(drained(&mut q).len(), SLOTS - 1);
    }

    #[test]
    fn unknown_mappings_are_freed_never_taken() {
        let mut q = FlushQueue::new();
        q.push(Waiting::unknown(0x3000, 0x1000));
        assert_eq!(q.take_identical(0, 0x1000, Waiting::UNKNOWN, u64::MAX), None);
        assert_eq!((q.indexed, q.waiting()), (0, 1));
        assert_eq!(drained(&mut q), [0x3000]);
    }

    #[test]
    fn one_buffer_cycled_keeps_one_slot() {
        let mut q = FlushQueue::new();
        let mut iova = 0x1000;
        for _ in 0..1000 {
            q.push(w(iova, 0x8000));
            iova = q.take_identical(0x8000, 0x1000, 0x740, u64::MAX).unwrap();
        }
        // Each map found its IOVA as the last unmap: the index was never needed.
        assert_eq!((q.len(), q.indexed), (1000, 0));
        assert!(drained(&mut q).is_empty());
        // The same pages unmapped many times over, none taken back: the last one is found
        // directly, then only MAX_PROBE of the others are indexed.
        for k in 0..100 {
            q.push(w(k << 12, 0x8000));
        }
        let back: Vec<_> = (0..100).map_while(|_| q.take_identical(0x8000, 0x1000, 0x740, u64::MAX)).collect();
        assert_eq!(q.indexed, MAX_PROBE);
        assert_eq!(back.len(), MAX_PROBE + 1);
        assert_eq!(drained(&mut q).len(), 100 - MAX_PROBE - 1);
    }

    #[test]
    fn staleness_follows_unmaps_take_backs_and_invalidations() {
        let mut q = FlushQueue::new();
        assert!(!q.stale());
        q.push(w(0x1000, 0x8000));
        assert!(q.stale(), "an unmap owes an invalidation");
        assert_eq!(q.take_identical(0x8000, 0x1000, 0x740, u64::MAX), Some(0x1000));
        assert!(!q.stale(), "mapped identically again: nothing owed");
        q.push(w(0x1000, 0x8000));
        q.push(w(0x2000, 0x9000));
        q.invalidated();
        assert!(!q.stale(), "invalidated");
        assert_eq!(q.waiting(), 2, "invalidated, not freed");
        // Taken back after the invalidation: still nothing owed, one less to free.
        assert_eq!(q.take_identical(0x9000, 0x1000, 0x740, u64::MAX), Some(0x2000));
        assert!(!q.stale());
        assert_eq!(q.waiting(), 1);
        q.push(Waiting::unknown(0x3000, 0x1000));
        assert!(q.stale());
        assert_eq!(drained(&mut q), [0x1000, 0x3000]);
        assert!(!q.stale());
    }

    #[test]
    fn compaction_drops_only_what_was_taken_back() {
        let mut q = FlushQueue::new();
        for k in 0..6u64 {
            q.push(w(0x10_0000 + (k << 12), 0x8000 + (k << 12)));
        }
        for k in [1u64, 3, 4] {
            assert!(q.take_identical(0x8000 + (k << 12), 0x1000, 0x740, u64::MAX).is_some());
        }
        assert_eq!(q.compact(), 3);
        assert_eq!((q.len(), q.waiting()), (3, 3));
        // The index follows the entries' new places.
        assert_eq!(q.take_identical(0xd000, 0x1000, 0x740, u64::MAX), Some(0x10_5000));
        assert_eq!(q.take_identical(0xb000, 0x1000, 0x740, u64::MAX), None, "gone with the compaction");
        assert_eq!(drained(&mut q), [0x10_0000, 0x10_2000]);
    }

    #[test]
    fn random_against_a_model() {
        let mut q = FlushQueue::new();
        // (range, taken, queued in the current epoch)
        let mut model: Vec<(Waiting, bool, bool)> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..4000u64 {
            let r = next();
            if r % 29 == 0 {
                q.invalidated();
                model.iter_mut().for_each(|e| e.2 = false);
            } else if r % 23 == 0 {
                let left = q.compact();
                model.retain(|e| !e.1);
                assert_eq!(left, model.len(), "round {round}");
            } else if r % 7 == 0 {
                let mut got = drained(&mut q);
                let mut want: Vec<u64> = model.drain(..).filter(|e| !e.1).map(|e| e.0.iova).collect();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "round {round}");
            } else if r % 3 == 0 {
                let pa = (next() % 16) << 12;
                let got = q.take_identical(pa, 0x1000, 0x740, u64::MAX);
                let any = model.iter().any(|e| !e.1 && e.0.pa == pa);
                match (got, any) {
                    (None, false) => {}
                    // Fewer entries than MAX_PROBE can all be indexed: then one must be found.
                    (None, true) if model.len() >= MAX_PROBE => {}
                    (Some(i), true) => {
                        // Any identical waiting range will do; mark the one returned.
                        let e = model.iter_mut().find(|e| !e.1 && e.0.iova == i && e.0.pa == pa);
                        assert!(e.is_some(), "round {round}: returned {i:#x}, not waiting for {pa:#x}");
                        if let Some(e) = e {
                            e.1 = true;
                        }
                    }
                    (g, a) => panic!("round {round}: got {g:?}, model has one: {a}"),
                }
            } else {
                // IOVAs unique within the run: the model tells entries apart by them.
                let ww = w(round << 12, (next() % 16) << 12);
                q.push(ww);
                model.push((ww, false, true));
            }
            assert_eq!(q.stale(), model.iter().any(|e| !e.1 && e.2), "round {round}");
            assert_eq!(q.waiting(), model.iter().filter(|e| !e.1).count());
        }
    }
}
