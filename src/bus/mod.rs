//! Buses that carry DMA masters.

/// MSI capability and msi-map (the DeviceID lookup is pure).
pub mod msi;
#[cfg(target_os = "none")]
pub mod pci;
pub mod pci_alloc;
