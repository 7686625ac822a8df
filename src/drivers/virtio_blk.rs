//! virtio-blk over PCI (virtio 1.x modern interface) on the `virtio-drivers` crate, with our
//! DMA API as its HAL: with VIRTIO_F_ACCESS_PLATFORM its rings and buffers go through the SMMU.
//!
//! Three pieces bridge the crate to the kernel:
//! - [`VirtioHal`], the crate's `Hal`: `dma_alloc` is `dma::alloc_coherent`, `share` is
//!   `dma::map_single`. `Hal` methods are static, so the device they serve is the *active
//!   slot*: every call into the crate is made inside `enter`, which takes the one call lock
//!   and names the slot. Memory already mapped for the device (rings, the request page,
//!   [`DmaBuf`]s) is not mapped twice: `share` hands out its existing device address.
//! - [`EcamAccess`], the crate's `ConfigurationAccess` over our ECAM accessor.
//! - `Negotiating`, a `Transport` wrapper: the crate's block driver does not know
//!   VIRTIO_F_ACCESS_PLATFORM, so the wrapper accepts it when the device offers it (the HAL
//!   does give DMA-API addresses), hides indirect descriptors (each request is then three
//!   direct descriptors and needs no mapping besides its data) and event indices (the
//!   crate's `should_notify` compares them without wrap-around: silent after 65536
//!   requests), and holds back the doorbell when the HAL could not map a buffer.
//!
//! Every wait is bounded: requests are submitted with the crate's non-blocking calls and
//! polled against a deadline; on timeout the device is reset (it can no longer touch the
//! buffers) before any memory is released. Mappings the DMA API cannot undo yet (the device
//! sits in a blocked or different domain) are deferred until its domain allows it. (One
//! loop stays the crate's: `read_consistent` rereads the config while its generation
//! changes, which QEMU's never does during a read.)

use crate::arch::timer::{self, Deadline};
use crate::bus::pci::{self, Ecam, Function};
use crate::dma::{self, Direction, DmaDevice, DmaError, Path};
use crate::mm::PAGE_SIZE;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use pci_types::{ConfigRegionAccess, PciAddress};
use spin::Mutex;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

