//! PCI enumeration as firmware does it, written against any config-space accessor: root
//! buses, depth-first bus numbers for bridges, BAR and bridge-window sizing and placement.
//! No MMIO here: the kernel runs it on ECAM, the host tests on a model of QEMU's buses.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

// Configuration registers (PCI Local Bus 3.0, PCI-to-PCI Bridge 1.2; names as in Linux's pci_regs.h).
pub const PCI_VENDOR_ID: u16 = 0x00;
pub const PCI_COMMAND: u16 = 0x04;
pub const PCI_CLASS_REVISION: u16 = 0x08;
/// Dword holding the header type in its third byte.
pub const PCI_HEADER_TYPE_DWORD: u16 = 0x0c;
pub const PCI_BASE_ADDRESS_0: u16 = 0x10;
pub const PCI_PRIMARY_BUS: u16 = 0x18;
pub const PCI_IO_BASE: u16 = 0x1c;
pub const PCI_MEMORY_BASE: u16 = 0x20;
pub const PCI_PREF_MEMORY_BASE: u16 = 0x24;
pub const PCI_PREF_BASE_UPPER32: u16 = 0x28;
pub const PCI_PREF_LIMIT_UPPER32: u16 = 0x2c;
pub const PCI_IO_BASE_UPPER16: u16 = 0x30;
pub const PCI_CAPABILITY_LIST: u16 = 0x34;

pub const PCI_COMMAND_IO: u32 = 1 << 0;
pub const PCI_COMMAND_MEMORY: u32 = 1 << 1;
pub const PCI_COMMAND_MASTER: u32 = 1 << 2;
/// Status (upper half of the command dword) bit 4: a capability list exists.
const PCI_STATUS_CAP_LIST: u32 = 1 << (16 + 4);
const PCI_CAP_ID_EXP: u32 = 0x10;

pub const PCI_HEADER_TYPE_NORMAL: u8 = 0;
pub const PCI_HEADER_TYPE_BRIDGE: u8 = 1;
const PCI_HEADER_MULTI_FUNCTION: u8 = 0x80;

/// PCI Express capability, Device/Port Type field.
pub const PCI_EXP_TYPE_ROOT_PORT: u8 = 0x4;
pub const PCI_EXP_TYPE_UPSTREAM: u8 = 0x5;
pub const PCI_EXP_TYPE_DOWNSTREAM: u8 = 0x6;
/// PCI Express to PCI/PCI-X bridge.
pub const PCI_EXP_TYPE_PCI_BRIDGE: u8 = 0x7;

/// Class 06 (bridge), subclass 00 (host bridge): on QEMU a PCI expander bridge
/// (`pxb`, `pxb-pcie`) on the first root bus announces one more root bus.
const CLASS_BRIDGE: u8 = 0x06;
const SUBCLASS_HOST: u8 = 0x00;
pub const SUBCLASS_PCI_BRIDGE: u8 = 0x04;

/// Bridge memory windows are decoded in 1 MiB units.
pub const BRIDGE_WINDOW_GRANULE: u64 = 1 << 20;
/// Nesting bound for bridges (bus numbers bound it too; this keeps recursion short).
pub const MAX_DEPTH: u8 = 32;
const FOUR_GIB: u64 = 1 << 32;

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub const fn new(bus: u8, dev: u8, func: u8) -> Self {
        Bdf { bus, dev, func }
    }

    /// Requester ID: bus << 8 | dev << 3 | fn.
    pub const fn rid(self) -> u16 {
        ((self.bus as u16) << 8) | (((self.dev & 31) as u16) << 3) | (self.func & 7) as u16
    }

    pub const fn from_rid(rid: u16) -> Self {
        Bdf { bus: (rid >> 8) as u8, dev: ((rid >> 3) & 31) as u8, func: (rid & 7) as u8 }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// Dword access to configuration space. A read where nothing answers returns all-ones.
pub trait ConfigSpace {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32;
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);
}

/// One memory window of the host bridge (a DT `ranges` entry), PCI and CPU side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWindow {
    pub pci_base: u64,
    pub cpu_base: u64,
    pub size: u64,
    pub prefetchable: bool,
}

impl HostWindow {
    fn end(&self) -> u64 {
        self.pci_base.saturating_add(self.size)
    }
}

/// What enumeration needs to know about a host bridge.
#[derive(Clone, Copy, Debug)]
pub struct HostDesc<'a> {
    pub bus_start: u8,
    pub bus_end: u8,
    pub windows: &'a [HostWindow],
}

impl HostDesc<'_> {
    /// CPU address of PCI memory address `pci`, through the window that holds it.
    pub fn cpu_of(&self, pci: u64) -> Option<u64> {
        let w = self.windows.iter().find(|w| w.pci_base <= pci && pci < w.end())?;
        Some(pci - w.pci_base + w.cpu_base)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64,
}

/// One BAR: what it asks for and, once placed, where it decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub slot: u8,
    pub kind: BarKind,
    pub prefetchable: bool,
    pub size: u64,
    /// PCI bus address; None = not assigned (no room, or I/O space, which stays off).
    pub pci: Option<u64>,
}

/// A bridge memory window: PCI base and size (limit = base + size - 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub size: u64,
}

impl Window {
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
    pub fn contains(&self, base: u64, size: u64) -> bool {
        self.base <= base && base.saturating_add(size) <= self.end()
    }
}

/// Type-1 header state after enumeration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bridge {
    /// (secondary, subordinate); None when no bus number was left for it.
    pub buses: Option<(u8, u8)>,
    /// Non-prefetchable memory window (32-bit addresses only).
    pub mem: Option<Window>,
    /// Prefetchable memory window.
    pub pref: Option<Window>,
    /// The bridge implements a prefetchable window, and it decodes 64-bit addresses.
    pub has_pref: bool,
    pub pref64: bool,
}

/// One function found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    /// Header layout: 0 endpoint, 1 PCI-PCI bridge, 2 CardBus (ignored).
    pub header: u8,
    /// PCI Express Device/Port Type, None without a PCIe capability.
    pub pcie_type: Option<u8>,
    pub bars: Vec<Bar>,
    pub bridge: Option<Bridge>,
    /// Index (in `Enumeration::nodes`) of the bridge above; None on a root bus.
    pub parent: Option<usize>,
    pub root_bus: u8,
    /// The Requester ID its DMA carries upstream (differs behind conventional PCI bridges).
    pub dma_alias: u16,
    /// Memory decoding was turned on (every memory BAR got an address).
    pub mem_enabled: bool,
}

impl Node {
    pub fn is_bridge(&self) -> bool {
        self.header == PCI_HEADER_TYPE_BRIDGE
    }
}

