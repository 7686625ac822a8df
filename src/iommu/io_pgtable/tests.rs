//! Host tests: descriptor encodings, geometry, block selection, splitting, gathers, exact
//! table counts, errors, cache maintenance, and a randomized model check.

extern crate std;

use super::desc::*;
use super::*;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::vec::Vec;

// ------------------------------------------------------------------ test memory

const ARENA_PA: u64 = 0x4000_0000;
const ARENA_SIZE: usize = 128 << 20;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const K4: u64 = 4096;

/// Table memory from one zeroed arena with fake PAs (`ARENA_PA + offset`, below 4 GiB so
/// 32-bit output sizes work). Checks double frees and `phys_to_virt` of dead tables, counts
/// syncs, and optionally models a non-coherent walker's view (only synced words are seen).
struct Arena {
    base: *mut u8,
    next: usize,
    free: BTreeMap<usize, Vec<usize>>,
    live: BTreeMap<usize, usize>,
    limit: Option<usize>,
    syncs: Cell<usize>,
    dev: Option<RefCell<HashMap<u64, u64>>>,
    total_allocs: usize,
}

impl Arena {
    fn new() -> Self {
        let layout = Layout::from_size_align(ARENA_SIZE, 1 << 20).unwrap();
        // SAFETY: non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        Arena {
            base,
            next: 0,
            free: BTreeMap::new(),
            live: BTreeMap::new(),
            limit: None,
            syncs: Cell::new(0),
            dev: None,
            total_allocs: 0,
        }
    }
    fn tracking() -> Self {
        let mut a = Self::new();
        a.dev = Some(RefCell::new(HashMap::new()));
        a
    }
    fn live_tables(&self) -> usize {
        self.live.len()
    }
    fn off(&self, pa: u64) -> usize {
        assert!(pa >= ARENA_PA && pa < ARENA_PA + ARENA_SIZE as u64, "pa {pa:#x} outside arena");
        (pa - ARENA_PA) as usize
    }
    fn table_of(&self, off: usize) -> Option<(usize, usize)> {
        self.live.range(..=off).next_back().map(|(&o, &b)| (o, b)).filter(|&(o, b)| off < o + b)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base, Layout::from_size_align(ARENA_SIZE, 1 << 20).unwrap()) }
    }
}

// SAFETY: tables are disjoint, zeroed, size-aligned pieces of the arena; phys_to_virt is
// the inverse of the fake PA assignment.
unsafe impl TableMemory for Arena {
    fn alloc_table(&mut self, bytes: usize) -> Option<(u64, *mut u64)> {
        assert!(bytes.is_power_of_two() && (4096..=16 * 65536).contains(&bytes));
        if self.limit.is_some_and(|l| self.live.len() >= l) {
            return None;
        }
        let off = match self.free.get_mut(&bytes).and_then(|v| v.pop()) {
            Some(off) => {
                // SAFETY: inside the arena, not live.
                unsafe { self.base.add(off).write_bytes(0, bytes) };
                off
            }
            None => {
                let off = self.next.next_multiple_of(bytes);
                if off + bytes > ARENA_SIZE {
                    return None;
                }
                self.next = off + bytes;
                off
            }
        };
        self.live.insert(off, bytes);
        self.total_allocs += 1;
        let pa = ARENA_PA + off as u64;
        if let Some(dev) = &self.dev {
            let mut dev = dev.borrow_mut();
            for w in 0..bytes / 8 {
                dev.remove(&(pa + 8 * w as u64));
            }
        }
        // SAFETY: inside the arena.
        Some((pa, unsafe { self.base.add(off) } as *mut u64))
    }

    fn free_table(&mut self, pa: u64, va: *mut u64, bytes: usize) {
        let off = self.off(pa);
        assert_eq!(self.live.remove(&off), Some(bytes), "bad or double free of {pa:#x}");
        assert_eq!(va as usize, self.base as usize + off);
        self.free.entry(bytes).or_default().push(off);
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        let off = self.off(pa);
        assert!(self.live.contains_key(&off), "phys_to_virt of a dead table {pa:#x}");
        self.base.wrapping_add(off) as *mut u64
    }

    fn sync_for_device(&self, va: *const u64, len: usize) {
        self.syncs.set(self.syncs.get() + 1);
        let off = va as usize - self.base as usize;
        let (t, b) = self.table_of(off).expect("sync outside a live table");
        assert!(off + len <= t + b, "sync crosses a table end");
        if let Some(dev) = &self.dev {
            let mut dev = dev.borrow_mut();
            for w in 0..len / 8 {
                // SAFETY: inside a live table.
                let v = unsafe { va.add(w).read() };
                dev.insert(ARENA_PA + (off + 8 * w) as u64, v);
            }
        }
    }
}

type Pgt = IoPageTable<Arena>;

fn cfg(stage: Stage, granule: Granule, ias: u8, oas: u8) -> Config {
    Config { stage, granule, ias, oas, coherent_walk: true }
}

fn pgt(c: Config) -> Pgt {
    IoPageTable::new(c, Arena::new()).unwrap()
}

fn s1_4k48() -> Pgt {
    pgt(cfg(Stage::S1, Granule::K4, 48, 48))
}

/// (level, descriptor) of the leaf translating `iova`, by walking raw memory.
fn leaf(p: &Pgt, iova: u64) -> Option<(u32, u64)> {
    let g = p.geo;
    let mut t = p.root();
    let mut level = g.start;
    loop {
        let d = t.get(g.index(level, iova));
        match d & 3 {
            3 if level < 3 => {
                t = p.table(d & ADDR_MASK);
                level += 1;
            }
            0 | 2 => return None,
            _ => return Some((level, d)),
        }
    }
}

/// The descriptor at `level` on the walk to `iova`.
fn desc_at(p: &Pgt, iova: u64, at: u32) -> u64 {
    let g = p.geo;
    let mut t = p.root();
    let mut level = g.start;
    loop {
        let d = t.get(g.index(level, iova));
        if level == at {
            return d;
        }
        assert_eq!(d & 3, 3, "no table on the way");
        t = p.table(d & ADDR_MASK);
        level += 1;
    }
}

/// Check the software invariants of the whole tree; returns the number of reachable non-root
/// tables. Every non-root table is non-empty (unless the table retains empty tables) and its
/// count matches its live entries.
fn check_tree(p: &Pgt) -> usize {
    fn rec(p: &Pgt, level: u32, t: TablePtr) -> (u32, usize) {
        let mut live = 0;
        let mut tables = 0;
        for i in 0..t.entries() {
            let d = t.get(i);
            match d & 3 {
                0 => assert_eq!(d, 0, "junk invalid descriptor"),
                1 => {
                    assert!(level < 3 && p.geo.leaf_ok(level), "block at level {level}");
                    live += 1;
                }
                3 if level == 3 => live += 1,
                _ => {
                    assert!(level < 3);
                    let (n, sub) = rec(p, level + 1, p.table(d & ADDR_MASK));
                    assert!(n > 0 || p.retains_empty_tables(), "empty non-root table left in the tree");
                    assert_eq!(table_count(d), n, "stale live count");
                    live += 1;
                    tables += 1 + sub;
                }
            }
        }
        (live, tables)
    }
    rec(p, p.geo.start, p.root()).1
}

/// Non-coherent walker model: every reachable table word must have been synced with its
/// current value (the software count bits of table descriptors are IGNORED by the walker, so
/// count-only updates need no sync).
fn check_device_view(p: &Pgt) {
    fn rec(p: &Pgt, dev: &HashMap<u64, u64>, level: u32, t: TablePtr, pa: u64) {
        let hw = |d: u64| if level < 3 && d & 3 == 3 { with_count(d, 0) } else { d };
        for i in 0..t.entries() {
            let d = t.get(i);
            let seen = dev.get(&(pa + 8 * i as u64)).copied();
            assert_eq!(seen.map(hw), Some(hw(d)), "unsynced descriptor at {:#x}", pa + 8 * i as u64);
            if level < 3 && d & 3 == 3 {
                rec(p, dev, level + 1, p.table(d & ADDR_MASK), d & ADDR_MASK);
            }
        }
    }
    let dev = p.memory().dev.as_ref().expect("tracking arena").borrow();
    rec(p, &dev, p.geo.start, p.root(), p.root_pa());
}

fn unmap_all(p: &mut Pgt, iova: u64, size: u64) -> (u64, Gather) {
    let mut g = Gather::new();
    let n = p.unmap(iova, size, &mut g).unwrap();
    let snapshot = Gather { start: g.start, end: g.end, leaf_only: g.leaf_only, pgsize: g.pgsize, ..Gather::new() };
    p.complete(&mut g).unwrap();
    (n, snapshot)
}

// ------------------------------------------------------------------ encodings

#[test]
fn s1_page_descriptor_bits() {
    let mut p = s1_4k48();
    p.map(0x1000, 0x8765_4000, K4, Prot::RW).unwrap();
    let (level, d) = leaf(&p, 0x1000).unwrap();
    assert_eq!(level, 3);
    // page 0b11 | AttrIndx 0 | AP[1]=1 (EL0) 0x40 | SH inner 0x300 | AF 0x400 | nG 0x800
    // | PXN (53) | UXN (54)
    assert_eq!(d, 0x0060_0000_0000_0f43 | 0x8765_4000);
    assert_eq!(p.iova_to_phys(0x1abc), Some(0x8765_4abc));
}

