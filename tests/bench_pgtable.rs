//! Host benchmark of our I/O page tables (`kernel::iommu::io_pgtable`) against the
//! `aarch64-paging` crate doing the same work in the same process (`make bench-host`).
//!
//! Prints a table (metric, ours, peer, ours/peer) and one `BENCH {json}` line per metric, which
//! the in-QEMU half of `make bench` merges into `build/bench.json`. Each timing is the median of
//! `BENCH_RUNS` (default 7) runs after one warm-up run; ours and the peer alternate which goes
//! first in every run. Table counts are exact.
//!
//! Same work on both sides: 4 KiB granule, 48-bit input space (root at level 0, four levels) for
//! stage 1 (ours: `Stage::S1`; peer: `El1And0`) and stage 2 (ours: `Stage::S2`, no concatenated
//! root at 48 bits; peer: `Stage2`); leaves are whatever both pick for the alignment (both use
//! the largest block the IOVA and PA alignment allow, so 4 KiB pages are forced by a PA one page
//! off 2 MiB alignment, not by a constraint flag).
//!
//! Metrics (per stage): 1 GiB of 4 KiB pages mapped / unmapped as one call and as 262,144
//! single-page calls; 1 GiB mapped / unmapped with 2 MiB blocks (one call per GiB, averaged over
//! 16 GiB) and as one 1 GiB block (averaged over 64 calls); `iova_to_phys` of every page of a
//! 1 GiB page mapping. Then exact table counts. The target for map and unmap is
//! ours/peer <= 0.5.
//!
//! What a timing counts: only the library calls, i.e. ours `map`, `unmap` + `complete` (after
//! every `unmap`, as a strict driver does once its invalidation completed), `iova_to_phys`; the
//! peer's `Mapping::map_range` (with flags lacking VALID to unmap, its documented way) and
//! `walk_range` (its only lookup) and, once after the page-by-page unmaps, `compact_subtables`
//! (the peer frees tables during an unmap only when the range covers a whole table, so without
//! it 514 tables would stay allocated; ours frees them as they empty). A one-call unmap of a
//! whole 1 GiB frees the peer's detached subtree but leaves its emptied level-1 table; ours frees
//! that too (no compaction is added to the peer there: it would only make the peer slower).
//!
//! Table memory for both comes from one pre-faulted pool of 4 KiB pages with an intrusive LIFO
//! free list; allocating pops and zeroes 4 KiB (both libraries need zeroed tables), freeing
//! pushes: so allocation is counted identically on both sides, and page faults on neither. Not
//! counted: creating the tables (root allocation), dropping them, checks of the results. No TLB
//! maintenance on either side: ours records the range in a `Gather` for the driver, the peer's
//! `Mapping` is never activated (it then skips TLBI and break-before-make checks).

use std::cell::Cell;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{Descriptor, El1Attributes, PagingAttributes, PhysicalAddress, Stage2Attributes};
use aarch64_paging::paging::{
    Constraints, El1And0, MemoryRegion, PAGE_SIZE, PageTable, Stage2, Translation, TranslationRegime, VaRange,
};
use kernel::iommu::io_pgtable::{Config, Gather, Granule, IoPageTable, Prot, Stage, TableMemory};

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// First IOVA of the benchmarked range (inside the first level-0 entry, one whole level-1 entry).
const BASE: u64 = GIB;
const PAGES: u64 = GIB / KIB4;
/// 1 GiB blocks mapped per timing of the 1 GiB-block metric (one call each).
const GIB_BLOCKS: u64 = 64;
/// 1 GiB regions mapped with 2 MiB blocks per timing of the 2 MiB-block metric (one call each);
/// one region takes well under a microsecond, too little to time alone.
const MIB2_REGIONS: u64 = 16;
/// Tables in the pool: > the 2 * 515 that can be live at once.
const POOL_PAGES: usize = 4096;

// ------------------------------------------------------------------------------------ memory

/// Pre-faulted 4 KiB pages handed out zeroed, LIFO free list linked through word 0.
struct Pool {
    next: Cell<usize>,
    end: usize,
    free: Cell<usize>,
}

