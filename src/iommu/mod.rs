//! The IOMMU layers: I/O page tables and the IOVA allocator (pure), the SMMUv3
//! hardware layer, and the generic layer (domains, groups, attach) above it.

/// Lazy mode's flush queue (pure; the domain layer owns one per DMA domain).
pub mod flush_queue;
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
