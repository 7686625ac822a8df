//! Physical memory: which RAM is free (pure carving of the DT memory map), the
//! page-frame allocator and the kernel heap, both buddy allocators.

pub mod dcache;
pub mod layout;

#[cfg(target_os = "none")]
pub mod frames;
#[cfg(target_os = "none")]
pub mod heap;

pub const PAGE_SIZE: u64 = 4096;