impl Pool {
    fn new(pages: usize) -> &'static Pool {
        let layout = std::alloc::Layout::from_size_align(pages * 4096, 4096).expect("pool layout");
        // SAFETY: non-zero size; the block is leaked on purpose (it lives as long as the process).
        let base = unsafe { std::alloc::alloc(layout) };
        assert!(!base.is_null(), "pool allocation failed");
        for i in 0..pages {
            // SAFETY: inside the block just allocated; touching every page faults it in now.
            unsafe { base.add(i * 4096).write_volatile(1) };
        }
        Box::leak(Box::new(Pool {
            next: Cell::new(base as usize),
            end: base as usize + pages * 4096,
            free: Cell::new(0),
        }))
    }

    #[inline]
    fn alloc(&self) -> Option<NonNull<u64>> {
        let p = match self.free.get() {
            0 => {
                let p = self.next.get();
                if p == self.end {
                    return None;
                }
                self.next.set(p + 4096);
                p
            }
            // SAFETY: `p` is a pool page on the free list; word 0 holds the link.
            p => unsafe {
                self.free.set((p as *const usize).read());
                p
            },
        };
        // SAFETY: `p` is a 4096-byte, 4096-aligned pool page now owned by the caller.
        unsafe { (p as *mut u8).write_bytes(0, 4096) };
        NonNull::new(p as *mut u64)
    }

    /// # Safety
    /// `p` came from `alloc` and is not used any more.
    #[inline]
    unsafe fn free(&self, p: *mut u64) {
        // SAFETY: the caller gives the page back; word 0 becomes the link.
        unsafe { (p as *mut usize).write(self.free.get()) };
        self.free.set(p as usize);
    }
}

/// Our side of the pool (PA = VA).
struct OurMem {
    pool: &'static Pool,
    live: usize,
}

// SAFETY: pages are 4096 bytes, 4096-aligned, zeroed and exclusively owned until freed;
// `phys_to_virt` is the identity on them. Only 4 KiB tables are requested (no concatenated root).
unsafe impl TableMemory for OurMem {
    fn alloc_table(&mut self, bytes: usize) -> Option<(u64, *mut u64)> {
        if bytes != 4096 {
            return None;
        }
        let p = self.pool.alloc()?;
        self.live += 1;
        Some((p.as_ptr() as u64, p.as_ptr()))
    }
    fn free_table(&mut self, _pa: u64, va: *mut u64, _bytes: usize) {
        self.live -= 1;
        // SAFETY: `va` came from `alloc_table` and the page table no longer uses it.
        unsafe { self.pool.free(va) }
    }
    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }
    fn sync_for_device(&self, _va: *const u64, _len: usize) {}
}

/// The peer's side of the same pool (PA = VA).
struct PeerMem {
    pool: &'static Pool,
    live: usize,
}

impl<A: PagingAttributes> Translation<A> for PeerMem {
    fn allocate_table(&mut self) -> (NonNull<PageTable<A>>, PhysicalAddress) {
        // The trait cannot fail; the pool is sized so that this never happens.
        let p = self.pool.alloc().expect("benchmark pool exhausted");
        self.live += 1;
        (p.cast(), PhysicalAddress(p.as_ptr() as usize))
    }
    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<A>>) {
        self.live -= 1;
        // SAFETY: the table came from `allocate_table` and the peer no longer uses it.
        unsafe { self.pool.free(page_table.as_ptr().cast()) }
    }
    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<A>> {
        NonNull::new(pa.0 as *mut PageTable<A>).expect("null table address")
    }
}

// ---------------------------------------------------------------------------------- timings

/// One run's timings (ns) of one side for one stage. Per-call figures are fractional: a
/// 1 GiB block maps in about 10 ns, where whole nanoseconds would decide the ratio.
#[derive(Default, Clone, Copy)]
struct Times {
    map_range: f64,
    lookup: f64,
    unmap_range: f64,
    map_pages: f64,
    unmap_pages: f64,
    map_2m: f64,
    unmap_2m: f64,
    map_1g: f64,
    unmap_1g: f64,
}

