//! SMMUv3 programming interface (IHI 0070, chapter 6) as typed register blocks:
//! page 0 holds control and queue bases, page 1 the event/PRI queue indices.

use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_bitfields![u32,
    pub CR0 [
        SMMUEN OFFSET(0) NUMBITS(1) [],
        PRIQEN OFFSET(1) NUMBITS(1) [],
        EVTQEN OFFSET(2) NUMBITS(1) [],
        CMDQEN OFFSET(3) NUMBITS(1) [],
        ATSCHK OFFSET(4) NUMBITS(1) [],
    ],
    pub CR1 [
        QUEUE_IC OFFSET(0) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        QUEUE_OC OFFSET(2) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        QUEUE_SH OFFSET(4) NUMBITS(2) [Non = 0, Outer = 2, Inner = 3],
        TABLE_IC OFFSET(6) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        TABLE_OC OFFSET(8) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        TABLE_SH OFFSET(10) NUMBITS(2) [Non = 0, Outer = 2, Inner = 3],
    ],
    pub CR2 [
        E2H OFFSET(0) NUMBITS(1) [],
        RECINVSID OFFSET(1) NUMBITS(1) [],
        PTM OFFSET(2) NUMBITS(1) [],
    ],
    pub GBPA [
        MEMATTR OFFSET(0) NUMBITS(4) [],
        MTCFG OFFSET(4) NUMBITS(1) [],
        ALLOCCFG OFFSET(8) NUMBITS(4) [],
        SHCFG OFFSET(12) NUMBITS(2) [NonShareable = 0, UseIncoming = 1, Outer = 2, Inner = 3],
        PRIVCFG OFFSET(16) NUMBITS(2) [],
        INSTCFG OFFSET(18) NUMBITS(2) [],
        ABORT OFFSET(20) NUMBITS(1) [],
        UPDATE OFFSET(31) NUMBITS(1) [],
    ],
    pub IRQ_CTRL [
        GERROR_IRQEN OFFSET(0) NUMBITS(1) [],
        PRIQ_IRQEN OFFSET(1) NUMBITS(1) [],
        EVENTQ_IRQEN OFFSET(2) NUMBITS(1) [],
    ],
    pub STRTAB_BASE_CFG [
        LOG2SIZE OFFSET(0) NUMBITS(6) [],
        SPLIT OFFSET(6) NUMBITS(5) [],
        FMT OFFSET(16) NUMBITS(2) [Linear = 0, TwoLevel = 1],
    ],
];

register_bitfields![u64,
    pub STRTAB_BASE [
        ADDR OFFSET(6) NUMBITS(46) [],
        RA OFFSET(62) NUMBITS(1) [],
    ],
    pub Q_BASE [
        LOG2SIZE OFFSET(0) NUMBITS(5) [],
        ADDR OFFSET(5) NUMBITS(47) [],
        RA OFFSET(62) NUMBITS(1) [],
    ],
];

register_structs! {
    pub Page0 {
        (0x00 => pub idr: [ReadOnly<u32>; 6]),
        (0x18 => pub iidr: ReadOnly<u32>),
        (0x1c => pub aidr: ReadOnly<u32>),
        (0x20 => pub cr0: ReadWrite<u32, CR0::Register>),
        (0x24 => pub cr0ack: ReadOnly<u32, CR0::Register>),
        (0x28 => pub cr1: ReadWrite<u32, CR1::Register>),
        (0x2c => pub cr2: ReadWrite<u32, CR2::Register>),
        (0x30 => _r0),
        (0x40 => pub statusr: ReadOnly<u32>),
        (0x44 => pub gbpa: ReadWrite<u32, GBPA::Register>),
        (0x48 => pub agbpa: ReadWrite<u32>),
        (0x4c => _r1),
        (0x50 => pub irq_ctrl: ReadWrite<u32, IRQ_CTRL::Register>),
        (0x54 => pub irq_ctrlack: ReadOnly<u32, IRQ_CTRL::Register>),
        (0x58 => _r2),
        (0x60 => pub gerror: ReadOnly<u32>),
        (0x64 => pub gerrorn: ReadWrite<u32>),
        (0x68 => pub gerror_irq_cfg0: ReadWrite<u64>),
        (0x70 => pub gerror_irq_cfg1: ReadWrite<u32>),
        (0x74 => pub gerror_irq_cfg2: ReadWrite<u32>),
        (0x78 => _r3),
        (0x80 => pub strtab_base: ReadWrite<u64, STRTAB_BASE::Register>),
        (0x88 => pub strtab_base_cfg: ReadWrite<u32, STRTAB_BASE_CFG::Register>),
        (0x8c => _r4),
        (0x90 => pub cmdq_base: ReadWrite<u64, Q_BASE::Register>),
        (0x98 => pub cmdq_prod: ReadWrite<u32>),
        (0x9c => pub cmdq_cons: ReadWrite<u32>),
        (0xa0 => pub eventq_base: ReadWrite<u64, Q_BASE::Register>),
        (0xa8 => pub eventq_prod_p0: ReadWrite<u32>),
        (0xac => pub eventq_cons_p0: ReadWrite<u32>),
        (0xb0 => pub eventq_irq_cfg0: ReadWrite<u64>),
        (0xb8 => pub eventq_irq_cfg1: ReadWrite<u32>),
        (0xbc => pub eventq_irq_cfg2: ReadWrite<u32>),
        (0xc0 => pub priq_base: ReadWrite<u64, Q_BASE::Register>),
        (0xc8 => pub priq_prod_p0: ReadWrite<u32>),
        (0xcc => pub priq_cons_p0: ReadWrite<u32>),
        (0xd0 => @END),
    }
}

register_structs! {
    /// Page 1 (offset 0x10000): the event and PRI queue indices software polls.
    pub Page1 {
        (0x00 => _r0),
        (0xa8 => pub eventq_prod: ReadWrite<u32>),
        (0xac => pub eventq_cons: ReadWrite<u32>),
        (0xb0 => _r1),
        (0xc8 => pub priq_prod: ReadWrite<u32>),
        (0xcc => pub priq_cons: ReadWrite<u32>),
        (0xd0 => @END),
    }
}

/// Offset of page 1 from the SMMU base.
pub const PAGE1_OFFSET: u64 = 0x1_0000;
/// GERROR bit for a command queue error (CMDQ_CONS.ERR says which).
pub const GERROR_CMDQ_ERR: u32 = 1 << 0;