#[derive(Clone, Debug, Default)]
pub struct Enumeration {
    /// Depth first: a bridge comes before everything behind it.
    pub nodes: Vec<Node>,
    /// Root buses, ascending: the host's first bus and any expander buses.
    pub roots: Vec<u8>,
    pub errors: Vec<PciError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciError {
    /// The host's windows have no room for a BAR of this size.
    NoBarSpace { rid: u16, slot: u8, size: u64 },
    /// No room for a bridge window holding everything behind the bridge.
    NoWindowSpace { rid: u16, prefetchable: bool, size: u64 },
    /// Every bus number up to `limit` is taken: nothing behind this bridge is seen.
    BusNumbersExhausted { rid: u16, limit: u8 },
    /// Bridges nested deeper than MAX_DEPTH.
    TooDeep { rid: u16 },
    /// The BAR did not keep the address written to it.
    BarWrite { rid: u16, slot: u8 },
    /// Host-bridge functions announced more root buses than answered.
    MissingRoots { announced: u8, found: u8 },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = |rid: &u16| Bdf::from_rid(*rid);
        match self {
            PciError::NoBarSpace { rid, slot, size } => {
                write!(f, "{} BAR{slot}: no window has {size:#x} bytes free", b(rid))
            }
            PciError::NoWindowSpace { rid, prefetchable, size } => write!(
                f,
                "bridge {}: no room for its {size:#x}-byte {} window",
                b(rid),
                if *prefetchable { "prefetchable" } else { "memory" }
            ),
            PciError::BusNumbersExhausted { rid, limit } => {
                write!(f, "bridge {}: no bus number left (limit {limit:#04x}); nothing behind it is seen", b(rid))
            }
            PciError::TooDeep { rid } => write!(f, "bridge {}: nested deeper than {MAX_DEPTH} bridges", b(rid)),
            PciError::BarWrite { rid, slot } => write!(f, "{} BAR{slot}: address written did not stick", b(rid)),
            PciError::MissingRoots { announced, found } => {
                write!(f, "{announced} expander root bus(es) announced, {found} answered")
            }
        }
    }
}

/// Size of a memory BAR from what it reads back after all-ones were written (low dword,
/// and the high dword of a 64-bit BAR). 0 = BAR not implemented.
pub fn bar_size(lo: u32, hi: Option<u32>) -> u64 {
    if lo == u32::MAX {
        return 0; // nothing answered: type bits never read back as all-ones
    }
    let mask = match hi {
        // The upper half of a 32-bit BAR's mask is all-ones: size = 2^32 - low mask.
        None if lo & !0xf == 0 => return 0,
        None => 0xffff_ffff_0000_0000 | u64::from(lo & !0xf),
        Some(h) => (u64::from(h) << 32) | u64::from(lo & !0xf),
    };
    if mask == 0 { 0 } else { (!mask).wrapping_add(1) }
}

/// Items packed into one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// Offset of each item, in input order.
    pub offsets: Vec<u64>,
    /// Window size: the end of the last item rounded up to the granule.
    pub size: u64,
    /// Window alignment: the largest item alignment, at least the granule.
    pub align: u64,
}

/// Lay out (size, align) items in one window, largest alignment first so that little
/// space is lost; alignments are powers of two. None on arithmetic overflow.
pub fn pack(items: &[(u64, u64)], granule: u64) -> Option<Packed> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (core::cmp::Reverse(items[i].1), core::cmp::Reverse(items[i].0), i));
    let mut offsets = vec![0u64; items.len()];
    let mut at = 0u64;
    let mut align = granule.max(1);
    for i in order {
        let (size, a) = items[i];
        let a = a.max(1);
        if !a.is_power_of_two() {
            return None;
        }
        align = align.max(a);
        let start = at.checked_add(a - 1)? & !(a - 1);
        offsets[i] = start;
        at = start.checked_add(size)?;
    }
    let g = granule.max(1);
    let size = at.checked_add(g - 1)? / g * g;
    Some(Packed { offsets, size, align })
}

/// Bump allocation over the host's windows. 32-bit windows are tried first (every BAR
/// decodes them, as U-Boot does); 64-bit-capable items then go above 4 GiB.
pub struct HostAlloc<'a> {
    windows: &'a [HostWindow],
    next: Vec<u64>,
}

impl<'a> HostAlloc<'a> {
    pub fn new(windows: &'a [HostWindow]) -> Self {
        HostAlloc { windows, next: windows.iter().map(|w| w.pci_base).collect() }
    }

    /// PCI address for `size` bytes aligned to `align`. `pref`: the item tolerates a
    /// prefetchable window; `may64`: it decodes addresses above 4 GiB.
    pub fn take(&mut self, size: u64, align: u64, pref: bool, may64: bool) -> Option<u64> {
        let a = align.max(1);
        if !a.is_power_of_two() || size == 0 {
            return None;
        }
        for high in [false, true] {
            for (i, w) in self.windows.iter().enumerate() {
                let is_high = w.end() > FOUR_GIB;
                if is_high != high || (is_high && !may64) || (w.prefetchable && !pref) {
                    continue;
                }
                let Some(start) = self.next[i].checked_add(a - 1).map(|s| s & !(a - 1)) else { continue };
                let Some(end) = start.checked_add(size) else { continue };
                if end > w.end() || (!may64 && end > FOUR_GIB) {
                    continue;
                }
                self.next[i] = end;
                return Some(start);
            }
        }
        None
    }
}

/// Bridge memory base/limit register (also the low dword of the prefetchable pair):
/// bits 31:20 of base and limit; a disabled window has base > limit.
pub fn window_reg(w: Option<Window>) -> u32 {
    match w {
        Some(w) if w.size > 0 => {
            let limit = w.base + w.size - 1;
            (((w.base >> 16) as u32) & 0xfff0) | ((((limit >> 16) as u32) & 0xfff0) << 16)
        }
        _ => 0x0000_fff0,
    }
}

/// Decode a bridge window from its base/limit dword and upper-32 base/limit dwords.
pub fn decode_window(reg: u32, base_hi: u32, limit_hi: u32) -> Option<Window> {
    let base = (u64::from(base_hi) << 32) | (u64::from(reg & 0xfff0) << 16);
    let limit = (u64::from(limit_hi) << 32) | (u64::from((reg >> 16) & 0xfff0) << 16) | 0xf_ffff;
    (base <= limit).then(|| Window { base, size: limit - base + 1 })
}

/// Bus number dword of a bridge: primary, secondary, subordinate, and the secondary
/// latency timer kept from `old`.
pub fn bus_reg(old: u32, primary: u8, secondary: u8, subordinate: u8) -> u32 {
    (old & 0xff00_0000) | (u32::from(subordinate) << 16) | (u32::from(secondary) << 8) | u32::from(primary)
}

/// The Requester ID the IOMMU sees for `node`: walking up, a conventional PCI bridge
/// takes over its devices' requests with its own ID, a PCIe-to-PCI bridge with
/// (secondary bus, 00.0); PCIe ports pass IDs through (Linux pci_for_each_dma_alias,
/// QEMU pci_device_get_iommu_bus_devfn).
pub fn dma_alias(nodes: &[Node], idx: usize) -> u16 {
    let Some(n) = nodes.get(idx) else { return 0 };
    let mut rid = n.bdf.rid();
    let mut up = n.parent;
    let mut hops = 0;
    while let Some(p) = up.and_then(|p| nodes.get(p)) {
        hops += 1;
        if hops > usize::from(MAX_DEPTH) + 1 {
            break;
        }
        match p.pcie_type {
            Some(PCI_EXP_TYPE_ROOT_PORT | PCI_EXP_TYPE_UPSTREAM | PCI_EXP_TYPE_DOWNSTREAM) => {}
            Some(PCI_EXP_TYPE_PCI_BRIDGE) => {
                if let Some((sec, _)) = p.bridge.and_then(|b| b.buses) {
                    rid = u16::from(sec) << 8;
                }
            }
            _ => rid = p.bdf.rid(),
        }
        up = p.parent;
    }
    rid
}

/// Something that needs memory space on a bus: a BAR, or a bridge window.
#[derive(Clone, Copy, Debug)]
enum Res {
    Bar(usize, usize),
    Mem(usize),
    Pref(usize),
}

