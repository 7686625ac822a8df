//! In-QEMU benchmarks (`bench=1`): invalidation cost counted exactly (commands,
//! CMD_SYNCs, CMDQ_PROD writes per strict unmap, with and without range
//! invalidation; syncs per 1000 lazy unmaps) and DMA API latency as ratios to bypass.
//! Each result is one `BENCH {json}` line the runner gathers into build/bench.json.

use crate::arch::timer;
use crate::bootargs::BootArgs;
use crate::dma::{self, Direction, DmaDevice, Path};
use crate::drivers::EDUS;
use crate::iommu::domain::{DomainType, IOMMU, NO_RIL, Stage};
use crate::iommu::io_pgtable::Prot;
use crate::iommu::registry;
use crate::iommu::smmuv3::device::Stats;
use crate::kprintln;
use crate::mm::frames;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

fn emit(metric: &str, ours: f64, peer: Option<f64>, unit: &str) {
    match peer {
        Some(p) => kprintln!(
            "BENCH {{\"metric\": \"{metric}\", \"ours\": {ours:.3}, \"peer\": {p:.3}, \"unit\": \"{unit}\", \"ratio\": {:.3}}}",
            if p != 0.0 { ours / p } else { 0.0 }
        ),
        None => {
            kprintln!("BENCH {{\"metric\": \"{metric}\", \"ours\": {ours:.3}, \"peer\": null, \"unit\": \"{unit}\"}}")
        }
    }
}

fn stats() -> Stats {
    registry::with_smmu(0, |s| s.stats).unwrap_or_default()
}

/// Commands / syncs / PROD writes for one strict unmap of `pages` 4 KiB pages.
fn invalidation(pages: u64, ril: bool) -> Result<(u64, u64, u64), String> {
    let smmu = 0;
    NO_RIL.store(!ril, Ordering::SeqCst);
    let mut io = IOMMU.lock();
    let did = io.domain_alloc(smmu, DomainType::Unmanaged, Stage::S1).map_err(|e| alloc::format!("{e}"))?;
    // PA offset by one page from a 2 MiB boundary: 4 KiB leaves only, as a DMA
    // domain full of single-page buffers has.
    let iova = 0x4000_0000u64;
    let pa = 0x4000_1000u64;
    let r = (|| {
        io.map(did, iova, pa, pages * 4096, Prot::RO).map_err(|e| alloc::format!("{e}"))?;
        let before = stats();
        io.unmap(did, iova, pages * 4096).map_err(|e| alloc::format!("{e}"))?;
        let after = stats();
        Ok((after.commands - before.commands, after.syncs - before.syncs, after.prod_writes - before.prod_writes))
    })();
    let _ = io.domain_free(did);
    NO_RIL.store(false, Ordering::SeqCst);
    r
}

/// Median ticks of one map+unmap of a page for `dev`.
fn map_unmap_latency(dev: &DmaDevice, pa: u64, rounds: usize) -> Result<u64, String> {
    let mut samples: Vec<u64> = Vec::with_capacity(9);
    for _ in 0..9 {
        let t0 = timer::ticks();
        for _ in 0..rounds {
            let d = dma::map_single(dev, pa, 4096, Direction::ToDevice).map_err(|e| alloc::format!("{e}"))?;
            dma::unmap_single(dev, d, 4096, Direction::ToDevice).map_err(|e| alloc::format!("{e}"))?;
        }
        samples.push((timer::ticks() - t0) / rounds as u64);
    }
    dma::flush(dev).map_err(|e| alloc::format!("{e}"))?;
    samples.sort_unstable();
    Ok(samples[samples.len() / 2])
}

/// Read the whole virtio-blk disk in `chunk`-byte requests (each buffer mapped and
/// unmapped through the DMA API by the driver); seconds taken.
fn virtio_read_all(chunk: usize) -> Result<(f64, u64), String> {
    let mut blks = crate::drivers::VIRTIO_BLKS.lock();
    let b = blks.first_mut().ok_or("no virtio-blk device")?;
    let sectors = b.capacity();
    let per = (chunk / 512) as u64;
    let mut buf = alloc::vec![0u8; chunk];
    let mut reads = 0;
    let t0 = timer::ticks();
    let mut s = 0;
    while s + per <= sectors {
        b.read_blocks(s, &mut buf).map_err(|e| alloc::format!("read at sector {s}: {e:?}"))?;
        s += per;
        reads += 1;
    }
    dma::flush(&b.dma).map_err(|e| alloc::format!("{e}"))?;
    Ok((timer::ticks_to_ns(timer::ticks() - t0) as f64 / 1e9, reads))
}

