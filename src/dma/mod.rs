//! The DMA API a driver calls, shaped like Linux's: `map_single`/`unmap_single`,
//! `map_sg`/`unmap_sg`, `alloc_coherent`/`free_coherent`. A device either uses the
//! direct path (no SMMU, identity domain, SMMU disabled: DMA address == physical
//! address) or the IOMMU path (allocate an IOVA, map it in the device's domain).
//! The device's DMA mask is honoured on both paths.

use crate::arch::cache;
use crate::arch::smp::{MAX_CPUS, this_cpu};
use crate::iommu::domain::{Domain, DomainType, IOMMU, Iommu, IommuError, MasterId, Stage};
use crate::iommu::io_pgtable::{Gather, Granule, PgtError, Prot};
use crate::iommu::registry;
use crate::irq::timer::Timer;
use crate::mm::{PAGE_SIZE, frames};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToDevice,
    FromDevice,
    Bidirectional,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmaError {
    ZeroSize,
    /// The buffer (direct path) is beyond what the device can address.
    BeyondMask {
        addr: u64,
        len: usize,
        mask: u64,
    },
    /// The device is in a blocked domain: it may not DMA at all.
    Blocked,
    /// The address was not handed out by map_* for this device (or was unmapped).
    NotMapped {
        dma: u64,
    },
    NoMemory,
    Iommu(IommuError),
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::ZeroSize => write!(f, "zero-length DMA mapping"),
            DmaError::BeyondMask { addr, len, mask } => {
                write!(f, "buffer {addr:#x}+{len:#x} is beyond the device's DMA mask {mask:#x}")
            }
            DmaError::Blocked => write!(f, "device is in a blocked domain"),
            DmaError::NotMapped { dma } => write!(f, "DMA address {dma:#x} is not mapped for this device"),
            DmaError::NoMemory => write!(f, "out of memory"),
            DmaError::Iommu(e) => write!(f, "{e}"),
        }
    }
}

impl From<IommuError> for DmaError {
    fn from(e: IommuError) -> Self {
        DmaError::Iommu(e)
    }
}

/// `iommu.strict`: invalidate on every unmap (true) or batch (false).
static STRICT: AtomicBool = AtomicBool::new(true);
/// Lazy mode flushes a domain after this many deferred unmaps (Linux's flush queue is 256),
/// unless identical maps took back all but a few (less than half) of them: those owe no
/// invalidation and leave the queue without one.
pub const LAZY_BATCH: usize = 256;

/// Lazy mode's time bound (Linux's IOVA_FQ_TIMEOUT): however idle the driver, an unmapped
/// range stays reachable through stale IOTLB entries for about this long at most (longer
/// only while the interrupted code holds the IOMMU lock, or on a CPU with IRQs masked).
pub const LAZY_TIMEOUT_US: u64 = 10_000;
/// The timer's next try when it found the IOMMU or an SMMU locked.
const LAZY_RETRY_US: u64 = 1_000;
const FLUSH_TIMER: Timer = Timer::Virtual;
/// The flush timer's interrupt is wired (`start_flush_timer`).
static FLUSH_TIMER_UP: AtomicBool = AtomicBool::new(false);
/// Per CPU: its timer is armed and has not run yet. Each CPU arms its own: a CPU busy with
/// IRQs masked (a secondary running a job) holds back only its own timer, not the bound of
/// other CPUs' unmaps. Only the CPU itself sets or clears its flag.
static FLUSH_ARMED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn armed_here() -> &'static AtomicBool {
    &FLUSH_ARMED[this_cpu().min(MAX_CPUS - 1)]
}

/// What the lazy-flush timer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushTimerStats {
    /// Timer runs that invalidated every waiting domain.
    pub flushes: u64,
    /// Runs that found a lock held and tried again later.
    pub retries: u64,
    /// Invalidations that failed (the SMMU did not complete them).
    pub errors: u64,
}

static TIMER_FLUSHES: AtomicU64 = AtomicU64::new(0);
static TIMER_RETRIES: AtomicU64 = AtomicU64::new(0);
static TIMER_ERRORS: AtomicU64 = AtomicU64::new(0);

