//! Event queue records (32 bytes = 4 x u64), GERROR and CMDQ_CONS.ERR decoding.
//!
//! Event numbers and record fields follow the Arm SMMUv3 specification (IHI 0070, §7.3
//! "Event records"), cross-checked with Linux `arm-smmu-v3.h` (`EVTQ_*`, `EVT_ID_*`) and
//! the Linux ivpu driver's full `IVPU_MMU_EVT_*` list. Common layout:
//! dword 0: Type \[7:0\], SSV \[11\], SubstreamID \[31:12\], StreamID \[63:32\];
//! dword 1: STAG \[15:0\], Stall \[31\], PnU \[33\], InD \[34\], RnW \[35\], S2 \[39\], CLASS \[41:40\];
//! dword 2: InputAddr \[63:0\];
//! dword 3: IPA \[51:12\] (translation-class faults) or FetchAddr \[51:3\] (fetch aborts).

use core::fmt;

pub const EVT_F_UUT: u8 = 0x01;
pub const EVT_C_BAD_STREAMID: u8 = 0x02;
pub const EVT_F_STE_FETCH: u8 = 0x03;
pub const EVT_C_BAD_STE: u8 = 0x04;
pub const EVT_F_BAD_ATS_TREQ: u8 = 0x05;
pub const EVT_F_STREAM_DISABLED: u8 = 0x06;
pub const EVT_F_TRANSL_FORBIDDEN: u8 = 0x07;
pub const EVT_C_BAD_SUBSTREAMID: u8 = 0x08;
pub const EVT_F_CD_FETCH: u8 = 0x09;
pub const EVT_C_BAD_CD: u8 = 0x0a;
pub const EVT_F_WALK_EABT: u8 = 0x0b;
pub const EVT_F_TRANSLATION: u8 = 0x10;
pub const EVT_F_ADDR_SIZE: u8 = 0x11;
pub const EVT_F_ACCESS: u8 = 0x12;
pub const EVT_F_PERMISSION: u8 = 0x13;
pub const EVT_F_TLB_CONFLICT: u8 = 0x20;
pub const EVT_F_CFG_CONFLICT: u8 = 0x21;
pub const EVT_E_PAGE_REQUEST: u8 = 0x24;
pub const EVT_F_VMS_FETCH: u8 = 0x25;

const EVT0_ID_MASK: u64 = 0xff;
const EVT0_SSV: u64 = 1 << 11;
const EVT0_SSID_SHIFT: u32 = 12;
const EVT0_SSID_MASK: u64 = 0xfffff;
const EVT0_SID_SHIFT: u32 = 32;
const EVT1_STAG_MASK: u64 = 0xffff;
const EVT1_STALL: u64 = 1 << 31;
const EVT1_PNU: u64 = 1 << 33;
const EVT1_IND: u64 = 1 << 34;
const EVT1_RNW: u64 = 1 << 35;
const EVT1_S2: u64 = 1 << 39;
const EVT1_CLASS_SHIFT: u32 = 40;
/// IPA[51:12].
const EVT3_IPA_MASK: u64 = ((1 << 52) - 1) & !0xfff;
/// FetchAddr[51:3].
const EVT3_FETCH_ADDR_MASK: u64 = ((1 << 52) - 1) & !0x7;

/// Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    FUut,
    CBadStreamId,
    FSteFetch,
    CBadSte,
    FBadAtsTreq,
    FStreamDisabled,
    FTranslForbidden,
    CBadSubstreamId,
    FCdFetch,
    CBadCd,
    FWalkEabt,
    FTranslation,
    FAddrSize,
    FAccess,
    FPermission,
    FTlbConflict,
    FCfgConflict,
    EPageRequest,
    FVmsFetch,
    /// Reserved or IMPLEMENTATION DEFINED type.
    Unknown(u8),
}

