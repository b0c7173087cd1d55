//! Frame headers (RFC 6455 5.2): parsing what arrives, writing what goes out, and
//! masking.

use crate::Error;
use bytes::{BufMut, BytesMut};

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// The most a control frame may carry.
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    /// RSV1: the message is compressed (first frame of a message only).
    pub(crate) rsv1: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: Option<[u8; 4]>,
    /// Header length in bytes.
    pub(crate) header_len: usize,
    pub(crate) payload_len: usize,
}

impl Header {
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` while more bytes are needed.
/// Checks only what the header alone decides: reserved bits RSV2 and RSV3, known
/// opcodes, control frames unfragmented and short, a 64-bit length's top bit, and
/// `max_frame`.
pub(crate) fn parse(buf: &[u8], max_frame: usize) -> Result<Option<Header>, Error> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 {
        return Err(Error::Protocol("reserved bits RSV2 or RSV3 set"));
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(Error::Protocol("unknown opcode"));
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut header_len) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(Error::Protocol("frame length with its top bit set"));
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let header = Header {
        fin,
        rsv1,
        opcode,
        mask: None,
        header_len,
        payload_len: 0,
    };
    if header.is_control() {
        if !fin {
            return Err(Error::Protocol("fragmented control frame"));
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(Error::Protocol("control frame longer than 125 bytes"));
        }
    }
    let payload_len = usize::try_from(len).unwrap_or(usize::MAX);
    if payload_len > max_frame {
        return Err(Error::TooBig(max_frame));
    }
    let mask = if masked {
        let Some(bytes) = buf.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        header_len += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    Ok(Some(Header {
        mask,
        header_len,
        payload_len,
        ..header
    }))
}

/// Writes a frame header for `len` payload bytes. With a mask, the caller masks the
/// payload it appends.
pub(crate) fn write_header(
    out: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: u8,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    let b0 = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(14 + len);
    out.put_u8(b0);
    if len < 126 {
        // Fits: `len < 126`.
        out.put_u8(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.put_u8(mask_bit | 126);
        out.put_u16(short);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
    if let Some(mask) = mask {
        out.put_slice(&mask);
    }
}

/// XORs `data` with the mask, as both masking and unmasking do.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize, mask: Option<[u8; 4]>) {
        let mut out = BytesMut::new();
        write_header(&mut out, true, true, BINARY, len, mask);
        let header = parse(&out, usize::MAX).unwrap().unwrap();
        assert_eq!(header.header_len, out.len());
        assert_eq!(header.payload_len, len);
        assert_eq!(header.mask, mask);
        assert!(header.fin && header.rsv1);
        assert_eq!(header.opcode, BINARY);
        // Every shorter prefix asks for more.
        for cut in 0..out.len() {
            assert_eq!(
                parse(&out[..cut], usize::MAX).unwrap(),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn headers_roundtrip_at_every_length_form() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            roundtrip(len, None);
            roundtrip(len, Some([1, 2, 3, 4]));
        }
    }

    #[test]
    fn header_rules() {
        let bad = |bytes: &[u8]| parse(bytes, 1000).unwrap_err().to_string();
        assert!(bad(&[0x91, 0x80]).contains("RSV2"));
        assert!(bad(&[0x83, 0x80]).contains("opcode"));
        assert!(bad(&[0x09, 0x80]).contains("fragmented control"));
        assert!(bad(&[0x89, 0xFE, 0, 126]).contains("longer than 125"));
        assert!(bad(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]).contains("top bit"));
        assert!(matches!(
            parse(&[0x82, 0xFE, 0x03, 0xE9], 1000),
            Err(Error::TooBig(1000))
        ));
    }

    #[test]
    fn masking_twice_is_the_identity() {
        let original: Vec<u8> = (0..=255).collect();
        for len in [0, 1, 3, 4, 5, 255] {
            let mut data = original[..len].to_vec();
            apply_mask(&mut data, [0xA1, 0x02, 0xF3, 0x44]);
            if len > 0 {
                assert_ne!(data, original[..len]);
            }
            assert_eq!(data[..len.min(1)], [original[0] ^ 0xA1][..len.min(1)]);
            apply_mask(&mut data, [0xA1, 0x02, 0xF3, 0x44]);
            assert_eq!(data, original[..len]);
        }
    }
}
