//! DMA suite: real DMA from QEMU's `edu` engine through the DMA API and the SMMU,
//! every byte checked, canary pages around every buffer. Translation, IOTLB
//! invalidation, faults, bypass/abort/global bypass, stage 2, nested, isolation,
//! groups, attach/detach, DMA masks and API misuse.

use super::{Ctx, Test, wait_until};
use crate::dma::{self, Direction, DmaDevice, DmaError, Path};
use crate::drivers::{DmaEngine, EDUS, EduDev};
use crate::ensure;
use crate::harness::Outcome;
use crate::iommu::domain::{DomainId, DomainType, IOMMU, Stage};
use crate::iommu::io_pgtable::Prot;
use crate::iommu::registry;
use crate::iommu::smmuv3::event::{Event, EventKind};
use crate::mm::frames;
use alloc::format;
use alloc::vec::Vec;

pub static TESTS: &[Test] = &[
    Test { suite: "dma", name: "translate_s1", run: translate_s1 },
    Test { suite: "dma", name: "iotlb_invalidated_on_remap", run: iotlb_invalidated },
    Test { suite: "dma", name: "stale_iotlb_without_invalidation", run: stale_without_tlbi },
    Test { suite: "dma", name: "fault_unmapped_write", run: fault_unmapped_write },
    Test { suite: "dma", name: "fault_unmapped_read", run: fault_unmapped_read },
    Test { suite: "dma", name: "fault_permission", run: fault_permission },
    Test { suite: "dma", name: "identity_domain_bypass", run: identity_bypass },
    Test { suite: "dma", name: "blocked_domain", run: blocked_domain },
    Test { suite: "dma", name: "global_bypass", run: global_bypass },
    Test { suite: "dma", name: "stage2_unmanaged", run: stage2_unmanaged },
    Test { suite: "dma", name: "nested", run: nested },
    Test { suite: "dma", name: "isolation", run: isolation },
    Test { suite: "dma", name: "group_shares_domain", run: group_shares },
    Test { suite: "dma", name: "attach_detach", run: attach_detach },
    Test { suite: "dma", name: "dma_mask", run: dma_mask },
    Test { suite: "dma", name: "api_misuse", run: api_misuse },
    Test { suite: "dma", name: "lazy_unmap_batches", run: lazy_batches },
    Test { suite: "dma", name: "lazy_batch_frees_detached_tables", run: lazy_batch_frees_detached_tables },
    Test { suite: "dma", name: "lazy_flush_timeout", run: lazy_flush_timeout },
    Test { suite: "dma", name: "lazy_identical_remap", run: lazy_identical_remap },
    Test { suite: "dma", name: "unmap_sg_one_sync", run: unmap_sg_one_sync },
    Test { suite: "dma", name: "direct_path", run: direct_path },
    Test { suite: "dma", name: "direct_map_from_boot", run: direct_map_from_boot },
    Test { suite: "dma", name: "granule_16k", run: granule_16k },
    Test { suite: "dma", name: "granule_64k", run: granule_64k },
    Test { suite: "dma", name: "default_domain_granule", run: default_domain_granule },
];

const CANARY: u8 = 0xca;
const PAGE: usize = 4096;

/// A buffer of whole pages with a canary page on each side.
pub(super) struct Guarded {
    base: u64,
    pages: usize,
    pub pa: u64,
    pub len: usize,
}

impl Guarded {
    pub(super) fn new(len: usize) -> Option<Guarded> {
        let inner = len.div_ceil(PAGE);
        let pages = inner + 2;
        let base = frames::alloc_zeroed(pages)?;
        let g = Guarded { base, pages, pa: base + PAGE as u64, len };
        g.write_each(g.guard(0), PAGE, |_| CANARY);
        g.write_each(g.guard(1), PAGE, |_| CANARY);
        Some(g)
    }
    fn guard(&self, which: usize) -> u64 {
        if which == 0 { self.base } else { self.pa + (self.len.div_ceil(PAGE) * PAGE) as u64 }
    }
    /// Write `f(i)` to byte i of [at, at+len), which lies inside this allocation.
    fn write_each(&self, at: u64, len: usize, f: impl Fn(usize) -> u8) {
        for i in 0..len {
            // SAFETY: callers pass ranges inside this buffer's frames, which the test
            // owns; the device may write them too, hence volatile.
            unsafe { core::ptr::write_volatile((at as *mut u8).add(i), f(i)) };
        }
    }
    fn read_at(&self, at: u64, len: usize) -> &[u8] {
        // SAFETY: [at, at+len) is inside this buffer's frames (guards or data).
        unsafe { core::slice::from_raw_parts(at as *const u8, len) }
    }
    pub(super) fn bytes(&self) -> &[u8] {
        self.read_at(self.pa, self.len)
    }
    fn set_all(&self, v: u8) {
        self.write_each(self.pa, self.len, |_| v);
    }
    pub(super) fn fill(&self, seed: u8) {
        self.write_each(self.pa, self.len, |i| {
            seed.wrapping_add((i as u8).wrapping_mul(7)).wrapping_add((i >> 8) as u8)
        });
    }
    pub(super) fn same_as(&self, other: &Guarded) -> Option<usize> {
        self.bytes().iter().zip(other.bytes().iter()).position(|(a, b)| a != b)
    }
    fn all(&self, v: u8) -> bool {
        self.bytes().iter().all(|&b| b == v)
    }
    pub(super) fn canaries_intact(&self) -> bool {
        self.read_at(self.guard(0), PAGE).iter().all(|&b| b == CANARY)
            && self.read_at(self.guard(1), PAGE).iter().all(|&b| b == CANARY)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        frames::free(self.base, self.pages);
    }
}

/// Run `f` with edu number `i`, or skip when the machine has fewer.
fn with_edu(i: usize, f: impl FnOnce(&mut EduDev) -> Outcome) -> Outcome {
    let mut edus = EDUS.lock();
    match edus.get_mut(i) {
        Some(e) => f(e),
        None => Outcome::Skip(format!("needs {} edu device(s), found {}", i + 1, edus.len())),
    }
}

fn need_iommu(dev: &DmaDevice) -> Option<Outcome> {
    if dev.master.is_none() {
        return Some(Outcome::Skip("device is not behind an SMMU".into()));
    }
    None
}

/// Run `f` with the device translated: in its default domain if that is a DMA
/// domain, else (iommu.passthrough=1) in a DMA domain attached for the test, which
/// is what pass-through allows: translation turned on for one device.
fn translated(e: &mut EduDev, f: impl FnOnce(&mut EduDev) -> Outcome) -> Outcome {
    if let Some(o) = need_iommu(&e.dma) {
        return o;
    }
    match dma::path(&e.dma) {
        Path::Iommu(_) => f(e),
        _ => in_domain(e, DomainType::Dma, Stage::S1, |e, _| f(e)),
    }
}

