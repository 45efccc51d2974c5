//! Issue 11 item 9: `info` and `convert` on a valid volume peak at no more than 1.5x the decoded
//! volume's bytes (f32), process included. Alone in its binary: it reads the peak RSS of its
//! children (`getrusage(RUSAGE_CHILDREN)` keeps the largest child's), which any other test
//! spawning the engine would mix in.

#![cfg(unix)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Peak RSS in bytes of the largest child waited for so far.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage fills the zeroed struct it is given; RUSAGE_CHILDREN is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0);
    ru.ru_maxrss as u64 * 1024 // kilobytes on Linux
}

/// A 512 x 512 x 128 int16 NIfTI (64 MiB of voxels) with the crafted 8x8x4 file's header.
fn write_big(path: &Path) -> [usize; 3] {
    let dims = [512usize, 512, 128];
    let src =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad/ramp_8x8x4.nii");
    let mut h = std::fs::read(src).unwrap();
    h.truncate(352);
    for (a, d) in dims.iter().enumerate() {
        h[42 + 2 * a..44 + 2 * a].copy_from_slice(&(*d as i16).to_le_bytes());
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&h).unwrap();
    let plane: Vec<u8> =
        (0..dims[0] * dims[1]).flat_map(|i| ((i % 3001) as i16 - 1000).to_le_bytes()).collect();
    for _ in 0..dims[2] {
        f.write_all(&plane).unwrap();
    }
    f.flush().unwrap();
    dims
}

#[test]
fn info_and_convert_stay_within_one_and_a_half_decoded_volumes() {
    let exe = env!("CARGO_BIN_EXE_dnvs-engine");
    let dir = std::env::temp_dir().join(format!("dnvs_mem_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("big.nii");
    let dims = write_big(&src);
    let decoded = (dims.iter().product::<usize>() * 4) as u64;

    let o = Command::new(exe).arg("info").arg(&src).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("values: -1000 .. 2000"));
    let info_peak = children_peak_rss();
    // info streams: a few blocks, far below one decoded volume.
    assert!(info_peak < decoded / 2, "info peak {info_peak} B for a {decoded} B volume");

    let out = dir.join("out.nii");
    let o = Command::new(exe).arg("convert").arg(&src).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let convert_peak = children_peak_rss();
    println!("decoded {decoded} B; info peak {info_peak} B; convert peak {convert_peak} B");
    assert!(
        convert_peak as f64 <= 1.5 * decoded as f64,
        "convert peak {convert_peak} B > 1.5 x {decoded} B"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), std::fs::metadata(&src).unwrap().len());
    let _ = std::fs::remove_dir_all(&dir);
}
