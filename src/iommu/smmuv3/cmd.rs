//! SMMUv3 command queue entries (16 bytes = 2 x u64), the range-invalidation planner and
//! producer/consumer index arithmetic.
//!
//! Opcodes and field offsets follow the Arm SMMUv3 specification (IHI 0070, §4 "Commands"),
//! cross-checked with Linux `arm-smmu-v3.h` (`CMDQ_OP_*`, `CMDQ_*_0_*`, `CMDQ_*_1_*`) and
//! FreeBSD `smmureg.h` (`CMD_*`).

use core::fmt;

// ---- Opcodes (dword 0 bits [7:0]) ----
pub const OP_PREFETCH_CONFIG: u8 = 0x01;
pub const OP_PREFETCH_ADDR: u8 = 0x02;
pub const OP_CFGI_STE: u8 = 0x03;
pub const OP_CFGI_STE_RANGE: u8 = 0x04;
pub const OP_CFGI_CD: u8 = 0x05;
pub const OP_CFGI_CD_ALL: u8 = 0x06;
pub const OP_TLBI_NH_ALL: u8 = 0x10;
pub const OP_TLBI_NH_ASID: u8 = 0x11;
pub const OP_TLBI_NH_VA: u8 = 0x12;
pub const OP_TLBI_NH_VAA: u8 = 0x13;
pub const OP_TLBI_EL3_ALL: u8 = 0x18;
pub const OP_TLBI_EL3_VA: u8 = 0x1a;
pub const OP_TLBI_EL2_ALL: u8 = 0x20;
pub const OP_TLBI_EL2_ASID: u8 = 0x21;
pub const OP_TLBI_EL2_VA: u8 = 0x22;
pub const OP_TLBI_EL2_VAA: u8 = 0x23;
pub const OP_TLBI_S12_VMALL: u8 = 0x28;
pub const OP_TLBI_S2_IPA: u8 = 0x2a;
pub const OP_TLBI_NSNH_ALL: u8 = 0x30;
pub const OP_ATC_INV: u8 = 0x40;
pub const OP_PRI_RESP: u8 = 0x41;
pub const OP_RESUME: u8 = 0x44;
pub const OP_STALL_TERM: u8 = 0x45;
pub const OP_CMD_SYNC: u8 = 0x46;

// ---- Field positions ----
const OP_MASK: u64 = 0xff;
/// SSV, dword 0 bit 11.
const CMD0_SSV: u64 = 1 << 11;
/// SubstreamID, dword 0 bits [31:12].
const CMD0_SSID_SHIFT: u32 = 12;
const CMD0_SSID_MASK: u64 = 0xfffff << CMD0_SSID_SHIFT;
/// StreamID, dword 0 bits [63:32].
const CMD0_SID_SHIFT: u32 = 32;
/// Leaf, dword 1 bit 0 (CFGI_STE/CFGI_CD/TLBI_*VA*/TLBI_S2_IPA).
const CMD1_LEAF: u64 = 1 << 0;
/// CFGI_STE_RANGE Range, dword 1 bits [4:0].
const CMD1_RANGE_MASK: u64 = 0x1f;
// TLBI
const TLBI0_NUM_SHIFT: u32 = 12;
const TLBI0_SCALE_SHIFT: u32 = 20;
const TLBI0_VMID_SHIFT: u32 = 32;
const TLBI0_ASID_SHIFT: u32 = 48;
const TLBI1_TTL_SHIFT: u32 = 8;
const TLBI1_TG_SHIFT: u32 = 10;
/// VA[63:12].
const TLBI1_VA_MASK: u64 = !0xfff;
/// IPA[51:12].
const TLBI1_IPA_MASK: u64 = ((1 << 52) - 1) & !0xfff;
// CMD_SYNC
const SYNC0_CS_SHIFT: u32 = 12;
const SYNC0_MSH_SHIFT: u32 = 22;
const SYNC0_MSIATTR_SHIFT: u32 = 24;
const SYNC0_MSIDATA_SHIFT: u32 = 32;
/// MSIAddress[51:2].
const SYNC1_MSIADDR_MASK: u64 = ((1 << 52) - 1) & !0x3;

/// Maximum value of the 5-bit NUM and SCALE fields.
pub const TLBI_RANGE_NUM_MAX: u8 = 31;
pub const TLBI_RANGE_SCALE_MAX: u8 = 31;

/// Range/level hints of TLBI commands (TG != 0 makes it a range command; needs IDR3.RIL).
/// Invalidated range = (NUM + 1) * 2^SCALE * granule(TG), TTL = level hint (0 = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlbiRange {
    pub num: u8,
    pub scale: u8,
    /// 0: no range; 1: 4K, 2: 16K, 3: 64K.
    pub tg: u8,
    /// 0: unknown level; 1..=3: level of the leaf entries.
    pub ttl: u8,
}

