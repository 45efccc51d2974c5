//! A bounded walk over a DICOM file's element headers, done before the DICOM parser sees the
//! file. The parser reserves and zero-fills an element's declared length before reading it, so
//! one corrupted length field (1336 -> 1337 shifts every later header) made it allocate gigabytes
//! from a 157 KB slice. Here every declared length must fit in the bytes that remain, so nothing
//! the parser allocates for a value can exceed the file's size.

use std::path::Path;

use crate::{Error, Result};

/// `(FFFE,E000)` item, `(FFFE,E0DD)` sequence delimiter.
const ITEM: u16 = 0xE000;
const SEQ_END: u16 = 0xE0DD;
const UNDEFINED: u32 = u32::MAX;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
/// VRs whose explicit length field is 16 bits (PS3.5 7.1.2); every other VR, and an unknown one
/// (read as UN, as the parser does), has 2 reserved bytes and a 32-bit length.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// How the data set after the file meta group is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ExplicitLe,
    ExplicitBe,
    ImplicitLe,
}

/// Checks that no element, item or fragment of the DICOM file `bytes` declares more bytes than
/// remain after its header. Files that are not DICOM Part 10 (no `DICM`), and deflated data sets
/// (their lengths refer to inflated bytes), are left to the parser.
///
/// # Errors
/// [`Error::Format`] naming `path`, the element and the offset.
pub(crate) fn check_lengths(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut pos = if bytes.get(128..132) == Some(b"DICM") {
        132
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        return Ok(());
    };
    let mut ts = String::new();
    // The file meta group is always explicit VR little endian.
    while pos + 8 <= bytes.len() && u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) == 0x0002 {
        let el = header(path, bytes, pos, Encoding::ExplicitLe)?;
        let end = value_end(path, bytes, &el)?;
        if el.tag == (0x0002, 0x0010) {
            ts = String::from_utf8_lossy(&bytes[el.value..end])
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string();
        }
        pos = end;
    }
    let enc = match ts.as_str() {
        "1.2.840.10008.1.2" => Encoding::ImplicitLe,
        "1.2.840.10008.1.2.2" => Encoding::ExplicitBe,
        "1.2.840.10008.1.2.1.99" => return Ok(()),
        _ => Encoding::ExplicitLe,
    };
    walk(path, bytes, pos, enc)
}

/// One element header: its tag, where its value starts, its declared length and whether the
/// explicit VR was SQ.
struct Element {
    tag: (u16, u16),
    at: usize,
    value: usize,
    len: u32,
    sq: bool,
}

fn walk(path: &Path, bytes: &[u8], mut pos: usize, enc: Encoding) -> Result<()> {
    // Inside encapsulated pixel data items hold compressed fragments, not elements.
    let mut fragments = false;
    // A few trailing bytes too short for a header are the parser's to judge.
    while pos + 8 <= bytes.len() {
        let el = header(path, bytes, pos, enc)?;
        if el.tag.0 == 0xFFFE {
            if el.tag.1 == SEQ_END {
                fragments = false;
            }
            // An item's content follows: descend into it (its own length checked), unless it
            // is a pixel-data fragment, whose bytes are skipped.
            let end = if el.len == UNDEFINED { el.value } else { value_end(path, bytes, &el)? };
            pos = if el.tag.1 == ITEM && fragments { end } else { el.value };
            continue;
        }
        if el.len == UNDEFINED {
            // A sequence, or encapsulated pixel data: its items follow.
            fragments = el.tag == PIXEL_DATA;
            pos = el.value;
            continue;
        }
        let end = value_end(path, bytes, &el)?;
        // A sequence of defined length holds items whose lengths are checked too. Implicit VR
        // names no VR: a value that starts with an item tag is a sequence.
        let starts_with_item =
            bytes.get(el.value..el.value + 4) == Some(&item_tag_bytes(enc)[..]) && el.len >= 8;
        pos =
            if el.sq || (enc == Encoding::ImplicitLe && starts_with_item) { el.value } else { end };
    }
    Ok(())
}

fn item_tag_bytes(enc: Encoding) -> [u8; 4] {
    match enc {
        Encoding::ExplicitBe => [0xFF, 0xFE, 0xE0, 0x00],
        _ => [0xFE, 0xFF, 0x00, 0xE0],
    }
}

fn header(path: &Path, b: &[u8], at: usize, enc: Encoding) -> Result<Element> {
    let be = enc == Encoding::ExplicitBe;
    let u16_at = |p: usize| {
        let x = [b[p], b[p + 1]];
        if be {
            u16::from_be_bytes(x)
        } else {
            u16::from_le_bytes(x)
        }
    };
    let u32_at = |p: usize| {
        let x = [b[p], b[p + 1], b[p + 2], b[p + 3]];
        if be {
            u32::from_be_bytes(x)
        } else {
            u32::from_le_bytes(x)
        }
    };
    let tag = (u16_at(at), u16_at(at + 2));
    if tag.0 == 0xFFFE || enc == Encoding::ImplicitLe {
        return Ok(Element { tag, at, value: at + 8, len: u32_at(at + 4), sq: false });
    }
    let vr = [b[at + 4], b[at + 5]];
    if SHORT_VRS.contains(&&vr) {
        return Ok(Element { tag, at, value: at + 8, len: u16_at(at + 6) as u32, sq: false });
    }
    if at + 12 > b.len() {
        return Err(Error::format(
            path,
            format!(
                "element ({:04X},{:04X}) at byte {at}: header cut by the end of the file",
                tag.0, tag.1
            ),
        ));
    }
    Ok(Element { tag, at, value: at + 12, len: u32_at(at + 8), sq: &vr == b"SQ" })
}

/// Where the element's value ends, refusing a length that runs past the end of the file.
fn value_end(path: &Path, bytes: &[u8], el: &Element) -> Result<usize> {
    let remaining = bytes.len().saturating_sub(el.value);
    if el.len as usize > remaining {
        return Err(Error::format(
            path,
            format!(
                "element ({:04X},{:04X}) at byte {} declares {} bytes, only {remaining} remain in \
                 the file (corrupt length field)",
                el.tag.0, el.tag.1, el.at, el.len
            ),
        ));
    }
    Ok(el.value + el.len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        // (0002,0010) UI "1.2.840.10008.1.2.1" (explicit VR little endian), padded to even.
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', 20, 0]);
        f.extend_from_slice(b"1.2.840.10008.1.2.1\0");
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn lengths_past_the_end_are_refused_honest_ones_pass() {
        let p = Path::new("slice.dcm");
        // (0010,0010) PN, 4 bytes.
        let ok = file(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'A', b'B', b'C', b'D']);
        check_lengths(p, &ok).unwrap();
        // (0009,0010) OB with 2^31 bytes declared in a 160-byte file.
        let bad = file(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0, 0, 0, 0x80, 1, 2]);
        let msg = check_lengths(p, &bad).unwrap_err().to_string();
        assert!(
            msg.contains("slice.dcm") && msg.contains("(0009,0010)") && msg.contains("2147483648"),
            "{msg}"
        );
        // An undefined-length sequence with an item that lies.
        let seq = file(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, // SQ, undefined
            0xFE, 0xFF, 0x00, 0xE0, 0x00, 0x00, 0x10, 0x00, // item of 1 MiB
        ]);
        assert!(check_lengths(p, &seq).is_err());
        // Not DICOM Part 10: left to the parser.
        check_lengths(p, b"hello").unwrap();
    }
}
