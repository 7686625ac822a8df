//! The IOMMU layers: I/O page tables and the IOVA allocator (pure), the SMMUv3
//! hardware layer, and the generic layer (domains, groups, attach) above it.

pub mod io_pgtable;
pub mod iova;
/// MSI doorbell window of DMA domains (pure arithmetic; composition target-only).
pub mod msi;
pub mod smmuv3;

#[cfg(target_os = "none")]
pub mod domain;
#[cfg(target_os = "none")]
pub mod hwmem;
/// SMMU interrupts: which DT line does what and the MSI encodings (pure); wiring target-only.
pub mod irq;
#[cfg(target_os = "none")]
pub mod registry;
