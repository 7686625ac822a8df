//! The generic IOMMU layer: domains (blocked, identity, DMA, unmanaged; stage 1,
//! stage 2 or nested), groups of masters that share a domain, attach/detach at run
//! time, and map/unmap with the fewest invalidation commands. It talks to the SMMUv3
//! layer only through `SmmuV3`'s STE and command operations.

use super::flush_queue::{FlushQueue, Waiting};
use super::io_pgtable::{Config, Gather, Granule, IoPageTable, PgtError, Prot, Stage as PgtStage, TableMemory};
use super::iova::{IovaAllocator, IovaError};
use super::registry::{self, REGISTRY};
use super::smmuv3::cd::{Cd, CdCfg, CdGranule};
use super::smmuv3::cmd::{Command, RangeOp, TlbiRange, plan_range_tlbi};
use super::smmuv3::device::{SmmuError, SmmuV3};
use super::smmuv3::ste::{Cacheability, S1Cfg, S2Cfg, S2Granule, Shareability, Ste};
use crate::iommu::hwmem::HwMem;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use spin::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    /// Every access aborts.
    Blocked,
    /// Bypass: device addresses are physical addresses.
    Identity,
    /// Translated, IOVAs owned by the DMA API.
    Dma,
    /// Translated, the caller maps and unmaps (a hypervisor handing a device to a guest).
    Unmanaged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    S1,
    S2,
    /// Stage 1 (IOVA -> IPA) then stage 2 (IPA -> PA).
    Nested,
}

pub type DomainId = usize;
pub type MasterId = usize;
pub type GroupId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IommuError {
    NoSuchDomain(DomainId),
    NoSuchMaster(MasterId),
    NoSuchSmmu(usize),
    /// The SMMU lacks what the domain needs (e.g. stage 2).
    Unsupported(&'static str),
    /// Map/unmap on a domain without page tables (blocked, identity).
    NotTranslated(DomainId),
    /// A domain is bound to one SMMU; this master sits behind another.
    WrongSmmu {
        domain: DomainId,
        smmu: usize,
    },
    OutOfIds(&'static str),
    NoMemory(&'static str),
    Pgt(PgtError),
    Iova(IovaError),
    Smmu(SmmuError),
    Config(String),
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IommuError::NoSuchDomain(d) => write!(f, "no domain {d}"),
            IommuError::NoSuchMaster(m) => write!(f, "no master {m}"),
            IommuError::NoSuchSmmu(s) => write!(f, "no SMMU {s}"),
            IommuError::Unsupported(w) => write!(f, "SMMU does not support {w}"),
            IommuError::NotTranslated(d) => write!(f, "domain {d} has no page tables (blocked or identity)"),
            IommuError::WrongSmmu { domain, smmu } => write!(f, "domain {domain} belongs to another SMMU than {smmu}"),
            IommuError::OutOfIds(w) => write!(f, "out of {w}s"),
            IommuError::NoMemory(w) => write!(f, "out of memory for {w}"),
            IommuError::Pgt(e) => write!(f, "page table: {e}"),
            IommuError::Iova(e) => write!(f, "IOVA: {e:?}"),
            IommuError::Smmu(e) => write!(f, "SMMU: {e}"),
            IommuError::Config(s) => write!(f, "{s}"),
        }
    }
}

impl From<PgtError> for IommuError {
    fn from(e: PgtError) -> Self {
        IommuError::Pgt(e)
    }
}
impl From<SmmuError> for IommuError {
    fn from(e: SmmuError) -> Self {
        IommuError::Smmu(e)
    }
}
impl From<IovaError> for IommuError {
    fn from(e: IovaError) -> Self {
        IommuError::Iova(e)
    }
}

/// Page-table memory from page frames, with the SMMU's coherency.
pub struct FrameTables {
    mem: HwMem,
}

// SAFETY: alloc_table returns zeroed, size-aligned, identity-mapped frames owned by
// the table until free_table; phys_to_virt is the identity on such frames.
unsafe impl TableMemory for FrameTables {
    fn alloc_table(&mut self, bytes: usize) -> Option<(u64, *mut u64)> {
        let pa = self.mem.alloc(bytes)?;
        Some((pa, pa as *mut u64))
    }
    fn free_table(&mut self, pa: u64, _va: *mut u64, bytes: usize) {
        self.mem.free(pa, bytes);
    }
    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }
    fn sync_for_device(&self, va: *const u64, len: usize) {
        self.mem.to_device(va as u64, len);
    }
}

pub type Pgt = IoPageTable<FrameTables>;

