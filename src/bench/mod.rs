//! In-QEMU benchmarks. `bench=1`: invalidation cost counted exactly (commands, CMD_SYNCs,
//! CMDQ_PROD writes per strict unmap, with and without range invalidation; syncs per 1000
//! lazy unmaps) and DMA API latency as ratios to bypass, with where the lazy time goes.
//! `bench=latency`: only the DMA API latency rows (the runner boots it under `-icount` too,
//! where they count instructions). `bench=loop`: one mode's map+unmap loop for a profiler.
//! `bench=virtio`: virtio-blk and edu throughput, strict/lazy/bypass interleaved in one boot.
//! Each result is one `BENCH {json}` line the runner gathers into build/bench.json.

use crate::arch::{self, timer};
use crate::bootargs::BootArgs;
use crate::dma::{self, Direction, DmaDevice, Path};
use crate::drivers::EDUS;
use crate::drivers::virtio_blk::{DmaBuf, Phases, SECTOR_SIZE, VirtioBlk};
use crate::drivers::{DmaEngine, EduDev};
use crate::iommu::domain::{DomainId, MasterId};
use crate::iommu::domain::{DomainType, IOMMU, IommuError, NO_RIL, Stage};
use crate::iommu::io_pgtable::{Granule, Prot};
use crate::iommu::registry;
use crate::iommu::smmuv3::device::Stats;
use crate::kprintln;
use crate::mm::frames::{self, FrameBuf};
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

/// Commands / syncs / PROD writes / CONS reads for one strict unmap of `pages` 4 KiB pages.
fn invalidation(pages: u64, ril: bool) -> Result<(u64, u64, u64, u64), String> {
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
        let before = smmu_stats(0);
        io.unmap(did, iova, pages * 4096).map_err(|e| alloc::format!("{e}"))?;
        let after = smmu_stats(0);
        Ok((
            after.commands - before.commands,
            after.syncs - before.syncs,
            after.prod_writes - before.prod_writes,
            after.cons_reads - before.cons_reads,
        ))
    })();
    let _ = io.domain_free(did);
    NO_RIL.store(false, Ordering::SeqCst);
    r
}

/// One map and unmap of the page at `pa` for the device to read: a round of the DMA API
/// latency loops (inlined, so the loops time what they timed before it was shared).
#[inline(always)]
fn map_unmap_page(dev: &DmaDevice, pa: u64) -> Result<(), String> {
    let d = dma::map_single(dev, pa, 4096, Direction::ToDevice).map_err(|e| alloc::format!("map: {e}"))?;
    dma::unmap_single(dev, d, 4096, Direction::ToDevice).map_err(|e| alloc::format!("unmap: {e}"))
}

/// Median ns of one map+unmap of a page for `dev`, deferred unmaps completed after. The
/// page is `pas[i % pas.len()]` in round `i`: one page (the loop; in lazy mode its
/// waiting IOVA is taken back), or more than a lazy batch of pages (a fresh IOVA each map).
fn map_unmap_latency(dev: &DmaDevice, pas: &[u64], rounds: u64) -> Result<u64, String> {
    let mut i = 0;
    let r = ns_per_call(rounds, &mut || {
        let pa = pas[i % pas.len()];
        i += 1;
        map_unmap_page(dev, pa)
    });
    dma::flush(dev).map_err(|e| alloc::format!("{e}"))?;
    r
}

// ---------------------------------------------------------------------------------------
// Throughput (`bench=virtio`): one boot, the three DMA modes interleaved.

/// The DMA modes the throughput benchmarks compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The device's DMA domain, every unmap invalidated before it returns (`iommu.strict=1`).
    Strict,
    /// The same domain, unmaps batched behind one flush (`iommu.strict=0`).
    Lazy,
    /// An identity domain: the SMMU passes the device's addresses through.
    Bypass,
    /// `Strict` in a DMA domain with 64 KiB pages (`iommu.granule=64k`).
    StrictG64k,
    /// `Lazy` in that domain.
    LazyG64k,
    /// The DMA domain, reading into one buffer mapped for the whole run (`alloc_coherent`):
    /// no map or unmap per read. No DMA API can do better in this domain: the ceiling for
    /// `Strict` and `Lazy`, whose distance to it is what mapping every read costs.
    Premapped,
}

impl Mode {
    /// What every workload compares.
    const BASIC: [Mode; 3] = [Mode::Strict, Mode::Lazy, Mode::Bypass];
    /// virtio-blk also runs with 64 KiB pages (a 64 KiB read is then one page to map, one
    /// IOTLB entry and one walk instead of sixteen), and premapped.
    const VIRTIO: [Mode; 6] =
        [Mode::Strict, Mode::Lazy, Mode::Bypass, Mode::StrictG64k, Mode::LazyG64k, Mode::Premapped];
    /// `VIRTIO` on an SMMU without 64 KiB pages.
    const VIRTIO_4K: [Mode; 4] = [Mode::Strict, Mode::Lazy, Mode::Bypass, Mode::Premapped];
    const COUNT: usize = Mode::VIRTIO.len();

    fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Lazy => "lazy",
            Mode::Bypass => "bypass",
            Mode::StrictG64k => "strict_g64k",
            Mode::LazyG64k => "lazy_g64k",
            Mode::Premapped => "premapped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn lazy(self) -> bool {
        matches!(self, Mode::Lazy | Mode::LazyG64k)
    }
}

/// Passes over each workload. Pass `p` runs the modes rotated by `p`, so every mode runs
/// first, second and last alike and a slow drift of the host is shared among them.
const PASSES: usize = 5;
/// 4 KiB edu transfers per mode and pass; each waits for the model's 100 ms timer.
const EDU_TRANSFERS: usize = 8;
/// Pages the lazy latency loop rotates through when it wants a fresh IOVA every map: more
/// than a lazy batch, so none is still waiting when its page comes round again.
const FRESH_PAGES: usize = 2 * dma::LAZY_BATCH;
/// Reads per mode timed by phase after the virtio passes.
const PHASE_READS: u64 = 256;
/// Map+unmap rounds timed after each virtio pass (the DMA API's part of one read).
const MAP_ROUNDS: u64 = 256;
/// Within a virtio pass the modes take turns on slices of the disk (2 MiB of 64 MiB), so a
/// burst of host load lands on all three instead of on one mode's whole run.
const SLICES: u64 = 32;