#[test]
fn s1_block_descriptor_bits() {
    let mut p = s1_4k48();
    let prot = Prot {
        read: true,
        write: false,
        exec: true,
        privileged: true,
        mem: MemType::Device,
        shareable: Shareability::Outer,
    };
    p.map(2 * MIB, 0x4020_0000, 2 * MIB, prot).unwrap();
    let (level, d) = leaf(&p, 2 * MIB).unwrap();
    assert_eq!(level, 2);
    // block 0b01 | AttrIndx 2 (0x8) | AP[2] RO 0x80 | AP[1]=0 | SH outer 0x200 | AF | nG
    assert_eq!(d, 0xe89 | 0x4020_0000);
    let nc = Prot { mem: MemType::NormalNonCacheable, shareable: Shareability::Non, ..Prot::RW };
    p.map(GIB, 0x8000_0000, GIB, nc).unwrap();
    let (level, d) = leaf(&p, GIB + 5).unwrap();
    assert_eq!(level, 1);
    // block | AttrIndx 1 (0x4) | EL0 0x40 | SH non | AF | nG | PXN | UXN
    assert_eq!(d, 0x0060_0000_0000_0c45 | 0x8000_0000);
    assert_eq!(p.mair(), 0x0004_44ff);
}

#[test]
fn s1_write_only_is_read_write() {
    let mut p = s1_4k48();
    p.map(0, 0x10_0000, K4, Prot { read: false, ..Prot::RW }).unwrap();
    let (_, d) = leaf(&p, 0).unwrap();
    assert_eq!(d & (S1_AP_RDONLY | S1_AP_UNPRIV), S1_AP_UNPRIV);
}

#[test]
fn table_descriptor_bits() {
    let mut p = s1_4k48();
    p.map(0, 0x10_0000, 3 * K4, Prot::RW).unwrap();
    // root (L0) -> L1 -> L2 -> L3
    let d0 = desc_at(&p, 0, 0);
    let d1 = desc_at(&p, 0, 1);
    let d2 = desc_at(&p, 0, 2);
    for (d, count) in [(d0, 1), (d1, 1), (d2, 3)] {
        assert_eq!(d & 3, 0b11);
        assert_eq!(d >> 59, 0, "no NSTable/APTable/XNTable");
        assert_eq!(table_count(d), count);
        assert_eq!(d & !(0x3f << 2) & !(0xff << 51), (d & ADDR_MASK) | 3);
    }
    assert_eq!(table_desc(0x1234_5000, 0), 0x1234_5003);
    assert_eq!(table_desc(0x1234_5000, 5), 0x1234_5003 | (5 << 2));
    assert_eq!(table_desc(0x1234_5000, 64), 0x1234_5003 | (1 << 51));
    for c in 0..=16383u32 {
        let d = table_desc(0xffff_ffff_f000, c);
        assert_eq!(table_count(d), c);
        assert_eq!(d & ADDR_MASK, 0xffff_ffff_f000);
        assert_eq!(d & 3, 3);
        assert_eq!(d & (0x7 << 8 | 1 << 11 | 0x1f << 59), 0, "count leaked into other bits");
        // The one-step updates agree with the general ones, carries and borrows included.
        if c < 16383 {
            assert_eq!(count_up(d), table_desc(0xffff_ffff_f000, c + 1), "up from {c}");
        }
        assert_eq!(count_down(d), table_desc(0xffff_ffff_f000, c.saturating_sub(1)), "down from {c}");
    }
}

#[test]
fn s2_page_and_block_descriptor_bits() {
    let mut p = pgt(cfg(Stage::S2, Granule::K4, 40, 40));
    p.map(0x3000, 0x7000_3000, K4, Prot::RW).unwrap();
    let (level, d) = leaf(&p, 0x3000).unwrap();
    assert_eq!(level, 3);
    // page | MemAttr 0b1111 (0x3c) | S2AP RW (0xc0) | SH inner | AF | XN (54)
    assert_eq!(d, 0x0040_0000_0000_07ff | 0x7000_3000);
    let wo = Prot {
        read: false,
        write: true,
        exec: true,
        mem: MemType::NormalNonCacheable,
        shareable: Shareability::Non,
        privileged: false,
    };
    p.map(4 * MIB, 0x7040_0000, 2 * MIB, wo).unwrap();
    let (level, d) = leaf(&p, 4 * MIB).unwrap();
    assert_eq!(level, 2);
    // block | MemAttr 0b0101 (0x14) | S2AP write-only (0x80) | SH non | AF
    assert_eq!(d, 0x495 | 0x7040_0000);
    p.map(GIB, 0x4000_0000, GIB, Prot { read: true, write: false, ..Prot::DEVICE_RW }).unwrap();
    let (level, d) = leaf(&p, GIB).unwrap();
    assert_eq!(level, 1);
    // block | MemAttr 0b0001 (0x4) | S2AP RO (0x40) | SH outer (0x200) | AF | XN
    assert_eq!(d, 0x0040_0000_0000_0645 | 0x4000_0000);
}

#[test]
fn no_access_is_refused() {
    let mut p = s1_4k48();
    let none = Prot { read: false, write: false, ..Prot::RW };
    assert!(matches!(p.map(0, 0, K4, none), Err(PgtError::BadProt(_))));
    let mut p = pgt(cfg(Stage::S2, Granule::K4, 40, 40));
    assert!(matches!(p.map(0, 0, K4, none), Err(PgtError::BadProt(_))));
}

// ------------------------------------------------------------------ geometry

#[test]
fn s1_geometry_and_tcr() {
    // (granule, ias, start level, tg0)
    for (gr, ias, start, tg0) in [
        (Granule::K4, 48, 0, 0),
        (Granule::K4, 40, 0, 0),
        (Granule::K4, 39, 1, 0),
        (Granule::K4, 32, 1, 0),
        (Granule::K16, 48, 0, 2),
        (Granule::K16, 47, 1, 2),
        (Granule::K16, 36, 2, 2),
        (Granule::K64, 48, 1, 1),
        (Granule::K64, 42, 2, 1),
        (Granule::K64, 32, 2, 1),
    ] {
        let p = pgt(cfg(Stage::S1, gr, ias, 44));
        assert_eq!(p.start_level(), start, "{gr:?} ias {ias}");
        assert_eq!(p.root_tables(), 1);
        let tcr = p.s1_tcr().unwrap();
        assert_eq!(tcr, S1Tcr { t0sz: 64 - ias, tg0, irgn0: 1, orgn0: 1, sh0: 3, ips: 4, epd0: false, epd1: true });
        assert!(p.s2_vtcr().is_none());
    }
    let p =
        IoPageTable::new(Config { coherent_walk: false, ..cfg(Stage::S1, Granule::K4, 48, 48) }, Arena::new()).unwrap();
    let tcr = p.s1_tcr().unwrap();
    assert_eq!((tcr.irgn0, tcr.orgn0, tcr.sh0, tcr.ips), (0, 0, 2, 5));
    for (oas, ips) in [(32, 0), (34, 1), (36, 1), (40, 2), (42, 3), (44, 4), (48, 5)] {
        assert_eq!(pgt(cfg(Stage::S1, Granule::K4, 48, oas)).s1_tcr().unwrap().ips, ips);
    }
}

#[test]
fn s2_geometry_concatenation_and_vtcr() {
    // (granule, ias, start level, concatenated root tables, SL0, tg)
    for (gr, ias, start, concat, sl0, tg) in [
        (Granule::K4, 48, 0, 1, 2, 0),  // L0 with 512 entries
        (Granule::K4, 44, 0, 1, 2, 0),  // L0 with 32 entries: too many to concatenate
        (Granule::K4, 43, 1, 16, 1, 0), // 16 x L1
        (Granule::K4, 42, 1, 8, 1, 0),  // 8 x L1
        (Granule::K4, 40, 1, 2, 1, 0),  // 2 x L1
        (Granule::K4, 39, 1, 1, 1, 0),  // one full L1
        (Granule::K4, 36, 1, 1, 1, 0),  // L1 with 64 entries
        (Granule::K4, 34, 2, 16, 0, 0), // 16 x L2
        (Granule::K4, 32, 2, 4, 0, 0),  // 4 x L2
        (Granule::K16, 48, 1, 2, 2, 2), // L0 start needs LPA2: 2 x L1
        (Granule::K16, 47, 1, 1, 2, 2),
        (Granule::K16, 40, 2, 16, 1, 2), // 16 x L2
        (Granule::K16, 37, 2, 2, 1, 2),
        (Granule::K16, 36, 2, 1, 1, 2),
        (Granule::K64, 48, 1, 1, 2, 1), // L1 with 64 entries
        (Granule::K64, 46, 2, 16, 1, 1),
        (Granule::K64, 44, 2, 4, 1, 1),
        (Granule::K64, 42, 2, 1, 1, 1),
        (Granule::K64, 32, 2, 1, 1, 1), // 2 levels already: L2 with 8 entries
    ] {
        let p = pgt(cfg(Stage::S2, gr, ias, 48));
        let what = std::format!("{gr:?} ias {ias}");
        assert_eq!(p.start_level(), start, "{what}");
        assert_eq!(p.root_tables(), concat, "{what}");
        assert_eq!(p.tables_in_use(), 0);
        assert_eq!(p.tables_in_use_with_root(), concat);
        // The root allocation really is `concat` granules, aligned to its size.
        let (&off, &bytes) = p.memory().live.iter().next().unwrap();
        assert_eq!(bytes as u64, concat as u64 * gr.size(), "{what}");
        assert_eq!(off % bytes, 0);
        let v = p.s2_vtcr().unwrap();
        assert_eq!(v, S2Vtcr { t0sz: 64 - ias, sl0, tg, irgn: 1, orgn: 1, sh: 3, ps: 5 }, "{what}");
        assert!(p.s1_tcr().is_none());
        // The top and bottom of the input range translate through the concatenated root.
        let mut p = p;
        let top = (1u64 << ias) - gr.size();
        p.map(top, 0x1234 * gr.size(), gr.size(), Prot::RW).unwrap();
        p.map(0, 0x99 * gr.size(), gr.size(), Prot::RW).unwrap();
        assert_eq!(p.iova_to_phys(top + 8), Some(0x1234 * gr.size() + 8));
        assert_eq!(p.iova_to_phys(0), Some(0x99 * gr.size()));
        assert_eq!(p.iova_to_phys(gr.size()), None);
        assert_eq!(p.iova_to_phys(1 << ias), None);
        check_tree(&p);
    }
}

