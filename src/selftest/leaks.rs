//! Runs last: after every suite, page frames, IOVA space, domains and queue slots
//! are back to what they were before the first test, and the test says so in numbers.

use super::{Ctx, Test};
use crate::ensure;
use crate::harness::Outcome;
use crate::iommu::domain::IOMMU;
use crate::iommu::registry::REGISTRY;
use crate::mm::frames;
use alloc::vec::Vec;
use spin::Mutex;

pub static TESTS: &[Test] = &[Test { suite: "leaks", name: "everything_returned", run: everything_returned }];

/// Level-2 stream tables are 256 STEs x 64 bytes = 4 pages, kept once made.
const L2_PAGES: u64 = 4;

#[derive(Clone, Default)]
struct Snapshot {
    free_pages: u64,
    l2_tables: usize,
    domains: usize,
    /// (domain id, IOVA bytes allocated) for every domain with an allocator.
    iova: Vec<(usize, u64)>,
}

static START: Mutex<Option<Snapshot>> = Mutex::new(None);

fn take() -> Snapshot {
    let mut io = IOMMU.lock();
    // Lazy unmaps still queued and empty tables DMA domains retain are not leaks: finish
    // the former, give back the latter (trim_tables flushes first), so pages count exactly.
    let ids: Vec<usize> = (0..io.domains.len()).filter(|&i| io.domains[i].is_some()).collect();
    for &i in &ids {
        let _ = io.trim_tables(i);
    }
    let iova = ids
        .iter()
        .filter_map(|&i| io.domains[i].as_ref().and_then(|d| d.iova.as_ref().map(|a| (i, a.allocated_bytes()))))
        .collect();
    let domains = io.live_domains();
    drop(io);
    let l2_tables = REGISTRY.lock().smmus.iter().map(|e| e.dev.strtab.l2_tables()).sum();
    Snapshot { free_pages: frames::stats().0, l2_tables, domains, iova }
}

/// Called by the harness before the first test.
pub fn snapshot() {
    *START.lock() = Some(take());
}

fn everything_returned(_: &Ctx) -> Outcome {
    let Some(start) = START.lock().clone() else { return Outcome::Fail("no starting snapshot".into()) };
    let end = take();
    let new_l2 = end.l2_tables.saturating_sub(start.l2_tables) as u64;
    let expect_free = start.free_pages - new_l2 * L2_PAGES;
    crate::kprintln!(
        "leaks: free pages {} at start, {} now ({} level-2 stream tables made since: {} pages kept); domains {} -> {}",
        start.free_pages,
        end.free_pages,
        new_l2,
        new_l2 * L2_PAGES,
        start.domains,
        end.domains
    );
    ensure!(
        end.free_pages == expect_free,
        "{} pages not returned (free {} now, expected {expect_free})",
        expect_free as i64 - end.free_pages as i64,
        end.free_pages
    );
    ensure!(end.domains == start.domains, "{} domains at start, {} now", start.domains, end.domains);
    for (id, bytes) in &start.iova {
        let now = end.iova.iter().find(|(i, _)| i == id).map(|x| x.1);
        ensure!(now == Some(*bytes), "domain {id}: {bytes:#x} IOVA bytes allocated at start, {now:x?} now");
    }
    let mut reg = REGISTRY.lock();
    for e in reg.smmus.iter_mut() {
        let (prod, cons) = e.dev.cmdq_indices();
        ensure!(prod == cons, "{}: command queue not drained (PROD {prod:#x}, CONS {cons:#x})", e.node);
        e.dev.drain_events();
    }
    Outcome::Pass
}