fn pass_order(modes: &[Mode], p: usize) -> Vec<Mode> {
    let mut o = modes.to_vec();
    o.rotate_left(p % modes.len());
    o
}

fn smmu_stats(smmu: usize) -> Stats {
    registry::with_smmu(smmu, |s| s.stats).unwrap_or_default()
}

/// A device's domains for the interleaved runs: its own DMA domain (strict, lazy and
/// premapped), an identity domain made for the bypass runs and, for virtio-blk if the SMMU
/// has 64 KiB pages, a DMA domain with them. `restore` puts the device back home.
struct Modes {
    master: MasterId,
    smmu: usize,
    home: DomainId,
    ident: DomainId,
    g64k: Option<DomainId>,
    /// The modes these domains can run.
    list: &'static [Mode],
    was_strict: bool,
}

impl Modes {
    fn new(dev: &DmaDevice) -> Result<Modes, String> {
        Modes::make(dev, false)
    }

    /// `new`, plus premapped and (when the SMMU has that granule) the 64 KiB-page modes.
    fn virtio(dev: &DmaDevice) -> Result<Modes, String> {
        Modes::make(dev, true)
    }

    fn make(dev: &DmaDevice, virtio: bool) -> Result<Modes, String> {
        let master = dev.master.ok_or("not behind an SMMU: no bypass to compare with")?;
        let mut io = IOMMU.lock();
        let home = io.domain_of(master).ok_or("the device has no domain")?;
        let ty = io.domain(home).map_err(|e| alloc::format!("{e}"))?.ty;
        if ty != DomainType::Dma {
            return Err(alloc::format!("its domain is {ty:?}, not DMA (boot without iommu.passthrough=1)"));
        }
        let smmu = io.masters[master].smmu;
        let ident = io.domain_alloc(smmu, DomainType::Identity, Stage::S1).map_err(|e| alloc::format!("{e}"))?;
        let g64k = match virtio {
            false => None,
            true => match io.domain_alloc_granule(smmu, DomainType::Dma, Stage::S1, Granule::K64) {
                Ok(d) => Some(d),
                Err(IommuError::Unsupported(w)) => {
                    kprintln!("bench: SMMU {smmu} lacks {w}: no 64 KiB-page runs");
                    None
                }
                Err(e) => return Err(alloc::format!("64 KiB-page domain: {e}")),
            },
        };
        let list: &'static [Mode] = match (virtio, g64k.is_some()) {
            (false, _) => &Mode::BASIC,
            (true, true) => &Mode::VIRTIO,
            (true, false) => &Mode::VIRTIO_4K,
        };
        Ok(Modes { master, smmu, home, ident, g64k, list, was_strict: dma::strict() })
    }

    fn domain(&self, mode: Mode) -> Result<DomainId, String> {
        match mode {
            Mode::Strict | Mode::Lazy | Mode::Premapped => Ok(self.home),
            Mode::Bypass => Ok(self.ident),
            Mode::StrictG64k | Mode::LazyG64k => self.g64k.ok_or_else(|| "no 64 KiB-page domain".into()),
        }
    }

    /// The DMA path a device in `mode` takes (blocked: a mode without its domain).
    fn path(&self, mode: Mode) -> Path {
        match mode {
            Mode::Bypass => Path::Direct,
            _ => self.domain(mode).map_or(Path::Blocked, Path::Iommu),
        }
    }

    /// Move the device to `mode`'s domain and strictness. The caller has made sure nothing
    /// of the device is mapped in the domain it leaves, and that it does no DMA meanwhile.
    fn set(&self, mode: Mode) -> Result<(), String> {
        let did = self.domain(mode)?;
        let mut io = IOMMU.lock();
        if io.domain_of(self.master) != Some(did) {
            io.attach(self.master, did).map_err(|e| alloc::format!("attach for {}: {e}", mode.name()))?;
        }
        dma::set_strict(!mode.lazy());
        Ok(())
    }

    fn restore(self) -> Result<(), String> {
        dma::set_strict(self.was_strict);
        let mut io = IOMMU.lock();
        if io.domain_of(self.master) != Some(self.home) {
            io.attach(self.master, self.home).map_err(|e| alloc::format!("re-attach: {e}"))?;
        }
        if let Some(d) = self.g64k {
            io.domain_free(d).map_err(|e| alloc::format!("free the 64 KiB-page domain: {e}"))?;
        }
        io.domain_free(self.ident).map_err(|e| alloc::format!("free the identity domain: {e}"))
    }
}

fn page_buf(len: usize) -> Result<FrameBuf, String> {
    FrameBuf::alloc(len).ok_or_else(|| alloc::format!("no free pages for {len} bytes"))
}

/// What the runs of one workload measured, per pass and mode (indexed by `Mode::index`).
struct Runs {
    /// The modes that ran.
    modes: &'static [Mode],
    /// Ticks per slice of the workload, pass and mode (one slice: the whole run).
    slices: Vec<[[u64; Mode::COUNT]; PASSES]>,
    /// Ticks of the DMA API's work (map+unmap) per operation: for virtio timed in a loop of
    /// its own after each pass, for the edu around each transfer.
    api: [[u64; Mode::COUNT]; PASSES],
    syncs: [[u64; Mode::COUNT]; PASSES],
    /// Operations (reads, transfers) per run.
    ops: u64,
}

fn median<const N: usize>(mut v: [u64; N]) -> u64 {
    v.sort_unstable();
    v[N / 2]
}

impl Runs {
    fn new(modes: &'static [Mode], slices: usize) -> Runs {
        Runs {
            modes,
            slices: alloc::vec![[[0; Mode::COUNT]; PASSES]; slices.max(1)],
            api: [[0; Mode::COUNT]; PASSES],
            syncs: [[0; Mode::COUNT]; PASSES],
            ops: 0,
        }
    }

    fn pass_ticks(&self, p: usize, m: Mode) -> u64 {
        self.slices.iter().map(|s| s[p][m.index()]).sum()
    }

    /// The workload's ticks in mode `m`: per slice the median over the passes, summed. A
    /// burst of host load that stalls one slice of one pass is left out.
    fn ticks(&self, m: Mode) -> u64 {
        self.slices.iter().map(|s| median::<PASSES>(core::array::from_fn(|p| s[p][m.index()]))).sum()
    }