/// The single-entry fast paths of `map` and `unmap` start from `Geometry::single_leaf`:
/// exactly one page or one block, aligned, inside the input range; nothing else.
#[test]
fn single_leaf_entries() {
    // (stage, granule, ias, [(size, level)]); sizes not listed are not single leaves.
    type Case = (Stage, Granule, u8, &'static [(u64, u32)]);
    let cases: [Case; 6] = [
        (Stage::S1, Granule::K4, 48, &[(K4, 3), (2 * MIB, 2), (GIB, 1)]),
        // Root at level 1: a 1 GiB block is a root entry.
        (Stage::S1, Granule::K4, 39, &[(K4, 3), (2 * MIB, 2), (GIB, 1)]),
        // Root at level 2 (4 concatenated tables): no 1 GiB entries at all.
        (Stage::S2, Granule::K4, 32, &[(K4, 3), (2 * MIB, 2)]),
        (Stage::S1, Granule::K16, 48, &[(16 << 10, 3), (32 * MIB, 2)]),
        (Stage::S1, Granule::K64, 48, &[(64 << 10, 3), (512 * MIB, 2)]),
        (Stage::S2, Granule::K64, 42, &[(64 << 10, 3), (512 * MIB, 2)]),
    ];
    for (stage, gr, ias, leaves) in cases {
        let g = pgt(cfg(stage, gr, ias, 48)).geo;
        for shift in 0..64 {
            let size = 1u64 << shift;
            let want = leaves.iter().find(|&&(s, _)| s == size).map(|&(_, l)| l);
            assert_eq!(g.single_leaf(0, size), want, "{stage:?} {gr:?} ias {ias}: size {size:#x}");
            if let Some(l) = want {
                let top = (1u64 << ias) - size;
                assert_eq!(g.single_leaf(top, size), Some(l), "last entry of the input range");
                assert_eq!(g.single_leaf(top + size, size), None, "beyond the input range");
                assert_eq!(g.single_leaf(size / 2, size), None, "misaligned");
                assert_eq!(g.single_leaf(u64::MAX - size + 1, size), None, "wraps");
            }
        }
        for size in [0, 3 * K4, 2 * MIB + K4, u64::MAX] {
            assert_eq!(g.single_leaf(0, size), None, "size {size:#x}");
        }
    }
}

#[test]
fn bad_configs() {
    for (ias, oas) in [(31, 48), (49, 48), (48, 31), (48, 52), (0, 0)] {
        let r = IoPageTable::new(cfg(Stage::S1, Granule::K4, ias, oas), Arena::new());
        assert!(matches!(r, Err(PgtError::BadConfig(_))), "ias {ias} oas {oas}");
    }
    let mut a = Arena::new();
    a.limit = Some(0);
    assert!(matches!(IoPageTable::new(cfg(Stage::S1, Granule::K4, 48, 48), a), Err(PgtError::NoMemory)));
    // The arena sits at 1 GiB + : out of range for... nothing below 32 bits, so fake it.
    struct High(Arena);
    // SAFETY: delegates to Arena but reports PAs above 2^40 for the oas check.
    unsafe impl TableMemory for High {
        fn alloc_table(&mut self, bytes: usize) -> Option<(u64, *mut u64)> {
            self.0.alloc_table(bytes).map(|(pa, va)| (pa | 1 << 40, va))
        }
        fn free_table(&mut self, pa: u64, va: *mut u64, bytes: usize) {
            self.0.free_table(pa & !(1 << 40), va, bytes)
        }
        fn phys_to_virt(&self, pa: u64) -> *mut u64 {
            self.0.phys_to_virt(pa & !(1 << 40))
        }
        fn sync_for_device(&self, va: *const u64, len: usize) {
            self.0.sync_for_device(va, len)
        }
    }
    assert!(matches!(
        IoPageTable::new(cfg(Stage::S1, Granule::K4, 48, 40), High(Arena::new())),
        Err(PgtError::BadTableMemory { .. })
    ));
    let p = IoPageTable::new(cfg(Stage::S1, Granule::K4, 48, 44), High(Arena::new())).unwrap();
    drop(p);
}

// ------------------------------------------------------------------ block selection

#[test]
fn block_selection_4k() {
    let mut p = s1_4k48();
    // iova and pa 1 GiB aligned: a single level-1 block.
    p.map(GIB, 2 * GIB, GIB, Prot::RW).unwrap();
    assert_eq!(leaf(&p, GIB).unwrap().0, 1);
    assert_eq!(p.tables_in_use(), 1); // the L1 table
    // pa only 2 MiB aligned: 512 level-2 blocks.
    p.map(2 * GIB, 4 * GIB + 2 * MIB, GIB, Prot::RW).unwrap();
    assert_eq!(leaf(&p, 2 * GIB).unwrap().0, 2);
    assert_eq!(leaf(&p, 3 * GIB - K4).unwrap().0, 2);
    assert_eq!(p.tables_in_use(), 2);
    // pa only 4K aligned: pages, although iova is 1 GiB aligned.
    p.map(3 * GIB, 8 * GIB + K4, 4 * MIB, Prot::RW).unwrap();
    assert_eq!(leaf(&p, 3 * GIB).unwrap().0, 3);
    assert_eq!(p.tables_in_use(), 2 + 1 + 2);
    // Unaligned start and end around blocks: pages, 2 blocks, pages.
    let iova = 16 * GIB + 2 * MIB - 3 * K4;
    let size = 3 * K4 + 4 * MIB + 5 * K4;
    p.map(iova, iova + 64 * GIB, size, Prot::RW).unwrap();
    assert_eq!(leaf(&p, iova).unwrap().0, 3);
    assert_eq!(leaf(&p, 16 * GIB + 2 * MIB).unwrap().0, 2);
    assert_eq!(leaf(&p, 16 * GIB + 4 * MIB).unwrap().0, 2);
    assert_eq!(leaf(&p, 16 * GIB + 6 * MIB).unwrap().0, 3);
    for a in (iova..iova + size).step_by(K4 as usize) {
        assert_eq!(p.iova_to_phys(a + 17), Some(a + 64 * GIB + 17));
    }
    assert_eq!(p.iova_to_phys(iova - K4), None);
    assert_eq!(p.iova_to_phys(iova + size), None);
    assert_eq!(check_tree(&p), p.tables_in_use());
}

#[test]
fn block_selection_16k_and_64k() {
    let mut p = pgt(cfg(Stage::S1, Granule::K16, 48, 48));
    p.map(32 * MIB, 64 * MIB, 64 * MIB, Prot::RW).unwrap();
    assert_eq!(leaf(&p, 32 * MIB).unwrap().0, 2);
    assert_eq!(leaf(&p, 95 * MIB).unwrap().0, 2);
    p.map(256 * MIB, 64 * MIB + 16 * 1024, 32 * MIB, Prot::RW).unwrap();
    assert_eq!(leaf(&p, 256 * MIB).unwrap().0, 3);
    assert_eq!(p.iova_to_phys(256 * MIB + 20000), Some(64 * MIB + 16 * 1024 + 20000));
    check_tree(&p);

    let mut p = pgt(cfg(Stage::S2, Granule::K64, 48, 48));
    p.map(512 * MIB, GIB, GIB, Prot::RW).unwrap();
    assert_eq!(leaf(&p, 512 * MIB).unwrap().0, 2);
    assert_eq!(leaf(&p, GIB + 511 * MIB).unwrap().0, 2);
    assert_eq!(p.tables_in_use(), 1);
    p.map(4 * GIB, GIB + 64 * 1024, 128 * 1024, Prot::RW).unwrap();
    assert_eq!(leaf(&p, 4 * GIB).unwrap().0, 3);
    assert_eq!(p.iova_to_phys(4 * GIB + 70000), Some(GIB + 64 * 1024 + 70000));
    check_tree(&p);
}

// ------------------------------------------------------------------ exact table counts

#[test]
fn table_counts_1gib() {
    // 48-bit S1, 4K: root L0 -> L1 -> L2 -> L3. 1 GiB of 4K pages at a 1 GiB aligned IOVA
    // needs 1 L1 + 1 L2 + 512 L3 (512 pages each) = 514 tables besides the root.
    let mut p = s1_4k48();
    p.map(GIB, 0x1000 + 0x1_0000_0000, GIB, Prot::RW).unwrap(); // pa not 2M aligned: pages
    assert_eq!(p.tables_in_use(), 514);
    assert_eq!(p.tables_in_use_with_root(), 515);
    assert_eq!(p.memory().live_tables(), 515);
    assert_eq!(check_tree(&p), 514);
    let (n, g) = unmap_all(&mut p, GIB, GIB);
    assert_eq!(n, GIB);
    assert!(!g.leaf_only);
    assert_eq!((g.start, g.end, g.pgsize), (GIB, 2 * GIB, K4));
    assert_eq!(p.tables_in_use(), 0);
    assert_eq!(p.memory().live_tables(), 1);

    // 2 MiB blocks (pa 2M but not 1G aligned): L1 + L2 = 2.
    p.map(GIB, 0x1_0020_0000, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 2);
    let (_, g) = unmap_all(&mut p, GIB, GIB);
    assert_eq!(g.pgsize, 2 * MIB);
    assert_eq!(p.tables_in_use(), 0);

    // 1 GiB block: only the L1 table.
    p.map(GIB, 0x1_0000_0000, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 1);
    let (_, g) = unmap_all(&mut p, GIB, GIB);
    // The L1 table became empty and was freed: not leaf-only.
    assert!(!g.leaf_only);
    assert_eq!(g.pgsize, GIB);
    assert_eq!(p.tables_in_use(), 0);

    // 39-bit S1 (root = L1): 1 L2 + 512 L3 = 513.
    let mut p = pgt(cfg(Stage::S1, Granule::K4, 39, 48));
    p.map(GIB, 0x1000, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 513);
    unmap_all(&mut p, GIB, GIB);
    assert_eq!(p.tables_in_use(), 0);

    // 16K, 48-bit: root L0 (2 entries) -> L1 -> L2 (32M entries) -> 32 L3 = 34.
    let mut p = pgt(cfg(Stage::S1, Granule::K16, 48, 48));
    p.map(GIB, 0x4000, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 34);
    unmap_all(&mut p, GIB, GIB);
    assert_eq!(p.tables_in_use(), 0);

    // 64K, 48-bit: root L1 (64 entries) -> L2 (512M entries) -> 2 L3 = 3.
    let mut p = pgt(cfg(Stage::S1, Granule::K64, 48, 48));
    p.map(GIB, 0x1_0000, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 3);
    unmap_all(&mut p, GIB, GIB);
    assert_eq!(p.tables_in_use(), 0);

    // S2 4K 40-bit (2 concatenated L1 roots): L2 + 512 L3 = 513.
    let mut p = pgt(cfg(Stage::S2, Granule::K4, 40, 40));
    p.map(GIB, 0x1000, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 513);
    assert_eq!(p.tables_in_use_with_root(), 515);
    unmap_all(&mut p, GIB, GIB);
    assert_eq!(p.tables_in_use(), 0);
    assert_eq!(p.memory().live_tables(), 1);
}

#[test]
fn page_by_page_unmap_frees_tables() {
    let mut p = s1_4k48();
    p.map(0, 0x1000, 4 * MIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 1 + 1 + 2);
    let mut g = Gather::new();
    for a in (0..4 * MIB).step_by(K4 as usize) {
        assert_eq!(p.unmap(a, K4, &mut g).unwrap(), K4);
    }
    assert!(!g.leaf_only);
    assert_eq!((g.start, g.end, g.pgsize), (0, 4 * MIB, K4));
    assert_eq!(g.deferred_tables(), 4);
    assert_eq!(p.tables_in_use(), 4); // still allocated until complete
    p.complete(&mut g).unwrap();
    assert_eq!(p.tables_in_use(), 0);
    assert!(g.is_empty() && !g.needs_complete());
    assert_eq!(p.memory().live_tables(), 1);
}

// ------------------------------------------------------------------ gather

#[test]
fn gather_leaf_only_for_plain_page_unmap() {
    let mut p = s1_4k48();
    p.map(0x10_0000, 0x20_0000, 16 * K4, Prot::RW).unwrap();
    let mut g = Gather::new();
    assert!(g.is_empty());
    assert_eq!(p.unmap(0x10_2000, 2 * K4, &mut g), Ok(2 * K4));
    assert!(g.leaf_only);
    assert_eq!((g.start, g.end, g.pgsize), (0x10_2000, 0x10_4000, K4));
    assert!(!g.needs_complete());
    // Holes are skipped; bounds only cover what was mapped.
    assert_eq!(p.unmap(0x10_0000, 4 * K4, &mut g), Ok(2 * K4));
    assert_eq!((g.start, g.end), (0x10_0000, 0x10_4000));
    assert!(g.leaf_only);
    // Range that is entirely a hole: NotMapped, gather untouched.
    assert_eq!(p.unmap(0x30_0000, K4, &mut g), Err(PgtError::NotMapped { iova: 0x30_0000 }));
    assert_eq!((g.start, g.end), (0x10_0000, 0x10_4000));
    p.complete(&mut g).unwrap();
    assert!(g.is_empty());
    // Mixed sizes: pgsize falls back to the granule.
    p.map(0x40_0000, 0x40_0000, 2 * MIB, Prot::RW).unwrap();
    let mut g = Gather::new();
    assert_eq!(p.unmap(0x40_0000, 2 * MIB, &mut g), Ok(2 * MIB));
    assert_eq!(g.pgsize, 2 * MIB);
    assert!(g.leaf_only);
    assert_eq!(p.unmap(0x10_4000, K4, &mut g), Ok(K4));
    assert_eq!(g.pgsize, K4);
    assert_eq!((g.start, g.end), (0x10_4000, 0x60_0000));
    p.complete(&mut g).unwrap();
}

#[test]
fn gather_not_leaf_when_table_freed() {
    let mut p = s1_4k48();
    p.map(0x10_0000, 0x20_0000, 2 * K4, Prot::RW).unwrap();
    let before = p.tables_in_use();
    let mut g = Gather::new();
    p.unmap(0x10_0000, K4, &mut g).unwrap();
    assert!(g.leaf_only);
    p.unmap(0x10_1000, K4, &mut g).unwrap();
    // L3, L2 and L1 all became empty.
    assert!(!g.leaf_only);
    assert_eq!(g.deferred_tables(), 3);
    assert_eq!((g.start, g.end), (0x10_0000, 0x10_2000));
    assert_eq!(p.tables_in_use(), before);
    p.complete(&mut g).unwrap();
    assert_eq!(p.tables_in_use(), 0);
}

#[test]
fn foreign_gather_refused() {
    let mut a = s1_4k48();
    let mut b = s1_4k48();
    a.map(0, 0, K4, Prot::RW).unwrap();
    b.map(0, 0, K4, Prot::RW).unwrap();
    let mut g = Gather::new();
    a.unmap(0, K4, &mut g).unwrap();
    assert_eq!(b.unmap(0, K4, &mut g), Err(PgtError::ForeignGather));
    assert_eq!(b.complete(&mut g), Err(PgtError::ForeignGather));
    a.complete(&mut g).unwrap();
    assert_eq!(b.unmap(0, K4, &mut g), Ok(K4));
    b.complete(&mut g).unwrap();
}

// ------------------------------------------------------------------ splitting

#[test]
fn split_2m_block() {
    let mut p = s1_4k48();
    let (iova, pa) = (0x4000_0000, 0x8000_0000);
    p.map(iova, pa, 2 * MIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 2);
    let block = leaf(&p, iova).unwrap().1;
    let mut g = Gather::new();
    assert_eq!(p.unmap(iova + 0x1000, K4, &mut g), Ok(K4));
    // Break: the whole block is invalid until complete().
    assert_eq!((g.start, g.end, g.pgsize, g.leaf_only), (iova, iova + 2 * MIB, 2 * MIB, true));
    assert_eq!(g.pending_splits(), 1);
    assert!(p.is_split_pending());
    assert_eq!(p.iova_to_phys(iova), None);
    assert_eq!(p.iova_to_phys(iova + 0x2000), None);
    assert_eq!(p.map(0x1000_0000, 0, K4, Prot::RW), Err(PgtError::SplitPending));
    assert_eq!(p.unmap(iova, K4, &mut Gather::new()), Err(PgtError::SplitPending));
    assert_eq!(p.tables_in_use(), 3);
    // Make.
    p.complete(&mut g).unwrap();
    assert!(!p.is_split_pending());
    assert_eq!(p.iova_to_phys(iova), Some(pa));
    assert_eq!(p.iova_to_phys(iova + 0x1000), None);
    assert_eq!(p.iova_to_phys(iova + 0x1fff), None);
    assert_eq!(p.iova_to_phys(iova + 0x2345), Some(pa + 0x2345));
    assert_eq!(p.iova_to_phys(iova + 2 * MIB - 1), Some(pa + 2 * MIB - 1));
    assert_eq!(p.iova_to_phys(iova + 2 * MIB), None);
    // Remaining pages keep the block's attributes.
    let (level, page) = leaf(&p, iova + 0x2000).unwrap();
    assert_eq!(level, 3);
    assert_eq!(page & LEAF_ATTR_MASK, block & LEAF_ATTR_MASK);
    assert_eq!(page & 3, 3);
    assert_eq!(table_count(desc_at(&p, iova, 2)), 511);
    assert_eq!(check_tree(&p), 3);
    // The hole can be mapped again.
    p.map(iova + 0x1000, 0x1234_5000, K4, Prot::RO).unwrap();
    assert_eq!(p.iova_to_phys(iova + 0x1000), Some(0x1234_5000));
    let (n, _) = unmap_all(&mut p, 0, 1 << 48);
    assert_eq!(n, 2 * MIB);
    assert_eq!(p.tables_in_use(), 0);
}

#[test]
fn split_1g_block_both_edges() {
    let mut p = s1_4k48();
    p.map(GIB, 3 * GIB, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 1);
    // Remove [GIB + 2M - 4K, GIB + 6M + 8K): splits the 1G block into an L2 table with
    // two L3 tables at the edges.
    let (s, e) = (GIB + 2 * MIB - K4, GIB + 6 * MIB + 2 * K4);
    let (n, g) = unmap_all(&mut p, s, e - s);
    assert_eq!(n, e - s);
    assert_eq!((g.start, g.end, g.pgsize), (GIB, 2 * GIB, GIB));
    assert_eq!(p.tables_in_use(), 1 + 1 + 2);
    assert_eq!(check_tree(&p), 4);
    for a in [GIB, s - K4, e, e + 5 * MIB, 2 * GIB - 1] {
        assert_eq!(p.iova_to_phys(a), Some(a + 2 * GIB), "{a:#x}");
    }
    for a in [s, s + K4, GIB + 3 * MIB, e - 1] {
        assert_eq!(p.iova_to_phys(a), None, "{a:#x}");
    }
    assert_eq!(leaf(&p, GIB).unwrap().0, 3); // same 2M as `s`
    assert_eq!(leaf(&p, GIB + 8 * MIB).unwrap().0, 2);
    assert_eq!(leaf(&p, s - K4).unwrap().0, 3);
    assert_eq!(leaf(&p, e).unwrap().0, 3);
    assert_eq!(leaf(&p, e + 2 * MIB).unwrap().0, 2);
    // A hole inside one 2M sub-block: 2 more tables (L2 + L3).
    let mut p = s1_4k48();
    p.map(GIB, 3 * GIB, GIB, Prot::RW).unwrap();
    let (n, _) = unmap_all(&mut p, GIB + 7 * MIB, K4);
    assert_eq!(n, K4);
    assert_eq!(p.tables_in_use(), 3);
    assert_eq!(p.iova_to_phys(GIB + 7 * MIB), None);
    assert_eq!(p.iova_to_phys(GIB + 7 * MIB + K4), Some(3 * GIB + 7 * MIB + K4));
}

#[test]
fn split_needs_memory_or_changes_nothing() {
    let mut p = s1_4k48();
    p.map(GIB, 3 * GIB, GIB, Prot::RW).unwrap();
    let live = p.memory().live_tables();
    p.mem.limit = Some(live + 1); // a split of the 1G block needs L2 + L3
    let mut g = Gather::new();
    assert_eq!(p.unmap(GIB + 4 * K4, K4, &mut g), Err(PgtError::NoMemory));
    assert!(g.is_empty() && !p.is_split_pending());
    assert_eq!(p.memory().live_tables(), live);
    assert_eq!(p.iova_to_phys(GIB + 4 * K4), Some(3 * GIB + 4 * K4));
    p.mem.limit = None;
    assert_eq!(p.unmap(GIB + 4 * K4, K4, &mut g), Ok(K4));
    p.complete(&mut g).unwrap();
    assert_eq!(p.tables_in_use(), 3);
}

#[test]
fn split_on_16k_and_64k_and_s2() {
    for c in [
        cfg(Stage::S1, Granule::K16, 47, 48),
        cfg(Stage::S2, Granule::K64, 44, 44),
        cfg(Stage::S2, Granule::K4, 40, 40),
    ] {
        let mut p = pgt(c);
        let gsz = c.granule.size();
        let blk = p.geo.entry_size(2);
        p.map(blk, 2 * blk, blk, Prot::RW).unwrap();
        let (n, _) = unmap_all(&mut p, blk + 3 * gsz, 2 * gsz);
        assert_eq!(n, 2 * gsz);
        assert_eq!(p.iova_to_phys(blk + 2 * gsz), Some(2 * blk + 2 * gsz));
        assert_eq!(p.iova_to_phys(blk + 3 * gsz), None);
        assert_eq!(p.iova_to_phys(blk + 5 * gsz), Some(2 * blk + 5 * gsz));
        assert_eq!(table_count(desc_at(&p, blk, 2)), (1 << p.geo.bpl) - 2);
        check_tree(&p);
    }
}

// ------------------------------------------------------------------ errors

#[test]
fn argument_errors() {
    let mut p = pgt(cfg(Stage::S1, Granule::K4, 39, 36));
    let rw = Prot::RW;
    assert_eq!(p.map(0, 0, 0, rw), Err(PgtError::ZeroSize));
    assert_eq!(p.map(0x800, 0, K4, rw), Err(PgtError::Unaligned { what: "iova", value: 0x800, align: K4 }));
    assert_eq!(p.map(0, 0x10, K4, rw), Err(PgtError::Unaligned { what: "pa", value: 0x10, align: K4 }));
    assert_eq!(p.map(0, 0, 0x1800, rw), Err(PgtError::Unaligned { what: "size", value: 0x1800, align: K4 }));
    let top = 1u64 << 39;
    assert!(matches!(p.map(top - K4, 0, 2 * K4, rw), Err(PgtError::OutOfRange { what: "iova", .. })));
    assert!(matches!(p.map(top, 0, K4, rw), Err(PgtError::OutOfRange { what: "iova", .. })));
    assert!(matches!(p.map(u64::MAX - K4 + 1, 0, K4, rw), Err(PgtError::OutOfRange { what: "iova", .. })));
    assert!(matches!(p.map(0, (1 << 36) - K4, 2 * K4, rw), Err(PgtError::OutOfRange { what: "pa", .. })));
    assert!(p.map(top - K4, (1 << 36) - K4, K4, rw).is_ok());
    let mut g = Gather::new();
    assert_eq!(p.unmap(0, 0, &mut g), Err(PgtError::ZeroSize));
    assert!(matches!(p.unmap(0x10, K4, &mut g), Err(PgtError::Unaligned { .. })));
    assert!(matches!(p.unmap(top, K4, &mut g), Err(PgtError::OutOfRange { .. })));
    assert_eq!(p.unmap(0, K4, &mut g), Err(PgtError::NotMapped { iova: 0 }));
    assert!(g.is_empty());
    assert_eq!(p.unmap(top - K4, K4, &mut g), Ok(K4));
    p.complete(&mut g).unwrap();
    // Display works for every variant.
    for e in [
        PgtError::ZeroSize,
        PgtError::NoMemory,
        PgtError::SplitPending,
        PgtError::ForeignGather,
        PgtError::AlreadyMapped { iova: 1 },
        PgtError::BadConfig("x"),
    ] {
        assert!(!std::format!("{e}").is_empty());
    }
}

#[test]
fn double_map_is_refused_atomically() {
    let mut p = s1_4k48();
    p.map(0x20_0000 + 5 * K4, 0x9000_0000, K4, Prot::RW).unwrap();
    let tables = p.tables_in_use();
    let allocs = p.memory().total_allocs;
    // Overlaps one page in the middle of a large request that would need new tables too.
    let r = p.map(0, 0x1_0000_0000, 8 * MIB, Prot::RW);
    assert_eq!(r, Err(PgtError::AlreadyMapped { iova: 0x20_0000 + 5 * K4 }));
    assert_eq!(p.tables_in_use(), tables);
    assert_eq!(p.memory().total_allocs, allocs, "nothing allocated before the check");
    assert_eq!(p.iova_to_phys(0), None);
    assert_eq!(p.iova_to_phys(0x20_0000 + 5 * K4), Some(0x9000_0000));
    // Over a block.
    p.map(GIB, GIB, GIB, Prot::RW).unwrap();
    assert_eq!(p.map(GIB + 8 * K4, 0, K4, Prot::RW), Err(PgtError::AlreadyMapped { iova: GIB + 8 * K4 }));
    assert_eq!(p.map(GIB - 2 * MIB, 0, 4 * MIB, Prot::RW), Err(PgtError::AlreadyMapped { iova: GIB }));
    assert_eq!(p.iova_to_phys(GIB - 2 * MIB), None);
    assert_eq!(check_tree(&p), p.tables_in_use());
}

#[test]
fn map_out_of_memory_changes_nothing() {
    let mut p = s1_4k48();
    p.map(0, 0, K4, Prot::RW).unwrap();
    let live = p.memory().live_tables();
    p.mem.limit = Some(live + 100);
    assert_eq!(p.map(GIB, 0x1000, GIB, Prot::RW), Err(PgtError::NoMemory));
    assert_eq!(p.memory().live_tables(), live);
    assert_eq!(p.iova_to_phys(GIB), None);
    assert_eq!(check_tree(&p), p.tables_in_use());
    // L1 exists already: L2 + 512 L3 are needed.
    p.mem.limit = Some(live + 513);
    p.map(GIB, 0x1000, GIB, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 3 + 513);
}

#[test]
fn one_leaf_into_missing_tables() {
    // A page into an empty tree: L1, L2 and L3 tables, each with one entry.
    let mut p = s1_4k48();
    p.map(3 * GIB + 5 * K4, 0x7000, K4, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 3);
    assert_eq!(p.iova_to_phys(3 * GIB + 5 * K4 + 8), Some(0x7008));
    assert_eq!(check_tree(&p), 3);
    // Beside it: only an L3 table is missing; its L2 table counts one more entry.
    p.map(3 * GIB + 2 * MIB, 0x9000, K4, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 4);
    assert_eq!(check_tree(&p), 4);
    // A 1 GiB block: only the L1 table (there already).
    p.map(GIB, GIB, GIB, Prot::RO).unwrap();
    assert_eq!(p.tables_in_use(), 4);
    assert_eq!(p.iova_to_phys(GIB + 123), Some(GIB + 123));
    // Out of memory half-way down: nothing allocated stays, nothing maps.
    let live = p.memory().live_tables();
    p.mem.limit = Some(live + 1);
    assert_eq!(p.map(600 * GIB, 0x1000, K4, Prot::RW), Err(PgtError::NoMemory));
    assert_eq!(p.memory().live_tables(), live);
    assert_eq!(p.iova_to_phys(600 * GIB), None);
    assert_eq!(check_tree(&p), 4);
    p.mem.limit = None;
    // Everything unmaps again and every table goes.
    unmap_all(&mut p, 0, 1 << 48);
    assert_eq!(p.tables_in_use(), 0);
    // A non-coherent walker sees the new tables whole before the entry that links them.
    let c = Config { coherent_walk: false, ..cfg(Stage::S1, Granule::K4, 48, 48) };
    let mut p = IoPageTable::new(c, Arena::tracking()).unwrap();
    p.map(7 * GIB + 3 * K4, 0x5000, K4, Prot::RW).unwrap();
    check_device_view(&p);
    assert_eq!(p.tables_in_use(), 3);
}

// ------------------------------------------------------------------ non-coherent walker

#[test]
fn non_coherent_tables_are_synced() {
    for c in
        [cfg(Stage::S1, Granule::K4, 48, 48), cfg(Stage::S2, Granule::K4, 42, 42), cfg(Stage::S2, Granule::K16, 48, 48)]
    {
        let c = Config { coherent_walk: false, ..c };
        let gs = c.granule.size();
        let mut p = IoPageTable::new(c, Arena::tracking()).unwrap();
        check_device_view(&p);
        p.map(GIB, 0x10000, 8 * MIB, Prot::RW).unwrap();
        check_device_view(&p);
        p.map(2 * GIB, 2 * GIB, GIB, Prot::RW).unwrap();
        p.map(4 * GIB - 64 * gs, 0x20000, 64 * gs, Prot::RW).unwrap();
        check_device_view(&p);
        let mut g = Gather::new();
        p.unmap(2 * GIB + 64 * gs, gs, &mut g).unwrap(); // splits a block
        assert_eq!(p.unmap(GIB + 3 * gs, 5 * MIB, &mut g), Err(PgtError::SplitPending));
        p.complete(&mut g).unwrap();
        check_device_view(&p);
        p.unmap(GIB + 3 * gs, 5 * MIB, &mut g).unwrap();
        p.complete(&mut g).unwrap();
        check_device_view(&p);
        assert!(p.memory().syncs.get() > 0);
        unmap_all(&mut p, 0, 1 << c.ias);
        check_device_view(&p);
        assert_eq!(p.tables_in_use(), 0);
    }
    // Coherent walkers are never synced.
    let mut p = s1_4k48();
    p.map(0, 0, 4 * MIB, Prot::RW).unwrap();
    unmap_all(&mut p, 0, 4 * MIB);
    assert_eq!(p.memory().syncs.get(), 0);
}

#[test]
fn drop_returns_every_table() {
    // Wrap the arena so that its counters survive the page table.
    struct Shared<'a>(&'a RefCell<Arena>);
    // SAFETY: delegates to the arena.
    unsafe impl TableMemory for Shared<'_> {
        fn alloc_table(&mut self, bytes: usize) -> Option<(u64, *mut u64)> {
            self.0.borrow_mut().alloc_table(bytes)
        }
        fn free_table(&mut self, pa: u64, va: *mut u64, bytes: usize) {
            self.0.borrow_mut().free_table(pa, va, bytes)
        }
        fn phys_to_virt(&self, pa: u64) -> *mut u64 {
            self.0.borrow().phys_to_virt(pa)
        }
        fn sync_for_device(&self, va: *const u64, len: usize) {
            self.0.borrow().sync_for_device(va, len)
        }
    }
    let arena = RefCell::new(Arena::new());
    {
        let mut p = IoPageTable::new(cfg(Stage::S2, Granule::K4, 40, 40), Shared(&arena)).unwrap();
        p.map(0, 0x1000, 64 * MIB, Prot::RW).unwrap();
        p.map(GIB, GIB, GIB, Prot::RW).unwrap();
        let mut g = Gather::new();
        p.unmap(GIB + K4, K4, &mut g).unwrap();
        assert!(arena.borrow().live_tables() > 30);
    }
    assert_eq!(arena.borrow().live_tables(), 0);
}

