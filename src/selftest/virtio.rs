//! virtio suite: virtio-blk over PCI with VIRTIO_F_ACCESS_PLATFORM, its rings and buffers
//! through the DMA API. Reads are checked against the disk image the runner wrote.
//!
//! The image (tests/run.py `make_disk_image`): sector n starts with n as 8 little-endian
//! bytes, then the marker `SMMUDISK`, then a hash of n and the byte offset (`pattern`).
//! The last `SCRATCH` sectors are the write test's; reads check only sectors before them.

use super::{Ctx, Test};
use crate::arch::timer;
use crate::bus::pci;
use crate::dma::{self, DmaError, Path};
use crate::drivers::virtio_blk::{self, BlkError, Handed, Phases, SECTOR_SIZE, Use, VirtioBlk};
use crate::drivers::{PROBE_ERRORS, VIRTIO_BLKS};
use crate::ensure;
use crate::harness::Outcome;
use crate::iommu::domain::{DomainId, DomainType, IOMMU, Stage};
use crate::iommu::registry;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

pub static TESTS: &[Test] = &[
    Test { suite: "virtio", name: "blk_read_sectors", run: blk_read_sectors },
    Test { suite: "virtio", name: "blk_write_read_back", run: blk_write_read_back },
    Test { suite: "virtio", name: "blk_through_smmu", run: blk_through_smmu },
];

const MARKER: &[u8; 8] = b"SMMUDISK";
/// The runner's image is 1 MiB.
const IMAGE_SECTORS: u64 = 2048;
/// Sectors at the end of the disk the write test may change.
const SCRATCH: u64 = 256;

/// Byte `i` of sector `n` in the runner's image.
fn pattern(n: u64, i: usize) -> u8 {
    match i {
        0..8 => n.to_le_bytes()[i],
        8..16 => MARKER[i - 8],
        _ => {
            let x = (n as u32).wrapping_mul(2_654_435_761) ^ (i as u32).wrapping_mul(40_503);
            (x.wrapping_mul(0x045d_9f3b) >> 24) as u8
        }
    }
}

/// Sectors `first..` in `data` hold the image pattern, or where they do not.
fn check_pattern(first: u64, data: &[u8]) -> Result<(), String> {
    for (k, s) in data.chunks(SECTOR_SIZE).enumerate() {
        let n = first + k as u64;
        if let Some(i) = (0..SECTOR_SIZE).find(|&i| s[i] != pattern(n, i)) {
            return Err(format!("sector {n} byte {i}: read {:#04x}, the image has {:#04x}", s[i], pattern(n, i)));
        }
    }
    Ok(())
}

/// Run `f` with virtio-blk number `i`. Skip when the machine has none; fail when one is
/// there but did not bind.
fn with_blk(i: usize, f: impl FnOnce(&mut VirtioBlk) -> Outcome) -> Outcome {
    let mut blks = VIRTIO_BLKS.lock();
    if let Some(b) = blks.get_mut(i) {
        return f(b);
    }
    let present = pci::FUNCTIONS.lock().iter().filter(|f| virtio_blk::is_virtio_blk(f)).count();
    if present > i {
        let errs = PROBE_ERRORS.lock().iter().filter(|e| e.starts_with("virtio-blk")).cloned().collect::<Vec<_>>();
        return Outcome::Fail(format!("{present} virtio-blk function(s) found but not bound: {errs:?}"));
    }
    Outcome::Skip(format!("needs {} virtio-blk-pci device(s), found {present}", i + 1))
}