    /// The workload's ticks in mode `m` from the fastest pass of every slice, summed. Noise
    /// here is one-sided (a loaded host only ever adds time), so when more than half the
    /// passes of a short slice were stalled this still finds the slice's own time.
    fn best_ticks(&self, m: Mode) -> u64 {
        self.slices.iter().map(|s| s.iter().map(|p| p[m.index()]).min().unwrap_or(0)).sum()
    }

    /// Per pass, bypass seconds / `m` seconds of that pass (runs next to each other in time).
    fn pass_ratios(&self, m: Mode) -> [f64; PASSES] {
        core::array::from_fn(|p| {
            let t = self.pass_ticks(p, m);
            if t == 0 { 0.0 } else { self.pass_ticks(p, Mode::Bypass) as f64 / t as f64 }
        })
    }
}

fn secs(ticks: u64) -> f64 {
    timer::ticks_to_ns(ticks) as f64 / 1e9
}

fn us(ticks: u64) -> f64 {
    timer::ticks_to_ns(ticks) as f64 / 1e3
}

fn json_list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| alloc::format!("{x:.4}")).collect();
    alloc::format!("[{}]", items.join(", "))
}

/// Print one workload's results and emit `{prefix}_seconds_{mode}` (medians): for strict
/// and lazy with bypass as the peer and the throughput ratio bypass_seconds / mode_seconds.
/// A sliced workload also gets `{prefix}_seconds_{mode}_best` (fastest pass per slice).
fn report(prefix: &str, what: &str, runs: &Runs) {
    let ratio = |b: u64, t: u64| if t == 0 { 0.0 } else { b as f64 / t as f64 };
    let (bypass, bypass_best) = (runs.ticks(Mode::Bypass), runs.best_ticks(Mode::Bypass));
    let sliced = runs.slices.len() > 1;
    for &m in runs.modes {
        let (t, best) = (runs.ticks(m), runs.best_ticks(m));
        let passes: Vec<f64> = (0..PASSES).map(|p| secs(runs.pass_ticks(p, m))).collect();
        let ops = runs.ops.max(1);
        let per_op = us(t) / ops as f64;
        let api = us(median::<PASSES>(core::array::from_fn(|p| runs.api[p][m.index()])));
        let syncs = median::<PASSES>(core::array::from_fn(|p| runs.syncs[p][m.index()])) as f64 / ops as f64;
        let detail = alloc::format!(
            "\"ops\": {}, \"us_per_op\": {per_op:.2}, \"map_unmap_us_per_op\": {api:.2}, \"cmd_syncs_per_op\": {syncs:.3}, \"pass_seconds\": {}",
            runs.ops,
            json_list(&passes)
        );
        let metric = alloc::format!("{prefix}_seconds_{}", m.name());
        let line = alloc::format!(
            "bench: {what} {}: {:.3} s (best {:.3} s), {per_op:.1} us per op, map+unmap {api:.1} us, {syncs:.2} CMD_SYNC per op",
            m.name(),
            secs(t),
            secs(best)
        );
        if m == Mode::Bypass {
            kprintln!("{line}");
            kprintln!(
                "BENCH {{\"metric\": \"{metric}\", \"ours\": {:.4}, \"peer\": null, \"unit\": \"s\", {detail}}}",
                secs(t)
            );
            continue;
        }
        let mut pr = runs.pass_ratios(m);
        kprintln!(
            "{line}; {:.3}x bypass throughput (best {:.3}x, passes alone {})",
            ratio(bypass, t),
            ratio(bypass_best, best),
            json_list(&pr)
        );
        pr.sort_unstable_by(f64::total_cmp);
        kprintln!(
            "BENCH {{\"metric\": \"{metric}\", \"ours\": {:.4}, \"peer\": {:.4}, \"peer_name\": \"bypass\", \"unit\": \"s\", \"ratio\": {:.3}, \"ratio_is\": \"throughput vs bypass (bypass s / ours s)\", \"pass_ratio_min\": {:.3}, \"pass_ratio_max\": {:.3}, {detail}}}",
            secs(t),
            secs(bypass),
            ratio(bypass, t),
            pr[0],
            pr[PASSES - 1]
        );
        if sliced {
            kprintln!(
                "BENCH {{\"metric\": \"{metric}_best\", \"ours\": {:.4}, \"peer\": {:.4}, \"peer_name\": \"bypass_best\", \"unit\": \"s\", \"ratio\": {:.3}, \"ratio_is\": \"throughput vs bypass, fastest pass per slice\"}}",
                secs(best),
                secs(bypass_best),
                ratio(bypass_best, best)
            );
        }
    }
}

/// A run's invalidation traffic must be its mode's: none in bypass or premapped, a CMD_SYNC per unmap
/// when strict, a few batches when lazy (besides the flush timer's, `timer` of them). A
/// mode switch that did not take shows here.
fn check_traffic(mode: Mode, ops: u64, t: Traffic) -> Result<(), String> {
    let ok = match mode {
        // Premapped: the buffer was mapped before and is unmapped after the timed reads.
        Mode::Bypass | Mode::Premapped => t.cmds == 0,
        Mode::Lazy | Mode::LazyG64k => t.syncs.saturating_sub(t.timer) * 4 <= ops,
        Mode::Strict | Mode::StrictG64k => t.syncs >= ops,
    };
    if !ok {
        return Err(alloc::format!(
            "{} run of {ops} ops issued {} commands, {} CMD_SYNCs ({} flush-timer runs)",
            mode.name(),
            t.cmds,
            t.syncs,
            t.timer
        ));
    }
    Ok(())
}

/// What the SMMU was asked to do while some work ran.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    cmds: u64,
    syncs: u64,
    /// Flushes by the lazy-flush timer among them.
    timer: u64,
}

impl Traffic {
    /// The counters now, for `since`.
    fn mark(smmu: usize) -> (Stats, u64) {
        (smmu_stats(smmu), dma::flush_timer_stats().flushes)
    }

    fn since(smmu: usize, (before, t0): (Stats, u64)) -> Traffic {
        let (after, t1) = Traffic::mark(smmu);
        Traffic { cmds: after.commands - before.commands, syncs: after.syncs - before.syncs, timer: t1 - t0 }
    }

    fn add(&mut self, o: Traffic) {
        self.cmds += o.cmds;
        self.syncs += o.syncs;
        self.timer += o.timer;
    }
}

