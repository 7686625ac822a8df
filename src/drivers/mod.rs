//! DMA masters. Each implements `DmaEngine`, the small interface the DMA test
//! suites are written against, so a board's own engine plugs in the same way.

pub mod edu;
pub mod virtio_blk;

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// The transfer did not finish within the bound.
    Timeout { what: &'static str, waited_ms: u64 },
    /// Longer than the engine's buffer.
    TooLong { len: usize, max: usize },
    /// The device does not answer as the driver expects.
    NotResponding(&'static str),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Timeout { what, waited_ms } => write!(f, "{what} did not complete within {waited_ms} ms"),
            EngineError::TooLong { len, max } => write!(f, "{len} bytes is more than the engine's {max}"),
            EngineError::NotResponding(why) => write!(f, "device not responding: {why}"),
        }
    }
}

/// A device that copies between memory (by device-visible DMA address) and its
/// own buffer. Tests move data memory -> engine -> memory and check every byte.
pub trait DmaEngine {
    fn name(&self) -> &str;
    /// Largest single transfer.
    fn max_len(&self) -> usize;
    /// The addresses the device can emit (its DMA mask).
    fn dma_mask(&self) -> u64;
    /// Device reads `len` bytes at `dma_addr` into its buffer at `offset`.
    fn read_mem(&mut self, dma_addr: u64, offset: usize, len: usize) -> Result<(), EngineError>;
    /// Device writes `len` bytes from its buffer at `offset` to `dma_addr`.
    fn write_mem(&mut self, dma_addr: u64, offset: usize, len: usize) -> Result<(), EngineError>;
}

use crate::bootargs::BootArgs;
use crate::bus::pci::{self, Function};
use crate::dma::{self, DmaDevice};
use crate::dt::Platform;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

/// An `edu` found on a PCI bus, bound to the DMA API.
pub struct EduDev {
    pub edu: edu::Edu,
    pub dma: DmaDevice,
    pub func: Function,
    pub ecam: pci::Ecam,
}

// SAFETY: EduDev owns its device's registers; the EDUS mutex serialises access.
unsafe impl Send for EduDev {}

pub static EDUS: Mutex<Vec<EduDev>> = Mutex::new(Vec::new());

/// edus left unregistered on purpose (`edu.unbound=N`), with their PCI function.
pub static UNBOUND_EDUS: Mutex<Vec<(edu::Edu, Function)>> = Mutex::new(Vec::new());

/// virtio-blk devices bound at boot (rings and buffers through the DMA API).
pub static VIRTIO_BLKS: Mutex<Vec<virtio_blk::VirtioBlk>> = Mutex::new(Vec::new());

/// Platform masters (DT `iommus`) behind a probed SMMU, registered with the DMA API
/// so their StreamIDs sit in a default domain from boot. No driver binds them yet:
/// a board's DMA engine implements `DmaEngine` over its `DmaDevice`.
pub static PLATFORM_MASTERS: Mutex<Vec<DmaDevice>> = Mutex::new(Vec::new());

/// Problems met while binding drivers (reported, never fatal).
pub static PROBE_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Enumerate every PCI host, bind drivers to what they know, register each DMA
/// master with the DMA API (default domain per `iommu.passthrough`).
pub fn probe_all(p: &Platform, args: &BootArgs) {
    attach_platform_masters(p);
    probe_pci(p, args);
}

fn attach_platform_masters(p: &Platform) {
    for m in p.masters.iter().filter(|m| m.enabled) {
        let smmu = crate::iommu::registry::REGISTRY.lock().smmus.iter().position(|e| e.node == m.smmu);
        if smmu.is_none() {
            // Its SMMU is disabled or absent: the device DMAs untranslated.
            continue;
        }
        let coherent = p.smmus.iter().find(|s| s.node == m.smmu).is_some_and(|s| s.coherent);
        match dma::add_device_sids(&m.node, smmu, &m.stream_ids, u64::MAX, coherent, &p.direct_maps_for(&m.node)) {
            Ok(d) => PLATFORM_MASTERS.lock().push(d),
            Err(e) => PROBE_ERRORS.lock().push(alloc::format!("{}: {e}", m.node)),
        }
    }
}

fn probe_pci(p: &Platform, args: &BootArgs) {
    let bits = match args.number("edu.dma_bits") {
        Ok(Some(b)) if (12..=64).contains(&b) => b as u32,
        Ok(None) => 28,
        _ => {
            PROBE_ERRORS.lock().push("edu.dma_bits: expected 12..64, using 28".into());
            28
        }
    };
    let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let mut edu_index = 0usize;
    for (i, h) in p.pci_hosts.iter().enumerate() {
        let (funcs, errors) = pci::enumerate(i, h);
        pci::FUNCTIONS.lock().extend(funcs.iter().cloned());
        pci::ERRORS.lock().extend(errors.iter().copied());
        let ecam = pci::ecam_of(h);
        for f in funcs {
            if virtio_blk::is_virtio_blk(&f) {
                match virtio_blk::probe(&f, ecam, h.coherent) {
                    Ok(b) => VIRTIO_BLKS.lock().push(b),
                    Err(e) => PROBE_ERRORS.lock().push(alloc::format!("{}: {e}", virtio_blk::name_of(&f))),
                }
                continue;
            }
            if (f.vendor, f.device) != (edu::VENDOR, edu::DEVICE) {
                continue;
            }
            let name = alloc::format!("edu@{:02x}:{:02x}.{}", f.addr.bus(), f.addr.device(), f.addr.function());
            let Some(bar0) = f.bars.iter().find(|b| b.slot == 0) else {
                PROBE_ERRORS.lock().push(alloc::format!("{name}: BAR0 not assigned"));
                continue;
            };
            // SAFETY: BAR0 of an edu function was just assigned from the host window
            // and is mapped as device memory; this driver is its only user.
            let e = match unsafe { edu::Edu::new(bar0.addr, mask, &name) } {
                Ok(e) => e,
                Err(err) => {
                    PROBE_ERRORS.lock().push(alloc::format!("{name}: {err}"));
                    continue;
                }
            };
            // Test hook `edu.unbound=N`: the N-th edu is never registered with the DMA
            // API (its StreamID keeps the abort STE of an unknown device) yet is let
            // loose with bus mastering on, to show default deny.
            if args.number("edu.unbound").ok().flatten() == Some(edu_index as u64) {
                edu_index += 1;
                pci::set_bus_master(&ecam, &f, true);
                UNBOUND_EDUS.lock().push((e, f));
                continue;
            }
            edu_index += 1;
            let direct = p.pci_device_node(i, f.rid).map(|n| p.direct_maps_for(n)).unwrap_or_default();
            let d = match dma::add_device_with_maps(&name, f.stream, mask, h.coherent, &direct) {
                Ok(d) => d,
                Err(err) => {
                    PROBE_ERRORS.lock().push(alloc::format!("{name}: {err}"));
                    continue;
                }
            };
            pci::set_bus_master(&ecam, &f, true);
            EDUS.lock().push(EduDev { edu: e, dma: d, func: f, ecam });
        }
    }
}