/// Reads one timing out of a run.
type Field = fn(&Times) -> f64;

fn ns_since(t: Instant) -> f64 {
    t.elapsed().as_nanos() as f64
}

fn ours_cfg(stage: Stage, ias: u8) -> Config {
    Config { stage, granule: Granule::K4, ias, oas: 48, coherent_walk: true }
}

fn ours_new(pool: &'static Pool, stage: Stage, ias: u8) -> IoPageTable<OurMem> {
    IoPageTable::new(ours_cfg(stage, ias), OurMem { pool, live: 0 }).expect("IoPageTable::new")
}

fn ours_unmap(t: &mut IoPageTable<OurMem>, iova: u64, size: u64) -> u64 {
    let mut g = Gather::new();
    let n = t.unmap(iova, size, &mut g).unwrap_or(0);
    t.complete(&mut g).expect("complete");
    n
}

fn ours_run(pool: &'static Pool, stage: Stage) -> Times {
    let mut r = Times::default();
    let prot = Prot::RW;

    // One call each: 1 GiB of 4 KiB pages (PA one page off 2 MiB alignment), lookups, unmap.
    let mut t = ours_new(pool, stage, 48);
    let s = Instant::now();
    let ok = t.map(BASE, BASE + KIB4, GIB, prot);
    r.map_range = ns_since(s);
    assert!(ok.is_ok() && t.tables_in_use() == 514, "ours: 1 GiB range map: {ok:?}, {} tables", t.tables_in_use());
    let s = Instant::now();
    let mut sum = 0u64;
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        sum = sum.wrapping_add(black_box(t.iova_to_phys(black_box(a))).map_or(1 << 63, |pa| pa - a));
    }
    r.lookup = ns_since(s);
    assert_eq!(sum, PAGES * KIB4, "ours: iova_to_phys over the range is wrong");
    let s = Instant::now();
    let n = ours_unmap(&mut t, BASE, GIB);
    r.unmap_range = ns_since(s);
    assert!(n == GIB && t.tables_in_use() == 0, "ours: 1 GiB range unmap: {n} bytes, {} tables", t.tables_in_use());
    drop(t);

    // 262,144 single-page calls.
    let mut t = ours_new(pool, stage, 48);
    let s = Instant::now();
    let mut fails = 0u32;
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        fails += t.map(a, a + KIB4, KIB4, prot).is_err() as u32;
    }
    r.map_pages = ns_since(s);
    assert!(fails == 0 && t.tables_in_use() == 514, "ours: page maps: {fails} failed, {} tables", t.tables_in_use());
    assert_eq!(t.iova_to_phys(BASE + GIB - KIB4 + 5), Some(BASE + GIB + 5), "ours: last page");
    let s = Instant::now();
    let mut bytes = 0;
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        bytes += ours_unmap(&mut t, a, KIB4);
    }
    r.unmap_pages = ns_since(s);
    assert!(bytes == GIB && t.tables_in_use() == 0, "ours: page unmaps: {bytes} bytes, {} tables", t.tables_in_use());
    drop(t);

    // 2 MiB blocks: one call per 1 GiB region, PA 2 MiB but not 1 GiB aligned.
    let mut t = ours_new(pool, stage, 48);
    let s = Instant::now();
    let mut fails = 0u32;
    for k in 1..=MIB2_REGIONS {
        fails += t.map(k * GIB, k * GIB + MIB2, GIB, prot).is_err() as u32;
    }
    r.map_2m = ns_since(s) / MIB2_REGIONS as f64;
    let n = t.tables_in_use();
    assert!(fails == 0 && n == 1 + MIB2_REGIONS as usize, "ours: 2 MiB blocks: {fails} failed, {n} tables");
    assert_eq!(t.iova_to_phys(2 * GIB - 1), Some(2 * GIB + MIB2 - 1), "ours: 2 MiB block lookup");
    let s = Instant::now();
    let mut bytes = 0;
    for k in 1..=MIB2_REGIONS {
        bytes += ours_unmap(&mut t, k * GIB, GIB);
    }
    r.unmap_2m = ns_since(s) / MIB2_REGIONS as f64;
    let n = t.tables_in_use();
    assert!(bytes == GIB * MIB2_REGIONS && n == 0, "ours: 2 MiB blocks unmap: {bytes}, {n} tables");
    drop(t);

    // 1 GiB blocks: GIB_BLOCKS calls of one block each.
    let mut t = ours_new(pool, stage, 48);
    let s = Instant::now();
    let mut fails = 0u32;
    for k in 1..=GIB_BLOCKS {
        fails += t.map(k * GIB, k * GIB, GIB, prot).is_err() as u32;
    }
    r.map_1g = ns_since(s) / GIB_BLOCKS as f64;
    assert!(fails == 0 && t.tables_in_use() == 1, "ours: 1 GiB blocks: {fails} failed, {} tables", t.tables_in_use());
    let s = Instant::now();
    let mut bytes = 0;
    for k in 1..=GIB_BLOCKS {
        bytes += ours_unmap(&mut t, k * GIB, GIB);
    }
    r.unmap_1g = ns_since(s) / GIB_BLOCKS as f64;
    assert!(bytes == GIB * GIB_BLOCKS && t.tables_in_use() == 0, "ours: 1 GiB blocks unmap: {bytes}");
    r
}

