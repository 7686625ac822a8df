//! QEMU's `edu` PCI device (hw/misc/edu.c): a DMA engine with a 4 KiB buffer at
//! device address 0x40000. A transfer completes 100 ms (virtual) after it starts;
//! the RUN bit of DMA_CMD clears when it is done. Addresses above the device's
//! `dma_mask` (28 bits by default) are silently clamped by the model, so the driver
//! refuses them instead.

use super::{DmaEngine, EngineError};
use crate::arch::timer::Deadline;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;
const BUF_ADDR: u64 = 0x40000;
const BUF_SIZE: usize = 4096;
const DMA_RUN: u64 = 1;
const DMA_TO_MEM: u64 = 2;
const DMA_IRQ: u64 = 4;
/// Completion bound: the model takes 100 ms of virtual time; TCG may lag.
const TIMEOUT_MS: u64 = 5000;

register_structs! {
    Regs {
        (0x00 => ident: ReadOnly<u32>),
        (0x04 => liveness: ReadWrite<u32>),
        (0x08 => _r0),
        (0x20 => status: ReadWrite<u32>),
        (0x24 => irq_status: ReadOnly<u32>),
        (0x28 => _r1),
        (0x60 => irq_raise: ReadWrite<u32>),
        (0x64 => irq_ack: ReadWrite<u32>),
        (0x68 => _r2),
        (0x80 => dma_src: ReadWrite<u64>),
        (0x88 => dma_dst: ReadWrite<u64>),
        (0x90 => dma_cnt: ReadWrite<u64>),
        (0x98 => dma_cmd: ReadWrite<u64>),
        (0xa0 => @END),
    }
}

pub struct Edu {
    regs: &'static Regs,
    mask: u64,
    name: alloc::string::String,
    /// Ask for an interrupt on completion (wired up by the interrupt layer).
    pub irq_on_completion: bool,
}

impl Edu {
    /// # Safety
    /// `bar0` must be the address of an `edu` BAR0 (1 MiB, device memory), used by
    /// nothing else.
    pub unsafe fn new(bar0: u64, dma_mask: u64, name: &str) -> Result<Self, EngineError> {
        // SAFETY: the caller guarantees an edu register block at bar0.
        let regs = unsafe { &*(bar0 as *const Regs) };
        if regs.ident.get() & 0xffff != 0x00ed {
            return Err(EngineError::NotResponding("ident register is not 0x..edu"));
        }
        regs.liveness.set(0x1234_5678);
        if regs.liveness.get() != !0x1234_5678 {
            return Err(EngineError::NotResponding("liveness register does not invert"));
        }
        Ok(Edu { regs, mask: dma_mask, name: name.into(), irq_on_completion: false })
    }

    pub fn irq_status(&self) -> u32 {
        self.regs.irq_status.get()
    }

    pub fn ack_irq(&self, bits: u32) {
        self.regs.irq_ack.set(bits);
    }

    fn run(&mut self, src: u64, dst: u64, len: usize, to_mem: bool) -> Result<(), EngineError> {
        if len > BUF_SIZE {
            return Err(EngineError::TooLong { len, max: BUF_SIZE });
        }
        self.regs.dma_src.set(src);
        self.regs.dma_dst.set(dst);
        self.regs.dma_cnt.set(len as u64);
        let mut cmd = DMA_RUN;
        if to_mem {
            cmd |= DMA_TO_MEM;
        }
        if self.irq_on_completion {
            cmd |= DMA_IRQ;
        }
        self.regs.dma_cmd.set(cmd);
        let d = Deadline::after_ms(TIMEOUT_MS);
        while self.regs.dma_cmd.get() & DMA_RUN != 0 {
            if d.expired() {
                return Err(EngineError::Timeout { what: "edu DMA", waited_ms: TIMEOUT_MS });
            }
            core::hint::spin_loop();
        }
        Ok(())
    }
}

impl DmaEngine for Edu {
    fn name(&self) -> &str {
        &self.name
    }
    fn max_len(&self) -> usize {
        BUF_SIZE
    }
    fn dma_mask(&self) -> u64 {
        self.mask
    }
    fn read_mem(&mut self, dma_addr: u64, offset: usize, len: usize) -> Result<(), EngineError> {
        if offset + len > BUF_SIZE {
            return Err(EngineError::TooLong { len: offset + len, max: BUF_SIZE });
        }
        self.run(dma_addr, BUF_ADDR + offset as u64, len, false)
    }
    fn write_mem(&mut self, dma_addr: u64, offset: usize, len: usize) -> Result<(), EngineError> {
        if offset + len > BUF_SIZE {
            return Err(EngineError::TooLong { len: offset + len, max: BUF_SIZE });
        }
        self.run(BUF_ADDR + offset as u64, dma_addr, len, true)
    }
}

// SAFETY: an Edu owns its device's registers; every holder keeps it behind a mutex
// (EDUS, UNBOUND_EDUS), so moving it between CPUs is sound.
unsafe impl Send for Edu {}