fn sid_of(e: &EduDev) -> u32 {
    e.func.stream.map(|s| s.1).unwrap_or(u32::MAX)
}

fn events() -> Vec<Event> {
    registry::with_smmu(0, |s| s.take_events()).unwrap_or_default()
}

fn domain_of(dev: &DmaDevice) -> Option<DomainId> {
    IOMMU.lock().domain_of(dev.master?)
}

/// Copy `len` bytes src -> engine -> dst using device addresses.
fn copy(e: &mut EduDev, src: u64, dst: u64, len: usize) -> Result<(), crate::drivers::EngineError> {
    e.edu.read_mem(src, 0, len)?;
    e.edu.write_mem(dst, 0, len)
}

/// An IOVA page of the device's DMA domain, reserved in its allocator, not mapped.
fn spare_iova(did: DomainId, mask: u64) -> Option<u64> {
    let mut io = IOMMU.lock();
    io.domain(did).ok()?.iova.as_mut()?.alloc(PAGE as u64, mask).ok()
}

fn release_iova(did: DomainId, iova: u64) {
    let mut io = IOMMU.lock();
    if let Ok(d) = io.domain(did)
        && let Some(a) = d.iova.as_mut()
    {
        let _ = a.free(iova);
    }
}

fn translate_s1(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let _ = events();
            let src = some!(Guarded::new(PAGE), "no memory");
            let dst = some!(Guarded::new(PAGE), "no memory");
            src.fill(0x5a);
            let s = tri!(dma::map_single(&e.dma, src.pa, PAGE, Direction::ToDevice), "map src");
            let d = tri!(dma::map_single(&e.dma, dst.pa, PAGE, Direction::FromDevice), "map dst");
            ensure!(s != src.pa && d != dst.pa, "IOVAs equal physical addresses ({s:#x}, {d:#x})");
            tri!(copy(e, s, d, PAGE), "DMA");
            tri!(dma::unmap_single(&e.dma, s, PAGE, Direction::ToDevice), "unmap src");
            tri!(dma::unmap_single(&e.dma, d, PAGE, Direction::FromDevice), "unmap dst");
            if let Some(i) = dst.same_as(&src) {
                return Outcome::Fail(format!("byte {i} differs after DMA through IOVAs {s:#x} -> {d:#x}"));
            }
            ensure!(src.canaries_intact() && dst.canaries_intact(), "canary pages changed");
            let ev = events();
            ensure!(ev.is_empty(), "unexpected events: {}", ev[0]);
            Outcome::Pass
        })
    })
}

/// Map IOVA -> A, DMA; remap IOVA -> B; DMA again must see B. One page of the domain's
/// granule each.
fn remap_round(e: &mut EduDev, invalidate: bool) -> Result<(u8, u8), Outcome> {
    let did = domain_of(&e.dma).ok_or(Outcome::Fail("no domain".into()))?;
    let g = IOMMU.lock().domain(did).map_err(|x| Outcome::Fail(format!("{x}")))?.granule.size();
    // One granule each, aligned to it (the frame allocator is a buddy allocator).
    let granule_page = |v: u8| {
        let mut p = frames::FrameBuf::alloc(g as usize).ok_or(Outcome::Fail("no memory".into()))?;
        p.as_mut_slice().fill(v);
        Ok::<_, Outcome>(p)
    };
    let (a, b) = (granule_page(0x11)?, granule_page(0x22)?);
    let out = Guarded::new(PAGE).ok_or(Outcome::Fail("no memory".into()))?;
    let iova = spare_iova(did, e.dma.mask).ok_or(Outcome::Fail("no IOVA".into()))?;
    let o = dma::map_single(&e.dma, out.pa, 64, Direction::FromDevice).map_err(|x| Outcome::Fail(format!("{x}")))?;
    let run = |e: &mut EduDev| -> Result<u8, Outcome> {
        copy(e, iova, o, 64).map_err(|x| Outcome::Fail(format!("DMA: {x}")))?;
        Ok(out.bytes()[0])
    };
    let r = (|| {
        IOMMU.lock().map(did, iova, a.pa, g, Prot::RO).map_err(|x| Outcome::Fail(format!("map A: {x}")))?;
        let first = run(e)?;
        {
            let mut io = IOMMU.lock();
            if invalidate {
                io.unmap(did, iova, g).map_err(|x| Outcome::Fail(format!("unmap: {x}")))?;
            } else {
                io.unmap_skip_tlbi(did, iova, g).map_err(|x| Outcome::Fail(format!("unmap: {x}")))?;
            }
            io.map(did, iova, b.pa, g, Prot::RO).map_err(|x| Outcome::Fail(format!("map B: {x}")))?;
        }
        let second = run(e)?;
        IOMMU.lock().unmap(did, iova, g).map_err(|x| Outcome::Fail(format!("unmap B: {x}")))?;
        Ok((first, second))
    })();
    let _ = dma::unmap_single(&e.dma, o, 64, Direction::FromDevice);
    release_iova(did, iova);
    r
}

fn iotlb_invalidated(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| match remap_round(e, true) {
            Ok((0x11, 0x22)) => Outcome::Pass,
            Ok((x, y)) => {
                Outcome::Fail(format!("read {x:#x} then {y:#x}; expected 0x11 then 0x22 (stale IOTLB entry?)"))
            }
            Err(o) => o,
        })
    })
}

/// Negative control: without TLBI the SMMU (QEMU caches translations too) keeps
/// using the old page, which proves the test above can fail.
fn stale_without_tlbi(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let r = remap_round(e, false);
            // Clean up whatever the skipped invalidation left cached.
            let _ = registry::with_smmu(0, |s| s.run(&[crate::iommu::smmuv3::cmd::Command::TlbiNsnhAll]));
            match r {
                Ok((0x11, 0x11)) => Outcome::Pass,
                Ok((0x11, 0x22)) => Outcome::Skip("this SMMU did not cache the translation".into()),
                Ok((x, y)) => Outcome::Fail(format!("read {x:#x} then {y:#x}")),
                Err(o) => o,
            }
        })
    })
}

/// Check that `ev` describes exactly one faulting DMA: QEMU records one event per
/// faulting access (a 64-byte DMA gives 16), so every event must agree on the kind,
/// StreamID, page and direction, and the first must name the DMA's start address.
fn one_fault(ev: &[Event], kind: EventKind, sid: u32, iova: u64, read: bool) -> Result<(), alloc::string::String> {
    let Some(first) = ev.first() else { return Err("no event for a DMA that must fault".into()) };
    if first.input_addr != Some(iova) {
        return Err(format!("first event {first} does not name IOVA {iova:#x}"));
    }
    for e in ev {
        if e.kind != kind || e.sid != sid || e.input_addr.map(|a| a & !0xfff) != Some(iova & !0xfff) || e.read != read {
            return Err(format!(
                "event {e} is not {kind:?} sid={sid:#x} in page {:#x} {}",
                iova & !0xfff,
                if read { "read" } else { "write" }
            ));
        }
    }
    Ok(())
}