pub fn flush_timer_stats() -> FlushTimerStats {
    FlushTimerStats {
        flushes: TIMER_FLUSHES.load(Ordering::SeqCst),
        retries: TIMER_RETRIES.load(Ordering::SeqCst),
        errors: TIMER_ERRORS.load(Ordering::SeqCst),
    }
}

/// Bound lazy mode in time: `LAZY_TIMEOUT_US` after the first deferred unmap of a batch,
/// the EL1 virtual timer's interrupt invalidates the TLB entries of every domain with
/// deferred unmaps (their IOVAs and table pages are reclaimed by the next batch flush).
/// Without it (no GIC) deferred unmaps wait for a full batch or `flush`.
pub fn start_flush_timer() -> Result<(), crate::irq::IrqError> {
    let id = FLUSH_TIMER.intid();
    crate::irq::register(id, flush_timer_fired)?;
    crate::irq::configure(id, crate::irq::Trigger::Level, crate::irq::gic::DEFAULT_PRIORITY)?;
    crate::irq::enable(id)?;
    FLUSH_TIMER_UP.store(true, Ordering::SeqCst);
    Ok(())
}

/// The flush timer is armed on some CPU and has not run yet.
pub fn flush_timer_armed() -> bool {
    FLUSH_ARMED.iter().any(|a| a.load(Ordering::Relaxed))
}

/// Whether lazy mode is bounded in time on this machine.
pub fn flush_timer_up() -> bool {
    FLUSH_TIMER_UP.load(Ordering::SeqCst)
}

fn flush_timer_fired(_: u32) {
    // Interrupt context: the interrupted code may hold the IOMMU lock or the SMMU registry,
    // so only try them; if either is held, come back shortly.
    let outcome = IOMMU.try_lock().map(|mut io| {
        let r = io.try_invalidate_lazy();
        if !matches!(r, Ok(false)) {
            // Done (or failed for good): this CPU's next deferred unmap arms again.
            armed_here().store(false, Ordering::Relaxed);
        }
        r
    });
    let (count, again) = match outcome {
        Some(Ok(true)) => (&TIMER_FLUSHES, false),
        Some(Err(_)) => (&TIMER_ERRORS, false),
        None | Some(Ok(false)) => (&TIMER_RETRIES, true),
    };
    count.fetch_add(1, Ordering::SeqCst);
    if again {
        FLUSH_TIMER.arm_us(LAZY_RETRY_US);
    } else {
        FLUSH_TIMER.disarm();
    }
}

pub fn set_strict(on: bool) {
    STRICT.store(on, Ordering::SeqCst);
}

pub fn strict() -> bool {
    STRICT.load(Ordering::SeqCst)
}

/// A device that does DMA, as the DMA API knows it.
#[derive(Debug, Clone)]
pub struct DmaDevice {
    pub name: String,
    /// Highest address the device can emit.
    pub mask: u64,
    /// Its master in the IOMMU layer; None = not behind an SMMU.
    pub master: Option<MasterId>,
    /// Device snoops CPU caches (no maintenance needed).
    pub coherent: bool,
    /// Firmware direct maps (IOVA == PA) installed for it at registration: (iova, size).
    pub direct_maps: Vec<(u64, u64)>,
}

/// Which path a device's DMA takes right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Blocked,
    Iommu(usize),
}

pub fn path(dev: &DmaDevice) -> Path {
    let Some(m) = dev.master else { return Path::Direct };
    path_locked(&mut IOMMU.lock(), m)
}

/// `path` of master `m`, the IOMMU layer locked by the caller (map/unmap decide and act
/// under one lock: cheaper, and no attach can slip in between).
fn path_locked(io: &mut Iommu, m: MasterId) -> Path {
    match route(io, m) {
        Route::Direct => Path::Direct,
        Route::Blocked => Path::Blocked,
        Route::Translated(d) => Path::Iommu(d.id),
    }
}

/// [`Path`] with the DMA domain itself on the IOMMU path: map and unmap look it up once.
enum Route<'a> {
    Direct,
    Blocked,
    Translated(&'a mut Domain),
}