impl TlbiRange {
    fn encode(&self, d0: &mut u64, d1: &mut u64) {
        *d0 |= ((self.num as u64 & 0x1f) << TLBI0_NUM_SHIFT) | ((self.scale as u64 & 0x1f) << TLBI0_SCALE_SHIFT);
        *d1 |= ((self.ttl as u64 & 3) << TLBI1_TTL_SHIFT) | ((self.tg as u64 & 3) << TLBI1_TG_SHIFT);
    }
    fn decode(d0: u64, d1: u64) -> TlbiRange {
        TlbiRange {
            num: ((d0 >> TLBI0_NUM_SHIFT) & 0x1f) as u8,
            scale: ((d0 >> TLBI0_SCALE_SHIFT) & 0x1f) as u8,
            ttl: ((d1 >> TLBI1_TTL_SHIFT) & 3) as u8,
            tg: ((d1 >> TLBI1_TG_SHIFT) & 3) as u8,
        }
    }
    fn is_none(&self) -> bool {
        *self == TlbiRange::default()
    }
}

/// CMD_SYNC completion signal (CS field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCs {
    /// No signal; poll CMDQ_CONS.
    None = 0,
    /// Signal an IRQ / write the MSI (MSIAddress, MSIData).
    Irq = 1,
    /// Send an event (SEV) on completion.
    Sev = 2,
}

/// An SMMUv3 command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    PrefetchConfig {
        sid: u32,
        ssid: Option<u32>,
    },
    CfgiSte {
        sid: u32,
        leaf: bool,
    },
    /// Invalidate 2^(range+1) STEs starting at `sid` aligned down to that size.
    CfgiSteRange {
        sid: u32,
        range: u8,
    },
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    /// CFGI_STE_RANGE with Range = 31: every cached configuration.
    CfgiAll,
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        asid: u16,
        vmid: u16,
    },
    TlbiNhVa {
        vmid: u16,
        asid: u16,
        addr: u64,
        leaf: bool,
        range: TlbiRange,
    },
    TlbiNhVaa {
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: TlbiRange,
    },
    TlbiEl2All,
    TlbiS12Vmall {
        vmid: u16,
    },
    TlbiS2Ipa {
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: TlbiRange,
    },
    TlbiNsnhAll,
    Sync {
        cs: SyncCs,
        msh: u8,
        msiattr: u8,
        msidata: u32,
        msiaddr: u64,
    },
}

impl Command {
    /// CMD_SYNC that completes silently (software polls CMDQ_CONS).
    pub const fn sync_none() -> Command {
        Command::Sync { cs: SyncCs::None, msh: 0, msiattr: 0, msidata: 0, msiaddr: 0 }
    }
    /// CMD_SYNC signalling completion with SEV (needs IDR0.SEV).
    pub const fn sync_sev() -> Command {
        Command::Sync { cs: SyncCs::Sev, msh: 0, msiattr: 0, msidata: 0, msiaddr: 0 }
    }
    /// CMD_SYNC completing with a 32-bit MSI write of `data` to `addr` (inner shareable,
    /// write-back cacheable), e.g. to clear a flag in normal memory.
    pub const fn sync_msi(addr: u64, data: u32) -> Command {
        Command::Sync { cs: SyncCs::Irq, msh: 3, msiattr: 0xf, msidata: data, msiaddr: addr }
    }

    pub const fn opcode(&self) -> u8 {
        match self {
            Command::PrefetchConfig { .. } => OP_PREFETCH_CONFIG,
            Command::CfgiSte { .. } => OP_CFGI_STE,
            Command::CfgiSteRange { .. } | Command::CfgiAll => OP_CFGI_STE_RANGE,
            Command::CfgiCd { .. } => OP_CFGI_CD,
            Command::CfgiCdAll { .. } => OP_CFGI_CD_ALL,
            Command::TlbiNhAll { .. } => OP_TLBI_NH_ALL,
            Command::TlbiNhAsid { .. } => OP_TLBI_NH_ASID,
            Command::TlbiNhVa { .. } => OP_TLBI_NH_VA,
            Command::TlbiNhVaa { .. } => OP_TLBI_NH_VAA,
            Command::TlbiEl2All => OP_TLBI_EL2_ALL,
            Command::TlbiS12Vmall { .. } => OP_TLBI_S12_VMALL,
            Command::TlbiS2Ipa { .. } => OP_TLBI_S2_IPA,
            Command::TlbiNsnhAll => OP_TLBI_NSNH_ALL,
            Command::Sync { .. } => OP_CMD_SYNC,
        }
    }

