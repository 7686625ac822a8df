//! Concurrency suite: secondary CPUs brought up with PSCI CPU_ON map, unmap and run
//! DMA at the same time as the boot CPU, in one domain, thousands of rounds: no lost
//! or stale translation, no deadlock (every wait bounded).

use super::dma::{Guarded, copy_and_check};
use super::{Ctx, Test};
use crate::arch::smp;
use crate::dma::{self, Direction, DmaDevice, Path};
use crate::drivers::EDUS;
use crate::ensure;
use crate::harness::Outcome;
use crate::iommu::domain::IOMMU;
use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

pub static TESTS: &[Test] = &[
    Test { suite: "smp", name: "secondaries_online", run: secondaries_online },
    Test { suite: "smp", name: "parallel_map_unmap_dma", run: parallel_map_unmap_dma },
];

fn secondaries_online(c: &Ctx) -> Outcome {
    let want = c.platform.cpus.len().min(smp::MAX_CPUS);
    if want < 2 {
        return Outcome::Skip("one CPU in this machine (QEMU -smp 1)".into());
    }
    ensure!(smp::online() == want, "{} of {want} CPUs online", smp::online());
    // Each secondary runs a job and reports its own MPIDR.
    for cpu in 1..want {
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        let s2 = seen.clone();
        let t =
            match smp::run_on(cpu, Box::new(move || s2.store(crate::arch::mpidr() & 0xff_00ff_ffff, Ordering::SeqCst)))
            {
                Ok(t) => t,
                Err(e) => return Outcome::Fail(format!("{e}")),
            };
        if let Err(e) = smp::wait(cpu, t, 1000) {
            return Outcome::Fail(format!("{e}"));
        }
        let got = seen.load(Ordering::SeqCst);
        ensure!(got == c.platform.cpus[cpu], "CPU {cpu} reports MPIDR {got:#x}, DT says {:#x}", c.platform.cpus[cpu]);
    }
    Outcome::Pass
}

const ROUNDS: u64 = 3000;
const WINDOW: usize = 8;

/// Map/unmap `ROUNDS` times keeping `WINDOW` live mappings, each checked against the
/// page table before it is unmapped. Returns (errors, first error text).
fn hammer(dev: &DmaDevice, pages: &[u64], rounds: u64) -> (u64, Option<alloc::string::String>) {
    let mut live: Vec<(u64, u64)> = Vec::new();
    let mut errors = 0;
    let mut first = None;
    let mut note = |m: alloc::string::String, errors: &mut u64| {
        *errors += 1;
        if first.is_none() {
            first = Some(m);
        }
    };
    let Path::Iommu(did) = dma::path(dev) else { return (1, Some("device not translated".into())) };
    for r in 0..rounds {
        let pa = pages[(r as usize) % pages.len()];
        match dma::map_single(dev, pa, 4096, Direction::ToDevice) {
            Ok(iova) => live.push((iova, pa)),
            Err(e) => note(format!("map: {e}"), &mut errors),
        }
        if live.len() > WINDOW || r + 1 == rounds {
            while let Some((iova, pa)) = live.pop() {
                let now = IOMMU.lock().iova_to_phys(did, iova);
                if now != Some(pa) {
                    note(format!("IOVA {iova:#x} translates to {now:x?}, mapped to {pa:#x}"), &mut errors);
                }
                if let Err(e) = dma::unmap_single(dev, iova, 4096, Direction::ToDevice) {
                    note(format!("unmap {iova:#x}: {e}"), &mut errors);
                }
                if live.len() <= WINDOW / 2 && r + 1 != rounds {
                    break;
                }
            }
        }
    }
    (errors, first)
}

fn parallel_map_unmap_dma(_: &Ctx) -> Outcome {
    if smp::online() < 2 {
        return Outcome::Skip("no secondary CPU online".into());
    }
    let mut edus = EDUS.lock();
    // The second engine (if any) goes to CPU 1 for the duration: both CPUs run DMA.
    let theirs_edu = if edus.len() >= 2 { Some(edus.remove(1)) } else { None };
    let Some(e) = edus.first_mut() else { return Outcome::Skip("no edu".into()) };
    if !matches!(dma::path(&e.dma), Path::Iommu(_)) {
        return Outcome::Skip("device not translated".into());
    }
    // Pages both CPUs map; owned here, freed after both are done.
    let bufs: Vec<Guarded> = (0..16).filter_map(|_| Guarded::new(4096)).collect();
    ensure!(bufs.len() == 16, "no memory");
    let pages: Vec<u64> = bufs.iter().map(|b| b.pa).collect();
    let errors = Arc::new(AtomicU64::new(0));
    let (dev, p2, e2) = (e.dma.clone(), pages.clone(), errors.clone());
    let first_err: Arc<spin::Mutex<Option<alloc::string::String>>> = Arc::new(spin::Mutex::new(None));
    let f2 = first_err.clone();
    let back: Arc<spin::Mutex<Option<crate::drivers::EduDev>>> = Arc::new(spin::Mutex::new(None));
    let (b2, their_dmas) = (back.clone(), Arc::new(AtomicU64::new(0)));
    let d2 = their_dmas.clone();
    let ticket = match smp::run_on(
        1,
        Box::new(move || {
            let mut mine = theirs_edu;
            for _ in 0..6 {
                let (n, first) = hammer(&dev, &p2, ROUNDS / 6);
                e2.fetch_add(n, Ordering::SeqCst);
                if let Some(m) = first {
                    *f2.lock() = Some(format!("CPU 1: {m}"));
                }
                if let Some(e1) = mine.as_mut() {
                    if let Outcome::Fail(m) = copy_and_check(e1, 4096) {
                        e2.fetch_add(1, Ordering::SeqCst);
                        *f2.lock() = Some(format!("CPU 1 DMA: {m}"));
                    }
                    d2.fetch_add(1, Ordering::SeqCst);
                }
            }
            *b2.lock() = mine;
        }),
    ) {
        Ok(t) => t,
        Err(x) => return Outcome::Fail(format!("{x}")),
    };
    // Meanwhile this CPU maps and unmaps in the same domain and runs real DMA.
    let mut dma_rounds = 0;
    let mut mine = 0;
    for _ in 0..6 {
        let (n, first) = hammer(&e.dma, &pages, ROUNDS / 6);
        mine += n;
        if let Some(m) = first {
            *first_err.lock() = Some(format!("CPU 0: {m}"));
        }
        if let Outcome::Fail(m) = copy_and_check(e, 4096) {
            return Outcome::Fail(format!("DMA during concurrent map/unmap: {m}"));
        }
        dma_rounds += 1;
    }
    if let Err(x) = smp::wait(1, ticket, 60_000) {
        return Outcome::Fail(format!("{x} (deadlock?)"));
    }
    if let Some(e1) = back.lock().take() {
        edus.insert(1, e1);
    }
    let theirs = errors.load(Ordering::SeqCst);
    crate::kprintln!(
        "smp: {} map+unmap rounds on 2 CPUs in one domain, DMA checks {dma_rounds} on CPU 0 + {} on CPU 1, errors {mine}+{theirs}",
        ROUNDS + 6 * (ROUNDS / 6),
        their_dmas.load(Ordering::SeqCst)
    );
    ensure!(mine + theirs == 0, "{} errors, first: {:?}", mine + theirs, first_err.lock().clone());
    drop(bufs);
    Outcome::Pass
}