pub struct Domain {
    pub id: DomainId,
    pub ty: DomainType,
    pub stage: Stage,
    pub smmu: usize,
    /// Stage-1 table (S1 and nested) or the only table (S2).
    pub pgt: Option<Pgt>,
    /// The stage-2 table of a nested domain.
    pub s2: Option<Pgt>,
    pub asid: u16,
    pub vmid: u16,
    /// The domain's one context descriptor (stage 1 and nested).
    cd_pa: Option<u64>,
    /// IOVA space of a DMA domain.
    pub iova: Option<IovaAllocator>,
    /// Unmaps waiting for a batched invalidation (lazy mode): the gather and the
    /// IOVAs to free once it completed.
    pub lazy: Option<Gather>,
    /// Lazy unmaps waiting for their invalidation; also says which of them the TLB may
    /// still hold stale (unmapped since the last invalidation, not mapped again).
    pub flush_queue: FlushQueue,
    pub attached: Vec<MasterId>,
    /// Translation granule of the domain's tables (and of its IOVA allocations).
    pub granule: Granule,
    /// Leaf attributes of `Prot::RO` and `Prot::RW` in the (stage-1, or only) table, what
    /// the DMA API maps with: computed once, not per map (0 without a table).
    dma_attrs: [u64; 2],
}

impl Domain {
    /// Strict unmap: the range leaves the table and the TLB before this returns (one
    /// invalidation, one CMD_SYNC); returns the bytes unmapped.
    pub fn unmap_strict(&mut self, iova: u64, size: u64) -> Result<u64, IommuError> {
        self.unmap_gathered(false, |pgt, g| pgt.unmap(iova, size, g))
    }

    /// The strict unmap protocol: `unmaps` records into one gather on the domain's stage-1
    /// (or only) table, or its stage-2 table (`s2`); then the invalidation and its CMD_SYNC,
    /// then `complete`. An error from `unmaps` returns at once (the table changed nothing).
    fn unmap_gathered<R>(
        &mut self,
        s2: bool,
        unmaps: impl FnOnce(&mut Pgt, &mut Gather) -> Result<R, PgtError>,
    ) -> Result<R, IommuError> {
        let (asid, vmid, smmu, stage) = (self.asid, self.vmid, self.smmu, self.stage);
        let Some(pgt) = (if s2 { self.s2.as_mut() } else { self.pgt.as_mut() }) else {
            return Err(IommuError::NotTranslated(self.id));
        };
        let mut g = Gather::new();
        let out = unmaps(pgt, &mut g)?;
        let table_stage = if s2 || stage == Stage::S2 { Stage::S2 } else { Stage::S1 };
        let nested = stage == Stage::Nested;
        let Some(r) = registry::with_smmu(smmu, |dev| flush_gather(dev, &g, table_stage, nested, asid, vmid)) else {
            return Err(IommuError::NoSuchSmmu(smmu));
        };
        // Even if the invalidation failed, finish the gather so no table leaks.
        pgt.complete(&mut g)?;
        r?;
        Ok(out)
    }

    /// Lazy unmap: the range leaves the table now; its invalidation (and the IOVA's
    /// reuse) waits for `flush_lazy`, unless the same mapping is made again meanwhile
    /// (`map_lazy_identical`).
    pub fn unmap_lazy(&mut self, iova: u64, size: u64) -> Result<u64, IommuError> {
        let Some(pgt) = self.pgt.as_mut() else { return Err(IommuError::NotTranslated(self.id)) };
        let g = self.lazy.get_or_insert_with(Gather::new);
        // What the TLB may still hold for it: the mapping that may take the IOVA back.
        let page = (size == self.granule.size()).then(|| pgt.unmap_page(iova, g)).flatten();
        let (bytes, leaf) = match page {
            Some(l) => (size, Some(l)),
            None => pgt.unmap_leaf(iova, size, g)?,
        };
        self.flush_queue.push(match leaf {
            Some(l) => Waiting { iova, pa: l.pa | (iova & (l.size - 1)), size, attrs: l.attrs },
            None => Waiting::unknown(iova, size),
        });
        Ok(bytes)
    }

    /// Lazy mode: map `[pa, pa + size)` as the DMA API does (`Prot::RW` if the device may
    /// `write`, else `Prot::RO`) at an IOVA waiting in the flush queue with exactly this
    /// mapping (same pages, same attributes), ending at or below `limit`. Whatever the TLB
    /// still holds for that IOVA is the new mapping itself, so it needs no invalidation
    /// first: the IOVA leaves the queue's frees and its entries are written again. Ok(None)
    /// when no such IOVA waits; the caller allocates a fresh one.
    pub fn map_lazy_identical(
        &mut self,
        pa: u64,
        size: u64,
        write: bool,
        limit: u64,
    ) -> Result<Option<u64>, IommuError> {
        let Some(pgt) = self.pgt.as_mut() else { return Ok(None) };
        if self.flush_queue.is_empty() {
            return Ok(None);
        }
        let attrs = self.dma_attrs[usize::from(write)];
        let Some(iova) = self.flush_queue.take_identical(pa, size, attrs, limit) else { return Ok(None) };
        if size == self.granule.size() && pgt.map_page(iova, pa, attrs) {
            return Ok(Some(iova));
        }
        if let Err(e) = pgt.map(iova, pa, size, if write { Prot::RW } else { Prot::RO }) {
            // Back to waiting, as the map may have changed some entries: the next flush
            // invalidates and frees it.
            self.flush_queue.push(Waiting::unknown(iova, size));
            return Err(e.into());
        }
        Ok(Some(iova))
    }