pub const VENDOR: u16 = 0x1af4;
/// Modern (virtio 1.x) block device: 0x1040 + device type 2.
pub const DEVICE_MODERN: u16 = 0x1042;
/// Transitional block device (has the modern capabilities too).
pub const DEVICE_TRANSITIONAL: u16 = 0x1001;
pub const SECTOR_SIZE: usize = 512;
/// Per-request bound unless the caller sets `timeout_ms`; QEMU answers in microseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
const RESET_TIMEOUT_MS: u64 = 100;
const F_RING_INDIRECT_DESC: u64 = 1 << 28;
const F_RING_EVENT_IDX: u64 = 1 << 29;
const F_ACCESS_PLATFORM: u64 = 1 << 33;
/// Where the response byte sits in the request page: its own cache line, away from the header.
const RESP_OFFSET: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkError {
    /// The virtio PCI capabilities could not be used.
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// A virtio device, but not a block device.
    NotBlock(DeviceType),
    /// Enumeration could not give every BAR space (memory decoding is off).
    BarsUnassigned,
    /// The crate's MMIO accesses use the BAR as programmed (a PCI address) as a CPU address.
    BarNotIdentity {
        slot: u8,
        pci: u64,
        cpu: u64,
    },
    /// The device would bypass the IOMMU (no VIRTIO_F_ACCESS_PLATFORM) but its DMA is translated.
    NoAccessPlatform,
    /// The device did not accept the features or the driver (status after initialisation).
    Rejected {
        status: u8,
    },
    /// The device status did not read back 0 after a reset.
    ResetTimeout,
    Virtio(virtio_drivers::Error),
    Dma(DmaError),
    /// No completion within the bound; the device has been reset.
    Timeout {
        sector: u64,
        waited_ms: u64,
    },
    /// The device flagged DEVICE_NEEDS_RESET (e.g. its DMA failed); it has been reset.
    DeviceNeedsReset {
        sector: u64,
    },
    /// Not a non-zero multiple of the sector size.
    BadLength {
        len: usize,
    },
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    /// Another call into a virtio device is in progress.
    Busy,
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::Transport(e) => write!(f, "virtio PCI transport: {e}"),
            BlkError::NotBlock(t) => write!(f, "virtio device type {t:?} is not a block device"),
            BlkError::BarsUnassigned => write!(f, "its BARs were not all assigned"),
            BlkError::BarNotIdentity { slot, pci, cpu } => {
                write!(f, "BAR{slot} is at PCI {pci:#x} but CPU {cpu:#x}: the virtio transport needs a 1:1 window")
            }
            BlkError::NoAccessPlatform => {
                write!(f, "device does not offer VIRTIO_F_ACCESS_PLATFORM but its DMA is translated")
            }
            BlkError::Rejected { status } => write!(f, "device rejected initialisation (status {status:#x})"),
            BlkError::ResetTimeout => write!(f, "device status did not read 0 within {RESET_TIMEOUT_MS} ms of a reset"),
            BlkError::Virtio(e) => write!(f, "virtio: {e}"),
            BlkError::Dma(e) => write!(f, "DMA: {e}"),
            BlkError::Timeout { sector, waited_ms } => {
                write!(f, "request at sector {sector} did not complete within {waited_ms} ms (device reset)")
            }
            BlkError::DeviceNeedsReset { sector } => {
                write!(f, "device set DEVICE_NEEDS_RESET during the request at sector {sector} (device reset)")
            }
            BlkError::BadLength { len } => write!(f, "{len} bytes is not a non-zero multiple of {SECTOR_SIZE}"),
            BlkError::OutOfRange { sector, sectors, capacity } => {
                write!(f, "sectors {sector}+{sectors} are beyond the disk's {capacity}")
            }
            BlkError::Busy => write!(f, "another virtio call is in progress"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The HAL and its per-device bookkeeping.

/// What a device address handed to the device is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Descriptor table + available ring, or used ring (`dma_alloc`).
    Ring,
    /// The page holding the request header and the response byte.
    Request,
    /// A [`DmaBuf`] of the caller's.
    Buffer,
    /// A caller's buffer mapped for one request (`share` -> `map_single`).
    Streaming,
}

/// One address handed to the device: the memory it names and the address it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handed {
    pub what: Use,
    pub pa: u64,
    pub dma: u64,
    pub len: usize,
}

/// Memory mapped for the device for a long time (coherent allocations).
struct Region {
    what: Use,
    cpu: u64,
    dma: u64,
    len: usize,
    /// The device writes it (used ring): invalidated before the CPU reads, when non-coherent.
    device_writes: bool,
    path: Path,
}

/// A buffer mapped by `share` and not yet unshared.
struct Share {
    dma: u64,
    len: usize,
    dir: Direction,
    path: Path,
}

/// Undo work the DMA API refused because the device is not in the domain the mapping was
/// made in (blocked, or moved); retried by `settle` once the domain matches again.
enum Deferred {
    Free { cpu: u64, dma: u64, len: usize, path: Path },
    Unmap { dma: u64, len: usize, dir: Direction, path: Path },
}

struct HalDev {
    dev: DmaDevice,
    regions: Vec<Region>,
    shares: Vec<Share>,
    deferred: Vec<Deferred>,
    /// The first DMA error met by `dma_alloc`/`share` since the last `take_error`.
    error: Option<DmaError>,
    /// Addresses handed to the device by the current (or last) request.
    log: Vec<Handed>,
}

/// One entry per virtio device ever bound (the index is its slot).
static DEVICES: Mutex<Vec<HalDev>> = Mutex::new(Vec::new());
const NO_SLOT: usize = usize::MAX;
/// The slot `Hal` methods serve: set by `enter` around every call into the crate.
static ACTIVE: AtomicUsize = AtomicUsize::new(NO_SLOT);
/// Serialises calls into the crate (so ACTIVE names the device the crate is working for).
static CALL: Mutex<()> = Mutex::new(());

/// Proof that the caller holds the call lock with ACTIVE = its slot.
struct Entered<'a> {
    _lock: spin::MutexGuard<'a, ()>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        ACTIVE.store(NO_SLOT, Ordering::SeqCst);
    }
}

