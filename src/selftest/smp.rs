//! Concurrency suite: secondary CPUs brought up with PSCI CPU_ON map, unmap and run
//! DMA at the same time as the boot CPU, in one domain, thousands of rounds: no lost
//! or stale translation, no deadlock (every wait bounded). Idle secondaries sleep in
//! WFI and take the SGIs sent to them.

use super::dma::{Guarded, copy_and_check};
use super::{Ctx, Test, wait_until};
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
    Test { suite: "smp", name: "idle_secondaries_sleep", run: idle_secondaries_sleep },
    Test { suite: "smp", name: "sgi_reaches_its_target", run: sgi_reaches_its_target },
    Test { suite: "smp", name: "lazy_flush_timer_on_secondary", run: lazy_flush_timer_on_secondary },
    Test { suite: "smp", name: "lazy_flush_despite_a_busy_cpu", run: lazy_flush_despite_a_busy_cpu },
];

/// How long CPU 1 stays busy (IRQs masked, as in every job) after its lazy unmap.
const BUSY_MS: u64 = 300;

/// CPU 1 unmaps lazily (arming its own flush timer) and then stays busy with IRQs masked,
/// so its timer cannot run. CPU 0's lazy unmap meanwhile arms CPU 0's timer, which
/// invalidates both long before CPU 1 is free again.
fn lazy_flush_despite_a_busy_cpu(c: &Ctx) -> Outcome {
    if let Err(o) = need_wfi_secondaries(c) {
        return o;
    }
    if dma::strict() {
        return Outcome::Skip("strict mode: no deferred unmaps (see the virt-smp2-lazy boot)".into());
    }
    let edus = EDUS.lock();
    let Some(e) = edus.first() else { return Outcome::Skip("no edu".into()) };
    let Path::Iommu(did) = dma::path(&e.dma) else { return Outcome::Skip("device not translated".into()) };
    let (a, b) = match (Guarded::new(4096), Guarded::new(4096)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Outcome::Fail("no memory".into()),
    };
    ensure!(wait_until(200, || !dma::flush_timer_armed()), "the flush timer stays armed");
    let unmapped = Arc::new(AtomicU64::new(0));
    let (dev, pa, u2) = (e.dma.clone(), a.pa, unmapped.clone());
    let job = Box::new(move || {
        let r = dma::map_single(&dev, pa, 4096, Direction::ToDevice)
            .and_then(|d| dma::unmap_single(&dev, d, 4096, Direction::ToDevice));
        u2.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
        crate::arch::timer::delay_us(BUSY_MS * 1000);
    });
    let t = match smp::run_on(1, job) {
        Ok(t) => t,
        Err(x) => return Outcome::Fail(format!("{x}")),
    };
    let r = (|| -> Result<u64, alloc::string::String> {
        if !wait_until(1000, || unmapped.load(Ordering::SeqCst) != 0) || unmapped.load(Ordering::SeqCst) != 1 {
            return Err("CPU 1's lazy map+unmap did not complete".into());
        }
        let t0 = crate::arch::timer::ticks();
        let d = dma::map_single(&e.dma, b.pa, 4096, Direction::ToDevice).map_err(|x| format!("map: {x}"))?;
        dma::unmap_single(&e.dma, d, 4096, Direction::ToDevice).map_err(|x| format!("unmap: {x}"))?;
        let stale = || IOMMU.lock().lazy_tlb_stale(did).unwrap_or(true);
        if !wait_until(BUSY_MS / 2, || !stale()) {
            return Err(format!("deferred unmaps not invalidated within {} ms while CPU 1 is busy", BUSY_MS / 2));
        }
        Ok(crate::arch::timer::ticks_to_us(crate::arch::timer::ticks() - t0))
    })();
    let waited = smp::wait(1, t, BUSY_MS + 5_000);
    let us = match r {
        Ok(us) => us,
        Err(m) => return Outcome::Fail(m),
    };
    if let Err(x) = waited {
        return Outcome::Fail(format!("{x}"));
    }
    crate::kprintln!("smp: both CPUs' deferred unmaps invalidated {us} us after CPU 0's, CPU 1 busy for {BUSY_MS} ms");
    Outcome::Pass
}