/// Every address handed to the device equals its physical address on the direct path and
/// differs from it when translated.
fn check_handed(b: &VirtioBlk, entries: &[Handed]) -> Result<(), String> {
    let path = dma::path(&b.dma);
    for h in entries {
        match path {
            Path::Direct if h.dma != h.pa => {
                return Err(format!("direct path: {:?} at PA {:#x} handed as {:#x}", h.what, h.pa, h.dma));
            }
            Path::Iommu(_) if h.dma == h.pa => {
                return Err(format!("translated, but {:?} handed as its PA {:#x}", h.what, h.pa));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Read `sectors` at `first` into `buf` (pre-filled with 0xee) and check the pattern and
/// the addresses the request handed out.
fn read_check(b: &mut VirtioBlk, first: u64, buf: &mut [u8]) -> Result<(), String> {
    buf.fill(0xee);
    let before = b.stats.requests;
    b.read_blocks(first, buf).map_err(|e| format!("read {first}+{}: {e}", buf.len() / SECTOR_SIZE))?;
    if b.stats.requests != before + 1 {
        return Err("the read did not reach the device".into());
    }
    check_pattern(first, buf)?;
    let handed = b.handed();
    if !handed.iter().any(|h| h.len == buf.len()) {
        return Err(format!("the data buffer is not among the addresses handed out: {handed:x?}"));
    }
    check_handed(b, &handed)
}

/// A read after a domain change or an error: the device must be set up again and work.
fn health_read(b: &mut VirtioBlk) -> Result<(), String> {
    let mut buf = vec![0u8; 4 * SECTOR_SIZE];
    read_check(b, 16, &mut buf).map_err(|e| format!("read after recovery: {e}"))
}

fn blk_read_sectors(_: &Ctx) -> Outcome {
    with_blk(0, |b| {
        let cap = b.capacity();
        ensure!(cap >= IMAGE_SECTORS, "disk has {cap} sectors, the runner writes {IMAGE_SECTORS}");
        ensure!(b.access_platform(), "VIRTIO_F_ACCESS_PLATFORM was not negotiated");
        let end = IMAGE_SECTORS - SCRATCH;
        // (first sector, sectors): single, adjacent, page-crossing, 16 KiB, last of the area.
        for (first, n) in [(0u64, 1usize), (1, 1), (7, 2), (61, 8), (255, 32), (end - 3, 3)] {
            // A heap buffer 8 bytes into an allocation: neither page- nor sector-aligned.
            let mut v = vec![0u8; n * SECTOR_SIZE + 8];
            tri!(read_check(b, first, &mut v[8..]), "heap buffer");
        }
        // A coherent buffer (mapped once, handed out without a per-request mapping).
        let mut cb = tri!(b.alloc_buf(8 * SECTOR_SIZE), "alloc_buf");
        tri!(read_check(b, 300, cb.as_mut_slice()), "coherent buffer");
        ensure!(
            b.handed().iter().any(|h| h.what == Use::Buffer && h.dma == cb.dma()),
            "the coherent buffer was not handed out at its own address {:#x}",
            cb.dma()
        );
        drop(cb);
        // Eight single reads see what one eight-sector read saw.
        let mut whole = vec![0u8; 8 * SECTOR_SIZE];
        tri!(b.read_blocks(500, &mut whole), "read 500+8");
        for k in 0..8u64 {
            let mut one = vec![0xeeu8; SECTOR_SIZE];
            tri!(b.read_blocks(500 + k, &mut one), "read one");
            let at = k as usize * SECTOR_SIZE;
            ensure!(one[..] == whole[at..at + SECTOR_SIZE], "sector {} differs between the two reads", 500 + k);
        }
        // Phase timing (the benchmark's breakdown): off unless asked for; on, it counts
        // every request and times its phases.
        ensure!(b.phases.is_none(), "phase timing is on by default");
        b.phases = Some(Phases::default());
        for k in 0..3u64 {
            tri!(read_check(b, 600 + 8 * k, &mut whole), "timed read");
        }
        let p = b.phases.take().unwrap_or_default();
        ensure!(p.requests == 3 && p.polls >= 3 && p.submit + p.wait + p.complete > 0, "3 reads timed by phase: {p:?}");
        // Misuse is refused with a typed error, before the device sees it.
        let mut one = vec![0u8; SECTOR_SIZE];
        let r = b.read_blocks(cap, &mut one);
        ensure!(matches!(r, Err(BlkError::OutOfRange { .. })), "read past the end: {r:?}");
        let r = b.read_blocks(0, &mut one[..100]);
        ensure!(r == Err(BlkError::BadLength { len: 100 }), "100-byte read: {r:?}");
        Outcome::Pass
    })
}

/// Content for a written sector: differs per run (seed) and per sector.
fn fill_written(seed: u32, first: u64, buf: &mut [u8]) {
    for (k, s) in buf.chunks_mut(SECTOR_SIZE).enumerate() {
        let n = first as u32 + k as u32;
        for (i, byte) in s.iter_mut().enumerate() {
            *byte = (seed ^ n.wrapping_mul(0x9e37_79b9) ^ (i as u32).wrapping_mul(0x85eb_ca6b))
                .rotate_left(i as u32 % 29) as u8;
        }
    }
}

fn blk_write_read_back(_: &Ctx) -> Outcome {
    with_blk(0, |b| {
        let cap = b.capacity();
        ensure!(cap >= IMAGE_SECTORS, "disk has {cap} sectors, the runner writes {IMAGE_SECTORS}");
        let scratch = IMAGE_SECTORS - SCRATCH;
        // Fresh content every boot, so a disk left from an earlier run cannot pass.
        let seed = timer::ticks() as u32 | 1;
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for (off, n) in [(0u64, 1usize), (5, 8), (64, 64)] {
            let mut v = vec![0u8; n * SECTOR_SIZE];
            fill_written(seed, scratch + off, &mut v);
            runs.push((scratch + off, v));
        }
        for (first, v) in &runs {
            tri!(b.write_blocks(*first, v), "write");
            tri!(check_handed(b, &b.handed()), "write");
        }
        // The 64-sector run again from a coherent buffer, with other content.
        let mut cb = tri!(b.alloc_buf(64 * SECTOR_SIZE), "alloc_buf");
        fill_written(seed ^ 0x5a5a_5a5a, scratch + 64, cb.as_mut_slice());
        tri!(b.write_blocks(scratch + 64, cb.as_slice()), "write from a coherent buffer");
        runs[2].1.copy_from_slice(cb.as_slice());
        drop(cb);
        for (first, v) in &runs {
            let mut back = vec![0xeeu8; v.len() + 8];
            tri!(b.read_blocks(*first, &mut back[8..]), "read back");
            if let Some(i) = back[8..].iter().zip(v).position(|(a, w)| a != w) {
                return Outcome::Fail(format!(
                    "sector {} byte {}: read back {:#04x}, wrote {:#04x}",
                    first + (i / SECTOR_SIZE) as u64,
                    i % SECTOR_SIZE,
                    back[8 + i],
                    v[i]
                ));
            }
        }
        // The writes stayed where they were sent: the neighbours keep the image pattern.
        for n in [scratch - 1, scratch + 1, scratch + 4, scratch + 13] {
            let mut s = vec![0u8; SECTOR_SIZE];
            tri!(b.read_blocks(n, &mut s), "read a neighbour");
            tri!(check_pattern(n, &s), "a neighbour of the written sectors changed");
        }
        Outcome::Pass
    })
}

/// Move the device to a new domain of type `ty` for `f`, then back to its own, and free the
/// new domain. The driver releases its rings before the device leaves the new domain (they
/// are unmapped where they were mapped); with `quiesce` also before it enters, else the
/// device keeps its set-up from the old domain (what the blocked tests need).
fn in_domain(
    b: &mut VirtioBlk,
    ty: DomainType,
    quiesce: bool,
    f: impl FnOnce(&mut VirtioBlk, DomainId) -> Outcome,
) -> Outcome {
    let Some(m) = b.dma.master else { return Outcome::Skip("device is not behind an SMMU".into()) };
    let (smmu, old) = {
        let io = IOMMU.lock();
        (io.masters[m].smmu, io.domain_of(m))
    };
    if quiesce {
        tri!(b.quiesce(), "quiesce");
    }
    let did = tri!(IOMMU.lock().domain_alloc(smmu, ty, Stage::S1), "domain_alloc");
    if let Err(x) = IOMMU.lock().attach(m, did) {
        let _ = IOMMU.lock().domain_free(did);
        return Outcome::Fail(format!("attach: {x}"));
    }
    let r = f(b, did);
    let q = b.quiesce();
    if let Some(old) = old
        && let Err(x) = IOMMU.lock().attach(m, old)
    {
        return Outcome::Fail(format!("re-attach to the default domain: {x}"));
    }
    tri!(IOMMU.lock().domain_free(did), "domain_free");
    tri!(q, "quiesce");
    r
}

fn drain_events() {
    let _ = registry::with_smmu(0, |s| s.take_events());
}

fn translated_checks(b: &mut VirtioBlk, did: DomainId) -> Outcome {
    let mut buf = vec![0u8; 8 * SECTOR_SIZE];
    tri!(read_check(b, 100, &mut buf), "translated read");
    ensure!(dma::path(&b.dma) == Path::Iommu(did), "device is not in the translated domain");
    ensure!(b.session_path() == Some(Path::Iommu(did)), "driver not set up for the translated domain");
    ensure!(b.access_platform(), "VIRTIO_F_ACCESS_PLATFORM was not negotiated");
    // Rings and request page: IOVAs, mapped in the device's domain to their memory.
    let regions = b.regions();
    ensure!(regions.iter().filter(|r| r.what == Use::Ring).count() == 2, "expected 2 ring areas: {regions:x?}");
    for r in &regions {
        ensure!(r.dma != r.pa, "{:?} at PA {:#x} handed as its PA", r.what, r.pa);
        let got = IOMMU.lock().iova_to_phys(did, r.dma);
        ensure!(got == Some(r.pa), "{:?} IOVA {:#x} maps to {got:x?}, not {:#x}", r.what, r.dma, r.pa);
    }
    // The queue addresses the device was given are those IOVAs.
    let q = match b.queue_addrs() {
        Some(q) => q,
        None => return Outcome::Fail("the device was never given queue addresses".into()),
    };
    for (what, a) in ["descriptor table", "driver area", "device area"].iter().zip(q) {
        let inside = regions.iter().any(|r| r.what == Use::Ring && a >= r.dma && a < r.dma + r.len as u64);
        ensure!(inside, "{what} address {a:#x} is not a ring IOVA ({regions:x?})");
    }
    // The data buffer had its own IOVA, unmapped once the request completed.
    let handed = b.handed();
    let data = handed.iter().find(|h| h.what == Use::Streaming);
    let Some(data) = data else { return Outcome::Fail(format!("no streaming mapping among {handed:x?}")) };
    ensure!(data.dma != data.pa, "data buffer handed at its PA");
    if dma::strict() {
        let left = IOMMU.lock().iova_to_phys(did, data.dma);
        ensure!(left.is_none(), "data IOVA {:#x} still maps {left:x?} after the request", data.dma);
    }
    Outcome::Pass
}

fn blk_through_smmu(_: &Ctx) -> Outcome {
    with_blk(0, |b| {
        if b.dma.master.is_none() {
            return Outcome::Skip("device is not behind an SMMU".into());
        }
        // 1. Translated: in the default domain, or (iommu.passthrough=1) a DMA domain made for it.
        let o = match dma::path(&b.dma) {
            Path::Iommu(did) => translated_checks(b, did),
            _ => in_domain(b, DomainType::Dma, true, translated_checks),
        };
        if o != Outcome::Pass {
            return o;
        }
        tri!(health_read(b), "default domain");

        // 2. Blocked, a buffer the DMA API has to map: refused before the doorbell.
        let (rung0, held0) = b.doorbells();
        let o = in_domain(b, DomainType::Blocked, false, |b, _| {
            let mut v = vec![0xcau8; 2 * SECTOR_SIZE];
            let r = b.read_blocks(0, &mut v);
            ensure!(r == Err(BlkError::Dma(DmaError::Blocked)), "read in a blocked domain: {r:?}");
            ensure!(v.iter().all(|&x| x == 0xca), "the buffer changed");
            Outcome::Pass
        });
        if o != Outcome::Pass {
            return o;
        }
        let (rung1, held1) = b.doorbells();
        ensure!(rung1 == rung0 && held1 == held0 + 1, "doorbell rung {} / held {} times", rung1 - rung0, held1 - held0);
        tri!(health_read(b), "after the refused request");

        // 3. Blocked, everything already mapped (rings, request page, a coherent buffer):
        // the device is told, the SMMU must stop it; the wait ends with a typed error.
        let mut cb = tri!(b.alloc_buf(4 * SECTOR_SIZE), "alloc_buf");
        cb.as_mut_slice().fill(0xca);
        let saved = b.timeout_ms;
        b.timeout_ms = 200;
        let (rung0, _) = b.doorbells();
        drain_events();
        let o = in_domain(b, DomainType::Blocked, false, |b, _| {
            let t0 = timer::ticks();
            let r = b.read_blocks(0, cb.as_mut_slice());
            let ms = timer::ticks_to_us(timer::ticks() - t0) / 1000;
            ensure!(
                matches!(r, Err(BlkError::Timeout { .. } | BlkError::DeviceNeedsReset { .. })),
                "read with the device blocked: {r:?}"
            );
            ensure!(ms < 200 + 1000, "the failed request took {ms} ms");
            if let Err(e) = &r {
                // QEMU's virtio reads zeroes where the SMMU aborted and may say so on stderr.
                crate::kprintln!("virtio: blocked request ended in {ms} ms: {e}");
            }
            ensure!(b.doorbells().0 == rung0 + 1, "the device was not told of the request");
            ensure!(cb.as_slice().iter().all(|&x| x == 0xca), "a blocked device wrote the buffer");
            // Set-up again is impossible while blocked: refused, not hung.
            let r = b.read_blocks(0, cb.as_mut_slice());
            ensure!(r == Err(BlkError::Dma(DmaError::Blocked)), "second read while blocked: {r:?}");
            Outcome::Pass
        });
        b.timeout_ms = saved;
        drain_events();
        drop(cb);
        if o != Outcome::Pass {
            return o;
        }
        tri!(health_read(b), "after the blocked request");
        ensure!(b.deferred() == 0, "{} mappings still wait to be undone", b.deferred());
        Outcome::Pass
    })
}