fn enter(slot: usize) -> Result<Entered<'static>, BlkError> {
    let lock = CALL.try_lock().ok_or(BlkError::Busy)?;
    ACTIVE.store(slot, Ordering::SeqCst);
    Ok(Entered { _lock: lock })
}

fn with_slot<R>(slot: usize, f: impl FnOnce(&mut HalDev) -> R) -> Option<R> {
    DEVICES.lock().get_mut(slot).map(f)
}

fn with_active<R>(f: impl FnOnce(&mut HalDev) -> R) -> Option<R> {
    with_slot(ACTIVE.load(Ordering::SeqCst), f)
}

fn direction(d: BufferDirection) -> Direction {
    match d {
        BufferDirection::DriverToDevice => Direction::ToDevice,
        BufferDirection::DeviceToDriver => Direction::FromDevice,
        BufferDirection::Both => Direction::Bidirectional,
    }
}

impl HalDev {
    fn note_error(&mut self, e: DmaError) {
        self.error.get_or_insert(e);
    }

    fn alloc(&mut self, what: Use, len: usize, device_writes: bool) -> Result<Region, DmaError> {
        let path = dma::path(&self.dev);
        let (cpu, dma) = dma::alloc_coherent(&self.dev, len)?;
        let len = len.div_ceil(PAGE_SIZE as usize) * PAGE_SIZE as usize;
        self.regions.push(Region { what, cpu, dma, len, device_writes, path });
        Ok(Region { what, cpu, dma, len, device_writes, path })
    }

    /// Free the region at CPU address `cpu` (unique, unlike device addresses across domains).
    fn release(&mut self, cpu: u64) {
        if let Some(i) = self.regions.iter().position(|r| r.cpu == cpu) {
            let r = self.regions.swap_remove(i);
            self.deferred.push(Deferred::Free { cpu: r.cpu, dma: r.dma, len: r.len, path: r.path });
            self.settle();
        }
    }

    /// The region (already mapped for the device) that holds [pa, pa+len), if any.
    fn region_of(&self, pa: u64, len: usize) -> Option<&Region> {
        self.regions.iter().find(|r| pa >= r.cpu && pa + len as u64 <= r.cpu + r.len as u64)
    }

    /// Do the deferred frees and unmaps the device's current domain allows.
    fn settle(&mut self) {
        let now = dma::path(&self.dev);
        let dev = &self.dev;
        self.deferred.retain(|d| match *d {
            Deferred::Free { cpu, dma, len, path } => path != now || dma::free_coherent(dev, cpu, dma, len).is_err(),
            Deferred::Unmap { dma, len, dir, path } => path != now || dma::unmap_single(dev, dma, len, dir).is_err(),
        });
    }

    /// After a device reset: the mappings of requests that never completed are undone.
    fn abandon_shares(&mut self) {
        for s in core::mem::take(&mut self.shares) {
            self.deferred.push(Deferred::Unmap { dma: s.dma, len: s.len, dir: s.dir, path: s.path });
        }
        self.settle();
    }

    fn sync_rings_for_device(&self) {
        for r in self.regions.iter().filter(|r| r.what == Use::Ring && !r.device_writes) {
            dma::sync_for_device(&self.dev, r.cpu, r.len, Direction::ToDevice);
        }
    }

    fn sync_rings_for_cpu(&self) {
        for r in self.regions.iter().filter(|r| r.what == Use::Ring && r.device_writes) {
            dma::sync_for_cpu(&self.dev, r.cpu, r.len, Direction::FromDevice);
        }
    }
}

/// The `Hal` of `virtio-drivers`, backed by the DMA API for the active slot.
pub struct VirtioHal;