// ------------------------------------------------------------------ randomized model check

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

/// Disjoint mapped intervals: start -> (end, pa).
#[derive(Default)]
struct Model(BTreeMap<u64, (u64, u64)>);

impl Model {
    fn lookup(&self, a: u64) -> Option<u64> {
        let (&s, &(e, pa)) = self.0.range(..=a).next_back()?;
        (a < e).then(|| pa + (a - s))
    }
    fn overlaps(&self, s: u64, e: u64) -> Vec<(u64, u64, u64)> {
        let mut v = Vec::new();
        if let Some((&a, &(b, pa))) = self.0.range(..s).next_back()
            && b > s
        {
            v.push((a, b, pa));
        }
        for (&a, &(b, pa)) in self.0.range(s..e) {
            v.push((a, b, pa));
        }
        v
    }
    fn first_mapped(&self, s: u64, e: u64) -> Option<u64> {
        self.overlaps(s, e).first().map(|&(a, _, _)| a.max(s))
    }
    fn remove(&mut self, s: u64, e: u64) -> u64 {
        let mut bytes = 0;
        for (a, b, pa) in self.overlaps(s, e) {
            self.0.remove(&a);
            bytes += b.min(e) - a.max(s);
            if a < s {
                self.0.insert(a, (s, pa));
            }
            if b > e {
                self.0.insert(e, (b, pa + (e - a)));
            }
        }
        bytes
    }
    fn total(&self) -> u64 {
        self.0.iter().map(|(s, (e, _))| e - s).sum()
    }
}