/// Length of the DMAs that are meant to fault: small, so their events fit the queue.
const FAULT_LEN: usize = 64;

fn fault_unmapped_write(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let did = some!(domain_of(&e.dma), "no domain");
            let iova = some!(spare_iova(did, e.dma.mask), "no IOVA");
            let _ = events();
            let r = e.edu.write_mem(iova, 0, FAULT_LEN);
            let ev = events();
            release_iova(did, iova);
            tri!(r, "DMA");
            if let Err(m) = one_fault(&ev, EventKind::FTranslation, sid_of(e), iova, false) {
                return Outcome::Fail(m);
            }
            ensure!(!ev[0].stage2, "reported as a stage-2 fault");
            Outcome::Pass
        })
    })
}

fn fault_unmapped_read(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let did = some!(domain_of(&e.dma), "no domain");
            let iova = some!(spare_iova(did, e.dma.mask), "no IOVA");
            let _ = events();
            let r = e.edu.read_mem(iova, 0, FAULT_LEN);
            let ev = events();
            release_iova(did, iova);
            tri!(r, "DMA");
            match one_fault(&ev, EventKind::FTranslation, sid_of(e), iova, true) {
                Ok(()) => Outcome::Pass,
                Err(m) => Outcome::Fail(m),
            }
        })
    })
}

fn fault_permission(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let buf = some!(Guarded::new(PAGE), "no memory");
            buf.fill(0x33);
            // ToDevice = read-only for the device.
            let iova = tri!(dma::map_single(&e.dma, buf.pa, PAGE, Direction::ToDevice), "map");
            let _ = events();
            let r = e.edu.write_mem(iova, 0, FAULT_LEN);
            let ev = events();
            tri!(dma::unmap_single(&e.dma, iova, PAGE, Direction::ToDevice), "unmap");
            tri!(r, "DMA");
            let want = some!(Guarded::new(PAGE), "no memory");
            want.fill(0x33);
            ensure!(buf.same_as(&want).is_none(), "a write through a read-only mapping changed memory");
            match one_fault(&ev, EventKind::FPermission, sid_of(e), iova, false) {
                Ok(()) => Outcome::Pass,
                Err(m) => Outcome::Fail(m),
            }
        })
    })
}

/// Attach the device's group to a new domain of `ty`, run `f`, then put it back.
pub(super) fn in_domain(
    e: &mut EduDev,
    ty: DomainType,
    stage: Stage,
    f: impl FnOnce(&mut EduDev, DomainId) -> Outcome,
) -> Outcome {
    let Some(m) = e.dma.master else { return Outcome::Skip("device is not behind an SMMU".into()) };
    let (smmu, old) = {
        let io = IOMMU.lock();
        (io.masters[m].smmu, io.domain_of(m))
    };
    let did = {
        let mut io = IOMMU.lock();
        match io.domain_alloc(smmu, ty, stage) {
            Ok(d) => d,
            Err(crate::iommu::domain::IommuError::Unsupported(w)) => return Outcome::Skip(format!("SMMU lacks {w}")),
            Err(x) => return Outcome::Fail(format!("domain_alloc: {x}")),
        }
    };
    if let Err(x) = IOMMU.lock().attach(m, did) {
        return Outcome::Fail(format!("attach: {x}"));
    }
    let r = f(e, did);
    if let Some(old) = old
        && let Err(x) = IOMMU.lock().attach(m, old)
    {
        return Outcome::Fail(format!("re-attach to the default domain: {x}"));
    }
    if let Err(x) = IOMMU.lock().domain_free(did) {
        return Outcome::Fail(format!("domain_free: {x}"));
    }
    r
}

pub(super) fn copy_and_check(e: &mut EduDev, len: usize) -> Outcome {
    let src = some!(Guarded::new(len), "no memory");
    let dst = some!(Guarded::new(len), "no memory");
    src.fill(0x77);
    let s = tri!(dma::map_single(&e.dma, src.pa, len, Direction::ToDevice), "map src");
    let d = tri!(dma::map_single(&e.dma, dst.pa, len, Direction::FromDevice), "map dst");
    let r = copy(e, s, d, len);
    let _ = dma::unmap_single(&e.dma, s, len, Direction::ToDevice);
    let _ = dma::unmap_single(&e.dma, d, len, Direction::FromDevice);
    tri!(r, "DMA");
    ensure!(dst.same_as(&src).is_none(), "data differs after DMA ({s:#x} -> {d:#x})");
    ensure!(src.canaries_intact() && dst.canaries_intact(), "canary pages changed");
    Outcome::Pass
}

fn identity_bypass(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        in_domain(e, DomainType::Identity, Stage::S1, |e, _| {
            ensure!(dma::path(&e.dma) == Path::Direct, "identity domain does not take the direct path");
            let src = some!(Guarded::new(PAGE), "no memory");
            if src.pa + PAGE as u64 - 1 > e.dma.mask {
                return Outcome::Skip(format!(
                    "RAM at {:#x} is beyond the edu's {:#x} DMA mask (QEMU -device edu,dma_mask= and edu.dma_bits=)",
                    src.pa, e.dma.mask
                ));
            }
            let d = tri!(dma::map_single(&e.dma, src.pa, PAGE, Direction::ToDevice), "map");
            ensure!(d == src.pa, "bypass DMA address {d:#x} != physical {:#x}", src.pa);
            let _ = dma::unmap_single(&e.dma, d, PAGE, Direction::ToDevice);
            copy_and_check(e, PAGE)
        })
    })
}

fn blocked_domain(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        in_domain(e, DomainType::Blocked, Stage::S1, |e, _| {
            let buf = some!(Guarded::new(PAGE), "no memory");
            buf.fill(0x44);
            ensure!(
                dma::map_single(&e.dma, buf.pa, PAGE, Direction::Bidirectional) == Err(DmaError::Blocked),
                "the DMA API mapped for a blocked device"
            );
            // The device tries anyway, at the physical address: nothing may change.
            let _ = events();
            tri!(e.edu.write_mem(buf.pa, 0, PAGE), "DMA");
            let want = some!(Guarded::new(PAGE), "no memory");
            want.fill(0x44);
            ensure!(buf.same_as(&want).is_none(), "a blocked device wrote memory");
            let _ = events();
            Outcome::Pass
        })
    })
}