    /// Software walk through the domain's tables (both stages when nested).
    pub fn iova_to_phys(&self, iova: u64) -> Option<u64> {
        let ipa = self.pgt.as_ref()?.iova_to_phys(iova)?;
        match &self.s2 {
            Some(s2) => s2.iova_to_phys(ipa),
            None => Some(ipa),
        }
    }
}

pub struct Master {
    pub name: String,
    pub smmu: usize,
    pub sids: Vec<u32>,
    pub group: GroupId,
}

pub struct Group {
    pub masters: Vec<MasterId>,
    pub domain: Option<DomainId>,
}

pub struct Iommu {
    pub domains: Vec<Option<Domain>>,
    pub masters: Vec<Master>,
    pub groups: Vec<Group>,
    next_asid: u16,
    next_vmid: u16,
    /// ASIDs/VMIDs of freed domains, reused first.
    free_asids: Vec<u16>,
    free_vmids: Vec<u16>,
}

pub static IOMMU: Mutex<Iommu> = Mutex::new(Iommu {
    domains: Vec::new(),
    masters: Vec::new(),
    groups: Vec::new(),
    next_asid: 1,
    next_vmid: 1,
    free_asids: Vec::new(),
    free_vmids: Vec::new(),
});

/// `smmu.ril=0`: invalidate page by page even if the SMMU has range invalidation
/// (to measure what RIL saves).
pub static NO_RIL: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Above this many range commands one invalidate-all-of-the-ASID/VMID is cheaper.
const TLBI_MAX_OPS: usize = 64;
/// IOVA space of DMA domains: 4 KiB up to 2^39 (minus the caller's DMA mask).
const DMA_IAS: u8 = 39;

fn oas_of(s: &SmmuV3) -> u8 {
    s.features.oas_bits.unwrap_or(40).min(48)
}

fn walk_attrs(coherent: bool) -> (Cacheability, Shareability) {
    if coherent {
        (Cacheability::WbRwa, Shareability::Inner)
    } else {
        (Cacheability::NonCacheable, Shareability::Outer)
    }
}

impl Iommu {
    pub fn domain(&mut self, id: DomainId) -> Result<&mut Domain, IommuError> {
        // Not `ok_or`: that builds the error on every call and drops it again (measured on
        // the DMA API's hot path), where a `match` builds it only when needed.
        match self.domains.get_mut(id) {
            Some(Some(d)) => Ok(d),
            _ => Err(IommuError::NoSuchDomain(id)),
        }
    }

    /// Register a master (its StreamIDs on SMMU `smmu`) in a group of its own, or in
    /// `with`'s group when the two cannot be isolated from each other.
    pub fn add_master(
        &mut self,
        name: &str,
        smmu: usize,
        sids: &[u32],
        with: Option<MasterId>,
    ) -> Result<MasterId, IommuError> {
        if smmu >= registry::count() {
            return Err(IommuError::NoSuchSmmu(smmu));
        }
        let id = self.masters.len();
        let group = match with {
            Some(m) => self.masters.get(m).ok_or(IommuError::NoSuchMaster(m))?.group,
            None => {
                self.groups.push(Group { masters: Vec::new(), domain: None });
                self.groups.len() - 1
            }
        };
        self.groups[group].masters.push(id);
        self.masters.push(Master { name: name.into(), smmu, sids: sids.to_vec(), group });
        Ok(id)
    }

    /// A registered master on SMMU `smmu` that uses one of `sids`: the SMMU cannot tell
    /// a new master with such a StreamID apart from it (PCI functions behind a PCIe-to-PCI
    /// bridge all use the bridge's alias), so the two must share a group.
    pub fn master_with_sid(&self, smmu: usize, sids: &[u32]) -> Option<MasterId> {
        self.masters.iter().position(|m| m.smmu == smmu && m.sids.iter().any(|s| sids.contains(s)))
    }

    pub fn group_of(&self, m: MasterId) -> Result<GroupId, IommuError> {
        self.masters.get(m).map(|x| x.group).ok_or(IommuError::NoSuchMaster(m))
    }

    pub fn domain_of(&self, m: MasterId) -> Option<DomainId> {
        self.masters.get(m).and_then(|x| self.groups[x.group].domain)
    }