impl EventKind {
    pub const fn from_id(id: u8) -> EventKind {
        match id {
            EVT_F_UUT => EventKind::FUut,
            EVT_C_BAD_STREAMID => EventKind::CBadStreamId,
            EVT_F_STE_FETCH => EventKind::FSteFetch,
            EVT_C_BAD_STE => EventKind::CBadSte,
            EVT_F_BAD_ATS_TREQ => EventKind::FBadAtsTreq,
            EVT_F_STREAM_DISABLED => EventKind::FStreamDisabled,
            EVT_F_TRANSL_FORBIDDEN => EventKind::FTranslForbidden,
            EVT_C_BAD_SUBSTREAMID => EventKind::CBadSubstreamId,
            EVT_F_CD_FETCH => EventKind::FCdFetch,
            EVT_C_BAD_CD => EventKind::CBadCd,
            EVT_F_WALK_EABT => EventKind::FWalkEabt,
            EVT_F_TRANSLATION => EventKind::FTranslation,
            EVT_F_ADDR_SIZE => EventKind::FAddrSize,
            EVT_F_ACCESS => EventKind::FAccess,
            EVT_F_PERMISSION => EventKind::FPermission,
            EVT_F_TLB_CONFLICT => EventKind::FTlbConflict,
            EVT_F_CFG_CONFLICT => EventKind::FCfgConflict,
            EVT_E_PAGE_REQUEST => EventKind::EPageRequest,
            EVT_F_VMS_FETCH => EventKind::FVmsFetch,
            x => EventKind::Unknown(x),
        }
    }

    pub const fn id(self) -> u8 {
        match self {
            EventKind::FUut => EVT_F_UUT,
            EventKind::CBadStreamId => EVT_C_BAD_STREAMID,
            EventKind::FSteFetch => EVT_F_STE_FETCH,
            EventKind::CBadSte => EVT_C_BAD_STE,
            EventKind::FBadAtsTreq => EVT_F_BAD_ATS_TREQ,
            EventKind::FStreamDisabled => EVT_F_STREAM_DISABLED,
            EventKind::FTranslForbidden => EVT_F_TRANSL_FORBIDDEN,
            EventKind::CBadSubstreamId => EVT_C_BAD_SUBSTREAMID,
            EventKind::FCdFetch => EVT_F_CD_FETCH,
            EventKind::CBadCd => EVT_C_BAD_CD,
            EventKind::FWalkEabt => EVT_F_WALK_EABT,
            EventKind::FTranslation => EVT_F_TRANSLATION,
            EventKind::FAddrSize => EVT_F_ADDR_SIZE,
            EventKind::FAccess => EVT_F_ACCESS,
            EventKind::FPermission => EVT_F_PERMISSION,
            EventKind::FTlbConflict => EVT_F_TLB_CONFLICT,
            EventKind::FCfgConflict => EVT_F_CFG_CONFLICT,
            EventKind::EPageRequest => EVT_E_PAGE_REQUEST,
            EventKind::FVmsFetch => EVT_F_VMS_FETCH,
            EventKind::Unknown(x) => x,
        }
    }

    /// Spec name ("EVT_0xNN" style is produced by Display for unknown types).
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::FUut => "F_UUT",
            EventKind::CBadStreamId => "C_BAD_STREAMID",
            EventKind::FSteFetch => "F_STE_FETCH",
            EventKind::CBadSte => "C_BAD_STE",
            EventKind::FBadAtsTreq => "F_BAD_ATS_TREQ",
            EventKind::FStreamDisabled => "F_STREAM_DISABLED",
            EventKind::FTranslForbidden => "F_TRANSL_FORBIDDEN",
            EventKind::CBadSubstreamId => "C_BAD_SUBSTREAMID",
            EventKind::FCdFetch => "F_CD_FETCH",
            EventKind::CBadCd => "C_BAD_CD",
            EventKind::FWalkEabt => "F_WALK_EABT",
            EventKind::FTranslation => "F_TRANSLATION",
            EventKind::FAddrSize => "F_ADDR_SIZE",
            EventKind::FAccess => "F_ACCESS",
            EventKind::FPermission => "F_PERMISSION",
            EventKind::FTlbConflict => "F_TLB_CONFLICT",
            EventKind::FCfgConflict => "F_CFG_CONFLICT",
            EventKind::EPageRequest => "E_PAGE_REQUEST",
            EventKind::FVmsFetch => "F_VMS_FETCH",
            EventKind::Unknown(_) => "EVT_UNKNOWN",
        }
    }

    /// Translation-class faults carrying STAG/Stall/PnU/InD/RnW/S2/CLASS/InputAddr/IPA.
    pub const fn is_translation_fault(self) -> bool {
        matches!(self, EventKind::FTranslation | EventKind::FAddrSize | EventKind::FAccess | EventKind::FPermission)
    }

    /// Record carries access attributes (RnW, PnU, InD) and an input address.
    const fn has_access(self) -> bool {
        matches!(
            self,
            EventKind::FUut
                | EventKind::FBadAtsTreq
                | EventKind::FTranslForbidden
                | EventKind::FWalkEabt
                | EventKind::FTranslation
                | EventKind::FAddrSize
                | EventKind::FAccess
                | EventKind::FPermission
                | EventKind::FTlbConflict
        )
    }

    const fn has_input_addr(self) -> bool {
        self.has_access() || matches!(self, EventKind::FCfgConflict | EventKind::EPageRequest)
    }

    /// Stall/STAG fields are defined.
    const fn has_stall(self) -> bool {
        self.is_translation_fault() || matches!(self, EventKind::FWalkEabt | EventKind::FCdFetch)
    }

    /// S2 and CLASS fields are defined.
    const fn has_stage_class(self) -> bool {
        self.is_translation_fault() || matches!(self, EventKind::FWalkEabt)
    }

    /// FetchAddr (dword 3 [51:3]) is defined.
    const fn has_fetch_addr(self) -> bool {
        matches!(self, EventKind::FSteFetch | EventKind::FCdFetch | EventKind::FWalkEabt | EventKind::FVmsFetch)
    }
}