    /// Spec name of this command ("CFGI_ALL" for the all-range CFGI_STE_RANGE).
    pub const fn name(&self) -> &'static str {
        match self {
            Command::CfgiAll => "CFGI_ALL",
            _ => match opcode_name(self.opcode()) {
                Some(n) => n,
                None => "?",
            },
        }
    }

    pub fn encode(&self) -> [u64; 2] {
        let mut d0 = self.opcode() as u64;
        let mut d1 = 0u64;
        let sid = |s: u32| (s as u64) << CMD0_SID_SHIFT;
        let ssid = |s: u32| ((s as u64) << CMD0_SSID_SHIFT) & CMD0_SSID_MASK;
        let leaf = |l: bool| if l { CMD1_LEAF } else { 0 };
        match *self {
            Command::PrefetchConfig { sid: s, ssid: ss } => {
                d0 |= sid(s);
                if let Some(ss) = ss {
                    d0 |= CMD0_SSV | ssid(ss);
                }
            }
            Command::CfgiSte { sid: s, leaf: l } => {
                d0 |= sid(s);
                d1 |= leaf(l);
            }
            Command::CfgiSteRange { sid: s, range } => {
                d0 |= sid(s);
                d1 |= range as u64 & CMD1_RANGE_MASK;
            }
            Command::CfgiAll => d1 |= 31,
            Command::CfgiCd { sid: s, ssid: ss, leaf: l } => {
                d0 |= sid(s) | ssid(ss);
                d1 |= leaf(l);
            }
            Command::CfgiCdAll { sid: s } => d0 |= sid(s),
            Command::TlbiNhAll { vmid } | Command::TlbiS12Vmall { vmid } => {
                d0 |= (vmid as u64) << TLBI0_VMID_SHIFT;
            }
            Command::TlbiNhAsid { asid, vmid } => {
                d0 |= ((vmid as u64) << TLBI0_VMID_SHIFT) | ((asid as u64) << TLBI0_ASID_SHIFT);
            }
            Command::TlbiNhVa { vmid, asid, addr, leaf: l, range } => {
                d0 |= ((vmid as u64) << TLBI0_VMID_SHIFT) | ((asid as u64) << TLBI0_ASID_SHIFT);
                d1 |= leaf(l) | (addr & TLBI1_VA_MASK);
                range.encode(&mut d0, &mut d1);
            }
            Command::TlbiNhVaa { vmid, addr, leaf: l, range } => {
                d0 |= (vmid as u64) << TLBI0_VMID_SHIFT;
                d1 |= leaf(l) | (addr & TLBI1_VA_MASK);
                range.encode(&mut d0, &mut d1);
            }
            Command::TlbiS2Ipa { vmid, addr, leaf: l, range } => {
                d0 |= (vmid as u64) << TLBI0_VMID_SHIFT;
                d1 |= leaf(l) | (addr & TLBI1_IPA_MASK);
                range.encode(&mut d0, &mut d1);
            }
            Command::TlbiEl2All | Command::TlbiNsnhAll => {}
            Command::Sync { cs, msh, msiattr, msidata, msiaddr } => {
                d0 |= ((cs as u64) << SYNC0_CS_SHIFT)
                    | ((msh as u64 & 3) << SYNC0_MSH_SHIFT)
                    | ((msiattr as u64 & 0xf) << SYNC0_MSIATTR_SHIFT)
                    | ((msidata as u64) << SYNC0_MSIDATA_SHIFT);
                d1 |= msiaddr & SYNC1_MSIADDR_MASK;
            }
        }
        [d0, d1]
    }

    /// Decode a command read back from the queue (e.g. the one CMDQ_CONS points at after
    /// CMDQ_ERR). Unknown or unsupported opcodes give `None`.
    pub fn decode(raw: [u64; 2]) -> Option<Command> {
        let [d0, d1] = raw;
        let sid = (d0 >> CMD0_SID_SHIFT) as u32;
        let ssid = ((d0 & CMD0_SSID_MASK) >> CMD0_SSID_SHIFT) as u32;
        let leaf = d1 & CMD1_LEAF != 0;
        let vmid = (d0 >> TLBI0_VMID_SHIFT) as u16;
        let asid = (d0 >> TLBI0_ASID_SHIFT) as u16;
        Some(match (d0 & OP_MASK) as u8 {
            OP_PREFETCH_CONFIG => Command::PrefetchConfig { sid, ssid: (d0 & CMD0_SSV != 0).then_some(ssid) },
            OP_CFGI_STE => Command::CfgiSte { sid, leaf },
            OP_CFGI_STE_RANGE => match (d1 & CMD1_RANGE_MASK) as u8 {
                31 => Command::CfgiAll,
                range => Command::CfgiSteRange { sid, range },
            },
            OP_CFGI_CD => Command::CfgiCd { sid, ssid, leaf },
            OP_CFGI_CD_ALL => Command::CfgiCdAll { sid },
            OP_TLBI_NH_ALL => Command::TlbiNhAll { vmid },
            OP_TLBI_NH_ASID => Command::TlbiNhAsid { asid, vmid },
            OP_TLBI_NH_VA => {
                Command::TlbiNhVa { vmid, asid, addr: d1 & TLBI1_VA_MASK, leaf, range: TlbiRange::decode(d0, d1) }
            }
            OP_TLBI_NH_VAA => {
                Command::TlbiNhVaa { vmid, addr: d1 & TLBI1_VA_MASK, leaf, range: TlbiRange::decode(d0, d1) }
            }
            OP_TLBI_EL2_ALL => Command::TlbiEl2All,
            OP_TLBI_S12_VMALL => Command::TlbiS12Vmall { vmid },
            OP_TLBI_S2_IPA => {
                Command::TlbiS2Ipa { vmid, addr: d1 & TLBI1_IPA_MASK, leaf, range: TlbiRange::decode(d0, d1) }
            }
            OP_TLBI_NSNH_ALL => Command::TlbiNsnhAll,
            OP_CMD_SYNC => Command::Sync {
                cs: match (d0 >> SYNC0_CS_SHIFT) & 3 {
                    1 => SyncCs::Irq,
                    2 => SyncCs::Sev,
                    _ => SyncCs::None,
                },
                msh: ((d0 >> SYNC0_MSH_SHIFT) & 3) as u8,
                msiattr: ((d0 >> SYNC0_MSIATTR_SHIFT) & 0xf) as u8,
                msidata: (d0 >> SYNC0_MSIDATA_SHIFT) as u32,
                msiaddr: d1 & SYNC1_MSIADDR_MASK,
            },
            _ => return None,
        })
    }
}

