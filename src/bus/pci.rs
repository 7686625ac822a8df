//! PCIe through ECAM: enumerate every bus of a DT host bridge as firmware would (root
//! and expander buses, bridges numbered depth first, BARs and bridge windows placed in
//! the host's `ranges`), and name each function's StreamID from `iommu-map`.
//! The enumeration logic is `pci_alloc` (pure, host-tested); this file is its ECAM side.

use super::pci_alloc::{self, BarKind, Bdf, ConfigSpace, HostDesc, HostWindow};
use crate::dt::{PciHost, PciSpace};
use alloc::vec::Vec;
use pci_types::{CommandRegister, ConfigRegionAccess, PciAddress, PciHeader};

pub use super::pci_alloc::{PciError, Window};

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

fn pci_address(b: Bdf) -> PciAddress {
    PciAddress::new(0, b.bus, b.dev, b.func)
}

impl ConfigSpace for Ecam {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        // SAFETY: ECAM reads have no side effects on the functions enumeration touches;
        // out-of-window addresses read as all-ones without an access.
        unsafe { ConfigRegionAccess::read(self, pci_address(bdf), offset) }
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        // SAFETY: enumeration owns every function's configuration at boot; no driver
        // has bound yet.
        unsafe { ConfigRegionAccess::write(self, pci_address(bdf), offset, value) }
    }
}

/// Every function found at boot, bridges included (enumeration happens once: it
/// reprograms bus numbers and windows).
pub static FUNCTIONS: spin::Mutex<Vec<Function>> = spin::Mutex::new(Vec::new());
/// Enumeration problems, per host.
pub static ERRORS: spin::Mutex<Vec<PciError>> = spin::Mutex::new(Vec::new());

/// One memory BAR after assignment.
#[derive(Clone, Copy, Debug)]
pub struct BarInfo {
    pub slot: u8,
    /// CPU address.
    pub addr: u64,
    pub size: u64,
    pub is64: bool,
    pub prefetchable: bool,
    /// PCI bus address (what the BAR register holds).
    pub pci: u64,
}

/// A PCI-PCI bridge after configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeInfo {
    pub primary: u8,
    /// (secondary, subordinate); None when bus numbers ran out.
    pub buses: Option<(u8, u8)>,
    /// Non-prefetchable and prefetchable memory windows, in PCI bus addresses.
    pub mem: Option<Window>,
    pub pref: Option<Window>,
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
    /// (SMMU phandle, StreamID) from the host's `iommu-map` for `dma_alias`;
    /// None = not behind an SMMUv3.
    pub stream: Option<(u32, u32)>,
    pub host: usize,
    /// The Requester ID the function's DMA carries upstream (its own RID, except
    /// behind a conventional PCI bridge).
    pub dma_alias: u16,
    /// Requester ID of the bridge above; None on a root bus.
    pub parent: Option<u16>,
    /// The root bus it hangs from (the host's first bus or an expander's).
    pub root_bus: u8,
    /// PCI Express Device/Port Type, if it has a PCIe capability.
    pub pcie_type: Option<u8>,
    pub bridge: Option<BridgeInfo>,
    /// Memory decoding on (all its BARs got space).
    pub mem_enabled: bool,
}

impl Function {
    pub fn bdf(&self) -> Bdf {
        Bdf::from_rid(self.rid)
    }
}

/// The host's memory windows as enumeration sees them (I/O space stays unused).
pub fn host_windows(host: &PciHost) -> Vec<HostWindow> {
    host.ranges
        .iter()
        .filter(|r| r.space != PciSpace::Io && r.size > 0)
        .map(|r| HostWindow { pci_base: r.pci_addr, cpu_base: r.cpu_addr, size: r.size, prefetchable: r.prefetchable })
        .collect()
}

/// Enumerate everything below `host` (buses as its `bus-range` says), assign BARs and
/// bridge windows and enable them. Bus mastering of endpoints is left to drivers.
pub fn enumerate(host_index: usize, host: &PciHost) -> (Vec<Function>, Vec<PciError>) {
    let mut ecam = ecam_of(host);
    let windows = host_windows(host);
    let desc = HostDesc { bus_start: host.bus_range.0, bus_end: host.bus_range.1, windows: &windows };
    let e = pci_alloc::enumerate(&mut ecam, &desc);
    let funcs = e
        .nodes
        .iter()
        .map(|n| Function {
            addr: pci_address(n.bdf),
            vendor: n.vendor,
            device: n.device,
            class: n.class,
            subclass: n.subclass,
            rid: n.bdf.rid(),
            bars: n
                .bars
                .iter()
                .filter_map(|b| {
                    let pci = b.pci?;
                    let addr = desc.cpu_of(pci)?;
                    let (is64, prefetchable) = (b.kind == BarKind::Mem64, b.prefetchable);
                    Some(BarInfo { slot: b.slot, addr, size: b.size, is64, prefetchable, pci })
                })
                .collect(),
            stream: host.rid_to_sid(n.dma_alias),
            host: host_index,
            dma_alias: n.dma_alias,
            parent: n.parent.and_then(|p| e.nodes.get(p)).map(|p| p.bdf.rid()),
            root_bus: n.root_bus,
            pcie_type: n.pcie_type,
            bridge: n.bridge.map(|b| BridgeInfo { primary: n.bdf.bus, buses: b.buses, mem: b.mem, pref: b.pref }),
            mem_enabled: n.mem_enabled,
        })
        .collect();
    (funcs, e.errors)
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

/// What a bridge's registers hold now, read back from configuration space.
pub fn read_bridge(ecam: &Ecam, f: &Function) -> BridgeInfo {
    let mut c = *ecam;
    let b = f.bdf();
    let buses = c.read32(b, pci_alloc::PCI_PRIMARY_BUS);
    let (sec, sub) = ((buses >> 8) as u8, (buses >> 16) as u8);
    let mem = pci_alloc::decode_window(c.read32(b, pci_alloc::PCI_MEMORY_BASE), 0, 0);
    let pref_reg = c.read32(b, pci_alloc::PCI_PREF_MEMORY_BASE);
    let (bh, lh) = if pref_reg & 0xf == 1 {
        (c.read32(b, pci_alloc::PCI_PREF_BASE_UPPER32), c.read32(b, pci_alloc::PCI_PREF_LIMIT_UPPER32))
    } else {
        (0, 0)
    };
    BridgeInfo {
        primary: buses as u8,
        buses: (sec != 0).then_some((sec, sub)),
        mem,
        pref: pci_alloc::decode_window(pref_reg, bh, lh),
    }
}

/// The PCI address a memory BAR's register holds now.
pub fn read_bar(ecam: &Ecam, f: &Function, bar: &BarInfo) -> u64 {
    let mut c = *ecam;
    let off = pci_alloc::PCI_BASE_ADDRESS_0 + 4 * u16::from(bar.slot);
    let lo = u64::from(c.read32(f.bdf(), off) & !0xf);
    let hi = if bar.is64 { u64::from(c.read32(f.bdf(), off + 4)) } else { 0 };
    (hi << 32) | lo
}

/// Command register: (memory decoding, bus mastering).
pub fn read_command(ecam: &Ecam, f: &Function) -> (bool, bool) {
    let mut c = *ecam;
    let cmd = c.read32(f.bdf(), pci_alloc::PCI_COMMAND);
    (cmd & pci_alloc::PCI_COMMAND_MEMORY != 0, cmd & pci_alloc::PCI_COMMAND_MASTER != 0)
}
