//! Arm PL011 UART, transmit side only. Written here rather than taken from a crate:
//! the console needs three registers, and the firmware has already set the baud rate.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields![u32,
    FR [
        TXFF OFFSET(5) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) [],
    ]
];

register_structs! {
    Regs {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _reserved),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => @END),
    }
}

pub struct Pl011 {
    regs: &'static Regs,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the address of a PL011 mapped as device memory.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees a PL011 register block lives at `base`.
        Pl011 { regs: unsafe { &*(base as *const Regs) } }
    }

    pub fn put(&self, b: u8) {
        // Bounded wait: a wedged UART must not hang the kernel.
        for _ in 0..1_000_000 {
            if !self.regs.fr.is_set(FR::TXFF) {
                break;
            }
            core::hint::spin_loop();
        }
        self.regs.dr.set(b as u32);
    }
}