fn run_random(seed: u64, c: Config, ops: usize, retain: bool) {
    let mut rng = Rng(seed);
    let tracking = !c.coherent_walk;
    let arena = if tracking { Arena::tracking() } else { Arena::new() };
    let mut p = IoPageTable::new(c, arena).unwrap();
    p.set_retain_empty_tables(retain);
    let mut model = Model::default();
    let gsz = c.granule.size();
    let blk = p.geo.entry_size(2); // 2M / 32M / 512M
    let big = if c.granule == Granule::K4 { GIB } else { blk };
    // A window of 8 "big" units, so that operations collide often.
    let span = (8 * big).min(1 << c.ias);
    let base = rng.below((1u64 << c.ias) / span) * span;
    let pa_space = 1u64 << c.oas.min(40);
    let rand_size = |rng: &mut Rng| -> u64 {
        let s = match rng.below(10) {
            0..=4 => (1 + rng.below(16)) * gsz,
            5..=6 => (1 + rng.below(3)) * blk,
            7 => big,
            8 => (1 + rng.below(600)) * gsz,
            _ => blk + (1 + rng.below(8)) * gsz,
        };
        s.min(span)
    };
    let rand_iova = |rng: &mut Rng, size: u64| -> u64 {
        let align = rng.pick(&[gsz, gsz, blk, big]);
        let a = (base + rng.below((span - size) / gsz + 1) * gsz) / align * align;
        a.max(base)
    };
    for step in 0..ops {
        let (iova, size);
        if rng.below(100) < 55 {
            let block_map = rng.below(3) == 0;
            if block_map {
                // Block-aligned on both sides: leaves of block size.
                size = (1 + rng.below(2)) * blk;
                iova = base + rng.below(span / blk - 1) * blk;
            } else {
                size = rand_size(&mut rng);
                iova = rand_iova(&mut rng, size);
            }
            let mut pa = if block_map {
                rng.below(pa_space / blk - 2) * blk
            } else if rng.below(2) == 0 {
                // Same offset modulo `big` as the IOVA: blocks become possible.
                rng.below(pa_space / big) * big + iova % big
            } else {
                rng.below(pa_space / gsz) * gsz
            };
            if pa + size > pa_space {
                pa = (pa_space - size) / big * big;
            }
            let prot = if rng.below(3) == 0 { Prot::RO } else { Prot::RW };
            let r = p.map(iova, pa, size, prot);
            match model.first_mapped(iova, iova + size) {
                Some(first) => {
                    assert_eq!(r, Err(PgtError::AlreadyMapped { iova: first }), "seed {seed}")
                }
                None => {
                    r.unwrap();
                    model.0.insert(iova, (iova + size, pa));
                }
            }
        } else {
            let n = model.0.len() as u64;
            let pick = rng.below(3);
            match model.0.iter().nth(rng.below(n + 1) as usize) {
                // Exactly one mapped interval, as a driver would unmap it.
                Some((&s, &(e, _))) if pick == 0 => (iova, size) = (s, e - s),
                // A piece from inside one interval: splits its blocks.
                Some((&s, &(e, _))) if pick == 1 => {
                    let pages = (e - s) / gsz;
                    let first = rng.below(pages);
                    let cap = if rng.below(2) == 0 { 4 } else { pages };
                    let len = 1 + rng.below((pages - first).min(cap));
                    (iova, size) = (s + first * gsz, len * gsz);
                }
                _ => {
                    size = rand_size(&mut rng);
                    iova = rand_iova(&mut rng, size);
                }
            }
            let hits = model.overlaps(iova, iova + size);
            let mut g = Gather::new();
            let r = p.unmap(iova, size, &mut g);
            let expect = model.remove(iova, iova + size);
            if expect == 0 && g.needs_complete() {
                // Only retained empty tables were detached.
                assert!(retain, "seed {seed} step {step}: tables detached from an unmapped range");
                assert_eq!(r, Ok(0));
                assert!(!g.is_empty() && !g.leaf_only);
            } else if expect == 0 {
                assert_eq!(r, Err(PgtError::NotMapped { iova }));
                assert!(g.is_empty());
            } else {
                assert_eq!(r, Ok(expect), "seed {seed} step {step}");
                // The invalidation range covers every unmapped byte.
                let lo = hits.first().unwrap().0.max(iova);
                let hi = hits.last().unwrap().1.min(iova + size);
                assert!(g.start <= lo && g.end >= hi, "gather {g:?} misses [{lo:#x}, {hi:#x})");
                assert!(g.pgsize != 0 && g.pgsize.is_multiple_of(gsz));
                if g.pending_splits() > 0 {
                    assert!(p.is_split_pending() && g.leaf_only || g.deferred_tables() > 0);
                    assert_eq!(p.map(iova, 0, gsz, Prot::RW), Err(PgtError::SplitPending));
                    // Break-before-make: the split blocks are not translated meanwhile.
                    assert_eq!(p.iova_to_phys(lo), None);
                }
            }
            p.complete(&mut g).unwrap();
            assert!(!p.is_split_pending());
        }
        check_samples(
            &p,
            &model,
            &[iova, iova + size - gsz, iova + size, iova.wrapping_sub(gsz)],
            &mut rng,
            base,
            span,
        );
        if retain && step % 50 == 25 {
            // Trim: every empty table goes, the mappings stay.
            let mut g = Gather::new();
            let n = p.trim(&mut g).unwrap();
            assert_eq!(g.deferred_tables(), n);
            p.complete(&mut g).unwrap();
            p.set_retain_empty_tables(false);
            assert_eq!(check_tree(&p), p.tables_in_use(), "seed {seed} step {step}: trim left empty tables");
            p.set_retain_empty_tables(true);
            check_samples(&p, &model, &[iova], &mut rng, base, span);
        }
        if step % 64 == 0 {
            assert_eq!(check_tree(&p), p.tables_in_use(), "seed {seed} step {step}");
            if tracking {
                check_device_view(&p);
            }
        }
    }
    assert_eq!(check_tree(&p), p.tables_in_use());
    let total = model.total();
    let mut g = Gather::new();
    let r = p.unmap(0, 1 << c.ias, &mut g);
    if total == 0 && g.needs_complete() {
        assert_eq!(r, Ok(0));
    } else if total == 0 {
        assert_eq!(r, Err(PgtError::NotMapped { iova: 0 }));
    } else {
        assert_eq!(r, Ok(total));
    }
    p.complete(&mut g).unwrap();
    assert_eq!(p.tables_in_use(), 0, "seed {seed}: tables leaked");
    assert_eq!(p.memory().live_tables(), 1, "only the root is live");
    if tracking {
        check_device_view(&p);
    }
}