/// The SMMU traffic while `f` ran.
fn traffic<R>(smmu: usize, f: impl FnOnce() -> R) -> (R, Traffic) {
    let before = Traffic::mark(smmu);
    let r = f();
    (r, Traffic::since(smmu, before))
}

/// Average ticks of one map+unmap of `len` bytes at `pa` for `dev` in its current mode:
/// the DMA API's part of a read, without the device.
fn map_unmap_ticks(dev: &DmaDevice, pa: u64, len: usize) -> Result<u64, String> {
    let t0 = timer::ticks();
    for _ in 0..MAP_ROUNDS {
        let d = dma::map_single(dev, pa, len, Direction::FromDevice).map_err(|e| alloc::format!("map: {e}"))?;
        dma::unmap_single(dev, d, len, Direction::FromDevice).map_err(|e| alloc::format!("unmap: {e}"))?;
    }
    dma::flush(dev).map_err(|e| alloc::format!("flush: {e}"))?;
    Ok((timer::ticks() - t0) / MAP_ROUNDS)
}

/// Read `reads` requests of `buf`'s size from `sector` on (each buffer mapped and unmapped
/// through the DMA API by the driver), then complete deferred unmaps; ticks taken. Every
/// sector must start with its number (the runner's disk image): a read that did not land
/// where the mode says fails the run.
fn virtio_read_range(b: &mut VirtioBlk, buf: &mut [u8], sector: u64, reads: u64) -> Result<u64, String> {
    let per = (buf.len() / SECTOR_SIZE) as u64;
    let mut ticks = 0u64;
    for r in 0..reads {
        let s = sector + r * per;
        let t0 = timer::ticks();
        b.read_blocks(s, buf).map_err(|e| alloc::format!("read at sector {s}: {e}"))?;
        ticks += timer::ticks() - t0;
        for (i, sec) in buf.chunks_exact(SECTOR_SIZE).enumerate() {
            let n = u64::from_le_bytes(sec[..8].try_into().unwrap_or_default());
            if n != s + i as u64 {
                return Err(alloc::format!("sector {} read back as sector {n}", s + i as u64));
            }
        }
    }
    let t0 = timer::ticks();
    dma::flush(&b.dma).map_err(|e| alloc::format!("{e}"))?;
    Ok(ticks + timer::ticks() - t0)
}

/// Move the virtio-blk device to `mode`.
///
/// The driver's long-lived memory (two ring areas, the request-header page) is allocated
/// with `alloc_coherent` in the domain the device sits in when it is set up: IOVAs in the
/// DMA domain, physical addresses in the identity domain. Moved to the other domain, the
/// device would take those addresses for the other kind. So before every move the device
/// is quiesced (reset: it stops using the rings, which are then unmapped and freed in the
/// domain they were mapped in); after it a first, untimed read sets the device up afresh
/// in the new domain, and the driver's set-up is checked to be the mode's.
fn virtio_switch(b: &mut VirtioBlk, modes: &Modes, mode: Mode, buf: &mut [u8]) -> Result<(), String> {
    virtio_move(b, modes, mode)?;
    b.read_blocks(0, buf).map_err(|e| alloc::format!("first read, {}: {e}", mode.name()))?;
    let want = modes.path(mode);
    if b.session_path() != Some(want) || dma::path(&b.dma) != want {
        return Err(alloc::format!(
            "{}: device on {:?}, driver set up for {:?}",
            mode.name(),
            dma::path(&b.dma),
            b.session_path()
        ));
    }
    Ok(())
}

/// Quiesce the device and move it to `mode`'s domain. In lazy mode the rings' unmaps wait
/// in the domain being left: they are invalidated now, not in the next mode's run (where
/// the flush timer would).
fn virtio_move(b: &mut VirtioBlk, modes: &Modes, mode: Mode) -> Result<(), String> {
    b.quiesce().map_err(|e| alloc::format!("quiesce: {e}"))?;
    dma::flush(&b.dma).map_err(|e| alloc::format!("flush: {e}"))?;
    modes.set(mode)
}

/// Every mode reads the whole disk in `chunk`-byte requests, PASSES times. Within a pass
/// the modes take turns slice by slice (in an order rotated every slice); a mode's time in
/// the pass is the sum of its slices.
fn virtio_passes(b: &mut VirtioBlk, modes: &Modes, chunk: usize) -> Result<Runs, String> {
    let mut buf = page_buf(chunk)?;
    let per = (chunk / SECTOR_SIZE) as u64;
    let reads = b.capacity() / per;
    let slice = reads.div_ceil(SLICES).max(1);
    let mut runs = Runs::new(modes.list, reads.div_ceil(slice) as usize);
    runs.ops = reads;
    for p in 0..PASSES {
        let mut tr = [Traffic::default(); Mode::COUNT];
        let mut first = 0;
        // The order rotates every slice, starting one further every pass.
        for (turn, sl) in (p..).zip(runs.slices.iter_mut()) {
            let n = slice.min(reads - first);
            for mode in pass_order(modes.list, turn) {
                virtio_switch(b, modes, mode, buf.as_mut_slice())?;
                let (t, x) = virtio_run(b, modes, mode, &mut buf, first * per, n);
                let i = mode.index();
                sl[p][i] = t?;
                tr[i].add(x);
            }
            first += n;
        }
        for &mode in modes.list {
            let i = mode.index();
            check_traffic(mode, reads, tr[i])?;
            runs.syncs[p][i] = tr[i].syncs;
            virtio_move(b, modes, mode)?;
            runs.api[p][i] = match mode {
                Mode::Premapped => 0,
                _ => map_unmap_ticks(&b.dma, buf.pa, chunk)?,
            };
        }
        let each: Vec<String> =
            modes.list.iter().map(|&m| alloc::format!("{} {:.3} s", m.name(), secs(runs.pass_ticks(p, m)))).collect();
        kprintln!("bench: virtio-blk {} KiB pass {}: {} ({reads} reads each)", chunk / 1024, p + 1, each.join(", "));
    }
    Ok(runs)
}

/// `virtio_read_range` in `mode` and the SMMU traffic it caused. Premapped reads go into
/// a buffer mapped for the device before and unmapped after (outside timing and traffic).
fn virtio_run(
    b: &mut VirtioBlk,
    modes: &Modes,
    mode: Mode,
    buf: &mut FrameBuf,
    sector: u64,
    reads: u64,
) -> (Result<u64, String>, Traffic) {
    if mode != Mode::Premapped {
        return traffic(modes.smmu, || virtio_read_range(b, buf.as_mut_slice(), sector, reads));
    }
    let len = buf.as_mut_slice().len();
    match premapped_buf(b, len) {
        Ok(mut cb) => traffic(modes.smmu, || virtio_read_range(b, cb.as_mut_slice(), sector, reads)),
        Err(e) => (Err(e), Traffic::default()),
    }
}

