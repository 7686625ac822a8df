//! DMA masters. Each implements `DmaEngine`, the small interface the DMA test
//! suites are written against, so a board's own engine plugs in the same way.

pub mod edu;

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// The transfer did not finish within the bound.
    Timeout { what: &'static str, waited_ms: u64 },
    /// Longer than the engine's buffer.
    TooLong { len: usize, max: usize },
    /// The device does not answer as the driver expects.
    NotResponding(&'static str),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Timeout { what, waited_ms } => write!(f, "{what} did not complete within {waited_ms} ms"),
            EngineError::TooLong { len, max } => write!(f, "{len} bytes is more than the engine's {max}"),
            EngineError::NotResponding(why) => write!(f, "device not responding: {why}"),
        }
    }
}

/// A device that copies between memory (by device-visible DMA address) and its
/// own buffer. Tests move data memory -> engine -> memory and check every byte.
pub trait DmaEngine {
    fn name(&self) -> &str;
    /// Largest single transfer.
    fn max_len(&self) -> usize;
    /// The addresses the device can emit (its DMA mask).
    fn dma_mask(&self) -> u64;
    /// Device reads `len` bytes at `dma_addr` into its buffer at `offset`.
    fn read_mem(&mut self, dma_addr: u64, offset: usize, len: usize) -> Result<(), EngineError>;
    /// Device writes `len` bytes from its buffer at `offset` to `dma_addr`.
    fn write_mem(&mut self, dma_addr: u64, offset: usize, len: usize) -> Result<(), EngineError>;
}