/// CLASS of a fault: which access faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClass {
    /// CD fetch (through stage 2).
    Cd,
    /// Stage-1 translation table descriptor fetch (through stage 2).
    Ttd,
    /// The incoming transaction's input address.
    In,
    Reserved,
}

impl FaultClass {
    pub const fn name(self) -> &'static str {
        match self {
            FaultClass::Cd => "CD",
            FaultClass::Ttd => "TTD",
            FaultClass::In => "IN",
            FaultClass::Reserved => "RSVD",
        }
    }
}

/// A decoded event record. Fields that the record type does not define are `None`/false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub sid: u32,
    pub ssid: Option<u32>,
    pub stall: bool,
    pub stag: u16,
    /// InputAddr (IOVA) of the faulting transaction.
    pub input_addr: Option<u64>,
    /// Faulting IPA for stage-2 translation-class faults.
    pub ipa: Option<u64>,
    /// Address of the aborted STE/CD/descriptor/VMS fetch.
    pub fetch_addr: Option<u64>,
    /// RnW = 1: read.
    pub read: bool,
    /// PnU = 1: privileged.
    pub privileged: bool,
    /// InD = 1: instruction fetch.
    pub instruction: bool,
    /// S2 = 1: the fault happened at stage 2.
    pub stage2: bool,
    pub class: Option<FaultClass>,
    pub raw: [u64; 4],
}

impl Event {
    /// Decode a 32-byte event record (dwords as read, little-endian). Never fails.
    pub fn decode(raw: [u64; 4]) -> Event {
        let [d0, d1, d2, d3] = raw;
        let kind = EventKind::from_id((d0 & EVT0_ID_MASK) as u8);
        let ssid = (d0 & EVT0_SSV != 0).then_some(((d0 >> EVT0_SSID_SHIFT) & EVT0_SSID_MASK) as u32);
        let access = kind.has_access();
        let sc = kind.has_stage_class();
        let stage2 = sc && d1 & EVT1_S2 != 0;
        let class = sc.then_some(match (d1 >> EVT1_CLASS_SHIFT) & 3 {
            0 => FaultClass::Cd,
            1 => FaultClass::Ttd,
            2 => FaultClass::In,
            _ => FaultClass::Reserved,
        });
        let stall = kind.has_stall() && d1 & EVT1_STALL != 0;
        Event {
            kind,
            sid: (d0 >> EVT0_SID_SHIFT) as u32,
            ssid,
            stall,
            stag: if stall { (d1 & EVT1_STAG_MASK) as u16 } else { 0 },
            input_addr: kind.has_input_addr().then_some(d2),
            ipa: (kind.is_translation_fault() && stage2).then_some(d3 & EVT3_IPA_MASK),
            fetch_addr: kind.has_fetch_addr().then_some(d3 & EVT3_FETCH_ADDR_MASK),
            read: access && d1 & EVT1_RNW != 0,
            privileged: access && d1 & EVT1_PNU != 0,
            instruction: access && d1 & EVT1_IND != 0,
            stage2,
            class,
            raw,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::Unknown(id) => write!(f, "EVT_{id:#04x}")?,
            k => f.write_str(k.name())?,
        }
        write!(f, " sid={:#x}", self.sid)?;
        if let Some(s) = self.ssid {
            write!(f, " ssid={s:#x}")?;
        }
        if let Some(a) = self.input_addr {
            write!(f, " iova={a:#x}")?;
        }
        if self.kind.has_access() {
            f.write_str(if self.read { " read" } else { " write" })?;
            f.write_str(if self.privileged { " priv" } else { " unpriv" })?;
            f.write_str(if self.instruction { " insn" } else { " data" })?;
        }
        if self.kind.has_stage_class() {
            f.write_str(if self.stage2 { " stage2" } else { " stage1" })?;
        }
        if let Some(c) = self.class {
            write!(f, " class={}", c.name())?;
        }
        if let Some(ipa) = self.ipa {
            write!(f, " ipa={ipa:#x}")?;
        }
        if let Some(fa) = self.fetch_addr {
            write!(f, " fetch={fa:#x}")?;
        }
        if self.stall {
            write!(f, " stall stag={:#x}", self.stag)?;
        }
        if let EventKind::Unknown(_) = self.kind {
            write!(f, " raw=[{:#x} {:#x} {:#x} {:#x}]", self.raw[0], self.raw[1], self.raw[2], self.raw[3])?;
        }
        Ok(())
    }
}