/// `Mode::Premapped`'s buffer: `len` bytes mapped for the device once (`alloc_buf`), until
/// it is dropped.
fn premapped_buf(b: &mut VirtioBlk, len: usize) -> Result<DmaBuf, String> {
    b.alloc_buf(len).map_err(|e| alloc::format!("premapped buffer: {e}"))
}

/// PASSES more rounds of `reads` reads per mode (the order rotated every round), the
/// driver timing every read by phase (outside the timed passes: the counter reads cost a
/// little); per mode and phase the median round. Shows where translation's cost lands: in
/// the DMA API (submit, complete) or in the device model (wait).
fn virtio_phases(b: &mut VirtioBlk, modes: &Modes, chunk: usize, reads: u64) -> Result<[Phases; Mode::COUNT], String> {
    let mut buf = page_buf(chunk)?;
    let mut rounds = [[Phases::default(); Mode::COUNT]; PASSES];
    for (p, round) in rounds.iter_mut().enumerate() {
        for mode in pass_order(modes.list, p) {
            virtio_switch(b, modes, mode, buf.as_mut_slice())?;
            b.phases = Some(Phases::default());
            let (r, _) = virtio_run(b, modes, mode, &mut buf, 0, reads);
            round[mode.index()] = b.phases.take().unwrap_or_default();
            r?;
        }
    }
    Ok(core::array::from_fn(|i| {
        let med = |f: fn(&Phases) -> u64| median::<PASSES>(core::array::from_fn(|p| f(&rounds[p][i])));
        Phases {
            requests: med(|x| x.requests),
            submit: med(|x| x.submit),
            wait: med(|x| x.wait),
            complete: med(|x| x.complete),
            polls: med(|x| x.polls),
        }
    }))
}

/// Print where a read's time went per mode, and emit `{prefix}_{driver,wait}_us_{mode}`
/// (the DMA API's and the device's part; bypass as the peer).
fn report_phases(prefix: &str, what: &str, modes: &[Mode], ph: &[Phases; Mode::COUNT]) {
    let per = |p: &Phases, t: u64| us(t) / p.requests.max(1) as f64;
    let parts = |m: Mode| {
        let p = &ph[m.index()];
        (per(p, p.submit), per(p, p.wait), per(p, p.complete), p.polls as f64 / p.requests.max(1) as f64)
    };
    let (bs, bw, bc, _) = parts(Mode::Bypass);
    kprintln!("bench: {what}, us per read: submit (map, doorbell) / wait (the device) / complete (unmap)");
    for &m in modes {
        let (s, w, c, polls) = parts(m);
        let vs = match m {
            Mode::Bypass => String::new(),
            _ => alloc::format!(": {:+.1} us in the driver, {:+.1} us in the device", s + c - bs - bc, w - bw),
        };
        kprintln!("bench:   {:<12} {s:6.1} / {w:6.1} / {c:5.1} ({polls:.0} polls){vs}", m.name());
        let peer = |x: f64| (m != Mode::Bypass).then_some(x);
        emit(&alloc::format!("{prefix}_driver_us_{}", m.name()), s + c, peer(bs + bc), "us");
        emit(&alloc::format!("{prefix}_wait_us_{}", m.name()), w, peer(bw), "us");
    }
}

/// Every mode, PASSES times, EDU_TRANSFERS edu writes of 4 KiB into a page mapped for the
/// transfer. The edu has no long-lived mappings: moving it needs no quiesce.
fn edu_passes(e: &mut EduDev, modes: &Modes) -> Result<Runs, String> {
    const LEN: usize = 4096;
    let mut pattern = page_buf(LEN)?;
    for (i, x) in pattern.as_mut_slice().iter_mut().enumerate() {
        *x = (i * 7 + 3) as u8;
    }
    let mut page = page_buf(LEN)?;
    // The engine's buffer is loaded once (one untimed transfer) and written out after.
    modes.set(Mode::Strict)?;
    let d = dma::map_single(&e.dma, pattern.pa, LEN, Direction::ToDevice).map_err(|x| alloc::format!("map: {x}"))?;
    let r = e.edu.read_mem(d, 0, LEN);
    if r.is_err() {
        // It may still read the page: keep it.
        core::mem::forget(pattern);
        return Err(alloc::format!("edu load: {r:?}"));
    }
    dma::unmap_single(&e.dma, d, LEN, Direction::ToDevice).map_err(|x| alloc::format!("unmap: {x}"))?;
    let mut runs = Runs::new(modes.list, 1);
    runs.ops = EDU_TRANSFERS as u64;
    for p in 0..PASSES {
        for mode in pass_order(modes.list, p) {
            modes.set(mode)?;
            if dma::path(&e.dma) != modes.path(mode) {
                return Err(alloc::format!("{}: device on {:?}", mode.name(), dma::path(&e.dma)));
            }
            let before = Traffic::mark(modes.smmu);
            let (mut ticks, mut api) = (0u64, 0u64);
            for _ in 0..EDU_TRANSFERS {
                page.as_mut_slice().fill(0);
                let t0 = timer::ticks();
                let d = dma::map_single(&e.dma, page.pa, LEN, Direction::FromDevice)
                    .map_err(|x| alloc::format!("map: {x}"))?;
                let t1 = timer::ticks();
                let r = e.edu.write_mem(d, 0, LEN);
                let t2 = timer::ticks();
                if let Err(x) = r {
                    core::mem::forget(page);
                    return Err(alloc::format!("edu DMA, {}: {x}", mode.name()));
                }
                dma::unmap_single(&e.dma, d, LEN, Direction::FromDevice).map_err(|x| alloc::format!("unmap: {x}"))?;
                let t3 = timer::ticks();
                ticks += t3 - t0;
                api += (t1 - t0) + (t3 - t2);
                if page.as_mut_slice() != pattern.as_mut_slice() {
                    return Err(alloc::format!("{}: the page does not hold what the edu wrote", mode.name()));
                }
            }
            let t0 = timer::ticks();
            dma::flush(&e.dma).map_err(|x| alloc::format!("flush: {x}"))?;
            ticks += timer::ticks() - t0;
            let t = Traffic::since(modes.smmu, before);
            check_traffic(mode, EDU_TRANSFERS as u64, t)?;
            let i = mode.index();
            (runs.slices[0][p][i], runs.api[p][i], runs.syncs[p][i]) = (ticks, api / EDU_TRANSFERS as u64, t.syncs);
        }
    }
    Ok(runs)
}