/// The peer's translation of `va`, through `walk_range` over one page.
fn peer_lookup<R: TranslationRegime>(m: &Mapping<PeerMem, R>, va: usize) -> Option<usize> {
    let mut out = None;
    let page = va & !(PAGE_SIZE - 1);
    let _ = m.walk_range(
        &MemoryRegion::new(page, page + PAGE_SIZE),
        &mut |_mr: &MemoryRegion, d: &Descriptor<R::Attributes>, level: usize| {
            if d.is_valid() {
                let gran = PAGE_SIZE << ((3 - level) * 9);
                out = Some(d.output_address().0 | (va & (gran - 1)));
            }
            Ok(())
        },
    );
    out
}

fn peer_run<R: TranslationRegime>(new: &dyn Fn() -> Mapping<PeerMem, R>, flags: R::Attributes) -> Times {
    let mut r = Times::default();
    let none = Constraints::empty();
    let unmapped = R::Attributes::default();
    let region = |a: u64, size: u64| MemoryRegion::new(a as usize, (a + size) as usize);
    let tables = |m: &Mapping<PeerMem, R>| m.translation().live - 1;

    let mut m = new();
    let s = Instant::now();
    let ok = m.map_range(&region(BASE, GIB), PhysicalAddress((BASE + KIB4) as usize), flags, none);
    r.map_range = ns_since(s);
    assert!(ok.is_ok() && tables(&m) == 514, "peer: 1 GiB range map: {ok:?}, {} tables", tables(&m));
    let s = Instant::now();
    let mut sum = 0u64;
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        let pa = black_box(peer_lookup(&m, black_box(a as usize)));
        sum = sum.wrapping_add(pa.map_or(1 << 63, |pa| pa as u64 - a));
    }
    r.lookup = ns_since(s);
    assert_eq!(sum, PAGES * KIB4, "peer: lookups over the range are wrong");
    let s = Instant::now();
    let ok = m.map_range(&region(BASE, GIB), PhysicalAddress(0), unmapped, none);
    r.unmap_range = ns_since(s);
    // The peer frees the detached subtree but keeps the (now empty) level-1 table.
    assert!(ok.is_ok() && tables(&m) == 1, "peer: 1 GiB range unmap: {ok:?}, {} tables", tables(&m));
    drop(m);

    let mut m = new();
    let s = Instant::now();
    let mut fails = 0u32;
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        fails += m.map_range(&region(a, KIB4), PhysicalAddress((a + KIB4) as usize), flags, none).is_err() as u32;
    }
    r.map_pages = ns_since(s);
    assert!(fails == 0 && tables(&m) == 514, "peer: page maps: {fails} failed, {} tables", tables(&m));
    assert_eq!(peer_lookup(&m, (BASE + GIB - KIB4 + 5) as usize), Some((BASE + GIB + 5) as usize), "peer: last page");
    let s = Instant::now();
    let mut fails = 0u32;
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        fails += m.map_range(&region(a, KIB4), PhysicalAddress(0), unmapped, none).is_err() as u32;
    }
    m.compact_subtables();
    r.unmap_pages = ns_since(s);
    assert!(fails == 0 && tables(&m) == 0, "peer: page unmaps: {fails} failed, {} tables", tables(&m));
    assert_eq!(peer_lookup(&m, BASE as usize), None, "peer: unmapped page still translates");
    drop(m);

    let mut m = new();
    let s = Instant::now();
    let mut fails = 0u32;
    for k in 1..=MIB2_REGIONS {
        let pa = PhysicalAddress((k * GIB + MIB2) as usize);
        fails += m.map_range(&region(k * GIB, GIB), pa, flags, none).is_err() as u32;
    }
    r.map_2m = ns_since(s) / MIB2_REGIONS as f64;
    let n = tables(&m);
    assert!(fails == 0 && n == 1 + MIB2_REGIONS as usize, "peer: 2 MiB blocks: {fails} failed, {n} tables");
    assert_eq!(peer_lookup(&m, (2 * GIB - 1) as usize), Some((2 * GIB + MIB2 - 1) as usize), "peer: 2M");
    let s = Instant::now();
    let mut fails = 0u32;
    for k in 1..=MIB2_REGIONS {
        fails += m.map_range(&region(k * GIB, GIB), PhysicalAddress(0), unmapped, none).is_err() as u32;
    }
    r.unmap_2m = ns_since(s) / MIB2_REGIONS as f64;
    // The peer frees each detached subtree but keeps the (now empty) level-1 table.
    let n = tables(&m);
    assert!(fails == 0 && n == 1, "peer: 2 MiB blocks unmap: {fails} failed, {n} tables");
    drop(m);

    let mut m = new();
    let s = Instant::now();
    let mut fails = 0u32;
    for k in 1..=GIB_BLOCKS {
        fails += m.map_range(&region(k * GIB, GIB), PhysicalAddress((k * GIB) as usize), flags, none).is_err() as u32;
    }
    r.map_1g = ns_since(s) / GIB_BLOCKS as f64;
    assert!(fails == 0 && tables(&m) == 1, "peer: 1 GiB blocks: {fails} failed, {} tables", tables(&m));
    let s = Instant::now();
    let mut fails = 0u32;
    for k in 1..=GIB_BLOCKS {
        fails += m.map_range(&region(k * GIB, GIB), PhysicalAddress(0), unmapped, none).is_err() as u32;
    }
    r.unmap_1g = ns_since(s) / GIB_BLOCKS as f64;
    assert!(fails == 0, "peer: 1 GiB blocks unmap: {fails} failed");
    assert_eq!(peer_lookup(&m, GIB as usize), None, "peer: unmapped block still translates");
    r
}