/// A lazy unmap on a secondary arms that CPU's flush timer, and the secondary, idle in
/// WFI, takes it and invalidates: the boot CPU waits with IRQs masked meanwhile, so the
/// flush cannot be its own.
fn lazy_flush_timer_on_secondary(c: &Ctx) -> Outcome {
    if let Err(o) = need_wfi_secondaries(c) {
        return o;
    }
    if dma::strict() {
        return Outcome::Skip("strict mode: no deferred unmaps (see the virt-smp2-lazy boot)".into());
    }
    if !dma::flush_timer_up() {
        return Outcome::Fail("lazy mode without its flush timer although the GIC is up".into());
    }
    let edus = EDUS.lock();
    let Some(e) = edus.first() else { return Outcome::Skip("no edu".into()) };
    let Path::Iommu(did) = dma::path(&e.dma) else { return Outcome::Skip("device not translated".into()) };
    let buf = match Guarded::new(4096) {
        Some(b) => b,
        None => return Outcome::Fail("no memory".into()),
    };
    // Whatever earlier work armed runs out first: then CPU 1's unmap is the one that arms.
    ensure!(wait_until(200, || !dma::flush_timer_armed()), "the flush timer stays armed");
    let before = dma::flush_timer_stats().flushes;
    let (dev, pa) = (e.dma.clone(), buf.pa);
    let result = Arc::new(spin::Mutex::new(None));
    let r2 = result.clone();
    let job = Box::new(move || {
        let r = dma::map_single(&dev, pa, 4096, Direction::ToDevice)
            .and_then(|d| dma::unmap_single(&dev, d, 4096, Direction::ToDevice));
        *r2.lock() = Some((r, dma::flush_timer_armed()));
    });
    let t = match smp::run_on(1, job) {
        Ok(t) => t,
        Err(x) => return Outcome::Fail(format!("{x}")),
    };
    if let Err(x) = smp::wait(1, t, 5_000) {
        return Outcome::Fail(format!("{x}"));
    }
    let (r, armed) = match result.lock().take() {
        Some(v) => v,
        None => return Outcome::Fail("the job left no result".into()),
    };
    if let Err(x) = r {
        return Outcome::Fail(format!("map/unmap on CPU 1: {x}"));
    }
    ensure!(armed, "the lazy unmap on CPU 1 did not arm the flush timer");
    let stale = || IOMMU.lock().lazy_tlb_stale(did).unwrap_or(true);
    let done = crate::arch::without_irqs(|| wait_until(200, || !stale()));
    ensure!(done, "the deferred unmap is not invalidated 200 ms after CPU 1 queued it");
    ensure!(dma::flush_timer_stats().flushes > before, "invalidated, but no flush-timer run was counted");
    Outcome::Pass
}

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

/// Secondaries must be online and woken by SGI whenever the GIC is up; skip otherwise.
fn need_wfi_secondaries(c: &Ctx) -> Result<Vec<usize>, Outcome> {
    if c.platform.cpus.len() < 2 {
        return Err(Outcome::Skip("one CPU in this machine (QEMU -smp 1)".into()));
    }
    if !crate::irq::ready() {
        return Err(Outcome::Skip("no interrupts: secondaries wait in WFE".into()));
    }
    let cpus: Vec<usize> = (1..smp::MAX_CPUS).filter(|&c| smp::is_online(c)).collect();
    if cpus.is_empty() {
        return Err(Outcome::Fail("no secondary CPU online".into()));
    }
    if let Some(&c) = cpus.iter().find(|&&c| !smp::sleeps_in_wfi(c)) {
        return Err(Outcome::Fail(format!("CPU {c} waits in WFE although the GIC is up: {:?}", smp::idle_summary())));
    }
    Ok(cpus)
}

/// How long an idle CPU is watched, and how many wake-ups it may have meanwhile
/// (spurious WFI wake-ups are allowed; a WFE loop under QEMU TCG wakes thousands of times).
const IDLE_WATCH_MS: u64 = 50;
const IDLE_WAKES_MAX: u64 = 3;

/// An idle secondary sleeps: over 50 ms its idle loop wakes (almost) never, yet a job
/// posted to it is picked up at once (the wake-up SGI), every time.
fn idle_secondaries_sleep(c: &Ctx) -> Outcome {
    let cpus = match need_wfi_secondaries(c) {
        Ok(c) => c,
        Err(o) => return o,
    };
    for cpu in cpus {
        // Let it settle after whatever it ran last.
        if let Err(e) = smp::run_on(cpu, Box::new(|| {})).and_then(|t| smp::wait(cpu, t, 1000)) {
            return Outcome::Fail(format!("{e}"));
        }
        crate::arch::timer::delay_us(1000);
        let w0 = smp::idle_wakes(cpu);
        crate::arch::timer::delay_us(IDLE_WATCH_MS * 1000);
        let idle = smp::idle_wakes(cpu) - w0;
        ensure!(idle <= IDLE_WAKES_MAX, "CPU {cpu} woke {idle} times in {IDLE_WATCH_MS} ms with nothing to do");
        // Wake-up latency: post an empty job, wait for it, 50 times.
        let mut lat = Vec::new();
        for _ in 0..50 {
            let t0 = crate::arch::timer::ticks();
            match smp::run_on(cpu, Box::new(|| {})).and_then(|t| smp::wait(cpu, t, 100)) {
                Ok(()) => lat.push(crate::arch::timer::ticks_to_us(crate::arch::timer::ticks() - t0)),
                Err(e) => return Outcome::Fail(format!("job {} not picked up: {e}", lat.len())),
            }
        }
        lat.sort_unstable();
        crate::kprintln!(
            "smp: CPU {cpu} idle {IDLE_WATCH_MS} ms: {idle} wake-ups; job wake-up latency median {} us, max {} us",
            lat[lat.len() / 2],
            lat[lat.len() - 1]
        );
    }
    Outcome::Pass
}