fn global_bypass(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        if registry::count() == 0 {
            return Outcome::Skip("no SMMU".into());
        }
        let buf = some!(Guarded::new(PAGE), "no memory");
        if buf.pa + PAGE as u64 - 1 > e.dma.mask {
            return Outcome::Skip("RAM beyond the edu's DMA mask".into());
        }
        buf.set_all(0);
        // SMMU off, GBPA bypass: the device reaches physical memory.
        tri!(registry::with_smmu(0, |s| s.set_enabled(false, false)).unwrap_or(Ok(())), "disable");
        let src = some!(Guarded::new(PAGE), "no memory");
        src.fill(0x99);
        let r1 = copy(e, src.pa, buf.pa, PAGE);
        let bypassed = buf.same_as(&src).is_none();
        // SMMU off, GBPA abort: nothing gets through.
        let r2 = registry::with_smmu(0, |s| s.set_enabled(false, true)).unwrap_or(Ok(()));
        buf.set_all(0);
        let r3 = copy(e, src.pa, buf.pa, PAGE);
        let aborted = buf.all(0);
        // Back on: translation works again.
        let r4 = registry::with_smmu(0, |s| s.set_enabled(true, true)).unwrap_or(Ok(()));
        tri!(r1, "DMA in bypass");
        tri!(r2, "GBPA abort");
        tri!(r3, "DMA with GBPA abort");
        tri!(r4, "re-enable");
        ensure!(bypassed, "with SMMUEN=0 and GBPA bypass the data did not arrive");
        ensure!(aborted, "with SMMUEN=0 and GBPA.ABORT the device still wrote memory");
        if e.dma.master.is_some() {
            return copy_and_check(e, PAGE);
        }
        Outcome::Pass
    })
}

fn stage2_unmanaged(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        in_domain(e, DomainType::Unmanaged, Stage::S2, |e, did| {
            let src = some!(Guarded::new(PAGE), "no memory");
            let dst = some!(Guarded::new(PAGE), "no memory");
            src.fill(0x3c);
            // "Guest physical" addresses the hypervisor chose.
            let (ipa_s, ipa_d) = (0x0800_0000u64, 0x0800_2000u64);
            {
                let mut io = IOMMU.lock();
                tri!(io.map(did, ipa_s, src.pa, PAGE as u64, Prot::RO), "map src");
                tri!(io.map(did, ipa_d, dst.pa, PAGE as u64, Prot::RW), "map dst");
            }
            let _ = events();
            tri!(copy(e, ipa_s, ipa_d, PAGE), "DMA");
            ensure!(dst.same_as(&src).is_none(), "data differs after stage-2 DMA");
            // An IPA the guest was not given: a stage-2 fault.
            let hole = 0x0800_8000u64;
            tri!(e.edu.write_mem(hole, 0, FAULT_LEN), "DMA to hole");
            let ev = events();
            let mut io = IOMMU.lock();
            let _ = io.unmap(did, ipa_s, PAGE as u64);
            let _ = io.unmap(did, ipa_d, PAGE as u64);
            if let Err(m) = one_fault(&ev, EventKind::FTranslation, sid_of(e), hole, false) {
                return Outcome::Fail(m);
            }
            ensure!(ev.iter().all(|x| x.stage2), "fault not reported as stage 2: {}", ev[0]);
            Outcome::Pass
        })
    })
}

fn nested(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        in_domain(e, DomainType::Unmanaged, Stage::Nested, |e, did| {
            let src = some!(Guarded::new(PAGE), "no memory");
            let dst = some!(Guarded::new(PAGE), "no memory");
            src.fill(0xc3);
            // Stage 2 (hypervisor): guest RAM identity at its PA, plus one page of
            // "guest memory" at IPA 0x1_0000_0000 that is really `dst`.
            let ram = crate::boot_info();
            let _ = ram;
            let (lo, hi) = (0x4000_0000u64, 0x8000_0000u64);
            let guest_page = 0x1_0000_0000u64;
            let (iova_s, iova_d) = (0x10_0000u64, 0x20_0000u64);
            {
                let mut io = IOMMU.lock();
                tri!(io.map_s2(did, lo, lo, hi - lo, Prot::RW), "stage-2 RAM");
                tri!(io.map_s2(did, guest_page, dst.pa, PAGE as u64, Prot::RW), "stage-2 page");
                // Stage 1 (guest): IOVA -> IPA.
                tri!(io.map(did, iova_s, src.pa, PAGE as u64, Prot::RO), "stage-1 src");
                tri!(io.map(did, iova_d, guest_page, PAGE as u64, Prot::RW), "stage-1 dst");
                ensure!(io.iova_to_phys(did, iova_d) == Some(dst.pa), "software walk of both stages disagrees");
            }
            let _ = events();
            tri!(copy(e, iova_s, iova_d, PAGE), "DMA");
            let ev = events();
            ensure!(ev.is_empty(), "events during nested DMA: {}", ev[0]);
            ensure!(dst.same_as(&src).is_none(), "data did not arrive through both stages");
            // Remove the stage-2 page: stage 1 still maps the IOVA, stage 2 faults.
            tri!(IOMMU.lock().unmap_s2(did, guest_page, PAGE as u64), "stage-2 unmap");
            tri!(e.edu.write_mem(iova_d, 0, FAULT_LEN), "DMA after stage-2 unmap");
            let ev = events();
            if let Err(m) = one_fault(&ev, EventKind::FTranslation, sid_of(e), iova_d, false) {
                return Outcome::Fail(m);
            }
            ensure!(
                ev.iter().all(|x| x.stage2 && x.ipa.map(|a| a & !0xfff) == Some(guest_page)),
                "expected stage-2 faults at IPA {guest_page:#x}, got {}",
                ev[0]
            );
            Outcome::Pass
        })
    })
}

fn isolation(_: &Ctx) -> Outcome {
    let mut edus = EDUS.lock();
    if edus.len() < 2 {
        return Outcome::Skip(format!("needs 2 edu devices, found {}", edus.len()));
    }
    if edus[0].dma.master.is_none() || edus[1].dma.master.is_none() {
        return Outcome::Skip("devices are not behind an SMMU".into());
    }
    let (a, rest) = edus.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    if !matches!(dma::path(&a.dma), Path::Iommu(_)) || !matches!(dma::path(&b.dma), Path::Iommu(_)) {
        return Outcome::Skip("default domains are not translated (iommu.passthrough=1)".into());
    }
    let (da, db) = (domain_of(&a.dma), domain_of(&b.dma));
    ensure!(da != db, "the two devices share a domain");
    let secret = some!(Guarded::new(PAGE), "no memory");
    secret.fill(0xee);
    let a_iova = tri!(dma::map_single(&a.dma, secret.pa, PAGE, Direction::Bidirectional), "map for A");
    let b_has = db.and_then(|d| IOMMU.lock().iova_to_phys(d, a_iova));
    ensure!(b_has.is_none(), "B's domain maps A's IOVA {a_iova:#x} (to {b_has:x?})");
    let _ = events();
    // B aims at A's IOVA: a write and a read, both must fault.
    let r1 = b.edu.write_mem(a_iova, 0, FAULT_LEN);
    let ev_w = events();
    let r2 = b.edu.read_mem(a_iova, 0, FAULT_LEN);
    let ev_r = events();
    // What B's engine holds now goes to a buffer of B's own: not A's data.
    let out = some!(Guarded::new(PAGE), "no memory");
    let b_out = tri!(dma::map_single(&b.dma, out.pa, PAGE, Direction::FromDevice), "map for B");
    let r3 = b.edu.write_mem(b_out, 0, FAULT_LEN);
    let _ = dma::unmap_single(&b.dma, b_out, PAGE, Direction::FromDevice);
    let _ = dma::unmap_single(&a.dma, a_iova, PAGE, Direction::Bidirectional);
    tri!(r1.and(r2).and(r3), "DMA");
    ensure!(out.bytes()[..FAULT_LEN] != secret.bytes()[..FAULT_LEN], "B read A's buffer");
    let want = some!(Guarded::new(PAGE), "no memory");
    want.fill(0xee);
    ensure!(secret.same_as(&want).is_none(), "B wrote A's buffer");
    let bsid = sid_of(b);
    if let Err(m) = one_fault(&ev_w, EventKind::FTranslation, bsid, a_iova, false) {
        return Outcome::Fail(format!("B's write: {m}"));
    }
    if let Err(m) = one_fault(&ev_r, EventKind::FTranslation, bsid, a_iova, true) {
        return Outcome::Fail(format!("B's read: {m}"));
    }
    Outcome::Pass
}

