//! Device-tree discovery: reads the DTB handed over by firmware and describes the platform
//! (memory, console, GIC, PSCI, SMMUv3s, their masters and PCI hosts) for the kernel.
//!
//! `describe` fails only when the blob itself is unusable; anything wrong with a single
//! node is recorded in [`Platform::errors`] and the rest of the tree is still described.
//! Addresses are CPU physical: every `reg` goes through all parents' `ranges`.
//! Pure `no_std` + `alloc` so it is unit-tested on the host.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod addr;
mod iommu;
mod irq;
mod pci;
mod platform;
pub mod report;
mod tree;

#[cfg(test)]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use report::report_json;

/// The blob cannot be used at all (as opposed to [`NodeError`], which is per node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtError {
    /// Not an FDT: the magic is not 0xd00dfeed.
    BadMagic,
    /// Shorter than its header or than its `totalsize`.
    Truncated,
    /// Header version we cannot parse (need version >= 16, last_comp_version <= 17).
    UnsupportedVersion(u32),
    /// A block (structure, strings, memory reservation) lies outside the blob.
    BadBlock(&'static str),
    /// Malformed structure block at this byte offset.
    BadStructure(usize, &'static str),
    /// Nodes nested deeper than Linux's FDT_MAX_DEPTH (64).
    TooDeep,
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::BadMagic => write!(f, "not a flattened device tree (bad magic)"),
            DtError::Truncated => write!(f, "device tree blob is truncated"),
            DtError::UnsupportedVersion(v) => write!(f, "unsupported device tree version {v}"),
            DtError::BadBlock(what) => write!(f, "{what} block lies outside the blob"),
            DtError::BadStructure(off, why) => {
                write!(f, "malformed structure block at offset {off:#x}: {why}")
            }
            DtError::TooDeep => write!(f, "nodes nested deeper than {}", tree::MAX_DEPTH),
        }
    }
}

/// Something wrong with one node; the node (or the feature) is skipped, the rest described.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    /// Full path of the node, e.g. "/soc/iommu@490d0000".
    pub node: String,
    pub msg: String,
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.msg)
    }
}