    /// A new domain on SMMU `smmu`. DMA domains get an IOVA allocator whose space
    /// starts at one page (IOVA 0 is never handed out).
    pub fn domain_alloc(&mut self, smmu: usize, ty: DomainType, stage: Stage) -> Result<DomainId, IommuError> {
        self.domain_alloc_granule(smmu, ty, stage, Granule::K4)
    }

    /// `domain_alloc` with a 4K, 16K or 64K translation granule.
    pub fn domain_alloc_granule(
        &mut self,
        smmu: usize,
        ty: DomainType,
        stage: Stage,
        granule: Granule,
    ) -> Result<DomainId, IommuError> {
        let mut reg = REGISTRY.lock();
        let dev = &mut reg.smmus.get_mut(smmu).ok_or(IommuError::NoSuchSmmu(smmu))?.dev;
        let f = &dev.features;
        let translated = matches!(ty, DomainType::Dma | DomainType::Unmanaged);
        let supported = match granule {
            Granule::K4 => f.gran4k,
            Granule::K16 => f.gran16k,
            Granule::K64 => f.gran64k,
        };
        if translated && !supported {
            return Err(IommuError::Unsupported("this translation granule"));
        }
        if translated {
            match stage {
                Stage::S1 if !f.stage1 => return Err(IommuError::Unsupported("stage 1")),
                Stage::S2 if !f.stage2 => return Err(IommuError::Unsupported("stage 2")),
                Stage::Nested if !(f.stage1 && f.stage2) => return Err(IommuError::Unsupported("nested translation")),
                _ => {}
            }
        }
        let mem = dev.mem;
        let oas = oas_of(dev);
        let mut d = Domain {
            id: self.domains.len(),
            ty,
            stage,
            smmu,
            pgt: None,
            s2: None,
            asid: 0,
            vmid: 0,
            cd_pa: None,
            iova: None,
            lazy: None,
            flush_queue: FlushQueue::new(),
            attached: Vec::new(),
            granule,
            dma_attrs: [0; 2],
        };
        if translated {
            let cfg = |st: PgtStage, ias: u8| Config { stage: st, granule, ias, oas, coherent_walk: mem.coherent };
            match stage {
                Stage::S1 => d.pgt = Some(Pgt::new(cfg(PgtStage::S1, DMA_IAS), FrameTables { mem })?),
                Stage::S2 => d.pgt = Some(Pgt::new(cfg(PgtStage::S2, oas.min(40)), FrameTables { mem })?),
                Stage::Nested => {
                    d.pgt = Some(Pgt::new(cfg(PgtStage::S1, DMA_IAS), FrameTables { mem })?);
                    d.s2 = Some(Pgt::new(cfg(PgtStage::S2, oas.min(40)), FrameTables { mem })?);
                }
            }
            if let Some(p) = &d.pgt {
                d.dma_attrs = [p.attrs(&Prot::RO)?, p.attrs(&Prot::RW)?];
            }
            if stage != Stage::S1 {
                d.vmid = match self.free_vmids.pop() {
                    Some(v) => v,
                    None => {
                        let v = self.next_vmid;
                        self.next_vmid = v.checked_add(1).ok_or(IommuError::OutOfIds("VMID"))?;
                        v
                    }
                };
            }
            if stage != Stage::S2 {
                d.asid = match self.free_asids.pop() {
                    Some(a) => a,
                    None => {
                        let a = self.next_asid;
                        self.next_asid = a.checked_add(1).ok_or(IommuError::OutOfIds("ASID"))?;
                        a
                    }
                };
                let pgt = d.pgt.as_ref().ok_or(IommuError::NoMemory("page table"))?;
                let tcr = pgt.s1_tcr().ok_or_else(|| IommuError::Config("stage-1 table without TCR".into()))?;
                let (c, sh) = walk_attrs(mem.coherent);
                let mut cc = CdCfg::new_4k(d.asid, pgt.root_pa(), tcr.t0sz, tcr.ips, pgt.mair());
                cc.tg0 = match granule {
                    Granule::K4 => CdGranule::G4K,
                    Granule::K16 => CdGranule::G16K,
                    Granule::K64 => CdGranule::G64K,
                };
                cc.ir0 = c;
                cc.or0 = c;
                cc.sh0 = sh;
                let cd = Cd::new(&cc).map_err(|e| IommuError::Config(alloc::format!("CD: {e:?}")))?;
                let cd_pa = mem.alloc(64).ok_or(IommuError::NoMemory("context descriptor"))?;
                for (i, w) in cd.words().iter().enumerate() {
                    // SAFETY: cd_pa is a fresh frame owned by this domain.
                    unsafe { core::ptr::write_volatile((cd_pa as *mut u64).add(i), *w) };
                }
                mem.to_device(cd_pa, 64);
                d.cd_pa = Some(cd_pa);
            }
        }
        if ty == DomainType::Dma {
            // The DMA API maps and unmaps single buffers all the time: keep the tables that
            // empty out (as Linux does) so the next map nearby allocates and zeroes none;
            // `trim_tables` gives them back.
            if let Some(p) = d.pgt.as_mut() {
                p.set_retain_empty_tables(true);
            }
            let g = granule.size();
            let mut a = IovaAllocator::new(g, (1u64 << DMA_IAS) - 1, g)?;
            // The MSI doorbell window (super::msi): never handed out for buffers.
            super::msi::reserve_window(&mut a)?;
            d.iova = Some(a);
        }
        let id = d.id;
        self.domains.push(Some(d));
        Ok(id)
    }