// SAFETY: dma_alloc returns zeroed, page-aligned frames owned by nobody else until
// dma_dealloc (or a null address on failure, which the crate treats as an error);
// mmio_phys_to_virt is the identity, which is how the CPU map covers MMIO; share hands
// out addresses that reach the buffer (mapped by the DMA API) or 0 when it cannot, in
// which case the doorbell is held back and the device reset before the buffer is reused.
unsafe impl Hal for VirtioHal {
    fn dma_alloc(pages: usize, dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let len = pages * PAGE_SIZE as usize;
        let got = with_active(|h| match h.alloc(Use::Ring, len, dir == BufferDirection::DeviceToDriver) {
            Ok(r) => {
                h.log.push(Handed { what: Use::Ring, pa: r.cpu, dma: r.dma, len });
                Some((r.dma, r.cpu))
            }
            Err(e) => {
                h.note_error(e);
                None
            }
        });
        match got.flatten().and_then(|(dma, cpu)| Some((dma, NonNull::new(cpu as *mut u8)?))) {
            Some(v) => v,
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, _pages: usize) -> i32 {
        with_active(|h| h.release(vaddr.as_ptr() as u64));
        // The crate asserts success; a refused free is deferred, never reported here.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // `probe` checked that every BAR's PCI address is its CPU address, and the CPU map
        // covers everything outside RAM as device memory at VA == PA.
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, dir: BufferDirection) -> PhysAddr {
        // RAM is mapped at VA == PA.
        let pa = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len();
        let dir = direction(dir);
        with_active(|h| {
            if let Some(r) = h.region_of(pa, len) {
                let (what, dma) = (r.what, r.dma + (pa - r.cpu));
                dma::sync_for_device(&h.dev, pa, len, dir);
                h.log.push(Handed { what, pa, dma, len });
                return dma;
            }
            let path = dma::path(&h.dev);
            match dma::map_single(&h.dev, pa, len, dir) {
                Ok(dma) => {
                    h.shares.push(Share { dma, len, dir, path });
                    h.log.push(Handed { what: Use::Streaming, pa, dma, len });
                    dma
                }
                Err(e) => {
                    // 0 is never a device address here (IOVA 0 is not allocated, PA 0 is
                    // not RAM) and the transport holds back the doorbell.
                    h.note_error(e);
                    0
                }
            }
        })
        .unwrap_or(0)
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, dir: BufferDirection) {
        if paddr == 0 {
            return;
        }
        let pa = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len();
        let dir = direction(dir);
        with_active(|h| {
            if h.region_of(pa, len).is_some() {
                dma::sync_for_cpu(&h.dev, pa, len, dir);
                return;
            }
            if let Some(i) = h.shares.iter().position(|s| s.dma == paddr) {
                let s = h.shares.swap_remove(i);
                h.deferred.push(Deferred::Unmap { dma: s.dma, len: s.len, dir: s.dir, path: s.path });
                h.settle();
            }
        });
    }
}

/// Coherent memory mapped for one virtio device: passed to a request, it goes to the device
/// by the address it already has (no mapping per request). Tied to the domain the device was
/// in when it was allocated; freed (or its free deferred) on drop.
pub struct DmaBuf {
    slot: usize,
    cpu: u64,
    dma: u64,
    len: usize,
}

impl DmaBuf {
    fn alloc(slot: usize, what: Use, len: usize) -> Result<DmaBuf, BlkError> {
        let r = with_slot(slot, |h| h.alloc(what, len, false)).ok_or(BlkError::Dma(DmaError::NoMemory))?;
        let r = r.map_err(BlkError::Dma)?;
        Ok(DmaBuf { slot, cpu: r.cpu, dma: r.dma, len })
    }
    pub fn pa(&self) -> u64 {
        self.cpu
    }
    pub fn dma(&self) -> u64 {
        self.dma
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes of frames this buffer owns, mapped normal at VA == PA.
        unsafe { core::slice::from_raw_parts(self.cpu as *const u8, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for as_slice; `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.cpu as *mut u8, self.len) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        with_slot(self.slot, |h| h.release(self.cpu));
    }
}

// ---------------------------------------------------------------------------------------
// Config space and transport.

/// The crate's `ConfigurationAccess` over our ECAM accessor.
#[derive(Clone, Copy)]
pub struct EcamAccess(pub Ecam);

impl ConfigurationAccess for EcamAccess {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        // SAFETY: config reads of a function found by enumeration; the accessor bounds the
        // address to the ECAM window.
        unsafe { self.0.read(PciAddress::new(0, df.bus, df.device, df.function), offset as u16) }
    }
    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: the crate writes the command register and sizes BARs (restoring them).
        unsafe { self.0.write(PciAddress::new(0, df.bus, df.device, df.function), offset as u16, data) }
    }
    unsafe fn unsafe_clone(&self) -> Self {
        *self
    }
}

/// The PCI transport and what feature negotiation and queue setup told the device.
struct PciState {
    t: ManuallyDrop<PciTransport>,
    offered: u64,
    accepted: u64,
    /// Descriptor table, driver area, device area as given to the device.
    queue: Option<[u64; 3]>,
    slot: usize,
    /// Doorbells rung, and held back because a buffer could not be mapped.
    rung: u64,
    held: u64,
}

fn reset(t: &mut PciTransport) -> Result<(), BlkError> {
    t.set_status(DeviceStatus::empty());
    let d = Deadline::after_ms(RESET_TIMEOUT_MS);
    while t.get_status() != DeviceStatus::empty() {
        if d.expired() {
            return Err(BlkError::ResetTimeout);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

impl Drop for PciState {
    fn drop(&mut self) {
        // PciTransport's own drop waits for the reset without a bound: only run it once the
        // device has been seen reset, else leak it.
        if reset(&mut self.t).is_ok() {
            // SAFETY: dropped exactly once, never used again.
            unsafe { ManuallyDrop::drop(&mut self.t) };
        }
    }
}

/// The transport handed to the crate's block driver (a shared handle: the driver keeps one
/// to reset the device and read its status while the crate owns the other).
#[derive(Clone)]
struct Negotiating(Arc<Mutex<PciState>>);

impl Transport for Negotiating {
    fn device_type(&self) -> DeviceType {
        self.0.lock().t.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        let mut s = self.0.lock();
        let f = s.t.read_device_features();
        s.offered = f;
        f & !(F_RING_INDIRECT_DESC | F_RING_EVENT_IDX)
    }
    fn write_driver_features(&mut self, features: u64) {
        let mut s = self.0.lock();
        let f = features | (s.offered & F_ACCESS_PLATFORM);
        s.accepted = f;
        s.t.write_driver_features(f);
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.0.lock().t.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        let mut s = self.0.lock();
        let held = with_slot(s.slot, |h| {
            h.sync_rings_for_device();
            h.error.is_some()
        });
        if held == Some(true) {
            s.held += 1;
        } else {
            s.rung += 1;
            s.t.notify(queue);
        }
    }
    fn get_status(&self) -> DeviceStatus {
        self.0.lock().t.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.0.lock().t.set_status(status)
    }
    fn set_guest_page_size(&mut self, size: u32) {
        self.0.lock().t.set_guest_page_size(size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.0.lock().t.requires_legacy_layout()
    }
    fn queue_set(&mut self, queue: u16, size: u32, desc: PhysAddr, driver: PhysAddr, device: PhysAddr) {
        let mut s = self.0.lock();
        s.queue = Some([desc, driver, device]);
        s.t.queue_set(queue, size, desc, driver, device)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.0.lock().t.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.0.lock().t.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.0.lock().t.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.0.lock().t.read_config_generation()
    }
    fn read_config_space<T: zerocopy::FromBytes + zerocopy::IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        self.0.lock().t.read_config_space(offset)
    }
    fn write_config_space<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> virtio_drivers::Result<()> {
        self.0.lock().t.write_config_space(offset, value)
    }
}

// ---------------------------------------------------------------------------------------
// The driver.

/// The crate's driver and the memory it was set up with, valid for one DMA path.
struct Session {
    blk: VirtIOBlk<VirtioHal, Negotiating>,
    /// Request header at 0, response byte at RESP_OFFSET.
    req: DmaBuf,
    path: Path,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub requests: u64,
    /// Device (re)initialisations: at probe, after an error, after a domain change.
    pub inits: u64,
    pub resets_after_error: u64,
}

/// Where the requests' time went, counted while [`VirtioBlk::phases`] is `Some` (off by
/// default: the counter reads add a little to every request). Generic-timer ticks, summed
/// over `requests` completed requests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub requests: u64,
    /// From the start of the request to the doorbell: buffers mapped (the DMA API), chain
    /// written, notify.
    pub submit: u64,
    /// Waiting for the device to return the chain: the device model's work.
    pub wait: u64,
    /// Popping the chain: buffers unmapped (the DMA API).
    pub complete: u64,
    /// Used-ring polls while waiting.
    pub polls: u64,
}

/// A bound virtio-blk device.
pub struct VirtioBlk {
    pub name: String,
    pub dma: DmaDevice,
    pub func: Function,
    slot: usize,
    pci: Arc<Mutex<PciState>>,
    session: Option<Session>,
    capacity: u64,
    /// Bound for each request.
    pub timeout_ms: u64,
    pub stats: Stats,
    /// Set to `Some` to have requests timed by phase.
    pub phases: Option<Phases>,
}

pub fn is_virtio_blk(f: &Function) -> bool {
    f.vendor == VENDOR && (f.device == DEVICE_MODERN || f.device == DEVICE_TRANSITIONAL)
}

pub fn name_of(f: &Function) -> String {
    alloc::format!("virtio-blk@{:02x}:{:02x}.{}", f.addr.bus(), f.addr.device(), f.addr.function())
}

/// Bind a virtio-blk function: check its BARs, register it with the DMA API (64-bit DMA),
/// turn on bus mastering and initialise the device.
pub fn probe(f: &Function, ecam: Ecam, coherent: bool) -> Result<VirtioBlk, BlkError> {
    let name = name_of(f);
    if !f.mem_enabled {
        return Err(BlkError::BarsUnassigned);
    }
    for b in &f.bars {
        let pci = pci::read_bar(&ecam, f, b);
        if pci != b.addr {
            return Err(BlkError::BarNotIdentity { slot: b.slot, pci, cpu: b.addr });
        }
    }
    let dev = dma::add_device(&name, f.stream, u64::MAX, coherent).map_err(BlkError::Dma)?;
    pci::set_bus_master(&ecam, f, true);
    let df = DeviceFunction { bus: f.addr.bus(), device: f.addr.device(), function: f.addr.function() };
    let t = PciTransport::new::<VirtioHal, _>(&mut PciRoot::new(EcamAccess(ecam)), df).map_err(BlkError::Transport)?;
    // From here on a failure drops PciState, whose reset wait is bounded.
    let mut state =
        PciState { t: ManuallyDrop::new(t), offered: 0, accepted: 0, queue: None, slot: NO_SLOT, rung: 0, held: 0 };
    let ty = state.t.device_type();
    if ty != DeviceType::Block {
        return Err(BlkError::NotBlock(ty));
    }
    let slot = {
        let mut devs = DEVICES.lock();
        devs.push(HalDev {
            dev: dev.clone(),
            regions: Vec::new(),
            shares: Vec::new(),
            deferred: Vec::new(),
            error: None,
            log: Vec::new(),
        });
        devs.len() - 1
    };
    state.slot = slot;
    let pci = Arc::new(Mutex::new(state));
    let mut b = VirtioBlk {
        name,
        dma: dev,
        func: f.clone(),
        slot,
        pci,
        session: None,
        capacity: 0,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        stats: Stats::default(),
        phases: None,
    };
    {
        let _e = enter(slot)?;
        b.ready()?;
    }
    Ok(b)
}

/// What a request ended with, before the driver reacts.
enum Ending {
    Done(Result<(), virtio_drivers::Error>),
    Refused(BlkError),
    Abandoned(BlkError),
}

impl VirtioBlk {
    /// Sectors of 512 bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// VIRTIO_F_ACCESS_PLATFORM was offered and accepted: the device's DMA goes through the
    /// platform's IOMMU (or the direct path when there is none).
    pub fn access_platform(&self) -> bool {
        self.pci.lock().accepted & F_ACCESS_PLATFORM != 0
    }

    /// Descriptor table, driver area and device area addresses the device was given.
    pub fn queue_addrs(&self) -> Option<[u64; 3]> {
        self.pci.lock().queue
    }

    /// Doorbells rung, and held back (a buffer of the request could not be mapped).
    pub fn doorbells(&self) -> (u64, u64) {
        let s = self.pci.lock();
        (s.rung, s.held)
    }

    /// Addresses handed to the device by the last request (or initialisation).
    pub fn handed(&self) -> Vec<Handed> {
        with_slot(self.slot, |h| h.log.clone()).unwrap_or_default()
    }

    /// Long-lived memory mapped for the device: rings, request page, DmaBufs.
    pub fn regions(&self) -> Vec<Handed> {
        with_slot(self.slot, |h| {
            h.regions.iter().map(|r| Handed { what: r.what, pa: r.cpu, dma: r.dma, len: r.len }).collect()
        })
        .unwrap_or_default()
    }

    /// Mappings waiting for the device's domain to allow undoing them.
    pub fn deferred(&self) -> usize {
        with_slot(self.slot, |h| h.deferred.len()).unwrap_or(0)
    }

    /// The DMA path the device was set up for (None: not set up).
    pub fn session_path(&self) -> Option<Path> {
        self.session.as_ref().map(|s| s.path)
    }

    /// Coherent memory for requests, mapped once for the device in its current domain.
    pub fn alloc_buf(&mut self, len: usize) -> Result<DmaBuf, BlkError> {
        if len == 0 {
            return Err(BlkError::BadLength { len });
        }
        DmaBuf::alloc(self.slot, Use::Buffer, len)
    }

    /// Reset the device and release the rings: call before moving the device to another
    /// domain (so they are freed in the one they were mapped in); the next request sets up
    /// the device again.
    pub fn quiesce(&mut self) -> Result<(), BlkError> {
        let _e = enter(self.slot)?;
        self.teardown()
    }

    pub fn read_blocks(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        self.transfer(sector, Buf::Read(buf))
    }

    pub fn write_blocks(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError> {
        self.transfer(sector, Buf::Write(buf))
    }

    fn status(&self) -> DeviceStatus {
        self.pci.lock().t.get_status()
    }

    /// Reset the device, then release what it was using. Inside `enter`.
    fn teardown(&mut self) -> Result<(), BlkError> {
        let r = reset(&mut self.pci.lock().t);
        if r.is_err() {
            // A device that does not reset might still use the rings: keep them, leak them.
            if let Some(s) = self.session.take() {
                core::mem::forget(s);
            }
            return r;
        }
        self.session = None;
        with_slot(self.slot, |h| h.abandon_shares());
        Ok(())
    }

    /// Make sure the device is set up for its current DMA path. In a blocked domain the old
    /// set-up is kept: the SMMU refuses every address anyway, which is what callers test.
    fn ready(&mut self) -> Result<(), BlkError> {
        let now = dma::path(&self.dma);
        with_slot(self.slot, |h| h.settle());
        match &self.session {
            Some(s) if s.path == now || now == Path::Blocked => return Ok(()),
            Some(_) => self.teardown()?,
            None => {}
        }
        with_slot(self.slot, |h| {
            h.error = None;
            h.log.clear();
        });
        reset(&mut self.pci.lock().t)?;
        let req = DmaBuf::alloc(self.slot, Use::Request, PAGE_SIZE as usize)?;
        let blk = VirtIOBlk::<VirtioHal, _>::new(Negotiating(self.pci.clone()));
        let dma_err = with_slot(self.slot, |h| h.error.take()).flatten();
        let mut blk = match (blk, dma_err) {
            (Ok(b), None) => b,
            (r, e) => {
                let err = match (e, r.as_ref().err()) {
                    (Some(e), _) => BlkError::Dma(e),
                    (None, Some(v)) => BlkError::Virtio(*v),
                    (None, None) => BlkError::Virtio(virtio_drivers::Error::DmaError),
                };
                // Reset first: the device must not use the rings once they are released.
                let _ = reset(&mut self.pci.lock().t);
                drop(r);
                return Err(err);
            }
        };
        self.stats.inits += 1;
        let st = self.status();
        let want = DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK;
        let accepted = self.pci.lock().accepted;
        let bad = DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::FAILED;
        let err = if !st.contains(want) || st.intersects(bad) {
            Some(BlkError::Rejected { status: st.bits() as u8 })
        } else if accepted & F_ACCESS_PLATFORM == 0 && now != Path::Direct {
            Some(BlkError::NoAccessPlatform)
        } else {
            None
        };
        self.capacity = blk.capacity();
        // Completion is polled: ask the device not to interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT).
        blk.disable_interrupts();
        self.session = Some(Session { blk, req, path: now });
        match err {
            Some(e) => {
                let _ = self.teardown();
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn transfer(&mut self, sector: u64, buf: Buf<'_>) -> Result<(), BlkError> {
        let len = buf.len();
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(BlkError::BadLength { len });
        }
        let sectors = (len / SECTOR_SIZE) as u64;
        let _e = enter(self.slot)?;
        self.ready()?;
        if sector.checked_add(sectors).is_none_or(|end| end > self.capacity) {
            return Err(BlkError::OutOfRange { sector, sectors, capacity: self.capacity });
        }
        self.stats.requests += 1;
        let end = self.submit_and_wait(sector, buf);
        match end {
            Ending::Done(r) => r.map_err(BlkError::Virtio),
            Ending::Refused(e) | Ending::Abandoned(e) => {
                self.stats.resets_after_error += 1;
                self.teardown()?;
                Err(e)
            }
        }
    }

    fn submit_and_wait(&mut self, sector: u64, mut buf: Buf<'_>) -> Ending {
        let slot = self.slot;
        let timed = self.phases.is_some();
        let now = || if timed { timer::ticks() } else { 0 };
        let t0 = now();
        with_slot(slot, |h| {
            h.error = None;
            h.log.clear();
            h.sync_rings_for_cpu();
        });
        let timeout_ms = self.timeout_ms;
        let pci = self.pci.clone();
        let Some(s) = self.session.as_mut() else {
            return Ending::Refused(BlkError::Virtio(virtio_drivers::Error::NotReady));
        };
        let (req_p, resp_p) = (s.req.cpu as *mut BlkReq, (s.req.cpu as usize + RESP_OFFSET) as *mut BlkResp);
        // SAFETY: the request page is this session's, page-aligned (BlkReq needs 8), zeroed
        // or written by earlier requests (both types accept any bytes), and no other
        // reference to it exists while the request runs.
        let (req, resp) = unsafe {
            resp_p.write(BlkResp::default());
            (&mut *req_p, &mut *resp_p)
        };
        // SAFETY: req, resp and buf stay untouched until the token is completed below, or
        // the device is reset (`teardown`) before they are released or reused.
        let token = unsafe {
            match &mut buf {
                Buf::Read(b) => s.blk.read_blocks_nb(sector as usize, req, b, resp),
                Buf::Write(b) => s.blk.write_blocks_nb(sector as usize, req, b, resp),
            }
        };
        if let Some(e) = with_slot(slot, |h| h.error.take()).flatten() {
            // The doorbell was held back; the chain in the ring is dropped with a reset.
            return Ending::Refused(BlkError::Dma(e));
        }
        let token = match token {
            Ok(t) => t,
            Err(e) => return Ending::Done(Err(e)),
        };
        let t1 = now();
        let d = Deadline::after_ms(timeout_ms);
        let mut polls = 0;
        loop {
            with_slot(slot, |h| h.sync_rings_for_cpu());
            polls += 1;
            if s.blk.peek_used() == Some(token) {
                break;
            }
            if pci.lock().t.get_status().contains(DeviceStatus::DEVICE_NEEDS_RESET) {
                return Ending::Abandoned(BlkError::DeviceNeedsReset { sector });
            }
            if d.expired() {
                return Ending::Abandoned(BlkError::Timeout { sector, waited_ms: timeout_ms });
            }
            core::hint::spin_loop();
        }
        let t2 = now();
        // SAFETY: the same req, buf and resp as submitted with this token.
        let r = unsafe {
            match &mut buf {
                Buf::Read(b) => s.blk.complete_read_blocks(token, req, b, resp),
                Buf::Write(b) => s.blk.complete_write_blocks(token, req, b, resp),
            }
        };
        if let Some(p) = self.phases.as_mut() {
            let t3 = now();
            p.requests += 1;
            p.submit += t1 - t0;
            p.wait += t2 - t1;
            p.complete += t3 - t2;
            p.polls += polls;
        }
        Ending::Done(r)
    }
}

impl Drop for VirtioBlk {
    fn drop(&mut self) {
        if let Ok(_e) = enter(self.slot) {
            let _ = self.teardown();
        }
    }
}

enum Buf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
        }
    }
}
