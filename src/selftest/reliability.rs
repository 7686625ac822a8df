//! Reliability suite: faults the driver must survive — event queue overflow, a
//! CMD_SYNC that never completes, DMA API misuse — each answered with a typed error
//! or a count, never a hang or a panic, and the machine keeps working afterwards.

use super::{Ctx, Test};
use crate::dma::{self, Direction, DmaError, Path};
use crate::drivers::{DmaEngine, EDUS};
use crate::ensure;
use crate::harness::Outcome;
use crate::iommu::domain::{DomainType, IOMMU, IommuError, Stage};
use crate::iommu::iova::IovaError;
use crate::iommu::registry;
use crate::iommu::smmuv3::cmd::Command;
use crate::iommu::smmuv3::device::SmmuError;
use crate::mm::frames;
use alloc::format;

pub static TESTS: &[Test] = &[
    Test { suite: "reliability", name: "evtq_overflow_recovered", run: evtq_overflow },
    Test { suite: "reliability", name: "sync_timeout_is_an_error", run: sync_timeout },
    Test { suite: "reliability", name: "iova_exhaustion_is_an_error", run: iova_exhaustion },
    Test { suite: "reliability", name: "misuse_typed_errors", run: misuse },
    Test { suite: "reliability", name: "never_attached_cannot_dma", run: never_attached },
];

/// More faulting accesses than the event queue holds: the overflow is detected and
/// counted, and a later fault is still reported.
fn evtq_overflow(_: &Ctx) -> Outcome {
    let mut edus = EDUS.lock();
    let Some(e) = edus.first_mut() else { return Outcome::Skip("no edu".into()) };
    let Path::Iommu(did) = dma::path(&e.dma) else { return Outcome::Skip("device not translated".into()) };
    let Some(log2) = registry::with_smmu(0, |s| s.evtq_log2()) else { return Outcome::Skip("no SMMU".into()) };
    let entries = 1usize << log2;
    // Each faulting 4-byte access records one event (QEMU): enough DMAs to overflow.
    let per_dma = e.edu.max_len() / 4;
    let dmas = entries / per_dma + 2;
    if dmas > 8 {
        return Outcome::Skip(format!("event queue of {entries} entries takes too long to overflow"));
    }
    let iova = {
        let mut io = IOMMU.lock();
        let d = match io.domain(did) {
            Ok(d) => d,
            Err(x) => return Outcome::Fail(format!("{x}")),
        };
        match d.iova.as_mut().map(|a| a.alloc(0x1000, e.dma.mask)) {
            Some(Ok(i)) => i,
            _ => return Outcome::Fail("no IOVA".into()),
        }
    };
    // The event queue interrupt would drain between DMAs: hold it off so events pile up.
    let quiet = crate::iommu::irq::pause_evtq(0);
    registry::with_smmu(0, |s| s.drain_events());
    let before = registry::with_smmu(0, |s| s.stats.evtq_overflows).unwrap_or(0);
    // With IRQs masked the event interrupt cannot drain the queue meanwhile.
    let (dma_result, got, after) = crate::arch::without_irqs(|| {
        let mut r = Ok(());
        for _ in 0..dmas {
            r = r.and(e.edu.write_mem(iova, 0, e.edu.max_len()));
        }
        let got = registry::with_smmu(0, |s| s.drain_events()).unwrap_or(0);
        (r, got, registry::with_smmu(0, |s| s.stats.evtq_overflows).unwrap_or(0))
    });
    if let Err(x) = dma_result {
        return Outcome::Fail(format!("DMA: {x}"));
    }
    drop(quiet);
    // And a fault after the overflow is reported again.
    let r = e.edu.write_mem(iova, 0, 4);
    let later = registry::with_smmu(0, |s| s.take_events()).unwrap_or_default();
    {
        let mut io = IOMMU.lock();
        if let Ok(d) = io.domain(did)
            && let Some(a) = d.iova.as_mut()
        {
            let _ = a.free(iova);
        }
    }
    if let Err(x) = r {
        return Outcome::Fail(format!("DMA: {x}"));
    }
    ensure!(after > before, "{} faulting accesses into a {entries}-entry queue: no overflow detected", dmas * per_dma);
    ensure!(got <= entries, "read {got} events from a {entries}-entry queue");
    ensure!(
        later.iter().any(|x| x.input_addr == Some(iova)),
        "no event for a fault after the overflow ({} events)",
        later.len()
    );
    Outcome::Pass
}