fn check_samples(p: &Pgt, model: &Model, fixed: &[u64], rng: &mut Rng, base: u64, span: u64) {
    let mut addrs: Vec<u64> = fixed.to_vec();
    for _ in 0..12 {
        addrs.push(base + rng.below(span));
    }
    for (&s, &(e, _)) in model.0.iter().take(4) {
        addrs.extend([s, e - 1, e, s + ((e - s) >> 1)]);
    }
    for a in addrs {
        let a = a & ((1u64 << 52) - 1);
        let want = model.lookup(a);
        assert_eq!(p.iova_to_phys(a), want, "iova {a:#x}");
    }
}

#[test]
fn random_model_check() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let granules = [Granule::K4, Granule::K16, Granule::K64];
    let mut total_ops = 0;
    for round in 0..18 {
        let granule = granules[round % 3];
        let stage = if rng.below(2) == 0 { Stage::S1 } else { Stage::S2 };
        let ias = rng.pick(&[32u8, 36, 39, 40, 42, 44, 47, 48]);
        let oas = rng.pick(&[32u8, 40, 44, 48]).max(if stage == Stage::S2 { ias.min(48) } else { 32 });
        let coherent_walk = rng.below(3) != 0;
        let c = Config { stage, granule, ias, oas, coherent_walk };
        let ops = 300;
        run_random(rng.next() | 1, c, ops, round % 2 == 1);
        total_ops += ops;
    }
    assert!(total_ops >= 5000);
}