    /// The STE that puts a master into `d`.
    fn ste_for(d: &Domain, dev: &SmmuV3) -> Result<Ste, IommuError> {
        let cfg_err = |e| IommuError::Config(alloc::format!("STE: {e:?}"));
        let (c, sh) = walk_attrs(dev.mem.coherent);
        let s1 = |cd_pa: u64| {
            let mut s = S1Cfg::new(cd_pa);
            s.s1cir = c;
            s.s1cor = c;
            s.s1csh = sh;
            s.stall_disable = S1Cfg::stall_disable_for(&dev.features);
            s
        };
        let s2 = |pgt: &Pgt| -> Result<S2Cfg, IommuError> {
            let v = pgt.s2_vtcr().ok_or_else(|| IommuError::Config("stage-2 table without VTCR".into()))?;
            let mut s = S2Cfg::new_4k(d.vmid, pgt.root_pa(), v.t0sz, v.sl0, v.ps);
            s.tg = match d.granule {
                Granule::K4 => S2Granule::G4K,
                Granule::K16 => S2Granule::G16K,
                Granule::K64 => S2Granule::G64K,
            };
            s.irgn = c;
            s.orgn = c;
            s.sh = sh;
            Ok(s)
        };
        Ok(match (d.ty, d.stage) {
            (DomainType::Blocked, _) => Ste::abort(),
            (DomainType::Identity, _) => Ste::bypass(),
            (_, Stage::S1) => {
                Ste::s1(&s1(d.cd_pa.ok_or_else(|| IommuError::Config("no CD".into()))?)).map_err(cfg_err)?
            }
            (_, Stage::S2) => Ste::s2(&s2(d.pgt.as_ref().ok_or(IommuError::NotTranslated(d.id))?)?).map_err(cfg_err)?,
            (_, Stage::Nested) => Ste::nested(
                &s1(d.cd_pa.ok_or_else(|| IommuError::Config("no CD".into()))?),
                &s2(d.s2.as_ref().ok_or(IommuError::NotTranslated(d.id))?)?,
            )
            .map_err(cfg_err)?,
        })
    }

    /// Give back the empty page tables a domain retained (see `set_retain_empty_tables`):
    /// unlink them, invalidate (walk caches included) and free them. Returns how many.
    /// Lazy unmaps still queued are flushed first (their gather may hold tables too).
    pub fn trim_tables(&mut self, did: DomainId) -> Result<usize, IommuError> {
        self.flush_lazy(did)?;
        let d = self.domain(did)?;
        let (asid, vmid, smmu, stage) = (d.asid, d.vmid, d.smmu, d.stage);
        let mut n = 0;
        for s2 in [false, true] {
            let d = self.domain(did)?;
            let Some(pgt) = (if s2 { d.s2.as_mut() } else { d.pgt.as_mut() }) else { continue };
            let mut g = Gather::new();
            n += pgt.trim(&mut g)?;
            if !g.needs_complete() {
                continue;
            }
            let table_stage = if s2 || stage == Stage::S2 { Stage::S2 } else { Stage::S1 };
            let nested = stage == Stage::Nested;
            let r = registry::with_smmu(smmu, |dev| flush_gather(dev, &g, table_stage, nested, asid, vmid))
                .ok_or(IommuError::NoSuchSmmu(smmu));
            // Free only after a completed invalidation; otherwise leak rather than let a
            // stale walk-cache entry point into reused memory.
            if matches!(r, Ok(Ok(()))) {
                pgt.complete(&mut g)?;
            }
            r??;
        }
        Ok(n)
    }

