//! Buses that carry DMA masters.

pub mod pci;