// ------------------------------------------------------------------ retained tables

#[test]
fn retained_tables_are_reused() {
    let mut p = s1_4k48();
    p.set_retain_empty_tables(true);
    let iova = 0x7f_ffe0_0000;
    p.map(iova, 0x20_0000, K4, Prot::RW).unwrap();
    assert_eq!(p.tables_in_use(), 3); // L1, L2, L3
    let allocs = p.memory().total_allocs;
    for round in 0..8u64 {
        let (n, g) = unmap_all(&mut p, iova, K4);
        assert_eq!(n, K4);
        // Only the page went: a leaf-only invalidation, no table queued or freed.
        assert!(g.leaf_only, "round {round}");
        assert_eq!(p.tables_in_use(), 3);
        assert_eq!(p.iova_to_phys(iova), None);
        // The empty tables stay linked with count 0 ...
        assert_eq!(table_count(desc_at(&p, iova, 2)), 0);
        assert_eq!(table_count(desc_at(&p, iova, 1)), 1);
        // ... and the next map, of this page or a neighbour in the same L3, allocates nothing.
        let a = iova + (round % 2) * K4;
        p.map(a, 0x30_0000 + round * K4, K4, Prot::RW).unwrap();
        assert_eq!(p.iova_to_phys(a), Some(0x30_0000 + round * K4));
        assert_eq!(leaf(&p, a).map(|l| l.0), Some(3));
        if round % 2 == 1 {
            unmap_all(&mut p, a, K4);
            p.map(iova, 0x20_0000, K4, Prot::RW).unwrap();
        }
    }
    assert_eq!(p.memory().total_allocs, allocs, "a retained table was reallocated");
    assert_eq!(check_tree(&p), 3);
    // The default frees them as soon as they are empty.
    let mut q = s1_4k48();
    q.map(iova, 0x20_0000, K4, Prot::RW).unwrap();
    unmap_all(&mut q, iova, K4);
    assert_eq!(q.tables_in_use(), 0);
}

#[test]
fn trim_returns_to_zero_tables() {
    let mut p = s1_4k48();
    p.set_retain_empty_tables(true);
    // Two pages in different L3 tables of one L2, one page under another L1 entry.
    let (a, b, c) = (0x4000_0000, 0x4020_0000, 0x80_0000_0000);
    for (i, x) in [a, b, c].into_iter().enumerate() {
        p.map(x, 0x10_0000 * (i as u64 + 1), K4, Prot::RW).unwrap();
    }
    assert_eq!(p.tables_in_use(), 2 + 2 + 1 + 1 + 1);
    unmap_all(&mut p, a, K4);
    unmap_all(&mut p, c, K4);
    assert_eq!(p.tables_in_use(), 7);
    // Trim frees exactly the empty ones: a's L3 and c's L3, L2, L1; b keeps translating.
    let mut g = Gather::new();
    assert_eq!(p.trim(&mut g), Ok(4));
    assert!(!g.leaf_only && g.start <= a && g.end >= 0x80_4000_0000 && g.end > c);
    assert_eq!(p.tables_in_use(), 7, "freed before complete");
    p.complete(&mut g).unwrap();
    assert_eq!(p.tables_in_use(), 3);
    assert_eq!(p.memory().live_tables(), 1 + 3);
    assert_eq!(p.iova_to_phys(b), Some(0x20_0000));
    assert_eq!(p.iova_to_phys(a), None);
    // Nothing empty left: a second trim queues nothing and leaves the gather unbound.
    let mut g = Gather::new();
    assert_eq!(p.trim(&mut g), Ok(0));
    assert!(g.is_empty() && !g.needs_complete());
    unmap_all(&mut p, b, K4);
    assert_eq!(p.tables_in_use(), 3);
    assert_eq!(p.trim(&mut g), Ok(3));
    p.complete(&mut g).unwrap();
    assert_eq!(p.tables_in_use(), 0);
    assert_eq!(p.memory().live_tables(), 1, "only the root is live");
}