const GERROR_NAMES: [(u32, &str); 8] = [
    (1 << 0, "CMDQ_ERR"),
    (1 << 2, "EVTQ_ABT_ERR"),
    (1 << 3, "PRIQ_ABT_ERR"),
    (1 << 4, "MSI_CMDQ_ABT_ERR"),
    (1 << 5, "MSI_EVTQ_ABT_ERR"),
    (1 << 6, "MSI_PRIQ_ABT_ERR"),
    (1 << 7, "MSI_GERROR_ABT_ERR"),
    (1 << 8, "SFM_ERR"),
];

/// Names of the active global errors (`active = GERROR ^ GERRORN`), lowest bit first.
pub fn gerror_bits(active: u32) -> impl Iterator<Item = &'static str> {
    GERROR_NAMES.iter().filter(move |(bit, _)| active & bit != 0).map(|(_, n)| *n)
}

pub const CERROR_NONE: u8 = 0;
pub const CERROR_ILL: u8 = 1;
pub const CERROR_ABT: u8 = 2;
pub const CERROR_ATC_INV_SYNC: u8 = 3;

/// CMDQ_CONS.ERR (bits \[30:24\]), valid when GERROR.CMDQ_ERR is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdqError {
    None,
    /// Illegal command: CONS points at it.
    Illegal,
    /// Abort when fetching the command.
    Abort,
    /// ATC invalidation completion timeout at a CMD_SYNC.
    AtcInvSync,
    Unknown(u8),
}

impl CmdqError {
    pub const fn from_cons(cons: u32) -> CmdqError {
        match ((cons >> 24) & 0x7f) as u8 {
            CERROR_NONE => CmdqError::None,
            CERROR_ILL => CmdqError::Illegal,
            CERROR_ABT => CmdqError::Abort,
            CERROR_ATC_INV_SYNC => CmdqError::AtcInvSync,
            x => CmdqError::Unknown(x),
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            CmdqError::None => "CERROR_NONE",
            CmdqError::Illegal => "CERROR_ILL",
            CmdqError::Abort => "CERROR_ABT",
            CmdqError::AtcInvSync => "CERROR_ATC_INV_SYNC",
            CmdqError::Unknown(_) => "CERROR_UNKNOWN",
        }
    }
}