    /// Free a domain nothing is attached to: flush its lazy unmaps, invalidate its
    /// ASID/VMID (no TLB or walk-cache entry may point into the freed tables), then
    /// give back its tables, context descriptor and IDs.
    pub fn domain_free(&mut self, did: DomainId) -> Result<(), IommuError> {
        let d = self.domain(did)?;
        if !d.attached.is_empty() {
            return Err(IommuError::Config(alloc::format!("domain {did} still has {} master(s)", d.attached.len())));
        }
        self.flush_lazy(did)?;
        let d = self.domain(did)?;
        let (smmu, asid, vmid, stage, translated) = (d.smmu, d.asid, d.vmid, d.stage, d.pgt.is_some());
        if translated {
            let cmd = match stage {
                Stage::S1 => Command::TlbiNhAsid { asid, vmid: 0 },
                Stage::S2 | Stage::Nested => Command::TlbiS12Vmall { vmid },
            };
            let r = registry::with_smmu(smmu, |dev| dev.run(&[cmd])).ok_or(IommuError::NoSuchSmmu(smmu))?;
            r?;
        }
        let Some(slot) = self.domains.get_mut(did) else { return Err(IommuError::NoSuchDomain(did)) };
        let Some(d) = slot.take() else { return Err(IommuError::NoSuchDomain(did)) };
        let mem = REGISTRY.lock().smmus.get(smmu).map(|e| e.dev.mem);
        if let (Some(cd), Some(mem)) = (d.cd_pa, mem) {
            mem.free(cd, 64);
        }
        if d.stage != Stage::S2 && d.asid != 0 {
            self.free_asids.push(d.asid);
        }
        if d.stage != Stage::S1 && d.vmid != 0 {
            self.free_vmids.push(d.vmid);
        }
        // Dropping the domain drops its page tables (every table, the root included).
        drop(d);
        Ok(())
    }

    /// Domains that exist now.
    pub fn live_domains(&self) -> usize {
        self.domains.iter().filter(|d| d.is_some()).count()
    }

    /// Move every master of `group` into domain `did` (their STEs are rewritten in
    /// place, hitless where the spec allows).
    pub fn attach_group(&mut self, group: GroupId, did: DomainId) -> Result<(), IommuError> {
        let masters = self
            .groups
            .get(group)
            .ok_or_else(|| IommuError::Config(alloc::format!("no group {group}")))?
            .masters
            .clone();
        let d = self.domains.get(did).and_then(|d| d.as_ref()).ok_or(IommuError::NoSuchDomain(did))?;
        let mut reg = REGISTRY.lock();
        for &m in &masters {
            let ms = &self.masters[m];
            if ms.smmu != d.smmu {
                return Err(IommuError::WrongSmmu { domain: did, smmu: ms.smmu });
            }
            let dev = &mut reg.smmus.get_mut(ms.smmu).ok_or(IommuError::NoSuchSmmu(ms.smmu))?.dev;
            let ste = Self::ste_for(d, dev)?;
            for &sid in &ms.sids {
                dev.write_ste(sid, &ste)?;
            }
            // Warm the SMMU's configuration cache, as Linux does, unless the
            // implementation is known to mishandle PREFETCH_CONFIG.
            if !dev.quirk_no_prefetch && !matches!(d.ty, DomainType::Blocked) {
                let pf: Vec<Command> = ms.sids.iter().map(|&sid| Command::PrefetchConfig { sid, ssid: None }).collect();
                dev.run(&pf)?;
            }
        }
        drop(reg);
        if let Some(old) = self.groups[group].domain
            && let Ok(od) = self.domain(old)
        {
            od.attached.retain(|m| !masters.contains(m));
        }
        self.groups[group].domain = Some(did);
        self.domain(did)?.attached.extend(masters.iter().copied());
        Ok(())
    }

    pub fn attach(&mut self, m: MasterId, did: DomainId) -> Result<(), IommuError> {
        let g = self.group_of(m)?;
        self.attach_group(g, did)
    }

    /// Map [iova, iova+size) -> pa in the domain's (stage-1, or only) table.
    pub fn map(&mut self, did: DomainId, iova: u64, pa: u64, size: u64, prot: Prot) -> Result<(), IommuError> {
        let d = self.domain(did)?;
        let pgt = d.pgt.as_mut().ok_or(IommuError::NotTranslated(did))?;
        pgt.map(iova, pa, size, prot)?;
        Ok(())
    }

    /// A firmware-described direct mapping (`reserved-memory` + `iommu-addresses`):
    /// IOVA == PA, read/write, installed before any driver runs and never handed out
    /// by the IOVA allocator. Identity domains need nothing; blocked domains refuse.
    pub fn install_direct_map(&mut self, did: DomainId, iova: u64, size: u64) -> Result<(), IommuError> {
        let d = self.domain(did)?;
        match d.ty {
            DomainType::Identity => return Ok(()),
            DomainType::Blocked => {
                return Err(IommuError::Config(alloc::format!("direct map {iova:#x} into a blocked domain")));
            }
            DomainType::Dma | DomainType::Unmanaged => {}
        }
        let g = d.granule.size();
        let (start, end) = (iova & !(g - 1), (iova + size + g - 1) & !(g - 1));
        // Already there (a second device of the same group with the same firmware region):
        // nothing to do. A region that overlaps differently fails in `map` below.
        let last = end - g;
        if self.iova_to_phys(did, start) == Some(start) && self.iova_to_phys(did, last) == Some(last) {
            return Ok(());
        }
        let d = self.domain(did)?;
        if let Some(a) = d.iova.as_mut() {
            a.reserve(start, end - start)?;
        }
        self.map(did, start, start, end - start, Prot::RW)
    }

