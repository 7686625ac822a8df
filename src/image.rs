//! The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst): what
//! U-Boot `booti` and QEMU `-kernel` read to place the kernel. Pure, host-tested.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    TooShort(usize),
    BadMagic(u32),
    /// image_size is zero or smaller than the file: the loader would reserve too little.
    BadSize {
        image_size: u64,
        file_len: u64,
    },
    BigEndian,
    /// Bits 1-2 of flags: 0 = unspecified, 1 = 4K, 2 = 16K, 3 = 64K.
    PageSizeUnspecified,
    /// Bit 3 clear: the image asks to be placed near the start of RAM.
    NotRelocatable,
    /// code0 is not an A64 branch over the header.
    BadCode0(u32),
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::TooShort(n) => write!(f, "file is {n} bytes, the header needs 64"),
            ImageError::BadMagic(m) => write!(f, "magic {m:#x}, expected 0x644d5241 (\"ARM\\x64\")"),
            ImageError::BadSize { image_size, file_len } => {
                write!(f, "image_size {image_size:#x} is smaller than the file ({file_len:#x})")
            }
            ImageError::BigEndian => write!(f, "flags say big-endian"),
            ImageError::PageSizeUnspecified => write!(f, "flags leave the page size unspecified"),
            ImageError::NotRelocatable => write!(f, "flags bit 3 clear: not placeable anywhere in RAM"),
            ImageError::BadCode0(c) => write!(f, "code0 {c:#x} is not a branch"),
        }
    }
}

pub const MAGIC: u32 = 0x644d_5241;

fn le64(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(v)
}

/// Parse and check a whole image file as a loader would.
pub fn check(file: &[u8]) -> Result<ImageHeader, ImageError> {
    if file.len() < 64 {
        return Err(ImageError::TooShort(file.len()));
    }
    let magic = le32(file, 56);
    if magic != MAGIC {
        return Err(ImageError::BadMagic(magic));
    }
    let code0 = le32(file, 0);
    // B imm26 (0x14000000) or the EFI "MZ" trick (add x13, x18, #0x16).
    if code0 & 0xfc00_0000 != 0x1400_0000 && code0 != 0x9100_5a4d {
        return Err(ImageError::BadCode0(code0));
    }
    let h = ImageHeader { text_offset: le64(file, 8), image_size: le64(file, 16), flags: le64(file, 24) };
    if h.image_size == 0 || h.image_size < file.len() as u64 {
        return Err(ImageError::BadSize { image_size: h.image_size, file_len: file.len() as u64 });
    }
    if h.flags & 1 != 0 {
        return Err(ImageError::BigEndian);
    }
    if (h.flags >> 1) & 3 == 0 {
        return Err(ImageError::PageSizeUnspecified);
    }
    if h.flags & 8 == 0 {
        return Err(ImageError::NotRelocatable);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(code0: u32, size: u64, flags: u64, magic: u32) -> Vec<u8> {
        let mut v = vec![0u8; 128];
        v[0..4].copy_from_slice(&code0.to_le_bytes());
        v[16..24].copy_from_slice(&size.to_le_bytes());
        v[24..32].copy_from_slice(&flags.to_le_bytes());
        v[56..60].copy_from_slice(&magic.to_le_bytes());
        v
    }

    #[test]
    fn good_header() {
        let h = check(&header(0x1400_0010, 0x10_0000, 0xa, MAGIC)).unwrap();
        assert_eq!(h.image_size, 0x10_0000);
        assert_eq!(h.flags, 0xa);
        assert_eq!(h.text_offset, 0);
    }

    #[test]
    fn each_defect_is_named() {
        assert_eq!(check(&[0; 10]), Err(ImageError::TooShort(10)));
        assert_eq!(check(&header(0x1400_0010, 0x1000, 0xa, 0x1234)), Err(ImageError::BadMagic(0x1234)));
        assert_eq!(check(&header(0xd503_201f, 0x1000, 0xa, MAGIC)), Err(ImageError::BadCode0(0xd503_201f)));
        assert!(matches!(check(&header(0x1400_0010, 64, 0xa, MAGIC)), Err(ImageError::BadSize { .. })));
        assert!(matches!(check(&header(0x1400_0010, 0, 0xa, MAGIC)), Err(ImageError::BadSize { .. })));
        assert_eq!(check(&header(0x1400_0010, 0x1000, 0xb, MAGIC)), Err(ImageError::BigEndian));
        assert_eq!(check(&header(0x1400_0010, 0x1000, 0x8, MAGIC)), Err(ImageError::PageSizeUnspecified));
        assert_eq!(check(&header(0x1400_0010, 0x1000, 0x2, MAGIC)), Err(ImageError::NotRelocatable));
    }
}
