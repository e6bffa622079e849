//! Reading and damaging backup archives the way a test needs: the tar
//! inside the gzip, one member's stored bytes, one byte of it flipped.
#![allow(dead_code)]

use std::io::{Read, Write};

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The member paths of an archive, in order.
pub fn members(archive: &[u8]) -> Vec<String> {
    let tar_bytes = gunzip(archive);
    let mut a = tar::Archive::new(tar_bytes.as_slice());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The archive with one byte in the middle of `member`'s stored content
/// flipped, gzip'd again so only that member is wrong.
pub fn with_member_byte_flipped(archive: &[u8], member: &str) -> Vec<u8> {
    let mut tar_bytes = gunzip(archive);
    let mut at = None;
    let mut a = tar::Archive::new(tar_bytes.as_slice());
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == member {
            at = Some(e.raw_file_position() as usize + e.size() as usize / 2);
        }
    }
    let at = at.unwrap_or_else(|| panic!("no member {member} in the archive"));
    tar_bytes[at] ^= 0x01;
    gzip(&tar_bytes)
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