/// Spec name of an opcode (including ones this module does not build).
pub const fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        OP_PREFETCH_CONFIG => "PREFETCH_CONFIG",
        OP_PREFETCH_ADDR => "PREFETCH_ADDR",
        OP_CFGI_STE => "CFGI_STE",
        OP_CFGI_STE_RANGE => "CFGI_STE_RANGE",
        OP_CFGI_CD => "CFGI_CD",
        OP_CFGI_CD_ALL => "CFGI_CD_ALL",
        OP_TLBI_NH_ALL => "TLBI_NH_ALL",
        OP_TLBI_NH_ASID => "TLBI_NH_ASID",
        OP_TLBI_NH_VA => "TLBI_NH_VA",
        OP_TLBI_NH_VAA => "TLBI_NH_VAA",
        OP_TLBI_EL3_ALL => "TLBI_EL3_ALL",
        OP_TLBI_EL3_VA => "TLBI_EL3_VA",
        OP_TLBI_EL2_ALL => "TLBI_EL2_ALL",
        OP_TLBI_EL2_ASID => "TLBI_EL2_ASID",
        OP_TLBI_EL2_VA => "TLBI_EL2_VA",
        OP_TLBI_EL2_VAA => "TLBI_EL2_VAA",
        OP_TLBI_S12_VMALL => "TLBI_S12_VMALL",
        OP_TLBI_S2_IPA => "TLBI_S2_IPA",
        OP_TLBI_NSNH_ALL => "TLBI_NSNH_ALL",
        OP_ATC_INV => "ATC_INV",
        OP_PRI_RESP => "PRI_RESP",
        OP_RESUME => "RESUME",
        OP_STALL_TERM => "STALL_TERM",
        OP_CMD_SYNC => "CMD_SYNC",
        _ => return None,
    })
}

/// Describe raw command words, e.g. for a CMDQ_ERR report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCommand(pub [u64; 2]);

impl fmt::Display for RawCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Command::decode(self.0) {
            Some(c) => write!(f, "{c}"),
            None => {
                let op = (self.0[0] & OP_MASK) as u8;
                match opcode_name(op) {
                    Some(n) => write!(f, "{n}")?,
                    None => write!(f, "opcode {op:#04x}")?,
                }
                write!(f, " [{:#018x} {:#018x}]", self.0[0], self.0[1])
            }
        }
    }
}

fn write_range(f: &mut fmt::Formatter<'_>, r: &TlbiRange) -> fmt::Result {
    if !r.is_none() {
        write!(f, " num={} scale={} tg={} ttl={}", r.num, r.scale, r.tg, r.ttl)?;
    }
    Ok(())
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let leaf = |f: &mut fmt::Formatter<'_>, l: bool| if l { f.write_str(" leaf") } else { Ok(()) };
        match *self {
            Command::PrefetchConfig { sid, ssid } => {
                write!(f, " sid={sid:#x}")?;
                if let Some(s) = ssid {
                    write!(f, " ssid={s:#x}")?;
                }
                Ok(())
            }
            Command::CfgiSte { sid, leaf: l } => {
                write!(f, " sid={sid:#x}")?;
                leaf(f, l)
            }
            Command::CfgiSteRange { sid, range } => write!(f, " sid={sid:#x} range={range}"),
            Command::CfgiCd { sid, ssid, leaf: l } => {
                write!(f, " sid={sid:#x} ssid={ssid:#x}")?;
                leaf(f, l)
            }
            Command::CfgiCdAll { sid } => write!(f, " sid={sid:#x}"),
            Command::CfgiAll | Command::TlbiEl2All | Command::TlbiNsnhAll => Ok(()),
            Command::TlbiNhAll { vmid } | Command::TlbiS12Vmall { vmid } => write!(f, " vmid={vmid}"),
            Command::TlbiNhAsid { asid, vmid } => write!(f, " asid={asid} vmid={vmid}"),
            Command::TlbiNhVa { vmid, asid, addr, leaf: l, range } => {
                write!(f, " asid={asid} vmid={vmid} addr={addr:#x}")?;
                leaf(f, l)?;
                write_range(f, &range)
            }
            Command::TlbiNhVaa { vmid, addr, leaf: l, range } => {
                write!(f, " vmid={vmid} addr={addr:#x}")?;
                leaf(f, l)?;
                write_range(f, &range)
            }
            Command::TlbiS2Ipa { vmid, addr, leaf: l, range } => {
                write!(f, " vmid={vmid} ipa={addr:#x}")?;
                leaf(f, l)?;
                write_range(f, &range)
            }
            Command::Sync { cs, msidata, msiaddr, .. } => match cs {
                SyncCs::None => f.write_str(" cs=none"),
                SyncCs::Sev => f.write_str(" cs=sev"),
                SyncCs::Irq => write!(f, " cs=irq msiaddr={msiaddr:#x} msidata={msidata:#x}"),
            },
        }
    }
}

/// One invalidation of a planned range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeOp {
    pub addr: u64,
    pub num: u8,
    pub scale: u8,
    pub tg: u8,
    pub ttl: u8,
}