impl fmt::Display for CmdqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdqError::Unknown(x) => write!(f, "CERROR_{x:#x}"),
            e => f.write_str(e.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    #[test]
    fn ids_roundtrip() {
        let ids = [
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x24,
            0x25,
        ];
        for id in 0..=255u8 {
            let k = EventKind::from_id(id);
            assert_eq!(k.id(), id);
            assert_eq!(matches!(k, EventKind::Unknown(_)), !ids.contains(&id), "{id:#x}");
        }
        assert_eq!(EventKind::from_id(0x10), EventKind::FTranslation);
        assert_eq!(EventKind::from_id(0x0b).name(), "F_WALK_EABT");
        assert_eq!(EventKind::from_id(0x25).name(), "F_VMS_FETCH");
    }

    #[test]
    fn translation_fault() {
        // F_TRANSLATION, SID 8, write (RnW=0), unprivileged, data, stage 1, CLASS=IN
        let raw = [8u64 << 32 | 0x10, 2 << 40, 0xdead000, 0];
        let e = Event::decode(raw);
        assert_eq!(e.kind, EventKind::FTranslation);
        assert_eq!(e.sid, 8);
        assert_eq!(e.ssid, None);
        assert_eq!(e.input_addr, Some(0xdead000));
        assert!(!e.read && !e.privileged && !e.instruction && !e.stage2 && !e.stall);
        assert_eq!(e.class, Some(FaultClass::In));
        assert_eq!(format!("{e}"), "F_TRANSLATION sid=0x8 iova=0xdead000 write unpriv data stage1 class=IN");
        // Stage-2 permission fault on a read by a privileged instruction fetch, stalled, with SSID
        let d0 = 0x1234u64 << 32 | 0x5 << 12 | 1 << 11 | 0x13;
        let d1 = 1 << 31 | 1 << 33 | 1 << 34 | 1 << 35 | 1 << 39 | 1 << 40 | 0x77;
        let e = Event::decode([d0, d1, 0x4000, 0xfff0_0000_8000_1fff]);
        assert_eq!(e.ssid, Some(5));
        assert!(e.read && e.privileged && e.instruction && e.stage2 && e.stall);
        assert_eq!(e.stag, 0x77);
        assert_eq!(e.class, Some(FaultClass::Ttd));
        assert_eq!(e.ipa, Some(0x8000_1000));
        assert_eq!(
            format!("{e}"),
            "F_PERMISSION sid=0x1234 ssid=0x5 iova=0x4000 read priv insn stage2 class=TTD ipa=0x80001000 stall stag=0x77"
        );
    }

    #[test]
    fn config_and_fetch_events() {
        let e = Event::decode([3u64 << 32 | 0x04, u64::MAX, u64::MAX, u64::MAX]);
        assert_eq!(format!("{e}"), "C_BAD_STE sid=0x3");
        assert_eq!((e.input_addr, e.ipa, e.fetch_addr, e.class), (None, None, None, None));
        let e = Event::decode([3u64 << 32 | 0x02, 0, 0, 0]);
        assert_eq!(format!("{e}"), "C_BAD_STREAMID sid=0x3");
        let e = Event::decode([1u64 << 32 | 0x03, 0, 0, 0x8000_0047]);
        assert_eq!(e.fetch_addr, Some(0x8000_0040));
        assert_eq!(format!("{e}"), "F_STE_FETCH sid=0x1 fetch=0x80000040");
        let e = Event::decode([1u64 << 32 | 0x0b, 1 << 35 | 1 << 40, 0x1000, 0x4000_2008]);
        assert_eq!(
            format!("{e}"),
            "F_WALK_EABT sid=0x1 iova=0x1000 read unpriv data stage1 class=TTD fetch=0x40002008"
        );
        let e = Event::decode([0x9f, 1, 2, 3]);
        assert_eq!(format!("{e}"), "EVT_0x9f sid=0x0 raw=[0x9f 0x1 0x2 0x3]");
        // Every id with all-ones payload decodes and prints without panicking.
        for id in 0..=255u64 {
            let _ = format!("{}", Event::decode([u64::MAX << 8 | id, u64::MAX, u64::MAX, u64::MAX]));
        }
    }

    #[test]
    fn gerror_and_cerror() {
        let v: Vec<_> = gerror_bits(0x1fd).collect();
        assert_eq!(
            v,
            [
                "CMDQ_ERR",
                "EVTQ_ABT_ERR",
                "PRIQ_ABT_ERR",
                "MSI_CMDQ_ABT_ERR",
                "MSI_EVTQ_ABT_ERR",
                "MSI_PRIQ_ABT_ERR",
                "MSI_GERROR_ABT_ERR",
                "SFM_ERR"
            ]
        );
        assert_eq!(gerror_bits(0x2).count(), 0);
        let v: Vec<_> = gerror_bits(1 | 1 << 8).collect();
        assert_eq!(v, ["CMDQ_ERR", "SFM_ERR"]);
        assert_eq!(CmdqError::from_cons(0x0000_0012), CmdqError::None);
        assert_eq!(CmdqError::from_cons(1 << 24 | 7), CmdqError::Illegal);
        assert_eq!(CmdqError::from_cons(2 << 24), CmdqError::Abort);
        assert_eq!(CmdqError::from_cons(3 << 24 | 1 << 31), CmdqError::AtcInvSync);
        assert_eq!(CmdqError::from_cons(0x7f << 24), CmdqError::Unknown(0x7f));
        assert_eq!(format!("{}", CmdqError::Illegal), "CERROR_ILL");
    }
}