    /// Map IPA -> PA in a nested domain's stage-2 table.
    pub fn map_s2(&mut self, did: DomainId, ipa: u64, pa: u64, size: u64, prot: Prot) -> Result<(), IommuError> {
        let d = self.domain(did)?;
        let pgt = d.s2.as_mut().ok_or(IommuError::NotTranslated(did))?;
        pgt.map(ipa, pa, size, prot)?;
        Ok(())
    }

    pub fn iova_to_phys(&mut self, did: DomainId, iova: u64) -> Option<u64> {
        self.domain(did).ok()?.iova_to_phys(iova)
    }

    /// Unmap and invalidate now (strict): returns the bytes unmapped.
    pub fn unmap(&mut self, did: DomainId, iova: u64, size: u64) -> Result<u64, IommuError> {
        self.unmap_table(did, iova, size, false)
    }

    /// Unmap from a nested domain's stage-2 table and invalidate.
    pub fn unmap_s2(&mut self, did: DomainId, ipa: u64, size: u64) -> Result<u64, IommuError> {
        self.unmap_table(did, ipa, size, true)
    }

    fn unmap_table(&mut self, did: DomainId, iova: u64, size: u64, s2: bool) -> Result<u64, IommuError> {
        self.domain(did)?.unmap_gathered(s2, |pgt, g| pgt.unmap(iova, size, g))
    }

