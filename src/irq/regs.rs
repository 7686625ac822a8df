//! The GICv3 registers the `arm-gic` crate does not drive for us, as typed register
//! blocks: GICD_CTLR (bounded RWP waits), the redistributor's RD frame (WAKER, LPIs) and the ITS.

use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields![u32,
    /// GICD_CTLR as seen from Non-secure (or with DS=1: EnableGrp0/EnableGrp1/ARE).
    pub GICD_CTLR [
        ENABLE_GRP1 OFFSET(0) NUMBITS(1) [],
        ENABLE_GRP1A OFFSET(1) NUMBITS(1) [],
        ARE_NS OFFSET(4) NUMBITS(1) [],
        DS OFFSET(6) NUMBITS(1) [],
        RWP OFFSET(31) NUMBITS(1) [],
    ],
    pub GICR_CTLR [
        ENABLE_LPIS OFFSET(0) NUMBITS(1) [],
        RWP OFFSET(3) NUMBITS(1) [],
    ],
    pub GICR_WAKER [
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
    ],
    pub GITS_CTLR [
        ENABLED OFFSET(0) NUMBITS(1) [],
        QUIESCENT OFFSET(31) NUMBITS(1) [],
    ],
];

register_bitfields![u64,
    pub GICR_TYPER [
        PLPIS OFFSET(0) NUMBITS(1) [],
        VLPIS OFFSET(1) NUMBITS(1) [],
        LAST OFFSET(4) NUMBITS(1) [],
        PROCESSOR_NUMBER OFFSET(8) NUMBITS(16) [],
        AFFINITY OFFSET(32) NUMBITS(32) [],
    ],
    pub GITS_TYPER [
        PHYSICAL OFFSET(0) NUMBITS(1) [],
        ITT_ENTRY_SIZE OFFSET(4) NUMBITS(4) [],
        ID_BITS OFFSET(8) NUMBITS(5) [],
        DEV_BITS OFFSET(13) NUMBITS(5) [],
        PTA OFFSET(19) NUMBITS(1) [],
        HCC OFFSET(24) NUMBITS(8) [],
        CID_BITS OFFSET(32) NUMBITS(4) [],
        CIL OFFSET(36) NUMBITS(1) [],
    ],
    pub GITS_CREADR [
        STALLED OFFSET(0) NUMBITS(1) [],
        OFFSET OFFSET(5) NUMBITS(15) [],
    ],
];

register_structs! {
    /// GICD_CTLR (the rest of the distributor frame belongs to `arm_gic`).
    pub GicdHead {
        (0x00 => pub ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x04 => @END),
    }
}

register_structs! {
    /// The RD_base frame of one redistributor (the SGI_base frame belongs to `arm_gic`).
    pub GicrRd {
        (0x00 => pub ctlr: ReadWrite<u32, GICR_CTLR::Register>),
        (0x04 => pub iidr: ReadOnly<u32>),
        (0x08 => pub typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x10 => pub statusr: ReadWrite<u32>),
        (0x14 => pub waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x18 => _r0),
        (0x70 => pub propbaser: ReadWrite<u64>),
        (0x78 => pub pendbaser: ReadWrite<u64>),
        (0x80 => @END),
    }
}

register_structs! {
    /// ITS control frame (the translation frame, 64 KiB further, holds GITS_TRANSLATER).
    pub GitsRegs {
        (0x000 => pub ctlr: ReadWrite<u32, GITS_CTLR::Register>),
        (0x004 => pub iidr: ReadOnly<u32>),
        (0x008 => pub typer: ReadOnly<u64, GITS_TYPER::Register>),
        (0x010 => _r0),
        (0x080 => pub cbaser: ReadWrite<u64>),
        (0x088 => pub cwriter: ReadWrite<u64>),
        (0x090 => pub creadr: ReadOnly<u64, GITS_CREADR::Register>),
        (0x098 => _r1),
        (0x100 => pub baser: [ReadWrite<u64>; 8]),
        (0x140 => @END),
    }
}

/// Offset of the SGI_base frame from RD_base, and of the ITS translation frame.
pub const FRAME_64K: u64 = 0x1_0000;
/// GITS_TRANSLATER inside the translation frame.
pub const TRANSLATER_OFFSET: u64 = 0x40;

/// Memory attributes for GIC tables (GITS_BASER, GITS_CBASER, GICR_PROPBASER/PENDBASER):
/// Inner Shareable, inner write-back read/write-allocate, outer same as inner.
pub const SH_INNER: u64 = 1 << 10;
pub const SH_MASK: u64 = 3 << 10;
/// InnerCache field value 0b111 (RaWaWb) at bit 59 (ITS) or bit 7 (redistributor).
pub const ITS_RAWAWB: u64 = 7 << 59;
pub const RD_RAWAWB: u64 = 7 << 7;
