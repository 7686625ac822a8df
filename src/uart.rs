//! UART transmit protocols for the consoles boards use: Arm PL011, the 8250/16550
//! family (any `reg-shift`/`reg-io-width`, e.g. Synopsys DW APB on RK3588) and NXP
//! i.MX LPUART. Pure over an `Io` trait so the register layouts are host-tested.

/// Register access at byte offsets from the UART's base.
pub trait Io {
    fn read(&self, off: usize, width: u32) -> u32;
    fn write(&self, off: usize, width: u32, v: u32);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uart {
    /// DR at 0x00, FR at 0x18 (TXFF bit 5).
    Pl011,
    /// THR at 0, LSR at 5 (THRE bit 5), registers `1 << shift` bytes apart, accessed
    /// `width` bytes wide (1 or 4).
    Ns16550 { shift: u32, width: u32 },
    /// 32-bit LPUART with the i.MX7ULP/8/95 layout: STAT at 0x14 (TDRE bit 23), DATA at 0x1C.
    Lpuart,
}

/// How many times to poll "transmitter ready" before writing anyway: a wedged or
/// absent UART must not hang the kernel.
pub const READY_POLLS: u32 = 100_000;

impl Uart {
    /// Is there room for one more byte?
    pub fn ready(&self, io: &dyn Io) -> bool {
        match *self {
            Uart::Pl011 => io.read(0x18, 4) & (1 << 5) == 0,
            Uart::Ns16550 { shift, width } => io.read(5 << shift, width) & (1 << 5) != 0,
            Uart::Lpuart => io.read(0x14, 4) & (1 << 23) != 0,
        }
    }

    /// Send one byte (after a bounded wait for room).
    pub fn put(&self, io: &dyn Io, b: u8) {
        for _ in 0..READY_POLLS {
            if self.ready(io) {
                break;
            }
            core::hint::spin_loop();
        }
        match *self {
            Uart::Pl011 => io.write(0, 4, b as u32),
            Uart::Ns16550 { width, .. } => io.write(0, width, b as u32),
            Uart::Lpuart => io.write(0x1c, 4, b as u32),
        }
    }

    /// Register window the UART needs mapped (bytes from base).
    pub fn span(&self) -> usize {
        match *self {
            Uart::Pl011 => 0x1000,
            Uart::Ns16550 { shift, .. } => 8 << shift,
            Uart::Lpuart => 0x20,
        }
    }

    /// From the DT's console kind; `None` for a UART we cannot drive.
    pub fn from_dt(kind: &crate::dt::ConsoleKind) -> Option<Uart> {
        match kind {
            crate::dt::ConsoleKind::Pl011 => Some(Uart::Pl011),
            crate::dt::ConsoleKind::Ns16550 { reg_shift, reg_io_width } => {
                let width = if *reg_io_width == 4 { 4 } else { 1 };
                (*reg_shift <= 4).then_some(Uart::Ns16550 { shift: *reg_shift, width })
            }
            crate::dt::ConsoleKind::ImxLpuart => Some(Uart::Lpuart),
            crate::dt::ConsoleKind::Unknown(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A register file that records writes; `ready_at` is the offset/bit that says "room".
    struct Fake {
        regs: RefCell<std::collections::BTreeMap<usize, u32>>,
        writes: RefCell<Vec<(usize, u32, u32)>>,
    }

    impl Fake {
        fn new(init: &[(usize, u32)]) -> Self {
            Fake { regs: RefCell::new(init.iter().copied().collect()), writes: RefCell::new(Vec::new()) }
        }
    }

    impl Io for Fake {
        fn read(&self, off: usize, _w: u32) -> u32 {
            *self.regs.borrow().get(&off).unwrap_or(&0)
        }
        fn write(&self, off: usize, w: u32, v: u32) {
            self.writes.borrow_mut().push((off, w, v));
        }
    }

    #[test]
    fn pl011_writes_dr_when_fifo_has_room() {
        let f = Fake::new(&[(0x18, 0)]);
        Uart::Pl011.put(&f, b'A');
        assert_eq!(*f.writes.borrow(), vec![(0, 4, 0x41)]);
        let full = Fake::new(&[(0x18, 1 << 5)]);
        assert!(!Uart::Pl011.ready(&full));
    }

    #[test]
    fn dw_apb_uart_as_on_rk3588() {
        // reg-shift = 2, reg-io-width = 4: LSR at 0x14, 32-bit accesses.
        let u = Uart::Ns16550 { shift: 2, width: 4 };
        let f = Fake::new(&[(0x14, 1 << 5)]);
        assert!(u.ready(&f));
        u.put(&f, b'z');
        assert_eq!(*f.writes.borrow(), vec![(0, 4, b'z' as u32)]);
        assert_eq!(u.span(), 0x20);
    }

    #[test]
    fn plain_16550_byte_registers() {
        let u = Uart::Ns16550 { shift: 0, width: 1 };
        let busy = Fake::new(&[(5, 0)]);
        assert!(!u.ready(&busy));
        let f = Fake::new(&[(5, 0x60)]);
        u.put(&f, b'\n');
        assert_eq!(*f.writes.borrow(), vec![(0, 1, 10)]);
    }

    #[test]
    fn lpuart_data_register() {
        let f = Fake::new(&[(0x14, 1 << 23)]);
        Uart::Lpuart.put(&f, b'x');
        assert_eq!(*f.writes.borrow(), vec![(0x1c, 4, b'x' as u32)]);
    }

    #[test]
    fn wedged_uart_does_not_hang() {
        // Never ready: put gives up after READY_POLLS and still writes.
        let f = Fake::new(&[(0x18, 1 << 5)]);
        Uart::Pl011.put(&f, b'!');
        assert_eq!(f.writes.borrow().len(), 1);
    }

    #[test]
    fn dt_kinds_map() {
        use crate::dt::ConsoleKind;
        assert_eq!(Uart::from_dt(&ConsoleKind::Pl011), Some(Uart::Pl011));
        assert_eq!(
            Uart::from_dt(&ConsoleKind::Ns16550 { reg_shift: 2, reg_io_width: 4 }),
            Some(Uart::Ns16550 { shift: 2, width: 4 })
        );
        assert_eq!(Uart::from_dt(&ConsoleKind::Unknown("acme,uart".into())), None);
    }

    /// The consoles of the board DTBs resolve to drivable UARTs.
    #[test]
    fn board_consoles() {
        let rock = crate::dt::describe(include_bytes!("../tests/dt/boards/rk3588-rock-5b.dtb")).unwrap();
        let c = rock.console.expect("rock 5b console");
        assert_eq!(c.node, "/serial@feb50000");
        assert_eq!(c.base, 0xfeb5_0000);
        assert_eq!(Uart::from_dt(&c.kind), Some(Uart::Ns16550 { shift: 2, width: 4 }));
        let imx = crate::dt::describe(include_bytes!("../tests/dt/boards/imx95-19x19-evk.dtb")).unwrap();
        let c = imx.console.expect("imx95 console");
        assert_eq!(Uart::from_dt(&c.kind), Some(Uart::Lpuart));
        assert_eq!(c.base, 0x4438_0000);
    }
}