fn group_shares(_: &Ctx) -> Outcome {
    let mut edus = EDUS.lock();
    if edus.len() < 2 || edus[0].dma.master.is_none() || edus[1].dma.master.is_none() {
        return Outcome::Skip("needs 2 edu devices behind an SMMU".into());
    }
    let (ma, mb) = (edus[0].dma.master.unwrap_or(0), edus[1].dma.master.unwrap_or(0));
    let (old_a, old_b) = {
        let io = IOMMU.lock();
        (io.domain_of(ma), io.domain_of(mb))
    };
    // Both attached to one domain: a mapping made for A serves B.
    let did = {
        let mut io = IOMMU.lock();
        let smmu = io.masters[ma].smmu;
        let d = tri!(io.domain_alloc(smmu, DomainType::Dma, Stage::S1), "domain");
        tri!(io.attach(ma, d), "attach A");
        tri!(io.attach(mb, d), "attach B");
        d
    };
    let (a, rest) = edus.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    let src = some!(Guarded::new(PAGE), "no memory");
    let dst = some!(Guarded::new(PAGE), "no memory");
    src.fill(0x61);
    let r = (|| -> Result<(), alloc::string::String> {
        let s = dma::map_single(&a.dma, src.pa, PAGE, Direction::ToDevice).map_err(|x| format!("{x}"))?;
        let d = dma::map_single(&a.dma, dst.pa, PAGE, Direction::FromDevice).map_err(|x| format!("{x}"))?;
        let r = copy(b, s, d, PAGE).map_err(|x| format!("{x}"));
        let _ = dma::unmap_single(&a.dma, s, PAGE, Direction::ToDevice);
        let _ = dma::unmap_single(&a.dma, d, PAGE, Direction::FromDevice);
        r
    })();
    {
        let mut io = IOMMU.lock();
        if let Some(o) = old_a {
            let _ = io.attach(ma, o);
        }
        if let Some(o) = old_b {
            let _ = io.attach(mb, o);
        }
    }
    if let Err(x) = IOMMU.lock().domain_free(did) {
        return Outcome::Fail(format!("domain_free: {x}"));
    }
    if let Err(m) = r {
        return Outcome::Fail(m);
    }
    ensure!(dst.same_as(&src).is_none(), "B could not use A's mapping in their shared domain");
    Outcome::Pass
}

fn attach_detach(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        let Some(m) = e.dma.master else { return Outcome::Skip("not behind an SMMU".into()) };
        let (smmu, home) = {
            let io = IOMMU.lock();
            (io.masters[m].smmu, io.domain_of(m))
        };
        let home = some!(home, "no default domain");
        let (ident, blocked) = {
            let mut io = IOMMU.lock();
            (
                tri!(io.domain_alloc(smmu, DomainType::Identity, Stage::S1), "identity"),
                tri!(io.domain_alloc(smmu, DomainType::Blocked, Stage::S1), "blocked"),
            )
        };
        let src = some!(Guarded::new(PAGE), "no memory");
        src.fill(0x12);
        let bypass_ok = src.pa + PAGE as u64 - 1 <= e.dma.mask;
        for round in 0..2 {
            // translated
            tri!(IOMMU.lock().attach(m, home), "attach DMA");
            if let Outcome::Fail(x) = copy_and_check(e, PAGE) {
                return Outcome::Fail(format!("round {round}, translated: {x}"));
            }
            // bypass
            tri!(IOMMU.lock().attach(m, ident), "attach identity");
            if bypass_ok && let Outcome::Fail(x) = copy_and_check(e, PAGE) {
                return Outcome::Fail(format!("round {round}, identity: {x}"));
            }
            // blocked: the physical address no longer works
            tri!(IOMMU.lock().attach(m, blocked), "attach blocked");
            let dst = some!(Guarded::new(PAGE), "no memory");
            tri!(copy(e, src.pa, dst.pa, PAGE), "DMA while blocked");
            ensure!(dst.all(0), "round {round}: a blocked device wrote memory (stale STE?)");
        }
        tri!(IOMMU.lock().attach(m, home), "back to DMA");
        let _ = events();
        let mut io = IOMMU.lock();
        tri!(io.domain_free(ident), "free identity domain");
        tri!(io.domain_free(blocked), "free blocked domain");
        Outcome::Pass
    })
}

fn dma_mask(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        let buf = some!(Guarded::new(PAGE), "no memory");
        // A device that only emits 28-bit addresses.
        let mut narrow = e.dma.clone();
        narrow.mask = (1 << 28) - 1;
        match dma::path(&narrow) {
            Path::Iommu(_) => {
                let d = tri!(dma::map_single(&narrow, buf.pa, PAGE, Direction::ToDevice), "map");
                let ok = d + PAGE as u64 - 1 <= narrow.mask;
                tri!(dma::unmap_single(&narrow, d, PAGE, Direction::ToDevice), "unmap");
                ensure!(ok, "IOVA {d:#x} beyond the 28-bit mask");
            }
            Path::Direct => {
                if buf.pa > narrow.mask {
                    let r = dma::map_single(&narrow, buf.pa, PAGE, Direction::ToDevice);
                    ensure!(matches!(r, Err(DmaError::BeyondMask { .. })), "direct map beyond the mask gave {r:?}");
                }
            }
            Path::Blocked => return Outcome::Skip("device blocked".into()),
        }
        Outcome::Pass
    })
}

