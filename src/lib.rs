//! A bare-metal aarch64 kernel that brings up Arm SMMUv3 and proves DMA through it.
//! Pure logic builds and is tested on the host; hardware code is behind `target_os = "none"`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod bootargs;
pub mod dt;
pub mod harness;
pub mod image;
pub mod iommu;
/// GICv3 + ITS; the hardware parts are target-only inside, the encodings host-tested.
pub mod irq;
pub mod mm;
pub mod uart;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod bench;
#[cfg(target_os = "none")]
pub mod boot;
pub mod bus;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod dma;
#[cfg(target_os = "none")]
pub mod drivers;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
pub mod report;
#[cfg(target_os = "none")]
pub mod selftest;

#[cfg(target_os = "none")]
pub use boot::boot_info;