fn peer_s1(pool: &'static Pool, root_level: usize) -> Mapping<PeerMem, El1And0> {
    Mapping::with_asid_and_va_range(PeerMem { pool, live: 0 }, 1, root_level, El1And0, VaRange::Lower)
}

fn peer_s2(pool: &'static Pool) -> Mapping<PeerMem, Stage2> {
    Mapping::new(PeerMem { pool, live: 0 }, 0, Stage2)
}

/// Leaf attributes equivalent to our `Prot::RW` (normal WB memory, inner shareable, AF, XN).
fn peer_s1_flags() -> El1Attributes {
    El1Attributes::VALID
        | El1Attributes::ATTRIBUTE_INDEX_1
        | El1Attributes::INNER_SHAREABLE
        | El1Attributes::ACCESSED
        | El1Attributes::NON_GLOBAL
        | El1Attributes::USER
        | El1Attributes::UXN
        | El1Attributes::PXN
}

fn peer_s2_flags() -> Stage2Attributes {
    Stage2Attributes::VALID
        | Stage2Attributes::MEMATTR_NORMAL_INNER_WB
        | Stage2Attributes::MEMATTR_NORMAL_OUTER_WB
        | Stage2Attributes::S2AP_ACCESS_RW
        | Stage2Attributes::SH_INNER
        | Stage2Attributes::ACCESS_FLAG
        | Stage2Attributes::XN
}