    /// Unmap several ranges of the domain's (stage-1, or only) table behind one invalidation
    /// (Linux's `iommu_iotlb_gather` across a scatterlist): one gather covers them all, so a
    /// strict unmap of n segments costs one CMD_SYNC, not n. Returns each range's result
    /// (bytes unmapped, or why not) once the invalidation completed; `Err` if it failed.
    /// The gather spans the hull of the ranges: ranges far apart get more invalidated than
    /// they need (at worst the whole ASID, see `flush_gather`), never less.
    pub fn unmap_batch(
        &mut self,
        did: DomainId,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<Result<u64, PgtError>>, IommuError> {
        self.domain(did)?
            .unmap_gathered(false, |pgt, g| Ok(ranges.iter().map(|&(iova, size)| pgt.unmap(iova, size, g)).collect()))
    }

    /// Test hook: unmap without any TLB invalidation, to prove that the
    /// invalidation tests can fail. Never used by the DMA API.
    #[doc(hidden)]
    pub fn unmap_skip_tlbi(&mut self, did: DomainId, iova: u64, size: u64) -> Result<u64, IommuError> {
        let d = self.domain(did)?;
        let pgt = d.pgt.as_mut().ok_or(IommuError::NotTranslated(did))?;
        let mut g = Gather::new();
        let bytes = pgt.unmap(iova, size, &mut g)?;
        pgt.complete(&mut g)?;
        Ok(bytes)
    }

    /// [`Domain::unmap_lazy`] of domain `did`. The range must have been mapped by one `map`
    /// (contiguous output, one set of attributes), as the DMA API's are: its first leaf
    /// stands for all of it when an identical map takes it back.
    pub fn unmap_lazy(&mut self, did: DomainId, iova: u64, size: u64) -> Result<u64, IommuError> {
        self.domain(did)?.unmap_lazy(iova, size)
    }

    /// One invalidation for everything unmapped lazily; then the IOVAs are free. None is
    /// owed when every queued range was mapped identically again and no table waits to be
    /// freed (see `flush_queue`): then the queue only empties.
    pub fn flush_lazy(&mut self, did: DomainId) -> Result<usize, IommuError> {
        let d = self.domain(did)?;
        let Some(mut g) = d.lazy.take() else { return Ok(0) };
        let (asid, smmu) = (d.asid, d.smmu);
        let r = if d.flush_queue.waiting() != 0 || g.needs_complete() {
            // Lazy mode trades precision for one command: invalidate the whole ASID.
            registry::with_smmu(smmu, |dev| dev.run(&[Command::TlbiNhAsid { asid, vmid: 0 }]))
                .ok_or(IommuError::NoSuchSmmu(smmu))?
        } else {
            Ok(())
        };
        let d = self.domain(did)?;
        if let Some(pgt) = d.pgt.as_mut() {
            pgt.complete(&mut g)?;
        }
        r?;
        let n = d.flush_queue.len();
        // Drained, not taken: the next batch refills the same capacity without reallocating.
        // IOVAs taken back by an identical map are live again and stay allocated.
        let mut failed = None;
        let (q, a) = (&mut d.flush_queue, &mut d.iova);
        q.drain(|i| {
            if let Some(Err(e)) = a.as_mut().map(|a| a.free(i)) {
                failed.get_or_insert(e);
            }
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(n),
        }
    }

    /// For interrupt context (the lazy-flush timer): invalidate the TLB entries of every
    /// domain with stale lazy unmaps (see `lazy_tlb_stale`), so they stop translating. The
    /// IOVAs and table pages stay queued until the next `flush_lazy` (process context), so
    /// the handler stays short and allocation-free. Ok(false) when an SMMU's registry was
    /// locked and some domain still waits.
    pub fn try_invalidate_lazy(&mut self) -> Result<bool, IommuError> {
        let mut all = true;
        for d in self.domains.iter_mut().flatten() {
            if !d.flush_queue.stale() {
                continue;
            }
            let (asid, smmu) = (d.asid, d.smmu);
            match registry::try_with_smmu(smmu, |dev| dev.run(&[Command::TlbiNhAsid { asid, vmid: 0 }])) {
                None => all = false,
                Some(None) => return Err(IommuError::NoSuchSmmu(smmu)),
                Some(Some(r)) => {
                    r?;
                    d.flush_queue.invalidated();
                }
            }
        }
        Ok(all)
    }

    /// Lazy unmaps of `did` that may still translate through the SMMU's TLB (no
    /// invalidation since, not mapped identically again): what the flush timer bounds.
    pub fn lazy_tlb_stale(&mut self, did: DomainId) -> Result<bool, IommuError> {
        Ok(self.domain(did)?.flush_queue.stale())
    }
}

/// Issue the fewest commands that invalidate what `g` recorded, then one CMD_SYNC.
fn flush_gather(
    dev: &mut SmmuV3,
    g: &Gather,
    stage: Stage,
    nested: bool,
    asid: u16,
    vmid: u16,
) -> Result<(), SmmuError> {
    if g.is_empty() {
        return Ok(());
    }
    let ril = dev.features.ril && !NO_RIL.load(core::sync::atomic::Ordering::Relaxed);
    let pg_log2 = if g.pgsize == 0 { 12 } else { g.pgsize.trailing_zeros() as u8 };
    let all = match stage {
        Stage::S2 => Command::TlbiS12Vmall { vmid },
        _ => Command::TlbiNhAsid { asid, vmid: if nested { vmid } else { 0 } },
    };
    let tlbi = |op: RangeOp| {
        let range = TlbiRange { num: op.num, scale: op.scale, tg: op.tg, ttl: if g.leaf_only { op.ttl } else { 0 } };
        match stage {
            Stage::S2 => Command::TlbiS2Ipa { vmid, addr: op.addr, leaf: g.leaf_only, range },
            _ => {
                Command::TlbiNhVa { vmid: if nested { vmid } else { 0 }, asid, addr: op.addr, leaf: g.leaf_only, range }
            }
        }
    };
    let mut plan = plan_range_tlbi(g.start, g.end - g.start, pg_log2, 12, ril);
    let first = plan.next();
    if plan.is_done() && !(stage == Stage::S2 && nested) {
        // The common case (any size, given RIL): one command, and no buffer to fill.
        return match first {
            Some(op) => dev.run(&[tlbi(op)]),
            None => dev.run(&[]),
        };
    }
    // A strict unmap is on the DMA API's hot path: its few commands stay on the stack.
    let mut cmds = CmdBuf::new(all);
    for op in first.into_iter().chain(plan) {
        if cmds.len() == TLBI_MAX_OPS {
            // Too many range commands: invalidate everything of the ASID/VMID instead.
            return dev.run(&[all]);
        }
        cmds.push(tlbi(op));
    }
    if stage == Stage::S2 && nested {
        // Combined stage-1+2 entries may hold the old IPA->PA result.
        cmds.push(Command::TlbiNhAll { vmid });
    }
    dev.run(cmds.as_slice())
}

/// Commands for one invalidation: the first few on the stack, more on the heap.
struct CmdBuf {
    inline: [Command; 4],
    len: usize,
    heap: Vec<Command>,
}

impl CmdBuf {
    fn new(fill: Command) -> CmdBuf {
        CmdBuf { inline: [fill; 4], len: 0, heap: Vec::new() }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, c: Command) {
        if self.len < self.inline.len() {
            self.inline[self.len] = c;
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline);
            }
            self.heap.push(c);
        }
        self.len += 1;
    }

    fn as_slice(&self) -> &[Command] {
        if self.heap.is_empty() { &self.inline[..self.len] } else { &self.heap }
    }
}