#[test]
fn retained_tables_in_whole_unmaps_and_blocks() {
    let mut p = s1_4k48();
    p.set_retain_empty_tables(true);
    p.map(0x4000_0000, 0x10_0000, K4, Prot::RW).unwrap();
    unmap_all(&mut p, 0x4000_0000, K4);
    assert_eq!(p.tables_in_use(), 3);
    // A 2 MiB block over the retained empty L3 becomes 512 pages inside it (no table swap
    // without a walk-cache invalidation), and translates.
    p.map(0x4000_0000, 0x20_0000, 2 * MIB, Prot::RW).unwrap();
    assert_eq!(leaf(&p, 0x401f_f000).map(|l| l.0), Some(3));
    assert_eq!(p.iova_to_phys(0x401f_f123), Some(0x3f_f123));
    assert_eq!(p.tables_in_use(), 3);
    // An unmap of exactly the L2 entry detaches the L3 table whole (as Linux does); the L2
    // table it leaves empty is retained.
    let (n, g) = unmap_all(&mut p, 0x4000_0000, 2 * MIB);
    assert_eq!(n, 2 * MIB);
    assert!(!g.leaf_only);
    assert_eq!(p.tables_in_use(), 2);
    assert_eq!(table_count(desc_at(&p, 0x4000_0000, 1)), 0);
    // Unmapping a range that holds only empty tables detaches them: Ok(0), not leaked.
    let mut g = Gather::new();
    assert_eq!(p.unmap(0, 512 * GIB, &mut g), Ok(0));
    assert_eq!(g.deferred_tables(), 2);
    assert!(!g.is_empty() && !g.leaf_only);
    p.complete(&mut g).unwrap();
    assert_eq!(p.tables_in_use(), 0);
    assert_eq!(p.memory().live_tables(), 1);
    // With nothing left, the same unmap is NotMapped again.
    assert_eq!(p.unmap(0, 512 * GIB, &mut g), Err(PgtError::NotMapped { iova: 0 }));
    assert!(g.is_empty() && !g.needs_complete());
}

#[test]
fn granule_from_boot_argument() {
    for g in [Granule::K4, Granule::K16, Granule::K64] {
        assert_eq!(Granule::from_arg(g.name()), Some(g));
    }
    assert_eq!(Granule::from_arg("64K"), Some(Granule::K64));
    for bad in ["", "4", "8k", "4kk", "64 k", "4096"] {
        assert_eq!(Granule::from_arg(bad), None, "{bad:?}");
    }
}

#[test]
fn leaf_entries_and_their_attributes() {
    for stage in [Stage::S1, Stage::S2] {
        let mut p = pgt(cfg(stage, Granule::K4, 39, 48));
        let (rw, ro) = (p.attrs(&Prot::RW).unwrap(), p.attrs(&Prot::RO).unwrap());
        assert_ne!(rw, ro, "{stage:?}: read-only must show in the attributes");
        p.map(0x1000, 0x4000_3000, K4, Prot::RW).unwrap();
        p.map(0x20_0000, 0x8020_0000, 2 * MIB, Prot::RO).unwrap();
        assert_eq!(p.leaf(0x1fff), Some(Leaf { pa: 0x4000_3000, size: K4, attrs: rw }), "{stage:?} page");
        assert_eq!(p.leaf(0x2f_fff8), Some(Leaf { pa: 0x8020_0000, size: 2 * MIB, attrs: ro }), "{stage:?} block");
        assert_eq!(p.iova_to_phys(0x2f_fff8), Some(0x802f_fff8));
        assert_eq!(p.leaf(0x2000), None, "{stage:?}: nothing mapped");
        assert_eq!(p.leaf(1 << 39), None, "{stage:?}: beyond the input range");
        let mut g = Gather::new();
        p.unmap(0x1000, K4, &mut g).unwrap();
        p.complete(&mut g).unwrap();
        assert_eq!(p.leaf(0x1000), None, "{stage:?}: unmapped");
    }
}

#[test]
fn unmap_leaf_reports_what_it_cleared() {
    let mut p = pgt(cfg(Stage::S1, Granule::K4, 39, 48));
    let rw = p.attrs(&Prot::RW).unwrap();
    p.map(0x1000, 0x4000_3000, K4, Prot::RW).unwrap();
    p.map(0x20_0000, 0x8020_0000, 2 * MIB, Prot::RW).unwrap();
    p.map(0x40_0000, 0x9000_0000, 3 * K4, Prot::RW).unwrap();
    let mut g = Gather::new();
    // Fast path: one page, one block.
    assert_eq!(p.unmap_leaf(0x1000, K4, &mut g).unwrap(), (K4, Some(Leaf { pa: 0x4000_3000, size: K4, attrs: rw })));
    let block = Leaf { pa: 0x8020_0000, size: 2 * MIB, attrs: rw };
    assert_eq!(p.unmap_leaf(0x20_0000, 2 * MIB, &mut g).unwrap(), (2 * MIB, Some(block)));
    // General path: several pages; the first one is reported.
    let first = Leaf { pa: 0x9000_0000, size: K4, attrs: rw };
    assert_eq!(p.unmap_leaf(0x40_0000, 3 * K4, &mut g).unwrap(), (3 * K4, Some(first)));
    p.complete(&mut g).unwrap();
    assert!(matches!(p.unmap_leaf(0x1000, K4, &mut g), Err(PgtError::NotMapped { .. })));
    assert_eq!(p.leaf(0x40_1000), None);
}

#[test]
fn walk_cache_forgets_unlinked_tables() {
    // A one-page map or unmap remembers its leaf table; once that table leaves the tree
    // (detached by a whole-entry unmap, freed or only queued for `complete`), the next map
    // in the same 2 MiB must walk again and find (allocate) the tables the tree has now.
    let (iova, pa) = (0x40_0000u64, 0x20_0000u64);
    for complete_first in [true, false] {
        let mut p = s1_4k48();
        p.set_retain_empty_tables(true);
        p.map(iova, pa, K4, Prot::RW).unwrap();
        p.map(iova + K4, pa + K4, K4, Prot::RW).unwrap(); // through the cache
        let mut g = Gather::new();
        assert_eq!(p.unmap(iova, 2 * MIB, &mut g).unwrap(), 2 * K4);
        assert!(!g.leaf_only, "the L3 table was detached");
        // A detached table keeps its entries until freed: a stale cache would still read them.
        assert_eq!(p.iova_to_phys(iova + K4), None, "walked into a detached table");
        if complete_first {
            p.complete(&mut g).unwrap();
        }
        p.map(iova, pa, K4, Prot::RW).unwrap();
        assert_eq!(p.iova_to_phys(iova), Some(pa), "mapped into a table no longer in the tree");
        let mut g2 = Gather::new();
        p.unmap(iova, K4, &mut g2).unwrap();
        assert_eq!(p.iova_to_phys(iova), None);
        p.complete(&mut g2).unwrap();
        if !complete_first {
            p.complete(&mut g).unwrap();
        }
        assert_eq!(check_tree(&p), 3);
    }
}

#[test]
fn one_page_fast_paths() {
    let mut p = pgt(cfg(Stage::S1, Granule::K4, 39, 48));
    p.set_retain_empty_tables(true);
    let rw = p.attrs(&Prot::RW).unwrap();
    // No table yet: the fast path declines and changes nothing; `map` then builds them.
    assert!(!p.map_page(0x1000, 0x4000_0000, rw));
    assert_eq!(p.tables_in_use(), 0);
    p.map(0x1000, 0x4000_0000, K4, Prot::RW).unwrap();
    assert!(p.map_page(0x2000, 0x4000_5000, rw));
    assert_eq!(p.leaf(0x2000), Some(Leaf { pa: 0x4000_5000, size: K4, attrs: rw }));
    // Taken, unaligned, beyond the input or output range, or not attributes of a leaf.
    assert!(!p.map_page(0x2000, 0x4000_6000, rw));
    assert!(!p.map_page(0x3800, 0x4000_6000, rw));
    assert!(!p.map_page(1 << 39, 0x4000_6000, rw));
    assert!(!p.map_page(0x3000, 1 << 48, rw));
    assert!(!p.map_page(0x3000, 0x4000_6000, 0));
    assert_eq!(p.leaf(0x3000), None);
    let mut g = Gather::new();
    assert_eq!(p.unmap_page(0x2000, &mut g), Some(Leaf { pa: 0x4000_5000, size: K4, attrs: rw }));
    assert_eq!(p.unmap_page(0x2000, &mut g), None, "nothing left there");
    assert_eq!(p.unmap_page(0x1800, &mut g), None, "unaligned");
    assert!(g.leaf_only && (g.start, g.end) == (0x2000, 0x3000));
    p.complete(&mut g).unwrap();
    assert_eq!(p.iova_to_phys(0x1000), Some(0x4000_0000));
    assert_eq!(check_tree(&p), 2, "L2 and L3 below the root");
}