fn route(io: &mut Iommu, m: MasterId) -> Route<'_> {
    let Some(did) = io.domain_of(m) else { return Route::Blocked };
    match io.domain(did) {
        Ok(d) if d.ty == DomainType::Dma => Route::Translated(d),
        Ok(d) if d.ty == DomainType::Identity => Route::Direct,
        // Unmanaged domains belong to their owner, not to the DMA API.
        _ => Route::Blocked,
    }
}

/// The device may write the buffer (its mapping is read/write, else read-only).
fn device_writes(dir: Direction) -> bool {
    dir != Direction::ToDevice
}

fn prot(dir: Direction) -> Prot {
    if device_writes(dir) { Prot::RW } else { Prot::RO }
}

/// Hand `[pa, pa + len)` to the device (Linux `dma_sync_single_for_device`; `map_single`
/// does it, drivers call it for long-lived buffers they reuse). Clean for every direction,
/// as arm64 Linux does: for FromDevice too, so no dirty line can later be evicted over what
/// the device wrote, and bytes the device leaves alone are not lost (the invalidation comes
/// in `sync_for_cpu`, after the DMA).
pub fn sync_for_device(dev: &DmaDevice, pa: u64, len: usize, _dir: Direction) {
    if !dev.coherent {
        cache::clean(pa as usize, len);
    }
}

/// `sync_for_cpu` has something to do.
fn needs_sync_for_cpu(dev: &DmaDevice, dir: Direction) -> bool {
    !dev.coherent && dir != Direction::ToDevice
}

/// Take `[pa, pa + len)` back from the device (Linux `dma_sync_single_for_cpu`): drop stale
/// cached copies of what it may have written.
pub fn sync_for_cpu(dev: &DmaDevice, pa: u64, len: usize, dir: Direction) {
    if needs_sync_for_cpu(dev, dir) {
        cache::invalidate(pa as usize, len);
    }
}

/// Map `len` bytes at physical address `pa` for the device; returns the address the
/// device must use.
pub fn map_single(dev: &DmaDevice, pa: u64, len: usize, dir: Direction) -> Result<u64, DmaError> {
    if len == 0 {
        return Err(DmaError::ZeroSize);
    }
    sync_for_device(dev, pa, len, dir);
    // The direct path: DMA address == physical address, within the mask.
    let direct = || match pa.checked_add(len as u64 - 1) {
        Some(end) if end <= dev.mask => Ok(pa),
        _ => Err(DmaError::BeyondMask { addr: pa, len, mask: dev.mask }),
    };
    let Some(m) = dev.master else { return direct() };
    let mut io = IOMMU.lock();
    let d = match route(&mut io, m) {
        Route::Blocked => return Err(DmaError::Blocked),
        Route::Direct => {
            drop(io);
            return direct();
        }
        Route::Translated(d) => d,
    };
    // Mappings are whole granules of the domain (4K, 16K or 64K).
    let g = d.granule.size();
    let off = pa & (g - 1);
    let size = (off + len as u64).div_ceil(g) * g;
    if !strict()
        && let Some(iova) = d.map_lazy_identical(pa - off, size, device_writes(dir), dev.mask)?
    {
        return Ok(iova + off);
    }
    // let-else, not `ok_or`: these run on every map, and `ok_or` would build and drop an
    // error each time.
    let Some(a) = d.iova.as_mut() else { return Err(IommuError::NotTranslated(d.id).into()) };
    let iova = a.alloc(size, dev.mask).map_err(IommuError::from)?;
    let Some(pgt) = d.pgt.as_mut() else { return Err(IommuError::NotTranslated(d.id).into()) };
    if let Err(e) = pgt.map(iova, pa - off, size, prot(dir)) {
        if let Some(a) = d.iova.as_mut() {
            let _ = a.free(iova);
        }
        return Err(IommuError::from(e).into());
    }
    Ok(iova + off)
}

