//! PCIe through ECAM: enumerate every function of a DT host bridge, assign BARs
//! from the host's `ranges` windows (no firmware did it), enable memory space and
//! bus mastering, and name each function's StreamID from `iommu-map`.
//! Config-space types come from the `pci_types` crate.

use crate::dt::{PciHost, PciSpace};
use alloc::vec::Vec;
use pci_types::{Bar, CommandRegister, ConfigRegionAccess, EndpointHeader, HeaderType, PciAddress, PciHeader};

/// ECAM window of one host bridge: bus `bus_start` sits at `base`.
#[derive(Clone, Copy)]
pub struct Ecam {
    pub base: u64,
    pub size: u64,
    pub bus_start: u8,
}

impl Ecam {
    fn addr(&self, a: PciAddress, offset: u16) -> Option<u64> {
        let bus = a.bus().checked_sub(self.bus_start)? as u64;
        let off = (bus << 20) | ((a.device() as u64) << 15) | ((a.function() as u64) << 12) | (offset as u64 & 0xffc);
        (off + 4 <= self.size).then_some(self.base + off)
    }
}

impl ConfigRegionAccess for Ecam {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        match self.addr(address, offset) {
            // SAFETY: the address lies inside the host's ECAM window, which the
            // CPU map covers as device memory.
            Some(a) => unsafe { core::ptr::read_volatile(a as *const u32) },
            None => u32::MAX,
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        if let Some(a) = self.addr(address, offset) {
            // SAFETY: as for read.
            unsafe { core::ptr::write_volatile(a as *mut u32, value) };
        }
    }
}

/// Every function found at boot, with its assigned BARs (enumeration happens once:
/// BAR assignment briefly disables decoding and bus mastering).
pub static FUNCTIONS: spin::Mutex<Vec<Function>> = spin::Mutex::new(Vec::new());
/// Enumeration problems, per host.
pub static ERRORS: spin::Mutex<Vec<PciError>> = spin::Mutex::new(Vec::new());

/// One memory BAR after assignment.
#[derive(Clone, Copy, Debug)]
pub struct BarInfo {
    pub slot: u8,
    pub addr: u64,
    pub size: u64,
    pub is64: bool,
}

#[derive(Clone, Debug)]
pub struct Function {
    pub addr: PciAddress,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    /// Requester ID: bus << 8 | dev << 3 | fn.
    pub rid: u16,
    pub bars: Vec<BarInfo>,
    /// (SMMU phandle, StreamID) from the host's `iommu-map`; None = not behind an SMMUv3.
    pub stream: Option<(u32, u32)>,
    pub host: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciError {
    /// The host's windows have no room for a BAR of this size.
    NoBarSpace {
        rid: u16,
        slot: u8,
        size: u64,
    },
    BarWrite {
        rid: u16,
        slot: u8,
    },
}

impl core::fmt::Display for PciError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PciError::NoBarSpace { rid, slot, size } => {
                write!(
                    f,
                    "{:02x}:{:02x}.{} BAR{slot}: no window has {size:#x} bytes free",
                    rid >> 8,
                    (rid >> 3) & 31,
                    rid & 7
                )
            }
            PciError::BarWrite { rid, slot } => write!(f, "RID {rid:#x} BAR{slot}: write rejected"),
        }
    }
}

/// Bump allocator over one `ranges` window.
struct Window {
    next: u64,
    end: u64,
    cpu_minus_pci: u64,
    is64: bool,
}

impl Window {
    fn take(&mut self, size: u64) -> Option<(u64, u64)> {
        let start = self.next.checked_add(size - 1)? & !(size - 1);
        let end = start.checked_add(size)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some((start, start.wrapping_add(self.cpu_minus_pci)))
    }
}

fn rid(a: PciAddress) -> u16 {
    ((a.bus() as u16) << 8) | ((a.device() as u16) << 3) | a.function() as u16
}

