//! Soak: a bounded stress run of random map/unmap/DMA rounds over both edu engines
//! and their domains — random sizes, offsets and directions, faults on purpose —
//! checking every byte and every fault. `soak.rounds=N soak.seed=S` (`make soak`).

use super::dma::Guarded;
use super::{Ctx, Test};
use crate::dma::{self, Direction, Path};
use crate::drivers::{DmaEngine, EDUS, EduDev};
use crate::harness::Outcome;
use crate::iommu::domain::IOMMU;
use crate::iommu::registry;
use crate::iommu::smmuv3::event::EventKind;
use alloc::format;

pub static TESTS: &[Test] = &[Test { suite: "soak", name: "random_rounds", run: random_rounds }];

/// xorshift64*: deterministic from the seed the test prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Tally {
    dmas: u64,
    bytes: u64,
    faults: u64,
    sg: u64,
}

fn round_trip(e: &mut EduDev, rng: &mut Rng, t: &mut Tally) -> Result<(), alloc::string::String> {
    let len = 1 + rng.below(e.edu.max_len() as u64) as usize;
    let (so, dof) = (rng.below(4096) as usize, rng.below(4096) as usize);
    let src = Guarded::new(so + len).ok_or("no memory")?;
    let dst = Guarded::new(dof + len).ok_or("no memory")?;
    src.fill(rng.next() as u8);
    let sdir = if rng.below(2) == 0 { Direction::ToDevice } else { Direction::Bidirectional };
    let s = dma::map_single(&e.dma, src.pa + so as u64, len, sdir).map_err(|x| format!("map src: {x}"))?;
    let d = match dma::map_single(&e.dma, dst.pa + dof as u64, len, Direction::FromDevice) {
        Ok(d) => d,
        Err(x) => {
            let _ = dma::unmap_single(&e.dma, s, len, sdir);
            return Err(format!("map dst: {x}"));
        }
    };
    let r = e.edu.read_mem(s, 0, len).and_then(|_| e.edu.write_mem(d, 0, len));
    let u1 = dma::unmap_single(&e.dma, s, len, sdir);
    let u2 = dma::unmap_single(&e.dma, d, len, Direction::FromDevice);
    r.map_err(|x| format!("DMA: {x}"))?;
    u1.and(u2).map_err(|x| format!("unmap: {x}"))?;
    let (a, b) = (&src.bytes()[so..so + len], &dst.bytes()[dof..dof + len]);
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        return Err(format!("{len}-byte DMA {s:#x}->{d:#x}: byte {i} differs"));
    }
    if dst.bytes()[..dof].iter().chain(&dst.bytes()[dof + len..]).any(|&x| x != 0) || !dst.canaries_intact() {
        return Err(format!("{len}-byte DMA wrote outside its buffer"));
    }
    t.dmas += 2;
    t.bytes += len as u64;
    Ok(())
}

fn fault(e: &mut EduDev, rng: &mut Rng, t: &mut Tally) -> Result<(), alloc::string::String> {
    let Path::Iommu(did) = dma::path(&e.dma) else { return Ok(()) };
    let iova = {
        let mut io = IOMMU.lock();
        let d = io.domain(did).map_err(|x| format!("{x}"))?;
        d.iova.as_mut().ok_or("no allocator")?.alloc(0x1000, e.dma.mask).map_err(|x| format!("{x:?}"))?
    };
    let off = rng.below(0x1000 - 64) & !3;
    let _ = registry::with_smmu(0, |s| s.take_events());
    let write = rng.below(2) == 0;
    let r = if write { e.edu.write_mem(iova + off, 0, 64) } else { e.edu.read_mem(iova + off, 0, 64) };
    let ev = registry::with_smmu(0, |s| s.take_events()).unwrap_or_default();
    if let Ok(d) = IOMMU.lock().domain(did)
        && let Some(a) = d.iova.as_mut()
    {
        let _ = a.free(iova);
    }
    r.map_err(|x| format!("DMA: {x}"))?;
    let sid = e.func.stream.map(|s| s.1).unwrap_or(u32::MAX);
    if ev.is_empty()
        || ev.iter().any(|x| {
            x.kind != EventKind::FTranslation
                || x.sid != sid
                || x.read == write
                || x.input_addr.map(|a| a & !0xfff) != Some(iova)
        })
    {
        return Err(format!(
            "fault at {:#x} ({}) reported as {:?}",
            iova + off,
            if write { "write" } else { "read" },
            ev.first().map(|x| format!("{x}"))
        ));
    }
    t.faults += 1;
    Ok(())
}

fn scatter(e: &mut EduDev, rng: &mut Rng, t: &mut Tally) -> Result<(), alloc::string::String> {
    let n = 1 + rng.below(6) as usize;
    let bufs: alloc::vec::Vec<Guarded> = (0..n).filter_map(|_| Guarded::new(4096)).collect();
    let segs: alloc::vec::Vec<(u64, usize)> =
        bufs.iter().map(|b| (b.pa + rng.below(2048), 1 + rng.below(2048) as usize)).collect();
    let dmas = dma::map_sg(&e.dma, &segs, Direction::ToDevice).map_err(|x| format!("map_sg: {x}"))?;
    // Every segment is visible to the device: read its first bytes through the engine.
    let mut r = Ok(());
    for (i, &d) in dmas.iter().enumerate() {
        if let Err(x) = e.edu.read_mem(d, 0, segs[i].1.min(16)) {
            r = Err(format!("DMA seg {i}: {x}"));
            break;
        }
    }
    let ev = registry::with_smmu(0, |s| s.take_events()).unwrap_or_default();
    dma::unmap_sg(&e.dma, &dmas, &segs, Direction::ToDevice).map_err(|x| format!("unmap_sg: {x}"))?;
    r?;
    if let Some(x) = ev.first() {
        return Err(format!("scatter list access faulted: {x}"));
    }
    t.sg += 1;
    t.dmas += n as u64;
    Ok(())
}

fn random_rounds(c: &Ctx) -> Outcome {
    let rounds = c.args.number("soak.rounds").ok().flatten().unwrap_or(24);
    let seed = c.args.number("soak.seed").ok().flatten().unwrap_or(0x5eed_1234_abcd_0001) | 1;
    let mut rng = Rng(seed);
    let mut edus = EDUS.lock();
    if edus.is_empty() {
        return Outcome::Skip("no edu".into());
    }
    let n = edus.len();
    let mut t = Tally::default();
    for r in 0..rounds {
        let e = &mut edus[rng.below(n as u64) as usize];
        let what = rng.below(10);
        let res = match what {
            0..=5 => round_trip(e, &mut rng, &mut t),
            6..=7 => fault(e, &mut rng, &mut t),
            _ => scatter(e, &mut rng, &mut t),
        };
        if let Err(m) = res {
            return Outcome::Fail(format!("round {r} (seed {seed:#x}): {m}"));
        }
    }
    crate::kprintln!(
        "soak: seed {seed:#x}, {rounds} rounds: {} DMAs, {} bytes checked, {} faults checked, {} scatter lists",
        t.dmas,
        t.bytes,
        t.faults,
        t.sg
    );
    Outcome::Pass
}
