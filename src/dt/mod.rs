//! TEMPORARY STUB (replaced by the real device-tree module).
use alloc::string::String;
use alloc::vec::Vec;
#[derive(Debug, Clone, PartialEq)] pub struct Region { pub base: u64, pub size: u64 }
#[derive(Debug, Clone, PartialEq)] pub struct Reserved { pub node: String, pub base: u64, pub size: u64, pub no_map: bool }
#[derive(Debug, Clone, PartialEq, Default)] pub struct Chosen { pub bootargs: Option<String>, pub stdout_path: Option<String> }
#[derive(Debug, Clone, PartialEq)] pub enum ConsoleKind { Pl011 }
#[derive(Debug, Clone, PartialEq)] pub struct Console { pub node: String, pub kind: ConsoleKind, pub base: u64, pub size: u64 }
#[derive(Debug, Clone, PartialEq)] pub struct Its { pub node: String, pub base: u64 }
#[derive(Debug, Clone, PartialEq)] pub struct Gic { pub node: String, pub version: u8, pub dist_base: u64, pub redist: Vec<Region>, pub its: Vec<Its> }
#[derive(Debug, Clone, PartialEq)] pub enum PsciMethod { Hvc, Smc }
#[derive(Debug, Clone, PartialEq)] pub struct Psci { pub method: PsciMethod }
#[derive(Debug, Clone, PartialEq)] pub struct Smmu { pub node: String, pub base: u64, pub size: u64, pub enabled: bool, pub coherent: bool, pub irqs: Vec<(String, Vec<u32>)>, pub quirks: Vec<String> }
#[derive(Debug, Clone, PartialEq)] pub struct IdMap { pub rid_base: u32, pub smmu: Option<String>, pub sid_base: u32, pub length: u32 }
#[derive(Debug, Clone, PartialEq)] pub struct PciHost { pub node: String, pub ecam_base: u64, pub ecam_size: u64, pub bus_range: (u8, u8), pub iommu_map: Vec<IdMap> }
#[derive(Debug, Clone, PartialEq)] pub struct Master { pub node: String, pub smmu: String, pub stream_ids: Vec<u32> }
#[derive(Debug, Clone, PartialEq)] pub struct NodeError { pub node: String, pub msg: String }
#[derive(Debug, Clone, PartialEq, Default)] pub struct Platform { pub memory: Vec<Region>, pub reserved: Vec<Reserved>, pub chosen: Chosen, pub console: Option<Console>, pub gic: Option<Gic>, pub psci: Option<Psci>, pub smmus: Vec<Smmu>, pub pci_hosts: Vec<PciHost>, pub masters: Vec<Master>, pub errors: Vec<NodeError> }
#[derive(Debug)] pub struct DtError;
pub fn describe(dtb: &[u8]) -> Result<Platform, DtError> {
    let f = fdt::Fdt::new(dtb).map_err(|_| DtError)?;
    let mut p = Platform::default();
    for r in f.memory().regions() { p.memory.push(Region { base: r.starting_address as u64, size: r.size.unwrap_or(0) as u64 }); }
    p.chosen.bootargs = f.chosen().bootargs().map(String::from);
    if let Some(n) = f.chosen().stdout() { if let Some(r) = n.reg().and_then(|mut r| r.next()) { p.console = Some(Console { node: String::from(n.name), kind: ConsoleKind::Pl011, base: r.starting_address as u64, size: 0x1000 }); } }
    p.gic = Some(Gic { node: String::from("gic"), version: 3, dist_base: 0, redist: Vec::new(), its: Vec::new() });
    p.psci = Some(Psci { method: PsciMethod::Hvc });
    for n in f.all_nodes() { if n.compatible().map(|c| c.all().any(|c| c == "arm,smmu-v3")).unwrap_or(false) { p.smmus.push(Smmu{ node: String::from(n.name), base:0,size:0,enabled:true,coherent:true,irqs:Vec::new(),quirks:Vec::new()}); } }
    Ok(p)
}