/// Enumerate the functions on `host` (bus range as the DT says), assign BARs and
/// enable them. Bridges are not configured yet: functions behind one are not seen.
pub fn enumerate(host_index: usize, host: &PciHost) -> (Vec<Function>, Vec<PciError>) {
    let ecam = Ecam { base: host.ecam_base, size: host.ecam_size, bus_start: host.bus_range.0 };
    let mut windows: Vec<Window> = host
        .ranges
        .iter()
        .filter(|r| r.space != PciSpace::Io && r.size > 0)
        .map(|r| Window {
            next: r.pci_addr,
            end: r.pci_addr + r.size,
            cpu_minus_pci: r.cpu_addr.wrapping_sub(r.pci_addr),
            is64: r.space == PciSpace::Mem64,
        })
        .collect();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for bus in host.bus_range.0..=host.bus_range.1 {
        for dev in 0..32u8 {
            for func in 0..8u8 {
                let a = PciAddress::new(0, bus, dev, func);
                let h = PciHeader::new(a);
                let (vendor, device) = h.id(ecam);
                if vendor == 0xffff {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                let (_, class, subclass, _) = h.revision_and_class(ecam);
                let multi = func == 0 && h.has_multiple_functions(ecam);
                let mut f = Function {
                    addr: a,
                    vendor,
                    device,
                    class,
                    subclass,
                    rid: rid(a),
                    bars: Vec::new(),
                    stream: host.rid_to_sid(rid(a)),
                    host: host_index,
                };
                if h.header_type(ecam) == HeaderType::Endpoint
                    && let Err(e) = assign_bars(&ecam, &h, &mut f, &mut windows)
                {
                    errors.push(e);
                }
                out.push(f);
                if func == 0 && !multi {
                    break;
                }
            }
        }
        // Without bridge configuration only the root bus carries functions.
        if out.iter().all(|f| f.addr.bus() != bus) && bus > host.bus_range.0 {
            break;
        }
    }
    (out, errors)
}

fn assign_bars(ecam: &Ecam, h: &PciHeader, f: &mut Function, windows: &mut [Window]) -> Result<(), PciError> {
    let Some(mut ep) = EndpointHeader::from_header(PciHeader::new(h.address()), ecam) else {
        return Ok(());
    };
    ep.update_command(ecam, |c| c & !(CommandRegister::MEMORY_ENABLE | CommandRegister::BUS_MASTER_ENABLE));
    let mut slot = 0u8;
    while slot < 6 {
        let bar = ep.bar(slot, ecam);
        let (size, is64) = match bar {
            Some(Bar::Memory32 { size, .. }) => (size as u64, false),
            Some(Bar::Memory64 { size, .. }) => (size, true),
            _ => {
                slot += 1;
                continue;
            }
        };
        if size > 0 {
            // Prefer a 32-bit window (every BAR can decode it), then a 64-bit one.
            let mut got = windows.iter_mut().filter(|w| !w.is64).find_map(|w| w.take(size));
            if got.is_none() && is64 {
                got = windows.iter_mut().filter(|w| w.is64).find_map(|w| w.take(size));
            }
            let Some((pci, cpu)) = got else {
                return Err(PciError::NoBarSpace { rid: f.rid, slot, size });
            };
            // SAFETY: the BAR belongs to this function and the address came from the
            // host's memory window, so decoding it cannot overlap another device.
            unsafe { ep.write_bar(slot, ecam, pci as usize) }.map_err(|_| PciError::BarWrite { rid: f.rid, slot })?;
            f.bars.push(BarInfo { slot, addr: cpu, size, is64 });
        }
        slot += if is64 { 2 } else { 1 };
    }
    ep.update_command(ecam, |c| c | CommandRegister::MEMORY_ENABLE);
    Ok(())
}

/// Let the function issue DMA (bus mastering) or stop it.
pub fn set_bus_master(ecam: &Ecam, f: &Function, on: bool) {
    let mut h = PciHeader::new(f.addr);
    h.update_command(ecam, |c| {
        if on { c | CommandRegister::BUS_MASTER_ENABLE } else { c & !CommandRegister::BUS_MASTER_ENABLE }
    });
}

pub fn ecam_of(host: &PciHost) -> Ecam {
    Ecam { base: host.ecam_base, size: host.ecam_size, bus_start: host.bus_range.0 }
}