// ----------------------------------------------------------------------------- table memory

/// Non-root tables: (4 KiB pages, 2 MiB blocks, one 1 GiB block, after unmapping all) for ours.
fn ours_tables(pool: &'static Pool, ias: u8) -> [u64; 4] {
    let mut t = ours_new(pool, Stage::S1, ias);
    let mut out = [0; 4];
    for (i, pa) in [BASE + KIB4, BASE + MIB2, BASE].into_iter().enumerate() {
        t.map(BASE, pa, GIB, Prot::RW).expect("ours: map for table count");
        out[i] = t.tables_in_use() as u64;
        assert_eq!(ours_unmap(&mut t, BASE, GIB), GIB, "ours: unmap for table count");
    }
    out[3] = t.tables_in_use() as u64;
    out
}

fn peer_tables(pool: &'static Pool, root_level: usize) -> [u64; 4] {
    let mut m = peer_s1(pool, root_level);
    let region = MemoryRegion::new(BASE as usize, (BASE + GIB) as usize);
    let mut out = [0; 4];
    for (i, pa) in [BASE + KIB4, BASE + MIB2, BASE].into_iter().enumerate() {
        m.map_range(&region, PhysicalAddress(pa as usize), peer_s1_flags(), Constraints::empty())
            .expect("peer: map for table count");
        out[i] = m.translation().live as u64 - 1;
        m.map_range(&region, PhysicalAddress(0), El1Attributes::default(), Constraints::empty())
            .expect("peer: unmap for table count");
    }
    out[3] = m.translation().live as u64 - 1;
    out
}

/// Tables still allocated right after 262,144 single-page unmaps (before any compaction).
fn after_page_unmaps(pool: &'static Pool) -> (u64, u64) {
    let mut t = ours_new(pool, Stage::S1, 48);
    let mut m = peer_s1(pool, 0);
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        t.map(a, a, KIB4, Prot::RW).expect("ours: page map");
        m.map_range(
            &MemoryRegion::new(a as usize, (a + KIB4) as usize),
            PhysicalAddress(a as usize),
            peer_s1_flags(),
            Constraints::empty(),
        )
        .expect("peer: page map");
    }
    for a in (BASE..BASE + GIB).step_by(KIB4 as usize) {
        assert_eq!(ours_unmap(&mut t, a, KIB4), KIB4, "ours: page unmap");
        m.map_range(
            &MemoryRegion::new(a as usize, (a + KIB4) as usize),
            PhysicalAddress(0),
            El1Attributes::default(),
            Constraints::empty(),
        )
        .expect("peer: page unmap");
    }
    (t.tables_in_use() as u64, m.translation().live as u64 - 1)
}

// ----------------------------------------------------------------------------------- report