/// The throughput workloads (`bench=virtio`): virtio-blk reads of the whole disk in 4 KiB
/// and 64 KiB requests, then edu transfers, each in strict, lazy and bypass mode in one boot.
fn virtio_workload() -> u32 {
    let mut failures = 0;
    {
        let mut blks = crate::drivers::VIRTIO_BLKS.lock();
        match blks.first_mut() {
            None => {
                kprintln!("bench: no virtio-blk device");
                failures += 1;
            }
            Some(b) => failures += virtio_modes(b),
        }
    }
    let mut edus = EDUS.lock();
    let Some(e) = edus.first_mut() else {
        kprintln!("bench: no edu device");
        return failures + 1;
    };
    let modes = match Modes::new(&e.dma) {
        Ok(m) => m,
        Err(x) => {
            kprintln!("bench: edu: {x}");
            return failures + 1;
        }
    };
    let r = edu_passes(e, &modes);
    let back = modes.restore();
    match (r, back) {
        (Ok(runs), Ok(())) => {
            kprintln!(
                "bench: edu: each transfer waits for the model's 100 ms virtual timer (hw/misc/edu.c arms it when DMA_CMD \
                 is written), against microseconds of map+unmap: these ratios can only show that translation adds \
                 nothing measurable to a timer-bound transfer"
            );
            report(&alloc::format!("edu_dma_{EDU_TRANSFERS}x4k"), "edu 4 KiB DMA", &runs);
        }
        (r, back) => {
            kprintln!("bench: edu: {:?} / restore: {back:?}", r.err());
            failures += 1;
        }
    }
    failures
}

fn virtio_modes(b: &mut VirtioBlk) -> u32 {
    let modes = match Modes::virtio(&b.dma) {
        Ok(m) => m,
        Err(x) => {
            kprintln!("bench: virtio-blk: {x}");
            return 1;
        }
    };
    let mut failures = 0;
    for (chunk, tag) in [(4096usize, "4k"), (65536, "64k")] {
        let (prefix, what) = (alloc::format!("virtio_read_{tag}"), alloc::format!("virtio-blk {tag} reads"));
        match virtio_passes(b, &modes, chunk) {
            Ok(runs) => report(&prefix, &what, &runs),
            Err(x) => {
                kprintln!("bench: virtio-blk {tag}: {x}");
                failures += 1;
            }
        }
        match virtio_phases(b, &modes, chunk, PHASE_READS) {
            Ok(ph) => report_phases(&prefix, &what, modes.list, &ph),
            Err(x) => {
                kprintln!("bench: virtio-blk {tag} phases: {x}");
                failures += 1;
            }
        }
    }
    // Home again the same way: released where it was set up, set up again on next use.
    if let Err(x) = b.quiesce() {
        kprintln!("bench: virtio-blk: quiesce: {x}");
        failures += 1;
    }
    if let Err(x) = modes.restore() {
        kprintln!("bench: virtio-blk: {x}");
        failures += 1;
    }
    if b.deferred() != 0 {
        kprintln!("bench: virtio-blk: {} mappings left waiting to be undone", b.deferred());
        failures += 1;
    }
    failures
}