#[derive(Clone, Copy, Debug)]
struct Item {
    res: Res,
    size: u64,
    align: u64,
    pref: bool,
    may64: bool,
}

/// A bridge window's contents before placement.
#[derive(Clone, Debug, Default)]
struct Plan {
    members: Vec<(Res, u64)>,
    size: u64,
    align: u64,
    may64: bool,
}

struct Enumerator<'c, C: ConfigSpace> {
    cfg: &'c mut C,
    nodes: Vec<Node>,
    errors: Vec<PciError>,
}

/// Enumerate a host bridge: find its root buses, number every bridge depth first, size
/// and place every BAR and bridge window, program them, and turn decoding on (memory
/// and bus mastering for bridges, memory for functions whose BARs all got space).
pub fn enumerate<C: ConfigSpace>(cfg: &mut C, host: &HostDesc) -> Enumeration {
    let mut e = Enumerator { cfg, nodes: Vec::new(), errors: Vec::new() };
    let roots = e.find_roots(host);
    for (i, &root) in roots.iter().enumerate() {
        let limit = roots.get(i + 1).map(|n| n.saturating_sub(1)).unwrap_or(host.bus_end);
        let mut next = u16::from(root) + 1;
        e.scan_bus(root, root, &mut next, limit, None, 0);
    }
    for i in 0..e.nodes.len() {
        e.nodes[i].dma_alias = dma_alias(&e.nodes, i);
    }
    e.place(host);
    e.program();
    Enumeration { nodes: e.nodes, roots, errors: e.errors }
}