struct Row {
    metric: String,
    ours: f64,
    peer: f64,
    unit: &'static str,
    /// Target for ours/peer, if the issue sets one.
    target: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.ours, self.peer) {
            (0.0, 0.0) => Some(1.0),
            (_, 0.0) => None,
            (o, p) => Some(o / p),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "ns" if v < 100.0 => format!("{v:.1} ns"),
        "ns" if v < 10_000.0 => format!("{v:.0} ns"),
        "ns" => format!("{:.1} us", v / 1000.0),
        _ => format!("{v:.0}"),
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).filter(|&n| n > 0).unwrap_or(7);
    let pool = Pool::new(POOL_PAGES);
    let started = Instant::now();
    let mut rows = Vec::new();

    for (sname, stage) in [("s1", Stage::S1), ("s2", Stage::S2)] {
        let (mut ours, mut peer) = (Vec::new(), Vec::new());
        let peer_once = || match stage {
            Stage::S1 => peer_run(&|| peer_s1(pool, 0), peer_s1_flags()),
            Stage::S2 => peer_run(&|| peer_s2(pool), peer_s2_flags()),
        };
        for run in 0..=runs {
            // Alternate who goes first; run 0 warms up and is not recorded.
            let (o, p) = if run % 2 == 0 {
                let o = ours_run(pool, stage);
                (o, peer_once())
            } else {
                let p = peer_once();
                (ours_run(pool, stage), p)
            };
            if run > 0 {
                ours.push(o);
                peer.push(p);
            }
        }
        let fields: [(&str, Field, Option<f64>); 9] = [
            ("map_1g_4k_one_call", |t| t.map_range, Some(0.5)),
            ("unmap_1g_4k_one_call", |t| t.unmap_range, Some(0.5)),
            ("map_1g_4k_262144_calls", |t| t.map_pages, Some(0.5)),
            ("unmap_1g_4k_262144_calls", |t| t.unmap_pages, Some(0.5)),
            ("map_1g_2m_blocks_per_call", |t| t.map_2m, Some(0.5)),
            ("unmap_1g_2m_blocks_per_call", |t| t.unmap_2m, Some(0.5)),
            ("map_1g_block_per_call", |t| t.map_1g, Some(0.5)),
            ("unmap_1g_block_per_call", |t| t.unmap_1g, Some(0.5)),
            ("iova_to_phys_262144_pages", |t| t.lookup, None),
        ];
        for (name, get, target) in fields {
            rows.push(Row {
                metric: format!("pgtable.{sname}.{name}"),
                ours: median(ours.iter().map(get).collect()),
                peer: median(peer.iter().map(get).collect()),
                unit: "ns",
                target,
            });
        }
    }

    let names = ["4k_pages", "2m_blocks", "1g_block", "after_unmap"];
    for (bits, root_level) in [(48u8, 0usize), (39, 1)] {
        let (o, p) = (ours_tables(pool, bits), peer_tables(pool, root_level));
        for i in 0..4 {
            let metric = format!("pgtable.tables_1g_{}_{bits}bit", names[i]);
            rows.push(Row { metric, ours: o[i] as f64, peer: p[i] as f64, unit: "pages", target: None });
        }
    }
    let (o, p) = after_page_unmaps(pool);
    rows.push(Row {
        metric: "pgtable.tables_after_262144_page_unmaps_48bit".into(),
        ours: o as f64,
        peer: p as f64,
        unit: "pages",
        target: None,
    });

    println!("Page tables on the host: ours (src/iommu/io_pgtable) vs aarch64-paging 0.12, median of {runs} runs");
    println!("{:<52} {:>14} {:>14} {:>9}  target", "metric", "ours", "peer", "ours/peer");
    for r in &rows {
        let ratio = r.ratio().map_or("-".into(), |x| format!("{x:.3}"));
        let target = match (r.target, r.ratio()) {
            (Some(t), Some(x)) => format!("<= {t:.2} {}", if x <= t { "met" } else { "MISSED" }),
            _ => String::new(),
        };
        println!(
            "{:<52} {:>14} {:>14} {:>9}  {target}",
            r.metric,
            fmt_value(r.ours, r.unit),
            fmt_value(r.peer, r.unit),
            ratio
        );
    }
    println!(
        "Tables are non-root 4 KiB tables allocated (ours: tables_in_use(); peer: live allocations \
         minus its root). 48-bit space (root L0): 1 GiB of pages = L1 + L2 + 512 L3 = 514, 2 MiB \
         blocks = L1 + L2 = 2, a 1 GiB block = L1 = 1. 39-bit space (root L1, our stage-1 DMA \
         domains): 513, 1, 0. The issue's ideal (514, 1, 0) mixes the two; both libraries reach \
         the architectural minimum in each. After unmapping, ours holds 0; the peer keeps its \
         emptied L1 table after a one-call unmap (48-bit: 1) and all 514 after page-by-page \
         unmaps until compact_subtables()."
    );
    for r in &rows {
        let ratio = r.ratio().map_or("null".into(), |x| format!("{x:.4}"));
        println!(
            "BENCH {{\"metric\": \"{}\", \"ours\": {:.1}, \"peer\": {:.1}, \"unit\": \"{}\", \"ratio\": {ratio}}}",
            r.metric, r.ours, r.peer, r.unit
        );
    }
    println!("bench_pgtable: {:.1} s", started.elapsed().as_secs_f64());
}