impl RangeOp {
    pub const fn range(&self) -> TlbiRange {
        TlbiRange { num: self.num, scale: self.scale, tg: self.tg, ttl: self.ttl }
    }
    /// Stage-1 invalidation by VA for this op.
    pub const fn nh_va(&self, asid: u16, vmid: u16, leaf: bool) -> Command {
        Command::TlbiNhVa { vmid, asid, addr: self.addr, leaf, range: self.range() }
    }
    /// Stage-2 invalidation by IPA for this op.
    pub const fn s2_ipa(&self, vmid: u16, leaf: bool) -> Command {
        Command::TlbiS2Ipa { vmid, addr: self.addr, leaf, range: self.range() }
    }
    /// Bytes covered when `leaf_pgsize_log2` is the TG page size (range ops only).
    pub fn bytes(&self, leaf_pgsize_log2: u8) -> u64 {
        ((self.num as u64) + 1) << (self.scale as u32 + leaf_pgsize_log2 as u32)
    }
}

/// Iterator returned by [`plan_range_tlbi`].
#[derive(Debug, Clone)]
pub struct RangePlan {
    iova: u64,
    /// RIL: pages left to cover; non-RIL: commands left.
    remaining: u64,
    ril: bool,
    tg_log2: u32,
    tg: u8,
    ttl: u8,
    step_log2: u32,
}

impl RangePlan {
    /// No command left to plan.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }
}

impl Iterator for RangePlan {
    type Item = RangeOp;

    fn next(&mut self) -> Option<RangeOp> {
        if self.remaining == 0 {
            return None;
        }
        if !self.ril {
            let op = RangeOp { addr: self.iova, num: 0, scale: 0, tg: 0, ttl: 0 };
            self.remaining -= 1;
            self.iova = self.iova.wrapping_add(1u64 << self.step_log2);
            return Some(op);
        }
        // Take the lowest 5 set bits' worth of the remaining page count (Linux
        // __arm_smmu_tlb_inv_range): range = num * 2^scale pages.
        let tz = self.remaining.trailing_zeros();
        let (scale, num) = if tz > TLBI_RANGE_SCALE_MAX as u32 {
            let scale = TLBI_RANGE_SCALE_MAX as u32;
            (scale, (self.remaining >> scale).min(TLBI_RANGE_NUM_MAX as u64 + 1))
        } else {
            (tz, (self.remaining >> tz) & TLBI_RANGE_NUM_MAX as u64)
        };
        let pages = num << scale;
        let op = RangeOp { addr: self.iova, num: (num - 1) as u8, scale: scale as u8, tg: self.tg, ttl: self.ttl };
        self.remaining -= pages;
        self.iova = self.iova.wrapping_add(pages << self.tg_log2);
        Some(op)
    }
}

/// Plan the TLB invalidation of `[start, start + size)`.
///
/// * `granule_log2`: size of the entries being invalidated (12 for 4K pages, 21 for 2M
///   blocks...): used for the TTL hint, and as the step without RIL.
/// * `leaf_pgsize_log2`: the translation granule (smallest page size, 12/14/16) that sets TG.
/// * `ril`: SMMU_IDR3.RIL. With it, the range is covered by the fewest commands whose
///   size is (NUM+1) * 2^SCALE pages, taking the page count's set bits five at a time
///   from the least significant end (as Linux `__arm_smmu_tlb_inv_range` does), so the
///   number of commands is at most ceil(popcount-span / 5). TTL is the leaf level hint:
///   use it only for leaf invalidations (set `ttl` to 0 otherwise).
///   Without RIL: one command per `granule_log2`-sized step, TG = TTL = 0.
///
/// Start is rounded down and the end up to the page size. Never panics.
pub fn plan_range_tlbi(start: u64, size: u64, granule_log2: u8, leaf_pgsize_log2: u8, ril: bool) -> RangePlan {
    let pg = match leaf_pgsize_log2 {
        12 | 14 | 16 => leaf_pgsize_log2 as u32,
        _ => 12,
    };
    let gran = (granule_log2 as u32).clamp(pg, 63);
    let empty = RangePlan { iova: start, remaining: 0, ril, tg_log2: pg, tg: 0, ttl: 0, step_log2: gran };
    if size == 0 {
        return empty;
    }
    let last = start.saturating_add(size - 1);
    if ril {
        let first_pg = start >> pg;
        let last_pg = last >> pg;
        let pages = last_pg - first_pg + 1;
        let stride = pg - 3;
        let levels_below = (gran - 3) / stride;
        let ttl = if (1..=3).contains(&levels_below) { (4 - levels_below) as u8 } else { 0 };
        RangePlan {
            iova: first_pg << pg,
            remaining: pages,
            ril,
            tg_log2: pg,
            tg: ((pg - 10) / 2) as u8,
            ttl,
            step_log2: gran,
        }
    } else {
        let first = start >> gran;
        let last_g = last >> gran;
        RangePlan { iova: first << gran, remaining: last_g - first + 1, step_log2: gran, ..empty }
    }
}

/// Queue producer/consumer index arithmetic: `log2size` index bits, the wrap bit just
/// above them, and the overflow flag in bit 31 (Q_OVF) which index updates preserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueIndex {
    log2size: u8,
    /// `1 << min(log2size, 30)`: every index operation needs it, so it is computed once.
    entries: u32,
}