/// Node-level problems; rendered into [`NodeError::msg`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    MissingProp(&'static str),
    BadLength { prop: &'static str, len: usize },
    RegLength { len: usize, na: u32, ns: u32 },
    AbsurdCells { bus: String, prop: &'static str, value: u32 },
    NoRanges { bus: String },
    NotInRanges { bus: String, addr: u128 },
    AddressTooWide(u128),
    UnresolvedPhandle { prop: &'static str, phandle: u32 },
    MissingCells { prop: &'static str, target: String },
    InterruptParentLoop,
    NoInterruptParent,
    NamesMismatch { names: usize, irqs: usize },
    NoStreamId { target: String },
    IommuCells { target: String, cells: u32 },
    MapMask { rid_base: u32, mask: u32 },
    BadValue { prop: &'static str, value: String },
    DuplicatePhandle(u32),
    Unresolved { prop: &'static str, value: String },
    NotInMemoryRegion { dev: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingProp(p) => write!(f, "missing `{p}`"),
            Problem::BadLength { prop, len } => write!(f, "`{prop}` has invalid length {len}"),
            Problem::RegLength { len, na, ns } => {
                write!(f, "`reg` length {len} is not a multiple of (#address-cells {na} + #size-cells {ns}) * 4")
            }
            Problem::AbsurdCells { bus, prop, value } => {
                write!(f, "{bus} has absurd `{prop}` = {value}")
            }
            Problem::NoRanges { bus } => {
                write!(f, "bus {bus} has no `ranges`: address not translatable")
            }
            Problem::NotInRanges { bus, addr } => {
                write!(f, "address {addr:#x} not covered by `ranges` of {bus}")
            }
            Problem::AddressTooWide(a) => write!(f, "address/size {a:#x} does not fit 64 bits"),
            Problem::UnresolvedPhandle { prop, phandle } => {
                write!(f, "`{prop}` references unknown phandle {phandle:#x}")
            }
            Problem::MissingCells { prop, target } => write!(f, "{target} lacks `{prop}`"),
            Problem::InterruptParentLoop => write!(f, "`interrupt-parent` chain loops"),
            Problem::NoInterruptParent => write!(f, "`interrupts` without an interrupt parent"),
            Problem::NamesMismatch { names, irqs } => {
                write!(f, "{names} `interrupt-names` for {irqs} interrupts")
            }
            Problem::NoStreamId { target } => {
                write!(f, "`iommus` to {target} with #iommu-cells = 0: no StreamID")
            }
            Problem::IommuCells { target, cells } => {
                write!(f, "{target} has #iommu-cells = {cells}, SMMUv3 expects 1 (first cell used)")
            }
            Problem::MapMask { rid_base, mask } => {
                write!(f, "`iommu-map` rid-base {rid_base:#x} has bits outside iommu-map-mask {mask:#x}")
            }
            Problem::BadValue { prop, value } => {
                write!(f, "`{prop}` has unsupported value \"{value}\"")
            }
            Problem::DuplicatePhandle(ph) => {
                write!(f, "phandle {ph:#x} already used by another node (ignored)")
            }
            Problem::Unresolved { prop, value } => {
                write!(f, "`{prop}` = \"{value}\" does not resolve to a node")
            }
            Problem::NotInMemoryRegion { dev } => {
                write!(f, "{dev} does not list this region in `memory-region` (Linux ignores the mapping)")
            }
        }
    }
}

/// A physical memory range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

/// Memory the kernel must not hand out. Comes from `/memreserve/` (node "/memreserve/")
/// and from `/reserved-memory/*` children with `reg`. Dynamic children (only `size`,
/// placed by the OS) are not listed: there is nothing to avoid until we allocate them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reserved {
    pub node: String,
    pub base: u64,
    pub size: u64,
    /// `no-map`: must not even be mapped cacheable by the kernel.
    pub no_map: bool,
}

/// `/chosen` as the bootloader left it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chosen {
    pub bootargs: Option<String>,
    /// Raw `stdout-path`, options (":115200n8") included.
    pub stdout_path: Option<String>,
}

/// UART programming model, named after the Linux drivers.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsoleKind {
    /// `arm,pl011` / `arm,sbsa-uart`.
    Pl011,
    /// 8250 family (`ns16550a`, `snps,dw-apb-uart`...): register stride and access width.
    Ns16550 { reg_shift: u32, reg_io_width: u32 },
    /// `fsl,imx*-lpuart`.
    ImxLpuart,
    /// Anything else: first compatible string.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Console {
    pub node: String,
    pub kind: ConsoleKind,
    pub base: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Its {
    pub node: String,
    pub base: u64,
    pub size: u64,
    /// 0 if the ITS has no phandle (nothing can then reference it via msi-map/msi-parent).
    pub phandle: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gic {
    pub node: String,
    /// What `interrupt-parent` / `interrupts-extended` name it by (None: nothing can).
    pub phandle: Option<u32>,
    /// 2 or 3.
    pub version: u8,
    pub dist_base: u64,
    pub dist_size: u64,
    /// GICv3 redistributor regions (`#redistributor-regions`, default 1); empty for v2.
    pub redist: Vec<Region>,
    pub its: Vec<Its>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciMethod {
    Hvc,
    Smc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Psci {
    pub method: PsciMethod,
}

/// The architected timer (`arm,armv8-timer`): its per-CPU interrupts, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchTimer {
    pub node: String,
    /// (name, raw specifier cells): names from `interrupt-names`, else the binding's
    /// positions ("sec-phys", "phys", "virt", "hyp-phys", "hyp-virt").
    pub irqs: Vec<(String, Vec<u32>)>,
    /// Phandle of the interrupt parent (`None`: the parent has none, or no `interrupts`).
    pub interrupt_parent: Option<u32>,
}

/// One `arm,smmu-v3` node.
#[derive(Debug, Clone, PartialEq)]
pub struct Smmu {
    pub node: String,
    pub phandle: Option<u32>,
    pub base: u64,
    pub size: u64,
    pub enabled: bool,
    /// `dma-coherent` on the node or inherited from an ancestor (Linux semantics).
    pub coherent: bool,
    /// (name, raw cells) in the node's order; names from `interrupt-names`, else "irq0"...
    pub irqs: Vec<(String, Vec<u32>)>,
    /// Phandle of the interrupt controller (for `interrupts-extended`, of the first entry).
    pub interrupt_parent: Option<u32>,
    /// Phandle of the interrupt controller of each entry of `irqs` (same order): the
    /// `interrupt-parent` found up the tree, or each `interrupts-extended` entry's own.
    pub irq_parents: Vec<Option<u32>>,
    pub msi_parent: Option<u32>,
    /// DeviceID the SMMU's own MSIs carry: the `msi-parent` specifier's cell when the
    /// controller has `#msi-cells = <1>`.
    pub msi_device_id: Option<u32>,
    /// Vendor erratum properties, e.g. "hisilicon,broken-prefetch-cmd".
    pub quirks: Vec<String>,
}

/// A device whose DMA goes through an SMMUv3 (`iommus = <&smmu sid>...`).
#[derive(Debug, Clone, PartialEq)]
pub struct Master {
    pub node: String,
    /// Path of the SMMUv3 node.
    pub smmu: String,
    pub stream_ids: Vec<u32>,
    pub enabled: bool,
}

/// A `/reserved-memory` region the device needs mapped at a fixed IOVA (`iommu-addresses`).
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMap {
    /// The reserved-memory child.
    pub node: String,
    /// The device that needs the mapping.
    pub master: String,
    pub iova: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSpace {
    Io,
    Mem32,
    Mem64,
}

/// One `ranges` entry of a PCI host bridge (config-space entries are skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct PciRange {
    pub space: PciSpace,
    pub prefetchable: bool,
    pub pci_addr: u64,
    pub cpu_addr: u64,
    pub size: u64,
}

/// One `iommu-map` / `msi-map` entry: IDs rid_base..rid_base+length map to
/// sid_base.. on the target.
#[derive(Debug, Clone, PartialEq)]
pub struct IdMap {
    pub rid_base: u32,
    pub iommu_phandle: u32,
    /// iommu-map: path of the target if it is an `arm,smmu-v3`, else None.
    /// msi-map: path of the MSI controller, None if unresolved.
    pub smmu: Option<String>,
    pub sid_base: u32,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PciHost {
    pub node: String,
    pub ecam_base: u64,
    pub ecam_size: u64,
    /// `bus-range`, default (0, 255).
    pub bus_range: (u8, u8),
    pub ranges: Vec<PciRange>,
    pub iommu_map: Vec<IdMap>,
    pub iommu_map_mask: Option<u32>,
    pub msi_map: Vec<IdMap>,
    pub msi_parent: Option<u32>,
    pub coherent: bool,
    pub enabled: bool,
    /// PCI device nodes the DT describes under this host (needed to tie a function
    /// to DT properties such as `memory-region` / `iommu-addresses`).
    pub devices: Vec<PciDeviceNode>,
}

/// A DT node for one PCI function: its path and Requester ID (from `reg` phys.hi).
#[derive(Debug, Clone, PartialEq)]
pub struct PciDeviceNode {
    pub node: String,
    pub rid: u16,
}

/// Everything the kernel needs from the DT, plus what went wrong per node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Platform {
    pub memory: Vec<Region>,
    pub reserved: Vec<Reserved>,
    pub chosen: Chosen,
    pub console: Option<Console>,
    pub gic: Option<Gic>,
    pub psci: Option<Psci>,
    pub timer: Option<ArchTimer>,
    /// MPIDR affinity of every enabled CPU (`/cpus/cpu@*` `reg`).
    pub cpus: Vec<u64>,
    pub smmus: Vec<Smmu>,
    pub pci_hosts: Vec<PciHost>,
    pub masters: Vec<Master>,
    pub direct_maps: Vec<DirectMap>,
    pub errors: Vec<NodeError>,
}

impl Gic {
    /// The interrupt controller with phandle `parent` is this GIC (an unknown parent,
    /// `None`, is not: its specifier cannot be read as a GIC one).
    pub fn is_parent(&self, parent: Option<u32>) -> bool {
        parent.is_some() && parent == self.phandle
    }
}

impl Platform {
    /// The SMMU whose node carries phandle `ph` (as used by `iommu-map`).
    /// Fixed IOVA mappings (`iommu-addresses`) a device node needs: (iova, size).
    pub fn direct_maps_for(&self, node: &str) -> Vec<(u64, u64)> {
        self.direct_maps.iter().filter(|d| d.master == node).map(|d| (d.iova, d.size)).collect()
    }

    /// The DT node describing PCI function `rid` on host `host`, if any.
    pub fn pci_device_node(&self, host: usize, rid: u16) -> Option<&str> {
        self.pci_hosts.get(host)?.devices.iter().find(|d| d.rid == rid).map(|d| d.node.as_str())
    }

    pub fn smmu_by_phandle(&self, ph: u32) -> Option<&Smmu> {
        self.smmus.iter().find(|s| s.phandle == Some(ph))
    }
}

/// Describes the platform in `dtb`. Errs only if the blob is unusable as a whole.
pub fn describe(dtb: &[u8]) -> Result<Platform, DtError> {
    let t = tree::Tree::parse(dtb)?;
    let mut cx = Ctx { t: &t, errors: Vec::new() };
    for &(n, ph) in &t.duplicate_phandles {
        cx.err(n, Problem::DuplicatePhandle(ph));
    }
    let memory = cx.memory();
    let reserved = cx.reserved();
    let chosen = cx.chosen();
    let console = cx.console(&chosen);
    let gic = cx.gic();
    let psci = cx.psci();
    let timer = cx.timer();
    let cpus = cx.cpus();
    let smmus = cx.smmus();
    let pci_hosts = cx.pci_hosts();
    let masters = cx.masters();
    let direct_maps = cx.direct_maps();
    Ok(Platform {
        memory,
        reserved,
        chosen,
        console,
        gic,
        psci,
        timer,
        cpus,
        smmus,
        pci_hosts,
        masters,
        direct_maps,
        errors: cx.errors,
    })
}

/// Shared state of one `describe` run: the tree and the errors collected so far.
pub(crate) struct Ctx<'t, 'a> {
    pub t: &'t tree::Tree<'a>,
    pub errors: Vec<NodeError>,
}

impl Ctx<'_, '_> {
    /// Records a node error once (several passes may trip over the same broken bus).
    pub(crate) fn err(&mut self, n: usize, p: Problem) {
        use alloc::string::ToString;
        let e = NodeError { node: self.t.path(n).to_string(), msg: p.to_string() };
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    /// `Ok` value, or record the error and give `None`.
    pub(crate) fn ok<T>(&mut self, n: usize, r: Result<T, Problem>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(p) => {
                self.err(n, p);
                None
            }
        }
    }
}
