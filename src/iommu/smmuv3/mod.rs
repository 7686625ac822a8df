//! The Arm SMMUv3 hardware layer. Pure encodings (STE, CD, commands, events, ID
//! registers) are host-tested; `device` drives a real SMMU through `regs`.

pub mod cd;
pub mod cmd;
pub mod event;
pub mod features;
pub mod regs;
pub mod ste;

#[cfg(target_os = "none")]
pub mod device;
#[cfg(target_os = "none")]
mod queue;
#[cfg(target_os = "none")]
pub mod strtab;