/// Overflow flag of EVENTQ/PRIQ PROD/CONS (and Linux's CMDQ owned flag).
pub const Q_OVF: u32 = 1 << 31;

impl QueueIndex {
    pub const fn new(log2size: u8) -> QueueIndex {
        let shift = if log2size > 30 { 30 } else { log2size as u32 };
        QueueIndex { log2size, entries: 1 << shift }
    }
    /// The queue's LOG2SIZE as programmed.
    pub fn log2size(&self) -> u8 {
        self.log2size
    }
    #[inline]
    pub fn entries(&self) -> u32 {
        self.entries
    }
    /// Q_IDX: slot number.
    pub fn idx(&self, p: u32) -> u32 {
        p & (self.entries() - 1)
    }
    /// Q_WRP: the wrap bit (non-zero when set).
    pub fn wrp(&self, p: u32) -> u32 {
        p & self.entries()
    }
    pub fn ovf(p: u32) -> u32 {
        p & Q_OVF
    }
    pub fn is_empty(&self, prod: u32, cons: u32) -> bool {
        self.idx(prod) == self.idx(cons) && self.wrp(prod) == self.wrp(cons)
    }
    pub fn is_full(&self, prod: u32, cons: u32) -> bool {
        self.idx(prod) == self.idx(cons) && self.wrp(prod) != self.wrp(cons)
    }
    /// Entries between cons and prod (0 if the pair is inconsistent).
    pub fn used(&self, prod: u32, cons: u32) -> u32 {
        self.entries() - self.space(prod, cons)
    }
    /// Free slots (0 if the pair is inconsistent, i.e. prod behind cons).
    pub fn space(&self, prod: u32, cons: u32) -> u32 {
        let (p, c) = (self.idx(prod), self.idx(cons));
        if self.wrp(prod) == self.wrp(cons) {
            if p >= c { self.entries() - (p - c) } else { 0 }
        } else {
            c.saturating_sub(p)
        }
    }
    /// Advance `p` by `n` slots, toggling the wrap bit on wrap-around; bit 31 is kept.
    pub fn inc(&self, p: u32, n: u32) -> u32 {
        let mask = (self.entries() << 1) - 1;
        let v = ((p & mask).wrapping_add(n)) & mask;
        Self::ovf(p) | v
    }
    /// True once `cons` has moved past the entry at `prod` (Linux `queue_consumed`).
    pub fn consumed(&self, cons: u32, prod: u32) -> bool {
        (self.wrp(cons) == self.wrp(prod) && self.idx(cons) > self.idx(prod))
            || (self.wrp(cons) != self.wrp(prod) && self.idx(cons) <= self.idx(prod))
    }
    /// The SMMU flagged an overflow not yet acknowledged (OVF(prod) != OVF(cons)).
    pub fn overflowed(prod: u32, cons: u32) -> bool {
        Self::ovf(prod) != Self::ovf(cons)
    }
    /// New CONS value acknowledging an overflow: copy prod's OVF flag into cons.
    pub fn ack_overflow(&self, prod: u32, cons: u32) -> u32 {
        let mask = (self.entries() << 1) - 1;
        Self::ovf(prod) | (cons & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    #[test]
    fn opcode_numbers() {
        let cases: [(Command, u8); 15] = [
            (Command::PrefetchConfig { sid: 1, ssid: None }, 0x01),
            (Command::CfgiSte { sid: 1, leaf: true }, 0x03),
            (Command::CfgiSteRange { sid: 0, range: 4 }, 0x04),
            (Command::CfgiAll, 0x04),
            (Command::CfgiCd { sid: 1, ssid: 0, leaf: true }, 0x05),
            (Command::CfgiCdAll { sid: 1 }, 0x06),
            (Command::TlbiNhAll { vmid: 0 }, 0x10),
            (Command::TlbiNhAsid { asid: 1, vmid: 0 }, 0x11),
            (Command::TlbiNhVa { vmid: 0, asid: 1, addr: 0, leaf: true, range: TlbiRange::default() }, 0x12),
            (Command::TlbiNhVaa { vmid: 0, addr: 0, leaf: false, range: TlbiRange::default() }, 0x13),
            (Command::TlbiEl2All, 0x20),
            (Command::TlbiS12Vmall { vmid: 3 }, 0x28),
            (Command::TlbiS2Ipa { vmid: 3, addr: 0, leaf: true, range: TlbiRange::default() }, 0x2a),
            (Command::TlbiNsnhAll, 0x30),
            (Command::sync_none(), 0x46),
        ];
        for (c, op) in cases {
            assert_eq!(c.encode()[0] & 0xff, op as u64, "{c}");
            assert_eq!(Command::decode(c.encode()), Some(c), "roundtrip {c}");
        }
        assert_eq!(Command::decode([0x99, 0]), None);
    }

    #[test]
    fn field_offsets() {
        // CFGI_STE: SID [63:32], Leaf dword1[0]
        assert_eq!(Command::CfgiSte { sid: 0x1234, leaf: true }.encode(), [0x1234 << 32 | 0x03, 1]);
        // CFGI_ALL == CFGI_STE_RANGE with Range = 31 in dword1 [4:0]
        assert_eq!(Command::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(Command::CfgiSteRange { sid: 0x100, range: 7 }.encode(), [0x100 << 32 | 0x04, 7]);
        // CFGI_CD: SSID [31:12]
        assert_eq!(
            Command::CfgiCd { sid: 2, ssid: 0xfffff, leaf: false }.encode(),
            [2 << 32 | 0xfffff << 12 | 0x05, 0]
        );
        // PREFETCH_CONFIG with substream: SSV bit 11
        assert_eq!(Command::PrefetchConfig { sid: 7, ssid: Some(3) }.encode(), [7 << 32 | 3 << 12 | 1 << 11 | 0x01, 0]);
        // TLBI_NH_ASID: VMID [47:32], ASID [63:48]
        assert_eq!(Command::TlbiNhAsid { asid: 0xabcd, vmid: 0x12 }.encode()[0], 0xabcd << 48 | 0x12 << 32 | 0x11);
        // TLBI_NH_VA with range: NUM [16:12], SCALE [24:20]; TTL [9:8], TG [11:10], VA [63:12]
        let c = Command::TlbiNhVa {
            vmid: 1,
            asid: 2,
            addr: 0xffff_8000_1234_5000,
            leaf: true,
            range: TlbiRange { num: 31, scale: 31, tg: 1, ttl: 3 },
        };
        assert_eq!(
            c.encode(),
            [2 << 48 | 1 << 32 | 31 << 20 | 31 << 12 | 0x12, 0xffff_8000_1234_5000 | 1 << 10 | 3 << 8 | 1]
        );
        // TLBI_S2_IPA: IPA [51:12] only
        let c = Command::TlbiS2Ipa { vmid: 9, addr: 0xfff0_0000_0000_1fff, leaf: false, range: TlbiRange::default() };
        assert_eq!(c.encode(), [9 << 32 | 0x2a, 0x0000_0000_0000_1000]);
        // CMD_SYNC: CS [13:12], MSH [23:22], MSIATTR [27:24], MSIDATA [63:32], MSIADDR [51:2]
        assert_eq!(Command::sync_sev().encode(), [2 << 12 | 0x46, 0]);
        assert_eq!(
            Command::sync_msi(0x4000_0004, 0xdead).encode(),
            [0xdead << 32 | 0xf << 24 | 3 << 22 | 1 << 12 | 0x46, 0x4000_0004]
        );
        // All-ones decode of every opcode: no panic, and display works.
        for op in 0..=255u64 {
            if let Some(c) = Command::decode([u64::MAX << 8 | op, u64::MAX]) {
                let _ = format!("{c}");
            }
            let _ = format!("{}", RawCommand([op, 0]));
        }
    }

    #[test]
    fn display() {
        let c = Command::TlbiNhVa { vmid: 0, asid: 1, addr: 0x10000, leaf: true, range: TlbiRange::default() };
        assert_eq!(format!("{c}"), "TLBI_NH_VA asid=1 vmid=0 addr=0x10000 leaf");
        assert_eq!(format!("{}", Command::CfgiSte { sid: 8, leaf: true }), "CFGI_STE sid=0x8 leaf");
        assert_eq!(format!("{}", Command::CfgiAll), "CFGI_ALL");
        assert_eq!(format!("{}", Command::sync_sev()), "CMD_SYNC cs=sev");
        assert_eq!(format!("{}", RawCommand([0x40, 0x1])), "ATC_INV [0x0000000000000040 0x0000000000000001]");
        assert_eq!(format!("{}", RawCommand([0x7f, 0])), "opcode 0x7f [0x000000000000007f 0x0000000000000000]");
        let c = Command::TlbiS2Ipa {
            vmid: 2,
            addr: 0x2000,
            leaf: true,
            range: TlbiRange { num: 0, scale: 9, tg: 1, ttl: 3 },
        };
        assert_eq!(format!("{c}"), "TLBI_S2_IPA vmid=2 ipa=0x2000 leaf num=0 scale=9 tg=1 ttl=3");
    }

    fn covered(ops: &[RangeOp], pg: u8) -> (u64, u64) {
        // contiguous coverage check
        let mut at = ops[0].addr;
        for o in ops {
            assert_eq!(o.addr, at, "ops must be contiguous");
            at += o.bytes(pg);
        }
        (ops[0].addr, at)
    }

    #[test]
    fn range_planner() {
        let ops: Vec<_> = plan_range_tlbi(0x10_0000, 512 * 4096, 12, 12, true).collect();
        assert_eq!(ops, [RangeOp { addr: 0x10_0000, num: 0, scale: 9, tg: 1, ttl: 3 }]);
        let ops: Vec<_> = plan_range_tlbi(0, 262_144 * 4096, 12, 12, true).collect();
        assert_eq!(ops.len(), 1);
        assert_eq!((ops[0].num, ops[0].scale), (0, 18));
        // 0b1_0110_1011_0101 pages -> set bits spread over 13 bit positions -> 3 commands
        let n = 0b1_0110_1011_0101u64;
        let ops: Vec<_> = plan_range_tlbi(0x4000_0000, n * 4096, 12, 12, true).collect();
        assert!(ops.len() <= 3, "{ops:?}");
        assert_eq!(covered(&ops, 12), (0x4000_0000, 0x4000_0000 + n * 4096));
        for o in &ops {
            assert!(o.num <= 31 && o.scale <= 31);
        }
        // Without RIL: one per page.
        assert_eq!(plan_range_tlbi(0x10_0000, 512 * 4096, 12, 12, false).count(), 512);
        let v: Vec<_> = plan_range_tlbi(0x10_0000, 3 * 4096, 12, 12, false).map(|o| o.addr).collect();
        assert_eq!(v, [0x10_0000, 0x10_1000, 0x10_2000]);
        // Without RIL, 2M blocks: step by granule.
        assert_eq!(plan_range_tlbi(0x4000_0000, 8 << 20, 21, 12, false).count(), 4);
        // TTL for 2M blocks with 4K tg = level 2; 64K tg -> tg=3
        let o = plan_range_tlbi(0, 2 << 20, 21, 12, true).next().unwrap();
        assert_eq!((o.tg, o.ttl, o.num, o.scale), (1, 2, 0, 9));
        let o = plan_range_tlbi(0, 64 << 10, 16, 16, true).next().unwrap();
        assert_eq!((o.tg, o.ttl, o.num, o.scale), (3, 3, 0, 0));
        // Unaligned start/size rounds outward.
        let ops: Vec<_> = plan_range_tlbi(0x1800, 0x1000, 12, 12, true).collect();
        assert_eq!(covered(&ops, 12), (0x1000, 0x3000));
        // Empty and huge ranges.
        assert_eq!(plan_range_tlbi(0, 0, 12, 12, true).count(), 0);
        let ops: Vec<_> = plan_range_tlbi(0, 1 << 52, 12, 12, true).collect();
        assert_eq!(covered(&ops, 12), (0, 1 << 52));
        // One command covers at most 32 * 2^31 4K pages (2^48 bytes).
        assert_eq!(ops.len(), 16);
        assert_eq!(plan_range_tlbi(0, 1 << 48, 12, 12, true).count(), 1);
        let ops: Vec<_> = plan_range_tlbi(0, u64::MAX, 12, 12, true).collect();
        assert_eq!(ops.len(), 1 << 16);
        let total: u128 = ops.iter().map(|o| ((o.num as u128) + 1) << (o.scale as u32 + 12)).sum();
        assert_eq!(total, 1u128 << 64);
        // Random sizes: always contiguous and exact.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pages = (x >> 20) % 100_000 + 1;
            let start = (x & 0xffff_f000) << 8;
            let ops: Vec<_> = plan_range_tlbi(start, pages << 12, 12, 12, true).collect();
            assert_eq!(covered(&ops, 12), (start, start + (pages << 12)));
            assert!(ops.len() as u32 <= 64 - pages.leading_zeros());
        }
        let op = plan_range_tlbi(0x5000, 4096, 12, 12, true).next().unwrap();
        assert_eq!(
            op.nh_va(3, 0, true),
            Command::TlbiNhVa {
                vmid: 0,
                asid: 3,
                addr: 0x5000,
                leaf: true,
                range: TlbiRange { num: 0, scale: 0, tg: 1, ttl: 3 }
            }
        );
    }

    #[test]
    fn queue_index() {
        let q = QueueIndex::new(3); // 8 entries
        assert_eq!(q.entries(), 8);
        assert!(q.is_empty(0, 0));
        assert_eq!(q.space(0, 0), 8);
        let p = q.inc(0, 8);
        assert_eq!(p, 8); // wrap bit set, idx 0
        assert!(q.is_full(p, 0));
        assert_eq!(q.space(p, 0), 0);
        assert_eq!(q.used(p, 0), 8);
        // wrap around twice returns to 0
        assert_eq!(q.inc(p, 8), 0);
        // 6 -> +3 => idx 1 with wrap
        assert_eq!(q.inc(6, 3), 8 | 1);
        assert_eq!(q.space(8 | 1, 6), 5);
        assert_eq!(q.used(8 | 1, 6), 3);
        // OVF preserved, ignored for indices
        let p = Q_OVF | 5;
        assert_eq!(q.inc(p, 4), Q_OVF | 8 | 1);
        assert!(q.is_empty(Q_OVF | 5, 5));
        assert!(QueueIndex::overflowed(Q_OVF | 5, 5));
        assert_eq!(q.ack_overflow(Q_OVF | 5, 3), Q_OVF | 3);
        // consumed
        assert!(q.consumed(3, 2));
        assert!(!q.consumed(2, 2));
        assert!(q.consumed(8 | 1, 7));
        // inconsistent pairs: no panic, zero space
        assert_eq!(q.space(1, 5), 0);
        assert_eq!(q.space(8 | 5, 1), 0);
        // model check against a counter
        let q = QueueIndex::new(4);
        let (mut prod, mut cons, mut n) = (0u32, 0u32, 0u32);
        let mut x = 12345u32;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x & 1 == 0 {
                let k = (x >> 8) % (q.space(prod, cons) + 1);
                prod = q.inc(prod, k);
                n += k;
            } else {
                let k = (x >> 8) % (q.used(prod, cons) + 1);
                cons = q.inc(cons, k);
                n -= k;
            }
            assert_eq!(q.used(prod, cons), n);
            assert_eq!(q.is_empty(prod, cons), n == 0);
            assert_eq!(q.is_full(prod, cons), n == 16);
        }
        // absurd sizes clamp instead of overflowing
        let q = QueueIndex::new(200);
        assert_eq!(q.entries(), 1 << 30);
        let _ = q.inc(u32::MAX, u32::MAX);
    }
}