/// An SGI no one else uses (0 is the wake-up SGI).
const SGI_PING: u32 = 7;
static PINGED_BY: AtomicU64 = AtomicU64::new(u64::MAX);
static PINGS: AtomicU64 = AtomicU64::new(0);

fn ping_handler(_: u32) {
    PINGED_BY.store(crate::arch::mpidr() & crate::irq::gic::MPIDR_AFF_MASK, Ordering::SeqCst);
    PINGS.fetch_add(1, Ordering::SeqCst);
}

/// An SGI sent to a CPU by affinity is taken by that CPU (its handler sees that CPU's
/// MPIDR), exactly once; sent to the boot CPU it is taken there; disabled on the
/// target it stays pending and is taken once enabled again.
fn sgi_reaches_its_target(c: &Ctx) -> Outcome {
    let cpus = match need_wfi_secondaries(c) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let boot = crate::arch::mpidr() & crate::irq::gic::MPIDR_AFF_MASK;
    let mut targets: Vec<u64> = cpus.iter().map(|&c| smp::mpidr_of(c)).collect();
    targets.push(boot);
    if let Err(e) = crate::irq::register(SGI_PING, ping_handler) {
        return Outcome::Fail(format!("register SGI {SGI_PING}: {e}"));
    }
    let r = (|| -> Result<(), alloc::string::String> {
        for &m in &targets {
            crate::irq::set_private_enabled(m, SGI_PING, true).map_err(|e| format!("enable on {m:#x}: {e}"))?;
        }
        let wait_ping = |n: u64| {
            let d = crate::arch::timer::Deadline::after_ms(50);
            while PINGS.load(Ordering::SeqCst) < n && !d.expired() {
                core::hint::spin_loop();
            }
            crate::arch::timer::delay_us(1000);
        };
        for &m in &targets {
            let n0 = PINGS.load(Ordering::SeqCst);
            PINGED_BY.store(u64::MAX, Ordering::SeqCst);
            crate::irq::send_sgi(SGI_PING, m).map_err(|e| format!("send to {m:#x}: {e}"))?;
            wait_ping(n0 + 1);
            let (n, by) = (PINGS.load(Ordering::SeqCst) - n0, PINGED_BY.load(Ordering::SeqCst));
            if n != 1 || by != m {
                return Err(format!("SGI {SGI_PING} sent to {m:#x}: taken {n} time(s), last by {by:#x}"));
            }
        }
        // Disabled on the first secondary: stays pending there, never taken.
        let m = targets[0];
        crate::irq::set_private_enabled(m, SGI_PING, false).map_err(|e| format!("disable on {m:#x}: {e}"))?;
        let n0 = PINGS.load(Ordering::SeqCst);
        crate::irq::send_sgi(SGI_PING, m).map_err(|e| format!("send to {m:#x}: {e}"))?;
        wait_ping(n0 + 1);
        let n = PINGS.load(Ordering::SeqCst) - n0;
        if n != 0 {
            return Err(format!("SGI {SGI_PING} taken {n} time(s) while disabled on {m:#x}"));
        }
        // It stayed pending there: enabled again, it ends that CPU's WFI and is taken, once.
        crate::irq::set_private_enabled(m, SGI_PING, true).map_err(|e| format!("enable on {m:#x}: {e}"))?;
        wait_ping(n0 + 1);
        let (n, by) = (PINGS.load(Ordering::SeqCst) - n0, PINGED_BY.load(Ordering::SeqCst));
        if n != 1 || by != m {
            return Err(format!("pending SGI {SGI_PING} enabled on {m:#x}: taken {n} time(s), last by {by:#x}"));
        }
        Ok(())
    })();
    for &m in &targets {
        let _ = crate::irq::set_private_enabled(m, SGI_PING, false);
    }
    let _ = crate::irq::unregister(SGI_PING);
    match r {
        Ok(()) => {
            crate::kprintln!("smp: SGI {SGI_PING} reached each of {} CPU(s) by affinity, only there", targets.len());
            Outcome::Pass
        }
        Err(m) => Outcome::Fail(m),
    }
}