fn api_misuse(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        let buf = some!(Guarded::new(PAGE), "no memory");
        ensure!(dma::map_single(&e.dma, buf.pa, 0, Direction::ToDevice) == Err(DmaError::ZeroSize), "size 0 accepted");
        if !matches!(dma::path(&e.dma), Path::Iommu(_)) {
            return Outcome::Pass;
        }
        let d = tri!(dma::map_single(&e.dma, buf.pa, PAGE, Direction::ToDevice), "map");
        tri!(dma::unmap_single(&e.dma, d, PAGE, Direction::ToDevice), "unmap");
        let again = dma::unmap_single(&e.dma, d, PAGE, Direction::ToDevice);
        ensure!(matches!(again, Err(DmaError::NotMapped { .. })), "double unmap gave {again:?}");
        let unknown = dma::unmap_single(&e.dma, 0x0fff_0000, PAGE, Direction::ToDevice);
        ensure!(matches!(unknown, Err(DmaError::NotMapped { .. })), "unmap of an unknown IOVA gave {unknown:?}");
        Outcome::Pass
    })
}

fn lazy_batches(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let buf = some!(Guarded::new(PAGE), "no memory");
            let was = dma::strict();
            let syncs = || registry::with_smmu(0, |s| s.stats.syncs).unwrap_or(0);
            let n = 1000u64;
            let run = |strict: bool| -> Result<u64, DmaError> {
                dma::set_strict(strict);
                let before = syncs();
                for _ in 0..n {
                    let d = dma::map_single(&e.dma, buf.pa, PAGE, Direction::ToDevice)?;
                    dma::unmap_single(&e.dma, d, PAGE, Direction::ToDevice)?;
                }
                dma::flush(&e.dma)?;
                Ok(syncs() - before)
            };
            let strict_syncs = run(true);
            // IRQs masked: the flush timer (lazy_flush_timeout) must not add its flush to
            // the count of a slow run.
            let lazy_syncs = crate::arch::without_irqs(|| run(false));
            dma::set_strict(was);
            let (s, l) = (tri!(strict_syncs, "strict"), tri!(lazy_syncs, "lazy"));
            ensure!(s >= n, "strict mode issued {s} CMD_SYNCs for {n} unmaps");
            ensure!(l <= n / dma::LAZY_BATCH as u64 + 1, "lazy mode issued {l} CMD_SYNCs for {n} unmaps");
            // One page over and over: every unmap but the last is taken back by the next
            // map, so full queues only compact, and the final flush is the one CMD_SYNC.
            ensure!(l == 1, "lazy mode issued {l} CMD_SYNCs for {n} unmaps of one page mapped again each time");
            // And the device still works after the lazy churn.
            copy_and_check(e, PAGE)
        })
    })
}

/// Lazy mode, one 2 MiB buffer (pages, not a block) mapped and unmapped over and over: each
/// unmap detaches its page table and each take-back builds a new one. Although every unmap
/// is taken back (nothing owed, the queue only compacts), the detached tables are freed at
/// each batch boundary: the table count stays within a batch's worth.
fn lazy_batch_frees_detached_tables(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            const LEN: usize = 2 << 20;
            let buf = some!(Guarded::new(LEN + PAGE), "no memory");
            // Off a 2 MiB boundary, so the buffer maps as pages below one page table.
            let pa = if buf.pa % LEN as u64 == 0 { buf.pa + PAGE as u64 } else { buf.pa };
            let did = some!(domain_of(&e.dma), "no domain");
            let tables =
                || IOMMU.lock().domain(did).ok().and_then(|d| d.pgt.as_ref().map(|p| p.tables_in_use())).unwrap_or(0);
            let was = dma::strict();
            dma::set_strict(false);
            let rounds = 3 * dma::LAZY_BATCH;
            let mut most = 0;
            let r = (|| -> Result<usize, DmaError> {
                dma::flush(&e.dma)?;
                let before = tables();
                for _ in 0..rounds {
                    let d = dma::map_single(&e.dma, pa, LEN, Direction::ToDevice)?;
                    dma::unmap_single(&e.dma, d, LEN, Direction::ToDevice)?;
                    most = most.max(tables());
                }
                dma::flush(&e.dma)?;
                Ok(before)
            })();
            dma::set_strict(was);
            let before = tri!(r, "lazy 2 MiB cycle");
            let bound = before + dma::LAZY_BATCH + 2;
            ensure!(most <= bound, "{most} page tables during {rounds} lazy cycles ({before} before, bound {bound})");
            ensure!(tables() <= before + 1, "{} page tables after the flush, {before} before", tables());
            Outcome::Pass
        })
    })
}

/// Lazy mode: mapping again exactly what waits in the flush queue (same pages, same
/// direction) takes its IOVA back with no command to the SMMU, and DMA through it lands in
/// the buffer; other pages or another direction get a fresh IOVA. Taking an IOVA back also
/// settles the invalidation its unmap owed. After the flush no IOVA is left allocated.
fn lazy_identical_remap(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let (src, dst, other) = (
                some!(Guarded::new(PAGE), "no memory"),
                some!(Guarded::new(PAGE), "no memory"),
                some!(Guarded::new(PAGE), "no memory"),
            );
            src.fill(0x5a);
            let did = some!(domain_of(&e.dma), "no domain");
            let allocs = || IOMMU.lock().domain(did).ok().and_then(|d| d.iova.as_ref().map(|a| a.allocations()));
            let commands = || registry::with_smmu(0, |s| s.stats.commands).unwrap_or(0);
            let was = dma::strict();
            dma::set_strict(false);
            let dev = e.dma.clone();
            // Everything mapped, unmapped at the end whatever happened.
            let mut live: Vec<(u64, Direction)> = Vec::new();
            let mut map = |pa, dir| {
                let d = dma::map_single(&dev, pa, PAGE, dir).map_err(|x| format!("map: {x}"))?;
                live.push((d, dir));
                Ok::<u64, alloc::string::String>(d)
            };
            let before = dma::flush(&dev).map(|_| allocs());
            // An unmap leaves its IOVA owing an invalidation; taking it back settles that
            // (IRQs masked: the flush timer would settle it too).
            let stale = || IOMMU.lock().lazy_tlb_stale(did).unwrap_or(false);
            let settled = crate::arch::without_irqs(|| -> Result<(), alloc::string::String> {
                let d = dma::map_single(&dev, src.pa, PAGE, Direction::ToDevice).map_err(|x| format!("map: {x}"))?;
                dma::unmap_single(&dev, d, PAGE, Direction::ToDevice).map_err(|x| format!("unmap: {x}"))?;
                if !stale() {
                    return Err("unmapped lazily, yet not counted as owing an invalidation".into());
                }
                let again =
                    dma::map_single(&dev, src.pa, PAGE, Direction::ToDevice).map_err(|x| format!("map: {x}"))?;
                let owing = stale();
                dma::unmap_single(&dev, again, PAGE, Direction::ToDevice).map_err(|x| format!("unmap: {x}"))?;
                if again != d || owing {
                    return Err(format!("mapped again at {again:#x} (waiting: {d:#x}), still owing: {owing}"));
                }
                Ok(())
            });
            let r = settled.and_then(|()| {
                let d1 = dma::map_single(&dev, dst.pa, PAGE, Direction::FromDevice).map_err(|x| format!("map: {x}"))?;
                dma::unmap_single(&dev, d1, PAGE, Direction::FromDevice).map_err(|x| format!("unmap: {x}"))?;
                let ro = map(dst.pa, Direction::ToDevice)?;
                let c0 = commands();
                let d2 = map(dst.pa, Direction::FromDevice)?;
                let c1 = commands();
                // Other pages (with 64 KiB pages `other` may share dst's: then nothing waits
                // for them any more either).
                let elsewhere = map(other.pa, Direction::FromDevice)?;
                let s = map(src.pa, Direction::ToDevice)?;
                if ro == d1 || elsewhere == d1 {
                    return Err(format!(
                        "{d1:#x} given to another direction ({ro:#x}) or other pages ({elsewhere:#x})"
                    ));
                }
                if d2 != d1 || c1 != c0 {
                    return Err(format!(
                        "the same mapping again: IOVA {d2:#x} (waiting: {d1:#x}), {} commands",
                        c1 - c0
                    ));
                }
                copy(e, s, d2, PAGE).map_err(|x| format!("DMA through the taken-back IOVA: {x}"))?;
                Ok(d2)
            });
            let undone: Result<(), DmaError> = live
                .drain(..)
                .try_for_each(|(d, dir)| dma::unmap_single(&dev, d, PAGE, dir))
                .and_then(|_| dma::flush(&dev));
            let after = allocs();
            dma::set_strict(was);
            tri!(r, "lazy remap");
            tri!(undone, "unmap");
            let before = tri!(before, "flush");
            ensure!(before == after, "IOVA allocations {before:?} before, {after:?} after the flush");
            ensure!(dst.same_as(&src).is_none(), "the DMA did not land in the buffer");
            ensure!(src.canaries_intact() && dst.canaries_intact(), "canary pages changed");
            Outcome::Pass
        })
    })
}