pub fn run(args: &BootArgs) -> u32 {
    match args.get("bench") {
        Some("virtio") => return virtio_workload(),
        Some("latency") => return with_edu(latency),
        Some("loop") => return bench_loop(args),
        _ => {}
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
                Ok((c, s, p, r)) => {
                    let tag = if ril { "ril" } else { "no_ril" };
                    emit(&alloc::format!("strict_unmap_{pages}p_{tag}_commands"), c as f64, None, "count");
                    emit(&alloc::format!("strict_unmap_{pages}p_{tag}_cmd_syncs"), s as f64, None, "count");
                    emit(&alloc::format!("strict_unmap_{pages}p_{tag}_prod_writes"), p as f64, None, "count");
                    emit(&alloc::format!("strict_unmap_{pages}p_{tag}_cons_reads"), r as f64, None, "count");
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
        let before = smmu_stats(0);
        let mut ok = true;
        // IRQs masked: the count is of batches; the flush timer's extra flush (one per
        // 10 ms) would depend on how fast the host is.
        arch::without_irqs(|| {
            for _ in 0..1000 {
                match dma::map_single(&e.dma, pa, 4096, Direction::ToDevice) {
                    Ok(d) => ok &= dma::unmap_single(&e.dma, d, 4096, Direction::ToDevice).is_ok(),
                    Err(_) => ok = false,
                }
            }
            ok &= dma::flush(&e.dma).is_ok();
        });
        let syncs = smmu_stats(0).syncs - before.syncs;
        dma::set_strict(was);
        if ok {
            emit("lazy_cmd_syncs_per_1000_unmaps", syncs as f64, None, "count");
        } else {
            failures += 1;
        }
    }
    frames::free(pa, 1);
    failures + latency(&e.dma)
}

/// DMA API latency: translated strict / lazy vs bypass, in one boot; lazy also over more
/// pages than a batch holds, where no waiting IOVA can be taken back; then where the lazy
/// time goes. Rows in ns of the generic timer: under `-icount shift=0` (the runner's
/// instruction-count boot) one ns is one guest instruction.
fn latency(dev: &DmaDevice) -> u32 {
    let mut failures = 0;
    let Some(pa) = frames::alloc_zeroed(1) else { return 1 };
    let latency = page_buf(FRESH_PAGES * 4096).and_then(|fresh| {
        let modes = Modes::new(dev)?;
        let fresh_pas: Vec<u64> = (0..FRESH_PAGES as u64).map(|k| fresh.pa + k * 4096).collect();
        let mut ns = [0u64; Mode::COUNT];
        let r = modes
            .list
            .iter()
            .try_for_each(|&m| {
                modes.set(m)?;
                ns[m.index()] = map_unmap_latency(dev, &[pa], 500)?;
                Ok::<(), String>(())
            })
            .and_then(|()| {
                modes.set(Mode::Lazy)?;
                map_unmap_latency(dev, &fresh_pas, 500)
            });
        // Home again whatever failed.
        modes.restore()?;
        r.map(|f| (ns, f))
    });
    dma::set_strict(false);
    match latency_breakdown(dev, pa) {
        Ok(v) => {
            for (k, ns) in v {
                emit(&alloc::format!("lazy_map_unmap_part_{k}_ns"), ns as f64, None, "ns");
            }
        }
        Err(x) => {
            kprintln!("bench: latency breakdown: {x}");
            failures += 1;
        }
    }
    dma::set_strict(true);
    frames::free(pa, 1);
    match latency {
        Ok((ns, fresh)) => {
            let b = Some(ns[Mode::Bypass.index()] as f64);
            emit("map_unmap_1page_strict_ns", ns[Mode::Strict.index()] as f64, b, "ns");
            emit("map_unmap_1page_lazy_ns", ns[Mode::Lazy.index()] as f64, b, "ns");
            emit("map_unmap_1page_lazy_fresh_ns", fresh as f64, b, "ns");
        }
        Err(x) => {
            kprintln!("bench: latency: {x}");
            failures += 1;
        }
    }
    failures
}

/// `f` on the first edu's DMA device (the device the DMA API benchmarks use).
fn with_edu(f: impl FnOnce(&DmaDevice) -> u32) -> u32 {
    let edus = EDUS.lock();
    match edus.first() {
        Some(e) => f(&e.dma),
        None => {
            kprintln!("bench: no edu for the DMA API measurements");
            1
        }
    }
}

/// `bench=loop`: nothing but `n` (default 20000) rounds of one workload in one mode, for an
/// outside profiler (`make profile`) to attribute: `mode=strict|lazy|bypass` (default lazy),
/// and either map+unmap of one page (`fresh=1`: rotating over more pages than a lazy batch
/// holds), or with `dev=virtio` a virtio-blk read of `size` bytes (default 4096) into one
/// buffer (`mode=premapped` too: a buffer mapped once, as the throughput bench's ceiling;
/// `cold=1`: before every read, time a map+unmap of another page twice, to show what the DMA
/// API costs right after a read against the same call warm). Prints the mean ns per round.
fn bench_loop(args: &BootArgs) -> u32 {
    let mode = match args.get("mode") {
        None | Some("lazy") => Mode::Lazy,
        Some("strict") => Mode::Strict,
        Some("bypass") => Mode::Bypass,
        Some("premapped") => Mode::Premapped,
        Some(m) => {
            kprintln!("bench: loop: unknown mode {m} (strict, lazy, bypass or premapped)");
            return 1;
        }
    };
    let (n, fresh, size, cold) = match (args.number("n"), args.flag("fresh"), args.number("size"), args.flag("cold")) {
        (Ok(n), Ok(f), Ok(s), Ok(c)) => {
            (n.unwrap_or(20_000), f.unwrap_or(false), s.unwrap_or(4096) as usize, c == Some(true))
        }
        (Err(v), ..) | (_, Err(v), ..) | (.., Err(v), _) | (.., Err(v)) => {
            kprintln!("bench: loop: bad value {v}");
            return 1;
        }
    };
    let report = |r: Result<u64, String>| match r {
        Ok(t) => {
            kprintln!("bench: loop: {n} rounds, {}, {} ns each", mode.name(), timer::ticks_to_ns(t) / n.max(1));
            0
        }
        Err(e) => {
            kprintln!("bench: loop: {e}");
            1
        }
    };
    match args.get("dev") {
        None | Some("edu") if mode == Mode::Premapped => report(Err("premapped is for dev=virtio".into())),
        None | Some("edu") => with_edu(|dev| report(map_unmap_loop(dev, mode, n, fresh))),
        Some("virtio") => {
            let mut blks = crate::drivers::VIRTIO_BLKS.lock();
            let b = blks.first_mut().ok_or("no virtio-blk device");
            report(b.map_err(String::from).and_then(|b| virtio_loop(b, mode, n, size, cold)))
        }
        Some(d) => report(Err(alloc::format!("unknown dev {d} (edu or virtio)"))),
    }
}

/// Ticks of `n` map+unmap rounds of one page (or pages in turn) for `dev` in `mode`.
fn map_unmap_loop(dev: &DmaDevice, mode: Mode, n: u64, fresh: bool) -> Result<u64, String> {
    let buf = page_buf(FRESH_PAGES * 4096)?;
    let pas: Vec<u64> = (0..if fresh { FRESH_PAGES as u64 } else { 1 }).map(|k| buf.pa + k * 4096).collect();
    let modes = Modes::new(dev)?;
    let r = modes.set(mode).and_then(|()| {
        let t0 = timer::ticks();
        for i in 0..n as usize {
            map_unmap_page(dev, pas[i % pas.len()])?;
        }
        let t = timer::ticks() - t0;
        dma::flush(dev).map_err(|e| alloc::format!("{e}"))?;
        Ok(t)
    });
    modes.restore()?;
    r
}

/// Ticks of `n` virtio-blk reads of `size` bytes (the disk's first sectors, in turn) into
/// one buffer in `mode` (premapped: one `alloc_buf` buffer). `cold`: before each read, a
/// map+unmap of another page, timed, then a second one (not in the ticks returned).
fn virtio_loop(b: &mut VirtioBlk, mode: Mode, n: u64, size: usize, cold: bool) -> Result<u64, String> {
    let mut pb = page_buf(size)?;
    let other = page_buf(4096)?;
    // [first after a read, second] ticks of the `cold` map+unmaps.
    let mut pairs = [0u64; 2];
    let modes = Modes::virtio(&b.dma)?;
    let r = virtio_switch(b, &modes, mode, pb.as_mut_slice()).and_then(|()| {
        let mut cb = match mode {
            Mode::Premapped => Some(premapped_buf(b, size)?),
            _ => None,
        };
        let buf = match cb.as_mut() {
            Some(c) => c.as_mut_slice(),
            None => pb.as_mut_slice(),
        };
        let per = (size / SECTOR_SIZE) as u64;
        let reads = (b.capacity() / per).max(1);
        // By phase too: under -icount the wait is host time spent polling, the rest is exact.
        b.phases = Some(Phases::default());
        let ft0 = dma::flush_timer_stats();
        let t0 = timer::ticks();
        for i in 0..n {
            if cold {
                for ticks in pairs.iter_mut() {
                    let t0 = timer::ticks();
                    map_unmap_page(&b.dma, other.pa)?;
                    *ticks += timer::ticks() - t0;
                }
            }
            let s = (i % reads) * per;
            b.read_blocks(s, buf).map_err(|e| alloc::format!("read at sector {s}: {e}"))?;
        }
        let t = timer::ticks() - t0 - pairs.iter().sum::<u64>();
        let p = b.phases.take().unwrap_or_default();
        let per_read = |x: u64| timer::ticks_to_ns(x) / p.requests.max(1);
        let ft = dma::flush_timer_stats();
        kprintln!(
            "bench: loop: per read, submit {} ns, wait {} ns ({} polls), complete {} ns; flush timer ran {} times ({} retries)",
            per_read(p.submit),
            per_read(p.wait),
            p.polls / p.requests.max(1),
            per_read(p.complete),
            ft.flushes - ft0.flushes,
            ft.retries - ft0.retries
        );
        if cold {
            let [first, again] = pairs.map(|x| timer::ticks_to_ns(x) / n.max(1));
            kprintln!("bench: loop: map+unmap of another page right after a read {first} ns, at once again {again} ns");
        }
        Ok(t)
    });
    let q = b.quiesce().map_err(|e| alloc::format!("quiesce: {e}"));
    let q = q.and_then(|()| dma::flush(&b.dma).map_err(|e| alloc::format!("flush: {e}")));
    modes.restore()?;
    q?;
    r
}

/// Median ns per call of `f` (9 samples of `rounds` calls); the first error stops it.
fn ns_per_call(rounds: u64, f: &mut dyn FnMut() -> Result<(), String>) -> Result<u64, String> {
    let mut samples = [0u64; 9];
    for x in samples.iter_mut() {
        let t0 = timer::ticks();
        for _ in 0..rounds {
            f()?;
        }
        *x = timer::ticks_to_ns(timer::ticks() - t0) / rounds;
    }
    Ok(median(samples))
}

/// Where one lazy map+unmap's time goes, each piece timed alone: the IOMMU lock and the
/// device's path lookup (twice, as map and unmap each do), the IOVA allocator's
/// alloc+find+free, the page table's map+unmap of one page, and one lazy flush (paid once
/// per `dma::LAZY_BATCH` unmaps).
fn latency_breakdown(dev: &DmaDevice, pa: u64) -> Result<Vec<(&'static str, u64)>, String> {
    let m = dev.master.ok_or("not behind an SMMU")?;
    let did = IOMMU.lock().domain_of(m).ok_or("no domain")?;
    let e = |x: &dyn core::fmt::Display| alloc::format!("{x}");
    let rounds = 500;
    let mut out = Vec::new();
    let mut lock_path = || {
        for _ in 0..2 {
            let mut io = IOMMU.lock();
            let d = io.domain_of(m).ok_or("no domain")?;
            core::hint::black_box(io.domain(d).map_err(|x| e(&x))?.ty);
        }
        Ok(())
    };
    out.push(("lock_and_path_x2", ns_per_call(rounds, &mut lock_path)?));
    let mut iova = || {
        let mut io = IOMMU.lock();
        let a = io.domain(did).map_err(|x| e(&x))?.iova.as_mut().ok_or("no IOVA allocator")?;
        let i = a.alloc(4096, dev.mask).map_err(|x| e(&x))?;
        core::hint::black_box(a.find_sized(i, 4096));
        a.free(i).map(|_| ()).map_err(|x| e(&x))
    };
    out.push(("iova_alloc_find_free", ns_per_call(rounds, &mut iova)?));
    // An IOVA the allocator hands out (so nothing else can be mapped there), used directly.
    let spot = {
        let mut io = IOMMU.lock();
        let a = io.domain(did).map_err(|x| e(&x))?.iova.as_mut().ok_or("no IOVA allocator")?;
        a.alloc(4096, dev.mask).map_err(|x| e(&x))?
    };
    let mut pgt = || {
        let mut io = IOMMU.lock();
        let p = io.domain(did).map_err(|x| e(&x))?.pgt.as_mut().ok_or("no page table")?;
        p.map(spot, pa, 4096, Prot::RO).map_err(|x| e(&x))?;
        let mut g = crate::iommu::io_pgtable::Gather::new();
        p.unmap(spot, 4096, &mut g).map_err(|x| e(&x))?;
        p.complete(&mut g).map_err(|x| e(&x))
    };
    let r = ns_per_call(rounds, &mut pgt);
    // The loop only unmapped without invalidating: the TLB may still hold `spot`.
    let _ = IOMMU.lock().domain(did).map(|d| d.iova.as_mut().map(|a| a.free(spot)));
    out.push(("pgtable_map_unmap", r?));
    // The two DMA API calls each alone, in lazy mode: a run of maps, then their unmaps
    // (fewer than a batch, so no flush falls inside). The parts above are these minus the
    // glue: argument checks, error plumbing, the lazy queue and the flush-timer check.
    let (mut maps, mut unmaps) = ([0u64; 9], [0u64; 9]);
    let n = dma::LAZY_BATCH as u64 / 2;
    let mut dmas = Vec::with_capacity(n as usize);
    for k in 0..9 {
        dma::flush(dev).map_err(|x| e(&x))?;
        let t0 = timer::ticks();
        for _ in 0..n {
            dmas.push(dma::map_single(dev, pa, 4096, Direction::ToDevice).map_err(|x| e(&x))?);
        }
        let t1 = timer::ticks();
        for d in dmas.drain(..) {
            dma::unmap_single(dev, d, 4096, Direction::ToDevice).map_err(|x| e(&x))?;
        }
        let t2 = timer::ticks();
        (maps[k], unmaps[k]) = (timer::ticks_to_ns(t1 - t0) / n, timer::ticks_to_ns(t2 - t1) / n);
    }
    out.push(("map_single", median(maps)));
    out.push(("unmap_single", median(unmaps)));
    let flush = || {
        map_unmap_page(dev, pa)?;
        let t = timer::ticks();
        dma::flush(dev).map_err(|x| e(&x))?;
        Ok::<u64, String>(timer::ticks() - t)
    };
    let mut ticks = 0;
    for _ in 0..20 {
        ticks += flush()?;
    }
    out.push(("lazy_flush_one", timer::ticks_to_ns(ticks) / 20));
    Ok(out)
}