impl<C: ConfigSpace> Enumerator<'_, C> {
    /// Vendor/device dword of a present function.
    fn present(&mut self, bdf: Bdf) -> Option<u32> {
        let id = self.cfg.read32(bdf, PCI_VENDOR_ID);
        let vendor = id & 0xffff;
        (id != u32::MAX && vendor != 0xffff && vendor != 0).then_some(id)
    }

    fn header_byte(&mut self, bdf: Bdf) -> u8 {
        (self.cfg.read32(bdf, PCI_HEADER_TYPE_DWORD) >> 16) as u8
    }

    /// Functions present on `bus` (function 0 first; 1..7 only on multi-function devices).
    fn functions(&mut self, bus: u8) -> Vec<(Bdf, u32)> {
        let mut out = Vec::new();
        for dev in 0..32u8 {
            let f0 = Bdf::new(bus, dev, 0);
            let Some(id) = self.present(f0) else { continue };
            out.push((f0, id));
            if self.header_byte(f0) & PCI_HEADER_MULTI_FUNCTION != 0 {
                for func in 1..8u8 {
                    let bdf = Bdf::new(bus, dev, func);
                    if let Some(id) = self.present(bdf) {
                        out.push((bdf, id));
                    }
                }
            }
        }
        out
    }

    /// Forget bus numbers left by earlier firmware on `bus`'s bridges, so that stale
    /// secondary buses neither answer as roots nor steal numbers. Returns how many
    /// host-bridge functions other than 00.0 sit on the bus (announced expander roots).
    fn quiesce(&mut self, bus: u8) -> u8 {
        let mut hosts = 0u8;
        for (bdf, _) in self.functions(bus) {
            let header = self.header_byte(bdf) & 0x7f;
            if header == PCI_HEADER_TYPE_BRIDGE {
                let old = self.cfg.read32(bdf, PCI_PRIMARY_BUS);
                self.cfg.write32(bdf, PCI_PRIMARY_BUS, bus_reg(old, 0, 0, 0));
            }
            let class = self.cfg.read32(bdf, PCI_CLASS_REVISION);
            let is_host = (class >> 24) as u8 == CLASS_BRIDGE && (class >> 16) as u8 == SUBCLASS_HOST;
            if is_host && (bdf.dev, bdf.func) != (0, 0) {
                hosts = hosts.saturating_add(1);
            }
        }
        hosts
    }

    /// The host's first bus, plus one root bus for each expander announced on it: the
    /// lowest bus numbers above that answer (what EDK2 does with QEMU's extra roots).
    fn find_roots(&mut self, host: &HostDesc) -> Vec<u8> {
        let first = host.bus_start;
        let mut roots = vec![first];
        let announced = self.quiesce(first);
        let mut found = 0u8;
        let mut bus = u16::from(first) + 1;
        while found < announced && bus <= u16::from(host.bus_end) {
            let b = bus as u8;
            if (0..32).any(|dev| self.present(Bdf::new(b, dev, 0)).is_some()) {
                roots.push(b);
                self.quiesce(b);
                found += 1;
            }
            bus += 1;
        }
        if found < announced {
            self.errors.push(PciError::MissingRoots { announced, found });
        }
        roots
    }

    /// Record every function on `bus`, then give each bridge the next bus number and
    /// scan behind it; its subordinate number is the last one used below it.
    fn scan_bus(&mut self, root: u8, bus: u8, next: &mut u16, limit: u8, parent: Option<usize>, depth: u8) {
        let mut bridges = Vec::new();
        for (bdf, id) in self.functions(bus) {
            let idx = self.probe(bdf, id, root, parent);
            if self.nodes[idx].is_bridge() {
                let old = self.cfg.read32(bdf, PCI_PRIMARY_BUS);
                self.cfg.write32(bdf, PCI_PRIMARY_BUS, bus_reg(old, 0, 0, 0));
                bridges.push(idx);
            }
        }
        for idx in bridges {
            let bdf = self.nodes[idx].bdf;
            if depth >= MAX_DEPTH {
                self.errors.push(PciError::TooDeep { rid: bdf.rid() });
                continue;
            }
            if *next > u16::from(limit) {
                self.errors.push(PciError::BusNumbersExhausted { rid: bdf.rid(), limit });
                continue;
            }
            let sec = *next as u8;
            *next += 1;
            let old = self.cfg.read32(bdf, PCI_PRIMARY_BUS);
            // Subordinate = limit while scanning, so every bus below routes through.
            self.cfg.write32(bdf, PCI_PRIMARY_BUS, bus_reg(old, bus, sec, limit));
            self.scan_bus(root, sec, next, limit, Some(idx), depth + 1);
            let sub = (*next - 1) as u8;
            self.cfg.write32(bdf, PCI_PRIMARY_BUS, bus_reg(old, bus, sec, sub));
            if let Some(b) = self.nodes[idx].bridge.as_mut() {
                b.buses = Some((sec, sub));
            }
        }
    }

    /// Identify one function with decoding off, size its BARs (and a bridge's
    /// prefetchable window), and append it.
    fn probe(&mut self, bdf: Bdf, id: u32, root: u8, parent: Option<usize>) -> usize {
        let cmd = self.cfg.read32(bdf, PCI_COMMAND);
        let off = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        self.cfg.write32(bdf, PCI_COMMAND, cmd & 0xffff & !off);
        let class = self.cfg.read32(bdf, PCI_CLASS_REVISION);
        let header = self.header_byte(bdf) & 0x7f;
        let nbars = match header {
            PCI_HEADER_TYPE_NORMAL => 6,
            PCI_HEADER_TYPE_BRIDGE => 2,
            _ => 0,
        };
        let bars = self.size_bars(bdf, nbars);
        let pcie_type = if cmd & PCI_STATUS_CAP_LIST != 0 { self.pcie_type(bdf) } else { None };
        let bridge = (header == PCI_HEADER_TYPE_BRIDGE).then(|| {
            let old = self.cfg.read32(bdf, PCI_PREF_MEMORY_BASE);
            self.cfg.write32(bdf, PCI_PREF_MEMORY_BASE, 0xfff0_fff0);
            let probe = self.cfg.read32(bdf, PCI_PREF_MEMORY_BASE);
            self.cfg.write32(bdf, PCI_PREF_MEMORY_BASE, old);
            Bridge { has_pref: probe != 0, pref64: probe & 0xf == 1, ..Bridge::default() }
        });
        self.nodes.push(Node {
            bdf,
            vendor: id as u16,
            device: (id >> 16) as u16,
            class: (class >> 24) as u8,
            subclass: (class >> 16) as u8,
            prog_if: (class >> 8) as u8,
            header,
            pcie_type,
            bars,
            bridge,
            parent,
            root_bus: root,
            dma_alias: bdf.rid(),
            mem_enabled: false,
        });
        self.nodes.len() - 1
    }

    fn size_bars(&mut self, bdf: Bdf, nbars: u8) -> Vec<Bar> {
        let mut bars = Vec::new();
        let mut slot = 0u8;
        while slot < nbars {
            let off = PCI_BASE_ADDRESS_0 + 4 * u16::from(slot);
            let orig = self.cfg.read32(bdf, off);
            self.cfg.write32(bdf, off, u32::MAX);
            let lo = self.cfg.read32(bdf, off);
            self.cfg.write32(bdf, off, orig);
            if orig & 1 == 1 {
                let size = u64::from((!(lo & !0x3)).wrapping_add(1) & 0xffff);
                if lo != u32::MAX && lo & !0x3 != 0 {
                    bars.push(Bar { slot, kind: BarKind::Io, prefetchable: false, size, pci: None });
                }
                slot += 1;
                continue;
            }
            let is64 = (orig >> 1) & 3 == 2 && slot + 1 < nbars;
            let hi = is64.then(|| {
                let orig_hi = self.cfg.read32(bdf, off + 4);
                self.cfg.write32(bdf, off + 4, u32::MAX);
                let hi = self.cfg.read32(bdf, off + 4);
                self.cfg.write32(bdf, off + 4, orig_hi);
                hi
            });
            let size = bar_size(lo, hi);
            if size > 0 {
                let kind = if is64 { BarKind::Mem64 } else { BarKind::Mem32 };
                bars.push(Bar { slot, kind, prefetchable: orig & 8 != 0, size, pci: None });
            }
            slot += if is64 { 2 } else { 1 };
        }
        bars
    }

    /// Device/Port Type from the PCI Express capability, following the list at most 48 hops.
    fn pcie_type(&mut self, bdf: Bdf) -> Option<u8> {
        let mut ptr = (self.cfg.read32(bdf, PCI_CAPABILITY_LIST) & 0xfc) as u16;
        for _ in 0..48 {
            if ptr < 0x40 {
                return None;
            }
            let cap = self.cfg.read32(bdf, ptr);
            if cap == u32::MAX {
                return None;
            }
            if cap & 0xff == PCI_CAP_ID_EXP {
                return Some(((cap >> 20) & 0xf) as u8);
            }
            ptr = ((cap >> 8) & 0xfc) as u16;
        }
        None
    }

    /// Memory items of a function that sits on some bus: its BARs and, for a bridge, its
    /// two windows (sized already, since children come after parents in `nodes`).
    fn items_of(&self, idx: usize, plans: &[(Option<Plan>, Option<Plan>)]) -> Vec<Item> {
        let n = &self.nodes[idx];
        let mut out = Vec::new();
        for (bi, b) in n.bars.iter().enumerate() {
            if b.kind == BarKind::Io {
                continue;
            }
            let is64 = b.kind == BarKind::Mem64;
            out.push(Item {
                res: Res::Bar(idx, bi),
                size: b.size,
                align: b.size,
                pref: is64 && b.prefetchable,
                may64: is64,
            });
        }
        if let (Some(mem), _) = &plans[idx] {
            out.push(Item { res: Res::Mem(idx), size: mem.size, align: mem.align, pref: false, may64: false });
        }
        if let (_, Some(pref)) = &plans[idx] {
            out.push(Item { res: Res::Pref(idx), size: pref.size, align: pref.align, pref: true, may64: pref.may64 });
        }
        out
    }

    /// Size every bridge window bottom-up, then place root-bus items in the host's
    /// windows and everything behind a bridge inside that bridge's window.
    fn place(&mut self, host: &HostDesc) {
        let count = self.nodes.len();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); count];
        let mut top = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            match n.parent {
                Some(p) if p < count => children[p].push(i),
                _ => top.push(i),
            }
        }
        let mut plans: Vec<(Option<Plan>, Option<Plan>)> = vec![(None, None); count];
        for b in (0..count).rev() {
            let Some(br) = self.nodes[b].bridge else { continue };
            if br.buses.is_none() {
                continue;
            }
            let items: Vec<Item> = children[b].iter().flat_map(|&c| self.items_of(c, &plans)).collect();
            // Prefetchable items share the prefetchable window when the bridge has one;
            // otherwise they live in the (32-bit) memory window like everything else.
            let (pref, mem): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|it| it.pref && br.has_pref);
            let rid = self.nodes[b].bdf.rid();
            let mk = |list: &[Item], is_pref: bool, errors: &mut Vec<PciError>| -> Option<Plan> {
                if list.is_empty() {
                    return None;
                }
                let sizes: Vec<(u64, u64)> = list.iter().map(|it| (it.size, it.align)).collect();
                let Some(p) = pack(&sizes, BRIDGE_WINDOW_GRANULE) else {
                    let size = sizes.iter().fold(0u64, |a, s| a.saturating_add(s.0));
                    errors.push(PciError::NoWindowSpace { rid, prefetchable: is_pref, size });
                    return None;
                };
                Some(Plan {
                    members: list.iter().zip(p.offsets).map(|(it, o)| (it.res, o)).collect(),
                    size: p.size,
                    align: p.align,
                    may64: is_pref && br.pref64 && list.iter().all(|it| it.may64),
                })
            };
            let mem_plan = mk(&mem, false, &mut self.errors);
            let pref_plan = mk(&pref, true, &mut self.errors);
            plans[b] = (mem_plan, pref_plan);
        }
        let mut items: Vec<Item> = top.iter().flat_map(|&i| self.items_of(i, &plans)).collect();
        items.sort_by_key(|it| (core::cmp::Reverse(it.align), core::cmp::Reverse(it.size)));
        let mut alloc = HostAlloc::new(host.windows);
        for it in items {
            match alloc.take(it.size, it.align, it.pref, it.may64) {
                Some(addr) => self.assign(it.res, addr, &plans, 0),
                None => self.no_space(it),
            }
        }
    }

    fn no_space(&mut self, it: Item) {
        let e = match it.res {
            Res::Bar(n, b) => {
                let slot = self.nodes[n].bars.get(b).map(|x| x.slot).unwrap_or(0);
                PciError::NoBarSpace { rid: self.nodes[n].bdf.rid(), slot, size: it.size }
            }
            Res::Mem(n) => PciError::NoWindowSpace { rid: self.nodes[n].bdf.rid(), prefetchable: false, size: it.size },
            Res::Pref(n) => PciError::NoWindowSpace { rid: self.nodes[n].bdf.rid(), prefetchable: true, size: it.size },
        };
        self.errors.push(e);
    }

    fn assign(&mut self, res: Res, addr: u64, plans: &[(Option<Plan>, Option<Plan>)], depth: u8) {
        if depth > MAX_DEPTH + 1 {
            return;
        }
        let (bridge, plan) = match res {
            Res::Bar(n, b) => {
                if let Some(bar) = self.nodes.get_mut(n).and_then(|x| x.bars.get_mut(b)) {
                    bar.pci = Some(addr);
                }
                return;
            }
            Res::Mem(n) => (n, plans[n].0.as_ref()),
            Res::Pref(n) => (n, plans[n].1.as_ref()),
        };
        let Some(plan) = plan else { return };
        let w = Window { base: addr, size: plan.size };
        if let Some(b) = self.nodes[bridge].bridge.as_mut() {
            match res {
                Res::Mem(_) => b.mem = Some(w),
                _ => b.pref = Some(w),
            }
        }
        for &(r, off) in &plan.members {
            self.assign(r, addr + off, plans, depth + 1);
        }
    }

    /// Write every BAR and bridge window, then turn decoding on.
    fn program(&mut self) {
        for i in 0..self.nodes.len() {
            let bdf = self.nodes[i].bdf;
            let mut all_placed = true;
            for b in self.nodes[i].bars.clone() {
                if b.kind == BarKind::Io {
                    continue;
                }
                let Some(addr) = b.pci else {
                    all_placed = false;
                    continue;
                };
                let off = PCI_BASE_ADDRESS_0 + 4 * u16::from(b.slot);
                let low_bits = self.cfg.read32(bdf, off) & 0xf;
                self.cfg.write32(bdf, off, (addr as u32 & !0xf) | low_bits);
                let mut got = u64::from(self.cfg.read32(bdf, off) & !0xf);
                if b.kind == BarKind::Mem64 {
                    self.cfg.write32(bdf, off + 4, (addr >> 32) as u32);
                    got |= u64::from(self.cfg.read32(bdf, off + 4)) << 32;
                }
                if got != addr {
                    all_placed = false;
                    self.errors.push(PciError::BarWrite { rid: bdf.rid(), slot: b.slot });
                }
            }
            let mut cmd = self.cfg.read32(bdf, PCI_COMMAND) & 0xffff & !PCI_COMMAND_IO;
            if let Some(br) = self.nodes[i].bridge {
                // I/O forwarding off (base > limit), memory windows as placed.
                self.cfg.write32(bdf, PCI_IO_BASE, 0x0000_00f0);
                self.cfg.write32(bdf, PCI_IO_BASE_UPPER16, 0);
                self.cfg.write32(bdf, PCI_MEMORY_BASE, window_reg(br.mem));
                self.cfg.write32(bdf, PCI_PREF_MEMORY_BASE, window_reg(br.pref));
                let (bh, lh) = match br.pref {
                    Some(w) if br.pref64 => ((w.base >> 32) as u32, ((w.end() - 1) >> 32) as u32),
                    _ => (0, 0),
                };
                if br.pref64 {
                    self.cfg.write32(bdf, PCI_PREF_BASE_UPPER32, bh);
                    self.cfg.write32(bdf, PCI_PREF_LIMIT_UPPER32, lh);
                }
                cmd |= PCI_COMMAND_MASTER;
            }
            if all_placed {
                cmd |= PCI_COMMAND_MEMORY;
            }
            self.cfg.write32(bdf, PCI_COMMAND, cmd);
            self.nodes[i].mem_enabled = all_placed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    // ---- pure helpers ----

    #[test]
    fn bar_sizes() {
        assert_eq!(bar_size(0xfff0_0000, None), 1 << 20);
        assert_eq!(bar_size(0xffff_f000, None), 4096);
        assert_eq!(bar_size(0x0000_0000, None), 0);
        assert_eq!(bar_size(u32::MAX, None), 0);
        // 64-bit prefetchable 8 GiB: low dword keeps only the type bits.
        assert_eq!(bar_size(0x0000_000c, Some(0xffff_fffe)), 8 << 30);
        assert_eq!(bar_size(0xffff_c00c, Some(u32::MAX)), 16 << 10);
        assert_eq!(bar_size(0x0000_0004, Some(0)), 0);
    }

    #[test]
    fn pack_largest_alignment_first() {
        let p = pack(&[(0x1000, 0x1000), (1 << 20, 1 << 20), (0x100, 0x100)], BRIDGE_WINDOW_GRANULE).unwrap();
        assert_eq!(p.offsets, vec![1 << 20, 0, (1 << 20) + 0x1000]);
        assert_eq!(p.size, 2 << 20);
        assert_eq!(p.align, 1 << 20);
        // A 16 MiB window's alignment dominates.
        let p = pack(&[(1 << 20, 1 << 20), (17 << 20, 16 << 20)], BRIDGE_WINDOW_GRANULE).unwrap();
        assert_eq!(p.align, 16 << 20);
        assert_eq!(p.offsets[1], 0);
        assert_eq!(p.offsets[0], 17 << 20);
        assert_eq!(p.size, 18 << 20);
        assert_eq!(pack(&[], BRIDGE_WINDOW_GRANULE).unwrap().size, 0);
        assert!(pack(&[(u64::MAX, 1 << 20), (1 << 20, 1 << 20)], 1 << 20).is_none());
        assert!(pack(&[(3, 3)], 1).is_none(), "alignment not a power of two");
    }

    #[test]
    fn window_registers_round_trip() {
        let w = Window { base: 0x1020_0000, size: 0x30_0000 };
        let reg = window_reg(Some(w));
        assert_eq!(reg, 0x1040_1020);
        assert_eq!(decode_window(reg, 0, 0), Some(w));
        assert_eq!(window_reg(None), 0x0000_fff0);
        assert_eq!(decode_window(0x0000_fff0, 0, 0), None);
        let hi = Window { base: 0x80_0000_0000, size: 1 << 30 };
        let (bh, lh) = ((hi.base >> 32) as u32, ((hi.end() - 1) >> 32) as u32);
        assert_eq!(decode_window(window_reg(Some(hi)), bh, lh), Some(hi));
        assert_eq!(bus_reg(0x4000_0000, 1, 2, 3), 0x4003_0201);
    }

    #[test]
    fn host_alloc_prefers_32bit_then_64bit() {
        let w = [
            HostWindow { pci_base: 0x1000_0000, cpu_base: 0x1000_0000, size: 0x100_0000, prefetchable: false },
            HostWindow { pci_base: 0x80_0000_0000, cpu_base: 0x80_0000_0000, size: 1 << 36, prefetchable: false },
        ];
        let mut a = HostAlloc::new(&w);
        assert_eq!(a.take(0x1000, 0x1000, false, true), Some(0x1000_0000));
        assert_eq!(a.take(1 << 20, 1 << 20, false, false), Some(0x1010_0000));
        // Too big for the 32-bit window: a 64-bit BAR goes high, a 32-bit one fails.
        assert_eq!(a.take(1 << 30, 1 << 30, true, true), Some(0x80_0000_0000));
        assert_eq!(a.take(1 << 30, 1 << 30, false, false), None);
        assert_eq!(a.take(0, 1, false, false), None);
        let hd = HostDesc { bus_start: 0, bus_end: 255, windows: &w };
        assert_eq!(hd.cpu_of(0x80_0000_1000), Some(0x80_0000_1000));
        assert_eq!(hd.cpu_of(0x2000_0000), None);
        // A prefetchable host window takes only items that tolerate prefetching.
        let pw = [HostWindow { pci_base: 0x1000_0000, cpu_base: 0x4000_0000, size: 0x100_0000, prefetchable: true }];
        let mut a = HostAlloc::new(&pw);
        assert_eq!(a.take(0x1000, 0x1000, false, false), None);
        assert_eq!(a.take(0x1000, 0x1000, true, false), Some(0x1000_0000));
        let hd = HostDesc { bus_start: 0, bus_end: 255, windows: &pw };
        assert_eq!(hd.cpu_of(0x1000_0010), Some(0x4000_0010));
    }

    // ---- a model of QEMU's PCI buses: bus numbers route through bridges' ranges ----

    #[derive(Clone)]
    struct Dev {
        dev: u8,
        func: u8,
        cfg: [u32; 64],
        wmask: [u32; 64],
        /// Index of the secondary bus, for bridges.
        child: Option<usize>,
    }

    #[derive(Default)]
    struct Model {
        /// Devices per bus; bus 0 of `roots` are root buses with fixed numbers.
        buses: Vec<Vec<Dev>>,
        roots: Vec<(u8, usize)>,
        reads: usize,
    }

    const REDHAT: u32 = 0x1b36;

    impl Model {
        fn bus(&mut self) -> usize {
            self.buses.push(Vec::new());
            self.buses.len() - 1
        }
        fn root(&mut self, number: u8) -> usize {
            let b = self.bus();
            self.roots.push((number, b));
            b
        }
        fn base(id: u32, class: u32, header: u32) -> Dev {
            let mut cfg = [0u32; 64];
            let mut wmask = [0u32; 64];
            cfg[0] = id;
            cfg[2] = class << 8;
            cfg[3] = header << 16;
            wmask[1] = 0x7; // command: IO, MEM, MASTER
            Dev { dev: 0, func: 0, cfg, wmask, child: None }
        }
        fn add(&mut self, bus: usize, dev: u8, func: u8, mut d: Dev) -> usize {
            d.dev = dev;
            d.func = func;
            if func > 0 {
                for x in self.buses[bus].iter_mut().filter(|x| x.dev == dev && x.func == 0) {
                    x.cfg[3] |= 0x80 << 16;
                }
            }
            self.buses[bus].push(d);
            self.buses[bus].len() - 1
        }
        /// An endpoint with memory BARs (slot, size, 64-bit, prefetchable).
        fn endpoint(&mut self, bus: usize, dev: u8, func: u8, id: u32, bars: &[(usize, u64, bool, bool)]) {
            let mut d = Self::base(id, 0x00ff00, 0);
            for &(slot, size, is64, pref) in bars {
                let mask = !(size - 1);
                let r = 4 + slot;
                d.cfg[r] = if is64 { 0x4 } else { 0 } | if pref { 0x8 } else { 0 };
                d.wmask[r] = (mask as u32) & !0xf;
                if is64 {
                    d.wmask[r + 1] = (mask >> 32) as u32;
                }
            }
            self.add(bus, dev, func, d);
        }
        fn host_bridge(&mut self, bus: usize, dev: u8, device_id: u32) {
            self.add(bus, dev, 0, Self::base(REDHAT | device_id << 16, 0x060000, 0));
        }
        /// A bridge; `pcie`: Some(port type) adds a PCIe capability. Returns its secondary bus.
        fn bridge(&mut self, bus: usize, dev: u8, pcie: Option<u8>, shpc_bar: bool) -> usize {
            let mut d = Self::base(REDHAT | 0x000c << 16, 0x060400, 1);
            d.wmask[6] = 0x00ff_ffff; // bus numbers
            d.wmask[7] = 0x0000_f0f0; // I/O base/limit
            d.wmask[8] = 0xfff0_fff0; // memory
            d.cfg[9] = 0x0001_0001; // 64-bit prefetchable window
            d.wmask[9] = 0xfff0_fff0;
            d.wmask[10] = u32::MAX;
            d.wmask[11] = u32::MAX;
            d.wmask[12] = u32::MAX;
            if let Some(t) = pcie {
                d.cfg[1] |= 1 << 20;
                d.cfg[13] = 0x40;
                d.cfg[16] = 0x10 | (u32::from(t) << 20);
            }
            if shpc_bar {
                d.cfg[4] = 0x4;
                d.wmask[4] = !0xff;
                d.wmask[5] = u32::MAX;
            }
            let child = self.bus();
            d.child = Some(child);
            self.add(bus, dev, 0, d);
            child
        }
        fn sec_sub(d: &Dev) -> (u8, u8) {
            ((d.cfg[6] >> 8) as u8, (d.cfg[6] >> 16) as u8)
        }
        /// QEMU pci_find_bus_nr: a root by its number, else down through bridges whose
        /// [secondary, subordinate] holds the number.
        fn route(&self, number: u8) -> Option<usize> {
            for &(n, b) in &self.roots {
                if n == number {
                    return Some(b);
                }
            }
            for &(_, b) in &self.roots {
                if let Some(x) = self.route_below(b, number, 0) {
                    return Some(x);
                }
            }
            None
        }
        fn route_below(&self, bus: usize, number: u8, depth: usize) -> Option<usize> {
            if depth > 40 {
                return None;
            }
            for d in &self.buses[bus] {
                let Some(c) = d.child else { continue };
                let (sec, sub) = Self::sec_sub(d);
                if sec == 0 {
                    continue;
                }
                if sec == number {
                    return Some(c);
                }
                if sec < number && number <= sub {
                    return self.route_below(c, number, depth + 1);
                }
            }
            None
        }
        fn find(&mut self, bdf: Bdf) -> Option<&mut Dev> {
            let b = self.route(bdf.bus)?;
            self.buses[b].iter_mut().find(|d| d.dev == bdf.dev && d.func == bdf.func)
        }
        fn dev_by_rid(&mut self, rid: u16) -> Option<Dev> {
            self.find(Bdf::from_rid(rid)).cloned()
        }
    }

    impl ConfigSpace for Model {
        fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
            self.reads += 1;
            let r = usize::from(offset / 4);
            self.find(bdf).map(|d| d.cfg.get(r).copied().unwrap_or(0)).unwrap_or(u32::MAX)
        }
        fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
            let r = usize::from(offset / 4);
            if let Some(d) = self.find(bdf)
                && r < 64
            {
                d.cfg[r] = (d.cfg[r] & !d.wmask[r]) | (value & d.wmask[r]);
            }
        }
    }

    const EDU: u32 = 0x1234 | 0x11e8 << 16;
    const MIB: u64 = 1 << 20;

    fn virt_windows() -> [HostWindow; 2] {
        [
            HostWindow { pci_base: 0x1000_0000, cpu_base: 0x1000_0000, size: 0x2eff_0000, prefetchable: false },
            HostWindow {
                pci_base: 0x80_0000_0000,
                cpu_base: 0x80_0000_0000,
                size: 0x80_0000_0000,
                prefetchable: false,
            },
        ]
    }

    /// The virt-many boot's topology (tests/boots.py), as QEMU builds it.
    fn virt_many() -> Model {
        let mut m = Model::default();
        let r0 = m.root(0);
        m.host_bridge(r0, 0, 0x0008);
        m.endpoint(r0, 1, 0, EDU, &[(0, MIB, false, false)]);
        m.endpoint(r0, 2, 0, EDU, &[(0, MIB, false, false)]);
        let rp1 = m.bridge(r0, 3, Some(PCI_EXP_TYPE_ROOT_PORT), false);
        m.endpoint(rp1, 0, 0, EDU, &[(0, MIB, false, false)]);
        let br1 = m.bridge(r0, 4, None, true); // conventional pci-bridge with its SHPC BAR
        m.endpoint(br1, 3, 0, EDU, &[(0, MIB, false, false)]);
        m.host_bridge(r0, 5, 0x000b);
        m.host_bridge(r0, 6, 0x000b);
        let p1 = m.root(0x80);
        let rp2 = m.bridge(p1, 0, Some(PCI_EXP_TYPE_ROOT_PORT), false);
        m.endpoint(rp2, 0, 0, EDU, &[(0, MIB, false, false)]);
        m.endpoint(rp2, 0, 1, EDU, &[(0, MIB, false, false), (2, 16 << 10, true, true)]);
        let rp3 = m.bridge(p1, 1, Some(PCI_EXP_TYPE_ROOT_PORT), false);
        let ppb = m.bridge(rp3, 0, Some(PCI_EXP_TYPE_PCI_BRIDGE), false);
        m.endpoint(ppb, 5, 0, EDU, &[(0, MIB, false, false)]);
        let p2 = m.root(0xc0);
        let rp4 = m.bridge(p2, 0, Some(PCI_EXP_TYPE_ROOT_PORT), false);
        m.endpoint(rp4, 0, 0, EDU, &[(0, MIB, false, false)]);
        m
    }

    fn run(m: &mut Model, bus_end: u8) -> Enumeration {
        let w = virt_windows();
        enumerate(m, &HostDesc { bus_start: 0, bus_end, windows: &w })
    }

    fn node(e: &Enumeration, bus: u8, dev: u8, func: u8) -> &Node {
        e.nodes.iter().find(|n| n.bdf == Bdf::new(bus, dev, func)).expect("function not found")
    }

    #[test]
    fn virt_many_bus_numbers_depth_first() {
        let mut m = virt_many();
        let e = run(&mut m, 0xff);
        assert_eq!(e.errors, vec![]);
        assert_eq!(e.roots, vec![0, 0x80, 0xc0]);
        let edus: Vec<Bdf> = e.nodes.iter().filter(|n| n.vendor == 0x1234).map(|n| n.bdf).collect();
        let want = [(0, 1, 0), (0, 2, 0), (1, 0, 0), (2, 3, 0), (0x81, 0, 0), (0x81, 0, 1), (0x83, 5, 0), (0xc1, 0, 0)];
        assert_eq!(edus, want.iter().map(|&(b, d, f)| Bdf::new(b, d, f)).collect::<Vec<_>>());
        let buses = |b, d| node(&e, b, d, 0).bridge.unwrap().buses;
        assert_eq!(buses(0, 3), Some((1, 1)));
        assert_eq!(buses(0, 4), Some((2, 2)));
        assert_eq!(buses(0x80, 0), Some((0x81, 0x81)));
        assert_eq!(buses(0x80, 1), Some((0x82, 0x83)));
        assert_eq!(buses(0x82, 0), Some((0x83, 0x83)));
        assert_eq!(buses(0xc0, 0), Some((0xc1, 0xc1)));
        // ... and the hardware holds them (primary too).
        let rp3 = m.dev_by_rid(0x8008).unwrap();
        assert_eq!(rp3.cfg[6] & 0xff_ffff, 0x83_82_80);
        // Parents and roots.
        let n = node(&e, 0x83, 5, 0);
        let ppb = &e.nodes[n.parent.unwrap()];
        assert_eq!(ppb.bdf, Bdf::new(0x82, 0, 0));
        assert_eq!(n.root_bus, 0x80);
        assert_eq!(node(&e, 0xc1, 0, 0).root_bus, 0xc0);
        assert_eq!(node(&e, 0, 1, 0).parent, None);
    }

    #[test]
    fn dma_aliases_follow_bridge_types() {
        let mut m = virt_many();
        let e = run(&mut m, 0xff);
        // Behind a conventional PCI bridge: the bridge's own ID.
        assert_eq!(node(&e, 2, 3, 0).dma_alias, Bdf::new(0, 4, 0).rid());
        // Behind a PCIe-to-PCI bridge: (its secondary bus, 00.0).
        assert_eq!(node(&e, 0x83, 5, 0).dma_alias, 0x8300);
        // Behind PCIe ports and on root buses: itself.
        assert_eq!(node(&e, 0x81, 0, 1).dma_alias, 0x8101);
        assert_eq!(node(&e, 1, 0, 0).dma_alias, 0x0100);
        assert_eq!(node(&e, 0, 2, 0).dma_alias, 0x0010);
    }

    /// Every assigned range of every function lies in its bridge's window, recursively
    /// in the host's windows, and no two ranges overlap.
    fn check_windows(e: &Enumeration, w: &[HostWindow]) {
        let mut ranges: Vec<(u64, u64, Bdf)> = Vec::new();
        for n in &e.nodes {
            let parent = n.parent.map(|p| e.nodes[p].bridge.unwrap());
            let inside = |base: u64, size: u64, pref: bool| match parent {
                None => w.iter().any(|h| h.pci_base <= base && base + size <= h.pci_base + h.size),
                Some(p) => {
                    let in_mem = p.mem.is_some_and(|x| x.contains(base, size));
                    let in_pref = p.pref.is_some_and(|x| x.contains(base, size));
                    if pref { in_mem || in_pref } else { in_mem }
                }
            };
            for b in n.bars.iter().filter(|b| b.kind != BarKind::Io) {
                let a = b.pci.unwrap_or_else(|| panic!("{} BAR{} unassigned", n.bdf, b.slot));
                assert_eq!(a % b.size, 0, "{} BAR{} misaligned", n.bdf, b.slot);
                assert!(inside(a, b.size, b.prefetchable && b.kind == BarKind::Mem64), "{} BAR{}", n.bdf, b.slot);
                ranges.push((a, b.size, n.bdf));
            }
            if let Some(br) = n.bridge {
                for (x, pref) in [(br.mem, false), (br.pref, true)] {
                    if let Some(x) = x {
                        assert_eq!(x.base % BRIDGE_WINDOW_GRANULE, 0);
                        assert_eq!(x.size % BRIDGE_WINDOW_GRANULE, 0);
                        assert!(inside(x.base, x.size, pref), "window of {} outside its parent's", n.bdf);
                    }
                }
            }
            assert!(n.mem_enabled, "{} memory decoding off", n.bdf);
        }
        ranges.sort();
        for p in ranges.windows(2) {
            assert!(p[0].0 + p[0].1 <= p[1].0, "{} and {} overlap", p[0].2, p[1].2);
        }
    }

    #[test]
    fn virt_many_bars_inside_bridge_windows() {
        let mut m = virt_many();
        let e = run(&mut m, 0xff);
        check_windows(&e, &virt_windows());
        // The 64-bit prefetchable BAR sits in rp2's prefetchable window.
        let rp2 = node(&e, 0x80, 0, 0).bridge.unwrap();
        let f = node(&e, 0x81, 0, 1);
        let pbar = f.bars.iter().find(|b| b.slot == 2).unwrap();
        assert!(rp2.pref.unwrap().contains(pbar.pci.unwrap(), pbar.size));
        assert_eq!(rp2.mem.unwrap().size, 2 * MIB);
        // Registers hold what was recorded; bridges forward memory and master, not I/O.
        let d = m.dev_by_rid(0x8000).unwrap();
        assert_eq!(decode_window(d.cfg[8], 0, 0), rp2.mem);
        assert_eq!(decode_window(d.cfg[9], d.cfg[10], d.cfg[11]), rp2.pref);
        assert_eq!(d.cfg[1] & 7, (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
        assert_eq!(d.cfg[7] & 0xffff, 0x00f0);
        let edu = m.dev_by_rid(0x8101).unwrap();
        assert_eq!(u64::from(edu.cfg[4]), f.bars[0].pci.unwrap());
        assert_eq!(edu.cfg[1] & 7, PCI_COMMAND_MEMORY);
        // A bridge with nothing behind it decodes nothing.
        let shpc = node(&e, 0, 4, 0);
        assert_eq!(shpc.bars.len(), 1);
        assert_eq!(shpc.bars[0].size, 0x100);
        assert!(shpc.bridge.unwrap().pref.is_none());
        let d = m.dev_by_rid(0x0020).unwrap();
        assert_eq!(decode_window(d.cfg[9], d.cfg[10], d.cfg[11]), None);
    }

    #[test]
    fn bridge_without_prefetchable_window() {
        let mut m = Model::default();
        let r0 = m.root(0);
        let b = m.bridge(r0, 1, None, false);
        // This bridge implements no prefetchable window: its registers read as zero.
        let d = m.buses[r0].iter_mut().find(|d| d.dev == 1).unwrap();
        (d.cfg[9], d.wmask[9], d.wmask[10], d.wmask[11]) = (0, 0, 0, 0);
        m.endpoint(b, 0, 0, EDU, &[(0, 64 << 10, true, true)]);
        let e = run(&mut m, 0xff);
        assert_eq!(e.errors, vec![]);
        let br = node(&e, 0, 1, 0).bridge.unwrap();
        assert!(!br.has_pref && br.pref.is_none());
        // The 64-bit prefetchable BAR lives in the (32-bit) memory window instead.
        let bar = node(&e, 1, 0, 0).bars[0];
        assert!(br.mem.unwrap().contains(bar.pci.unwrap(), bar.size));
        check_windows(&e, &virt_windows());
    }

    #[test]
    fn stale_firmware_bus_numbers_are_replaced() {
        let mut m = virt_many();
        // Firmware before us numbered bus 0's root port 0x40..0x50 and enabled it.
        let r0 = m.roots[0].1;
        let rp = m.buses[r0].iter_mut().find(|d| d.dev == 3).unwrap();
        rp.cfg[6] = 0x0050_4000;
        rp.cfg[1] |= 0x6;
        let e = run(&mut m, 0xff);
        assert_eq!(e.errors, vec![]);
        assert_eq!(e.roots, vec![0, 0x80, 0xc0], "a stale secondary bus was taken for a root");
        assert_eq!(node(&e, 0, 3, 0).bridge.unwrap().buses, Some((1, 1)));
        assert!(e.nodes.iter().any(|n| n.bdf == Bdf::new(1, 0, 0)));
    }

    #[test]
    fn bus_numbers_exhausted_is_reported() {
        let mut m = virt_many();
        // The host's bus range ends at 1: the second root port gets no bus number.
        let mut mm = Model::default();
        let r0 = mm.root(0);
        let a = mm.bridge(r0, 1, Some(PCI_EXP_TYPE_ROOT_PORT), false);
        mm.endpoint(a, 0, 0, EDU, &[(0, MIB, false, false)]);
        let b = mm.bridge(r0, 2, Some(PCI_EXP_TYPE_ROOT_PORT), false);
        mm.endpoint(b, 0, 0, EDU, &[(0, MIB, false, false)]);
        let e = run(&mut mm, 1);
        assert_eq!(e.errors, vec![PciError::BusNumbersExhausted { rid: Bdf::new(0, 2, 0).rid(), limit: 1 }]);
        assert_eq!(node(&e, 0, 2, 0).bridge.unwrap().buses, None);
        assert_eq!(e.nodes.iter().filter(|n| n.vendor == 0x1234).count(), 1);
        // Expander roots limit the buses of the roots below them: root 0 ends at 0x7f.
        let e = run(&mut m, 0xff);
        assert!(e.nodes.iter().filter_map(|n| n.bridge?.buses).all(|(s, u)| (s < 0x80) == (u < 0x80)));
    }

    #[test]
    fn no_window_space_is_reported() {
        let mut m = Model::default();
        let r0 = m.root(0);
        let rp = m.bridge(r0, 1, Some(PCI_EXP_TYPE_ROOT_PORT), false);
        m.endpoint(rp, 0, 0, EDU, &[(0, 4 * MIB, false, false)]);
        m.endpoint(r0, 2, 0, EDU, &[(0, MIB, false, false)]);
        let tiny = [HostWindow { pci_base: 0x1000_0000, cpu_base: 0x1000_0000, size: 2 * MIB, prefetchable: false }];
        let e = enumerate(&mut m, &HostDesc { bus_start: 0, bus_end: 0xff, windows: &tiny });
        let rid = Bdf::new(0, 1, 0).rid();
        assert_eq!(e.errors, vec![PciError::NoWindowSpace { rid, prefetchable: false, size: 4 * MIB }]);
        // The device behind stays off; the one on the root bus works.
        assert!(!node(&e, 1, 0, 0).mem_enabled);
        assert!(node(&e, 0, 2, 0).mem_enabled);
        assert_eq!(node(&e, 0, 2, 0).bars[0].pci, Some(0x1000_0000));
        let s = alloc::format!("{}", e.errors[0]);
        assert!(s.contains("00:01.0") && s.contains("0x400000"), "{s}");
    }

    #[test]
    fn absent_devices_read_all_ones() {
        let mut m = Model::default();
        m.root(0);
        let e = run(&mut m, 0xff);
        assert!(e.nodes.is_empty() && e.errors.is_empty());
        assert_eq!(e.roots, vec![0]);
        // Without an announcing host bridge no other bus is probed.
        assert!(m.reads < 100, "{} reads", m.reads);
    }

    #[test]
    fn announced_root_that_never_answers() {
        let mut m = Model::default();
        let r0 = m.root(0);
        m.host_bridge(r0, 0, 0x0008);
        m.host_bridge(r0, 3, 0x000b);
        let e = run(&mut m, 0xff);
        assert_eq!(e.errors, vec![PciError::MissingRoots { announced: 1, found: 0 }]);
    }

    #[test]
    fn deep_chain_and_64bit_window_above_4g() {
        // Five nested PCIe switches' worth of ports, a 2 GiB 64-bit prefetchable BAR at the bottom:
        // too big for the 32-bit window, so every prefetchable window up the chain goes high.
        let mut m = Model::default();
        let mut bus = m.root(0);
        for _ in 0..5 {
            bus = m.bridge(bus, 0, Some(PCI_EXP_TYPE_DOWNSTREAM), false);
        }
        m.endpoint(bus, 0, 0, EDU, &[(0, MIB, false, false), (2, 2 << 30, true, true)]);
        let e = run(&mut m, 0xff);
        assert_eq!(e.errors, vec![]);
        check_windows(&e, &virt_windows());
        let f = node(&e, 5, 0, 0);
        assert!(f.bars[1].pci.unwrap() >= 0x80_0000_0000);
        assert!(f.bars[0].pci.unwrap() < 1 << 32);
        let mut depth = 0;
        let mut p = f.parent;
        while let Some(i) = p {
            depth += 1;
            p = e.nodes[i].parent;
        }
        assert_eq!(depth, 5);
        let mut seen = BTreeMap::new();
        for n in &e.nodes {
            seen.insert(n.bdf.bus, ());
        }
        assert_eq!(seen.len(), 6);
    }
}