/// `iommu.strict=0` is bounded in time: with no further unmap and no `flush`, the flush
/// timer still invalidates a lazily unmapped page within `LAZY_TIMEOUT_US`. The edu does
/// its DMA 100 ms after it is started, long after that. Control: the same DMA with IRQs
/// masked (the timer cannot run) still goes through the stale IOTLB entry.
fn lazy_flush_timeout(_: &Ctx) -> Outcome {
    if !dma::flush_timer_up() {
        return Outcome::Skip("no lazy-flush timer on this machine (no GICv3)".into());
    }
    with_edu(0, |e| {
        translated(e, |e| {
            let buf = some!(Guarded::new(PAGE), "no memory");
            buf.fill(0x44);
            let did = some!(domain_of(&e.dma), "no domain");
            let was = dma::strict();
            dma::set_strict(false);
            let r = (|| -> Result<(u64, Vec<Event>, u64), alloc::string::String> {
                dma::flush(&e.dma).map_err(|x| format!("flush: {x}"))?;
                let d = dma::map_single(&e.dma, buf.pa, PAGE, Direction::ToDevice).map_err(|x| format!("map: {x}"))?;
                e.edu.read_mem(d, 0, 64).map_err(|x| format!("DMA before the unmap: {x}"))?;
                let before = dma::flush_timer_stats().flushes;
                dma::unmap_single(&e.dma, d, PAGE, Direction::ToDevice).map_err(|x| format!("unmap: {x}"))?;
                let _ = events();
                let stale = crate::arch::without_irqs(|| e.edu.read_mem(d, 0, 64));
                stale.map_err(|x| format!("DMA with IRQs masked: {x}"))?;
                let ev = events();
                if !ev.is_empty() {
                    return Err(format!(
                        "control: with the timer held off the unmapped page faulted already: {}",
                        ev[0]
                    ));
                }
                // IRQs are back on: the timer has fired by now and runs at once.
                let t0 = crate::arch::timer::ticks();
                wait_until(LAZY_TIMEOUT_MS_BOUND, || dma::flush_timer_stats().flushes != before);
                let waited = crate::arch::timer::ticks_to_us(crate::arch::timer::ticks() - t0);
                if IOMMU.lock().lazy_tlb_stale(did).unwrap_or(true) {
                    return Err(format!("deferred unmaps still not invalidated {waited} us after IRQs came back"));
                }
                let r = e.edu.read_mem(d, 0, FAULT_LEN);
                let ev = events();
                r.map_err(|x| format!("DMA after the timer: {x}"))?;
                Ok((d, ev, waited))
            })();
            dma::set_strict(was);
            let (d, ev, waited) = match r {
                Ok(v) => v,
                Err(m) => return Outcome::Fail(m),
            };
            crate::kprintln!("dma: lazy unmap invalidated by the flush timer ({waited} us after IRQs were unmasked)");
            match one_fault(&ev, EventKind::FTranslation, sid_of(e), d, true) {
                Ok(()) => Outcome::Pass,
                Err(m) => Outcome::Fail(format!("after the flush timer: {m}")),
            }
        })
    })
}

/// How long `lazy_flush_timeout` waits for the timer once IRQs are unmasked (it has
/// expired by then; this bounds a timer that never fires).
const LAZY_TIMEOUT_MS_BOUND: u64 = 200;

/// Strict `unmap_sg` of several segments: one CMD_SYNC for all, and afterwards every
/// segment faults (the device warmed the SMMU's TLB with each, so an invalidation that
/// missed one would let its read through).
fn unmap_sg_one_sync(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        translated(e, |e| {
            let bufs: Vec<Guarded> = (0..4).filter_map(|_| Guarded::new(PAGE)).collect();
            ensure!(bufs.len() == 4, "no memory");
            let segs: Vec<(u64, usize)> = bufs.iter().map(|b| (b.pa, PAGE)).collect();
            let was = dma::strict();
            dma::set_strict(true);
            let syncs = || registry::with_smmu(0, |s| s.stats.syncs).unwrap_or(0);
            let r = (|| -> Result<(u64, Vec<u64>), alloc::string::String> {
                let dmas = dma::map_sg(&e.dma, &segs, Direction::ToDevice).map_err(|x| format!("map_sg: {x}"))?;
                for &d in &dmas {
                    e.edu.read_mem(d, 0, 64).map_err(|x| format!("DMA from {d:#x}: {x}"))?;
                }
                let _ = events();
                let before = syncs();
                dma::unmap_sg(&e.dma, &dmas, &segs, Direction::ToDevice).map_err(|x| format!("unmap_sg: {x}"))?;
                Ok((syncs() - before, dmas))
            })();
            dma::set_strict(was);
            let (n, dmas) = match r {
                Ok(v) => v,
                Err(m) => return Outcome::Fail(m),
            };
            ensure!(n == 1, "unmap_sg of {} segments issued {n} CMD_SYNCs", dmas.len());
            for &d in &dmas {
                let r = e.edu.read_mem(d, 0, 64);
                let ev = events();
                tri!(r, "DMA");
                ensure!(!ev.is_empty(), "segment {d:#x} still reachable after unmap_sg (stale TLB entry?)");
            }
            let again = dma::unmap_sg(&e.dma, &dmas, &segs, Direction::ToDevice);
            ensure!(matches!(again, Err(DmaError::NotMapped { .. })), "second unmap_sg gave {again:?}");
            Outcome::Pass
        })
    })
}