/// The throughput workload alone (the runner boots it once per DMA mode).
fn virtio_workload() -> u32 {
    let mode = if dma::passthrough() {
        "bypass"
    } else if dma::strict() {
        "strict"
    } else {
        "lazy"
    };
    let mut failures = 0;
    for (chunk, tag) in [(4096usize, "4k"), (65536, "64k")] {
        match virtio_read_all(chunk) {
            Ok((secs, reads)) => {
                kprintln!("bench: virtio-blk {mode}: {reads} reads of {tag} in {secs:.3} s");
                emit(&alloc::format!("virtio_read_{tag}_seconds_{mode}"), secs, None, "s");
            }
            Err(e) => {
                kprintln!("bench: virtio-blk {mode} {tag}: {e}");
                failures += 1;
            }
        }
    }
    failures
}

pub fn run(args: &BootArgs) -> u32 {
    if args.get("bench") == Some("virtio") {
        return virtio_workload();
    }
    let mut failures = 0;
    if registry::count() == 0 {
        kprintln!("bench: no SMMU, nothing to measure");
        return 1;
    }
    let ril_hw = registry::with_smmu(0, |s| s.features.ril).unwrap_or(false);
    for pages in [1u64, 16, 512, 262_144] {
        for ril in [true, false] {
            if ril && !ril_hw {
                continue;
            }
            match invalidation(pages, ril) {
                Ok((c, s, p)) => {
                    let tag = if ril { "ril" } else { "no_ril" };
                    emit(&alloc::format!("strict_unmap_{pages}p_{tag}_commands"), c as f64, None, "count");
                    emit(&alloc::format!("strict_unmap_{pages}p_{tag}_cmd_syncs"), s as f64, None, "count");
                    emit(&alloc::format!("strict_unmap_{pages}p_{tag}_prod_writes"), p as f64, None, "count");
                }
                Err(e) => {
                    kprintln!("bench: invalidation {pages} pages: {e}");
                    failures += 1;
                }
            }
        }
    }
    let mut edus = EDUS.lock();
    let Some(e) = edus.first_mut() else {
        kprintln!("bench: no edu for the DMA API measurements");
        return failures + 1;
    };
    let Some(pa) = frames::alloc_zeroed(1) else { return failures + 1 };
    // CMD_SYNCs per 1000 unmaps, lazy.
    if matches!(dma::path(&e.dma), Path::Iommu(_)) {
        let was = dma::strict();
        dma::set_strict(false);
        let before = stats();
        let mut ok = true;
        for _ in 0..1000 {
            match dma::map_single(&e.dma, pa, 4096, Direction::ToDevice) {
                Ok(d) => ok &= dma::unmap_single(&e.dma, d, 4096, Direction::ToDevice).is_ok(),
                Err(_) => ok = false,
            }
        }
        ok &= dma::flush(&e.dma).is_ok();
        let syncs = stats().syncs - before.syncs;
        dma::set_strict(was);
        if ok {
            emit("lazy_cmd_syncs_per_1000_unmaps", syncs as f64, None, "count");
        } else {
            failures += 1;
        }
    }
    // DMA API latency: translated strict / lazy vs bypass, in one boot.
    let m = e.dma.master;
    let home = m.and_then(|m| IOMMU.lock().domain_of(m));
    let rounds = 500;
    let strict_t = {
        dma::set_strict(true);
        map_unmap_latency(&e.dma, pa, rounds)
    };
    let lazy_t = {
        dma::set_strict(false);
        let r = map_unmap_latency(&e.dma, pa, rounds);
        dma::set_strict(true);
        r
    };
    let bypass_t = match (m, home) {
        (Some(m), Some(h)) => {
            let smmu = IOMMU.lock().masters[m].smmu;
            let ident = IOMMU.lock().domain_alloc(smmu, DomainType::Identity, Stage::S1);
            match ident {
                Ok(id) => {
                    let _ = IOMMU.lock().attach(m, id);
                    let r = map_unmap_latency(&e.dma, pa, rounds);
                    let _ = IOMMU.lock().attach(m, h);
                    let _ = IOMMU.lock().domain_free(id);
                    r
                }
                Err(x) => Err(alloc::format!("{x}")),
            }
        }
        _ => map_unmap_latency(&e.dma, pa, rounds),
    };
    frames::free(pa, 1);
    match (strict_t, lazy_t, bypass_t) {
        (Ok(s), Ok(l), Ok(b)) => {
            let ns = |t: u64| timer::ticks_to_ns(t) as f64;
            emit("map_unmap_1page_strict_ns", ns(s), Some(ns(b)), "ns");
            emit("map_unmap_1page_lazy_ns", ns(l), Some(ns(b)), "ns");
        }
        (s, l, b) => {
            kprintln!("bench: latency: strict {s:?} lazy {l:?} bypass {b:?}");
            failures += 1;
        }
    }
    failures
}