/// Undo `map_single`. `pa` is only used for cache maintenance on the direct path.
pub fn unmap_single(dev: &DmaDevice, dma: u64, len: usize, dir: Direction) -> Result<(), DmaError> {
    if len == 0 {
        return Err(DmaError::ZeroSize);
    }
    let Some(m) = dev.master else {
        sync_for_cpu(dev, dma, len, dir);
        return Ok(());
    };
    let mut io = IOMMU.lock();
    let d = match route(&mut io, m) {
        Route::Blocked => return Err(DmaError::Blocked),
        Route::Direct => {
            drop(io);
            sync_for_cpu(dev, dma, len, dir);
            return Ok(());
        }
        Route::Translated(d) => d,
    };
    let Some((start, size)) = unmap_target(d, dev, dma, len, dir)? else { return Err(DmaError::NotMapped { dma }) };
    // In lazy mode an IOVA waiting for its flush still "exists": a second unmap finds it
    // allocated but no longer mapped (map_single maps every allocation at once), which the
    // table unmap itself reports, before it changes anything.
    let not_mapped = |e: IommuError| match e {
        IommuError::Pgt(PgtError::NotMapped { .. }) => DmaError::NotMapped { dma },
        e => DmaError::Iommu(e),
    };
    let did = d.id;
    if strict() {
        d.unmap_strict(start, size).map_err(not_mapped)?;
        let Some(a) = d.iova.as_mut() else { return Err(IommuError::NotTranslated(did).into()) };
        a.free(start).map_err(IommuError::from)?;
        return Ok(());
    }
    d.unmap_lazy(start, size).map_err(not_mapped)?;
    // A full queue first lets go of what identical maps took back (nothing is owed for
    // those); it flushes when half a batch or more really waits, or tables detached by the
    // batch's unmaps wait to be freed (so they never outlive one batch).
    if d.flush_queue.len() >= LAZY_BATCH
        && (d.flush_queue.compact() >= LAZY_BATCH / 2 || d.lazy.as_ref().is_some_and(Gather::needs_complete))
    {
        io.flush_lazy(did)?;
    } else if FLUSH_TIMER_UP.load(Ordering::Relaxed) {
        // This CPU's timer; its handler clears the flag on this CPU, so no deferred unmap
        // is missed.
        let armed = armed_here();
        if !armed.load(Ordering::Relaxed) {
            armed.store(true, Ordering::Relaxed);
            FLUSH_TIMER.arm_us(LAZY_TIMEOUT_US);
        }
    }
    Ok(())
}

/// The start and size of the IOVA allocation that holds the device's `(dma, len)` in DMA
/// domain `d` (None: nothing is allocated there), with the CPU's stale cached copies of the
/// buffer dropped first when `dir` needs it: the first step of every unmap.
fn unmap_target(
    d: &Domain,
    dev: &DmaDevice,
    dma: u64,
    len: usize,
    dir: Direction,
) -> Result<Option<(u64, u64)>, IommuError> {
    let Some(a) = d.iova.as_ref() else { return Err(IommuError::NotTranslated(d.id)) };
    let g = d.granule.size();
    let Some(found) = a.find_sized(dma, (dma & (g - 1)) + len as u64) else { return Ok(None) };
    // The table walk is only worth it when there is cache maintenance to do.
    if needs_sync_for_cpu(dev, dir)
        && let Some(pa) = d.iova_to_phys(dma)
    {
        sync_for_cpu(dev, pa, len, dir);
    }
    Ok(Some(found))
}

/// Complete every deferred (lazy) unmap of the device's domain now.
pub fn flush(dev: &DmaDevice) -> Result<(), DmaError> {
    if let Path::Iommu(did) = path(dev) {
        IOMMU.lock().flush_lazy(did)?;
    }
    Ok(())
}