/// With command consumption stopped, CMD_SYNC times out with an error naming the
/// queue state; after restarting, the queue drains and commands work again.
fn sync_timeout(_: &Ctx) -> Outcome {
    let r = registry::with_smmu(0, |s| {
        if let Err(x) = s.set_cmdq_enabled(false) {
            return Outcome::Fail(format!("disable CMDQ: {x}"));
        }
        let r = s.run(&[Command::TlbiNsnhAll]);
        let restart = s.set_cmdq_enabled(true);
        let after = s.run(&[Command::TlbiNsnhAll]);
        ensure!(matches!(r, Err(SmmuError::SyncTimeout { .. })), "stalled CMD_SYNC gave {r:?}");
        ensure!(restart.is_ok(), "restart: {restart:?}");
        ensure!(after.is_ok(), "queue did not recover: {after:?}");
        let (p, c) = s.cmdq_indices();
        ensure!(p == c, "queue not drained after recovery (PROD {p:#x} CONS {c:#x})");
        Outcome::Pass
    });
    r.unwrap_or(Outcome::Skip("no SMMU".into()))
}

/// A device whose DMA mask leaves room for one page: the second mapping fails with
/// an exhaustion error, nothing panics, and freeing makes room again.
fn iova_exhaustion(_: &Ctx) -> Outcome {
    let edus = EDUS.lock();
    let Some(e) = edus.first() else { return Outcome::Skip("no edu".into()) };
    let Some(m) = e.dma.master else { return Outcome::Skip("not behind an SMMU".into()) };
    let (smmu, home) = {
        let io = IOMMU.lock();
        (io.masters[m].smmu, io.domain_of(m))
    };
    let did = match IOMMU.lock().domain_alloc(smmu, DomainType::Dma, Stage::S1) {
        Ok(d) => d,
        Err(x) => return Outcome::Fail(format!("{x}")),
    };
    if let Err(x) = IOMMU.lock().attach(m, did) {
        return Outcome::Fail(format!("{x}"));
    }
    let mut tiny = e.dma.clone();
    tiny.mask = 0x1fff; // IOVA space [0x1000, 0x1fff]: one page
    let Some(pa) = frames::alloc_zeroed(1) else { return Outcome::Fail("no memory".into()) };
    let first = dma::map_single(&tiny, pa, 4096, Direction::ToDevice);
    let second = dma::map_single(&tiny, pa, 4096, Direction::ToDevice);
    let freed = first.as_ref().map(|&d| dma::unmap_single(&tiny, d, 4096, Direction::ToDevice));
    // In lazy mode (iommu.strict=0) the IOVA comes back only after the batched
    // invalidation; flush so both modes can reuse it.
    let flushed = dma::flush(&tiny);
    let third = dma::map_single(&tiny, pa, 4096, Direction::ToDevice);
    if let Ok(d) = third {
        let _ = dma::unmap_single(&tiny, d, 4096, Direction::ToDevice);
    }
    frames::free(pa, 1);
    let restore = home.map(|h| IOMMU.lock().attach(m, h));
    let freed_dom = IOMMU.lock().domain_free(did);
    ensure!(first == Ok(0x1000), "first mapping gave {first:?}, expected IOVA 0x1000");
    ensure!(
        matches!(second, Err(DmaError::Iommu(IommuError::Iova(IovaError::Exhausted { .. })))),
        "second mapping gave {second:?}, expected IOVA exhaustion"
    );
    ensure!(matches!(freed, Ok(Ok(()))), "unmap: {freed:?}");
    ensure!(flushed.is_ok(), "flush: {flushed:?}");
    ensure!(third.is_ok(), "after freeing, mapping failed: {third:?}");
    ensure!(!matches!(restore, Some(Err(_))), "re-attach: {restore:?}");
    ensure!(freed_dom.is_ok(), "domain_free: {freed_dom:?}");
    Outcome::Pass
}