fn direct_path(_: &Ctx) -> Outcome {
    with_edu(0, |e| {
        if e.dma.master.is_some() && !dma::passthrough() {
            return Outcome::Skip("device is translated (covered by translate_s1)".into());
        }
        ensure!(dma::path(&e.dma) == Path::Direct, "device without SMMU/identity is not on the direct path");
        let buf = some!(Guarded::new(PAGE), "no memory");
        if buf.pa + PAGE as u64 - 1 > e.dma.mask {
            return Outcome::Skip("RAM beyond the edu's DMA mask".into());
        }
        copy_and_check(e, PAGE)
    })
}

/// A `reserved-memory` region with `iommu-addresses` for this device: reachable at
/// IOVA == PA from boot (no map call), and never handed out by the IOVA allocator.
fn direct_map_from_boot(c: &Ctx) -> Outcome {
    with_edu(0, |e| {
        let Some(&(win, size)) = e.dma.direct_maps.first() else {
            let n = c.platform.direct_maps.len();
            return Outcome::Skip(format!("no direct map for this device ({n} in the DT)"));
        };
        ensure!(
            c.platform.reserved.iter().any(|r| r.base <= win && r.base + r.size >= win + size),
            "direct map {win:#x}+{size:#x} is not reserved memory"
        );
        // The window holds data written by the CPU; the device reads it at IOVA == PA.
        // SAFETY: the window is reserved (no-map) RAM that nothing else uses.
        let w = unsafe { core::slice::from_raw_parts_mut(win as *mut u8, PAGE) };
        for (i, b) in w.iter_mut().enumerate() {
            *b = (i as u8) ^ 0xa5;
        }
        let dst = some!(Guarded::new(PAGE), "no memory");
        let d = tri!(dma::map_single(&e.dma, dst.pa, PAGE, Direction::FromDevice), "map dst");
        let r = copy(e, win, d, PAGE);
        // The allocator must never hand out the window, even when asked for a lot.
        let mut clash = None;
        let mut got = Vec::new();
        for _ in 0..64 {
            match dma::map_single(&e.dma, dst.pa, PAGE, Direction::ToDevice) {
                Ok(x) => {
                    if x >= win && x < win + size {
                        clash = Some(x);
                    }
                    got.push(x);
                }
                Err(_) => break,
            }
        }
        for x in got {
            let _ = dma::unmap_single(&e.dma, x, PAGE, Direction::ToDevice);
        }
        let _ = dma::unmap_single(&e.dma, d, PAGE, Direction::FromDevice);
        tri!(r, "DMA from the direct-mapped window");
        ensure!(clash.is_none(), "IOVA {:#x} inside the direct map was handed out", clash.unwrap_or(0));
        ensure!(dst.bytes().iter().enumerate().all(|(i, &b)| b == (i as u8) ^ 0xa5), "data from the window differs");
        ensure!(events().is_empty(), "the window access faulted");
        Outcome::Pass
    })
}

/// A DMA domain with a 16K or 64K granule: buffers at 4K offsets inside a granule
/// still arrive, and the IOVA keeps the offset within the granule.
fn granule_domain(g: crate::iommu::io_pgtable::Granule) -> Outcome {
    with_edu(0, |e| {
        let Some(m) = e.dma.master else { return Outcome::Skip("not behind an SMMU".into()) };
        let (smmu, home) = {
            let io = IOMMU.lock();
            (io.masters[m].smmu, io.domain_of(m))
        };
        let did = match IOMMU.lock().domain_alloc_granule(smmu, DomainType::Dma, Stage::S1, g) {
            Ok(d) => d,
            Err(crate::iommu::domain::IommuError::Unsupported(w)) => return Outcome::Skip(format!("SMMU lacks {w}")),
            Err(x) => return Outcome::Fail(format!("domain: {x}")),
        };
        tri!(IOMMU.lock().attach(m, did), "attach");
        let gs = g.size();

        let src = some!(Guarded::new(3 * PAGE), "no memory");
        let r = (|| {
            let s =
                dma::map_single(&e.dma, src.pa + PAGE as u64, PAGE, Direction::ToDevice).map_err(|x| format!("{x}"))?;

            if s % gs != (src.pa + PAGE as u64) % gs {
                return Err(format!(
                    "IOVA {s:#x} lost the offset of {:#x} in its {gs:#x} granule",
                    src.pa + PAGE as u64
                ));
            }
            let _ = dma::unmap_single(&e.dma, s, PAGE, Direction::ToDevice);
            Ok(())
        })();
        let o = copy_and_check(e, PAGE);
        if let Some(h) = home {
            tri!(IOMMU.lock().attach(m, h), "re-attach");
        }
        tri!(IOMMU.lock().domain_free(did), "domain_free");
        if let Err(x) = r {
            return Outcome::Fail(x);
        }
        o
    })
}

fn granule_16k(_: &Ctx) -> Outcome {
    granule_domain(crate::iommu::io_pgtable::Granule::K16)
}

fn granule_64k(_: &Ctx) -> Outcome {
    granule_domain(crate::iommu::io_pgtable::Granule::K64)
}

/// `iommu.granule=` gives every default DMA domain its granule (`expect.granule=` names
/// the one the boot asked for), and DMA through such a domain works.
fn default_domain_granule(c: &Ctx) -> Outcome {
    let want = match c.args.get("expect.granule") {
        None => crate::iommu::io_pgtable::Granule::K4,
        Some(v) => some!(crate::iommu::io_pgtable::Granule::from_arg(v), "bad expect.granule"),
    };
    ensure!(dma::granule() == want, "iommu.granule is {}, expected {}", dma::granule().name(), want.name());
    with_edu(0, |e| {
        let Path::Iommu(did) = dma::path(&e.dma) else {
            return Outcome::Skip("the default domain is not a DMA domain (iommu.passthrough=1)".into());
        };
        let g = tri!(IOMMU.lock().domain(did), "domain").granule;
        ensure!(g == want, "default domain {did} has {} pages, expected {}", g.name(), want.name());
        copy_and_check(e, PAGE)
    })
}