/// Map a scatter list: on the IOMMU path each segment gets its own IOVA; returns the
/// device addresses in order. On failure nothing stays mapped.
pub fn map_sg(dev: &DmaDevice, segs: &[(u64, usize)], dir: Direction) -> Result<Vec<u64>, DmaError> {
    let mut out = Vec::with_capacity(segs.len());
    for &(pa, len) in segs {
        match map_single(dev, pa, len, dir) {
            Ok(d) => out.push(d),
            Err(e) => {
                for (i, &d) in out.iter().enumerate() {
                    let _ = unmap_single(dev, d, segs[i].1, dir);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Undo `map_sg`. In strict mode on the IOMMU path all segments leave the table first and
/// one invalidation (one CMD_SYNC) covers them, before any of their IOVAs is freed. Every
/// segment is attempted; the first error is returned.
pub fn unmap_sg(dev: &DmaDevice, dmas: &[u64], segs: &[(u64, usize)], dir: Direction) -> Result<(), DmaError> {
    if let Some(m) = dev.master
        && strict()
    {
        let mut io = IOMMU.lock();
        if let Path::Iommu(did) = path_locked(&mut io, m) {
            return unmap_sg_batched(&mut io, did, dev, dmas, segs, dir);
        }
    }
    let mut first = Ok(());
    for (d, s) in dmas.iter().zip(segs) {
        if let Err(e) = unmap_single(dev, *d, s.1, dir)
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

fn unmap_sg_batched(
    io: &mut Iommu,
    did: usize,
    dev: &DmaDevice,
    dmas: &[u64],
    segs: &[(u64, usize)],
    dir: Direction,
) -> Result<(), DmaError> {
    let mut first: Result<(), DmaError> = Ok(());
    let mut note = |e: DmaError| {
        if first.is_ok() {
            first = Err(e);
        }
    };
    // (allocation start, allocation size, device address) of every segment found mapped.
    let mut found: Vec<(u64, u64, u64)> = Vec::with_capacity(dmas.len());
    for (&dma, &(_, len)) in dmas.iter().zip(segs) {
        if len == 0 {
            note(DmaError::ZeroSize);
            continue;
        }
        let Some((start, size)) = unmap_target(io.domain(did)?, dev, dma, len, dir)? else {
            note(DmaError::NotMapped { dma });
            continue;
        };
        found.push((start, size, dma));
    }
    let ranges: Vec<(u64, u64)> = found.iter().map(|&(s, z, _)| (s, z)).collect();
    // A failed invalidation returns here: the IOVAs stay allocated rather than be reused
    // while the SMMU may still hold their translations.
    let results = io.unmap_batch(did, &ranges)?;
    let d = io.domain(did)?;
    let a = d.iova.as_mut().ok_or(IommuError::NotTranslated(did))?;
    for (&(start, _, dma), r) in found.iter().zip(results) {
        match r {
            Ok(_) => {
                if let Err(e) = a.free(start) {
                    note(DmaError::Iommu(e.into()));
                }
            }
            // Listed twice (the second finds it unmapped), or a lazily unmapped IOVA.
            Err(PgtError::NotMapped { .. }) => note(DmaError::NotMapped { dma }),
            Err(e) => note(DmaError::Iommu(e.into())),
        }
    }
    first
}

/// A buffer both CPU and device use for a long time: (CPU address, device address).
pub fn alloc_coherent(dev: &DmaDevice, size: usize) -> Result<(u64, u64), DmaError> {
    if size == 0 {
        return Err(DmaError::ZeroSize);
    }
    let pages = size.div_ceil(PAGE_SIZE as usize);
    let pa = frames::alloc_zeroed(pages).ok_or(DmaError::NoMemory)?;
    match map_single(dev, pa, size, Direction::Bidirectional) {
        Ok(d) => Ok((pa, d)),
        Err(e) => {
            frames::free(pa, pages);
            Err(e)
        }
    }
}

pub fn free_coherent(dev: &DmaDevice, cpu: u64, dma: u64, size: usize) -> Result<(), DmaError> {
    unmap_single(dev, dma, size, Direction::Bidirectional)?;
    frames::free(cpu, size.div_ceil(PAGE_SIZE as usize));
    Ok(())
}

/// Register a device with the DMA API: behind SMMU `stream` = (phandle, StreamID)
/// it becomes an IOMMU master in a default domain (`iommu.passthrough`: identity,
/// else a stage-1 DMA domain); without, it uses the direct path.
pub fn add_device(name: &str, stream: Option<(u32, u32)>, mask: u64, coherent: bool) -> Result<DmaDevice, DmaError> {
    add_device_with_maps(name, stream, mask, coherent, &[])
}

/// `add_device`, then install the device's firmware direct maps (`reserved-memory`
/// regions with `iommu-addresses`) in its default domain, before any driver uses it.
pub fn add_device_with_maps(
    name: &str,
    stream: Option<(u32, u32)>,
    mask: u64,
    coherent: bool,
    direct: &[(u64, u64)],
) -> Result<DmaDevice, DmaError> {
    let Some((ph, sid)) = stream else { return add_device_sids(name, None, &[], mask, coherent, direct) };
    // Its SMMU absent or not in use (disabled in the DT): direct DMA.
    add_device_sids(name, registry::by_phandle(ph), &[sid], mask, coherent, direct)
}

/// Register a device with all its StreamIDs on SMMU `smmu` (None: no SMMU, direct
/// path): a master in a default domain (`iommu.passthrough`), firmware direct maps
/// installed before its STEs go live. Platform masters (DT `iommus`) come this way.
pub fn add_device_sids(
    name: &str,
    smmu: Option<usize>,
    sids: &[u32],
    mask: u64,
    coherent: bool,
    direct: &[(u64, u64)],
) -> Result<DmaDevice, DmaError> {
    let mut dev = DmaDevice { name: name.into(), mask, master: None, coherent, direct_maps: direct.to_vec() };
    let Some(smmu) = smmu else { return Ok(dev) };
    if sids.is_empty() {
        return Ok(dev);
    }
    let mut io = IOMMU.lock();
    // A StreamID already in use: the SMMU cannot isolate the two devices, so the new one
    // joins that master's group and domain (as Linux's pci_device_group does for aliases).
    let (m, did) = match io.master_with_sid(smmu, sids) {
        Some(peer) => {
            let did = io.domain_of(peer).ok_or_else(|| {
                IommuError::Config(alloc::format!("{name}: shares a StreamID with a master that has no domain"))
            })?;
            (io.add_master(name, smmu, sids, Some(peer))?, did)
        }
        None => {
            let m = io.add_master(name, smmu, sids, None)?;
            let ty = if PASSTHROUGH.load(Ordering::SeqCst) { DomainType::Identity } else { DomainType::Dma };
            let g = granule();
            let did = match io.domain_alloc_granule(smmu, ty, Stage::S1, g) {
                Err(IommuError::Unsupported(what)) if g != Granule::K4 => {
                    crate::kprintln!("warning: {name}: SMMU {smmu} does not support {what} ({}), using 4k", g.name());
                    io.domain_alloc(smmu, ty, Stage::S1)?
                }
                r => r?,
            };
            (m, did)
        }
    };
    // Direct maps go in before the STE points at the domain: no window without them (in a
    // shared domain they may be there already).
    for &(iova, size) in direct {
        io.install_direct_map(did, iova, size)?;
    }
    // In a shared group this rewrites the STEs of the StreamIDs already in use unchanged and
    // adds any only the new master has.
    io.attach(m, did)?;
    dev.master = Some(m);
    Ok(dev)
}

/// `iommu.granule`: the translation granule of default DMA domains, as its log2 (12, 14
/// or 16). 4K isolates best (a mapping exposes only the pages a buffer touches); 64K
/// takes a sixteenth of the PTEs, TLB entries and walks for large buffers, and exposes
/// the whole 64 KiB around a small one (as Linux with 64K pages does).
static GRANULE_SHIFT: AtomicU8 = AtomicU8::new(Granule::K4.shift() as u8);

pub fn set_granule(g: Granule) {
    GRANULE_SHIFT.store(g.shift() as u8, Ordering::SeqCst);
}

pub fn granule() -> Granule {
    match GRANULE_SHIFT.load(Ordering::SeqCst) {
        14 => Granule::K16,
        16 => Granule::K64,
        _ => Granule::K4,
    }
}

/// `iommu.passthrough`: default domains are identity (true) or translated (false).
static PASSTHROUGH: AtomicBool = AtomicBool::new(false);

pub fn set_passthrough(on: bool) {
    PASSTHROUGH.store(on, Ordering::SeqCst);
}

pub fn passthrough() -> bool {
    PASSTHROUGH.load(Ordering::SeqCst)
}