/// DMA API misuse, one by one: each a typed error.
fn misuse(_: &Ctx) -> Outcome {
    let edus = EDUS.lock();
    let Some(e) = edus.first() else { return Outcome::Skip("no edu".into()) };
    let Some(pa) = frames::alloc_zeroed(1) else { return Outcome::Fail("no memory".into()) };
    let zero = dma::map_single(&e.dma, pa, 0, Direction::ToDevice);
    let zero_unmap = dma::unmap_single(&e.dma, 0x1000, 0, Direction::ToDevice);
    let coherent0 = dma::alloc_coherent(&e.dma, 0);
    let translated = matches!(dma::path(&e.dma), Path::Iommu(_));
    let (unknown, double) = if translated {
        let d = match dma::map_single(&e.dma, pa, 4096, Direction::ToDevice) {
            Ok(d) => d,
            Err(x) => return Outcome::Fail(format!("map: {x}")),
        };
        let first = dma::unmap_single(&e.dma, d, 4096, Direction::ToDevice);
        let double = dma::unmap_single(&e.dma, d, 4096, Direction::ToDevice);
        ensure!(first.is_ok(), "unmap: {first:?}");
        (Some(dma::unmap_single(&e.dma, 0x0abc_0000, 4096, Direction::ToDevice)), Some(double))
    } else {
        (None, None)
    };
    frames::free(pa, 1);
    ensure!(zero == Err(DmaError::ZeroSize), "map of size 0 gave {zero:?}");
    ensure!(zero_unmap == Err(DmaError::ZeroSize), "unmap of size 0 gave {zero_unmap:?}");
    ensure!(coherent0 == Err(DmaError::ZeroSize), "alloc_coherent(0) gave {coherent0:?}");
    if let Some(u) = unknown {
        ensure!(matches!(u, Err(DmaError::NotMapped { .. })), "unmap of an unknown IOVA gave {u:?}");
    }
    if let Some(d) = double {
        ensure!(matches!(d, Err(DmaError::NotMapped { .. })), "double unmap gave {d:?}");
    }
    Outcome::Pass
}

/// Default deny: a device no driver ever attached (`edu.unbound=N`), bus mastering
/// on, aims at physical RAM and at low addresses: nothing is read, nothing written.
fn never_attached(_: &Ctx) -> Outcome {
    let mut unbound = crate::drivers::UNBOUND_EDUS.lock();
    if unbound.is_empty() {
        return Outcome::Skip("no unbound device (boot with edu.unbound=N)".into());
    }
    if registry::count() == 0 {
        return Outcome::Skip("no SMMU: nothing denies".into());
    }
    let (Some(secret), Some(target)) = (frames::alloc_zeroed(1), frames::alloc_zeroed(1)) else {
        return Outcome::Fail("no memory".into());
    };
    // SAFETY: both pages were just allocated to this test.
    let (s, t) = unsafe {
        (
            core::slice::from_raw_parts_mut(secret as *mut u8, 4096),
            core::slice::from_raw_parts_mut(target as *mut u8, 4096),
        )
    };
    for (i, b) in s.iter_mut().enumerate() {
        *b = (i as u8) ^ 0x3c;
    }
    t.fill(0x11);
    let mut result = Outcome::Pass;
    for (e, f) in unbound.iter_mut() {
        let sid = f.stream.map(|x| x.1);
        let ste = sid.and_then(|sid| registry::with_smmu(0, |d| d.read_ste(sid).ok()).flatten());
        let r = e.read_mem(secret, 0, 4096).and(e.write_mem(target, 0, 4096)).and(e.write_mem(0x1000, 0, 64));
        if let Err(x) = r {
            result = Outcome::Fail(format!("DMA: {x}"));
            break;
        }
        if t.iter().any(|&b| b != 0x11) {
            result = Outcome::Fail(format!("never-attached device (SID {sid:x?}, STE {ste:x?}) wrote RAM"));
            break;
        }
        if let Some(ste) = ste
            && ste[0] & 0xf != 1
        {
            result = Outcome::Fail(format!("SID {sid:x?}: STE {:#x} is not the abort STE", ste[0]));
            break;
        }
    }
    let _ = registry::with_smmu(0, |d| d.take_events());
    frames::free(secret, 1);
    frames::free(target, 1);
    result
}
