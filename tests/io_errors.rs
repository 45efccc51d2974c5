//! Bad input gets a clear error that names the file and the value, and never leaves a
//! half-written output: truncated gzip, lying header dims, 2-D / 4-D files, empty and mixed DICOM
//! folders, several series, uneven spacing, gantry tilt, misaligned CT and mask, CLI failures.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::data_path;
use dicom_dictionary_std::tags;
use dnvs_engine::io::{
    check_aligned, read_dicom_series, read_nifti, read_volume, write_nifti, Volume, VoxelKind,
};

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dnvs_io_err_{tag}_{}_{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The uncompressed bytes of a small real NIfTI (122x101x30 int16).
fn small_nii_bytes() -> Vec<u8> {
    let raw = std::fs::read(data_path("real/totalseg_example_ct_sm.nii.gz")).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut bytes).unwrap();
    bytes
}

fn set_i16(bytes: &mut [u8], offset: usize, v: i16) {
    bytes[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn err_text(r: dnvs_engine::Result<Volume>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got a volume {:?}", v.dims),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} should mention {p:?}");
    }
}

#[test]
fn truncated_gzip_names_the_file() {
    let tmp = TempDir::new("trunc");
    let raw = std::fs::read(data_path("real/totalseg_example_ct_sm.nii.gz")).unwrap();
    let path = tmp.path("cut_ct.nii.gz");
    std::fs::write(&path, &raw[..raw.len() / 2]).unwrap();
    let msg = err_text(read_nifti(&path));
    assert_mentions(&msg, &["cut_ct.nii.gz", "truncated"]);
}

#[test]
fn header_dims_larger_than_the_file_are_refused_before_allocating() {
    let tmp = TempDir::new("dims");
    let mut bytes = small_nii_bytes();
    // 30000 x 30000 x 30 int16 would be 54 GB: must be an error, not an allocation.
    set_i16(&mut bytes, 42, 30000);
    set_i16(&mut bytes, 44, 30000);
    let nii = tmp.path("big.nii");
    std::fs::write(&nii, &bytes).unwrap();
    let msg = err_text(read_nifti(&nii));
    assert_mentions(&msg, &["big.nii", "[30000, 30000, 30]", "bytes"]);
    let gz = tmp.path("big.nii.gz");
    std::fs::write(&gz, gzip(&bytes)).unwrap();
    let msg = err_text(read_nifti(&gz));
    assert_mentions(&msg, &["big.nii.gz", "[30000, 30000, 30]", "truncated"]);
}

#[test]
fn two_d_and_four_d_files_are_refused_one_time_point_is_accepted() {
    let tmp = TempDir::new("ndim");
    let base = small_nii_bytes();

    let mut two_d = base.clone();
    set_i16(&mut two_d, 40, 2);
    let p = tmp.path("slice.nii");
    std::fs::write(&p, &two_d).unwrap();
    assert_mentions(&err_text(read_nifti(&p)), &["slice.nii", "2-D", "3-D volume is needed"]);

    let mut four_d = base.clone();
    set_i16(&mut four_d, 40, 4);
    set_i16(&mut four_d, 48, 2);
    let p = tmp.path("fmri.nii");
    std::fs::write(&p, &four_d).unwrap();
    assert_mentions(&err_text(read_nifti(&p)), &["fmri.nii", "4-D", "[122, 101, 30, 2]"]);

    set_i16(&mut four_d, 48, 1);
    let p = tmp.path("one_t.nii");
    std::fs::write(&p, &four_d).unwrap();
    assert_eq!(read_nifti(&p).unwrap().dims, [122, 101, 30]);
}

#[test]
fn not_nifti_at_all() {
    let tmp = TempDir::new("notnii");
    let p = tmp.path("notes.nii");
    std::fs::write(&p, b"hello").unwrap();
    assert_mentions(&err_text(read_nifti(&p)), &["notes.nii", "not a NIfTI-1 file"]);
    let missing = tmp.path("missing.nii.gz");
    assert_mentions(&err_text(read_volume(&missing)), &["missing.nii.gz"]);
}

/// A copy of the real DICOM series in a temp folder.
fn copy_series(tmp: &TempDir) -> (PathBuf, Vec<PathBuf>) {
    let src = data_path("real/totalseg_example_ct_dicom");
    let dir = tmp.path("series");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| {
            let from = e.unwrap().path();
            let to = dir.join(from.file_name().unwrap());
            std::fs::copy(&from, &to).unwrap();
            to
        })
        .collect();
    files.sort();
    (dir, files)
}

/// Rewrites one string/number attribute of a DICOM file in place.
fn set_attr(file: &Path, tag: dicom_object::Tag, value: &str) {
    let mut obj = dicom_object::open_file(file).unwrap();
    let vr = obj.element(tag).unwrap().vr();
    obj.put_str(tag, vr, value);
    obj.write_to_file(file).unwrap();
}

fn position(file: &Path) -> Vec<f64> {
    let obj = dicom_object::open_file(file).unwrap();
    obj.element(tags::IMAGE_POSITION_PATIENT).unwrap().to_multi_float64().unwrap()
}

#[test]
fn empty_folder_and_non_dicom_file_among_slices() {
    let tmp = TempDir::new("dcm_bad");
    let empty = tmp.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_mentions(&err_text(read_dicom_series(&empty, None)), &["empty", "no files"]);
    assert_mentions(&err_text(read_volume(&empty)), &["no files"]);

    let (dir, _) = copy_series(&tmp);
    std::fs::write(dir.join("scan_notes.txt"), "not an image").unwrap();
    assert_mentions(
        &err_text(read_dicom_series(&dir, None)),
        &["scan_notes.txt", "not a readable DICOM"],
    );
}

#[test]
fn several_series_are_listed_unless_one_is_chosen() {
    let tmp = TempDir::new("dcm_series");
    let (dir, files) = copy_series(&tmp);
    for f in &files[..3] {
        set_attr(f, tags::SERIES_INSTANCE_UID, "1.2.3.4.5");
    }
    let msg = err_text(read_dicom_series(&dir, None));
    assert_mentions(&msg, &["2 series", "1.2.3.4.5 (3 files", "--series"]);
    let small = read_dicom_series(&dir, Some("1.2.3.4.5")).unwrap();
    assert_eq!(small.dims, [512, 512, 3]);
    let msg = err_text(read_dicom_series(&dir, Some("9.9.9")));
    assert_mentions(&msg, &["9.9.9", "not in this folder", "1.2.3.4.5"]);
}

#[test]
fn uneven_spacing_and_gantry_tilt_are_refused() {
    let tmp = TempDir::new("dcm_geom");
    let (dir, files) = copy_series(&tmp);
    // A missing slice in the middle: steps of 2 and 4 mm.
    let mut by_z: Vec<(f64, &PathBuf)> = files.iter().map(|f| (position(f)[2], f)).collect();
    by_z.sort_by(|a, b| a.0.total_cmp(&b.0));
    std::fs::remove_file(by_z[10].1).unwrap();
    let msg = err_text(read_dicom_series(&dir, None));
    assert_mentions(&msg, &["uneven slice spacing", "2.0000", "4.0000"]);

    // Restore that slice, then shear the stack: each slice 0.5 mm further in y than the last.
    let tmp2 = TempDir::new("dcm_tilt");
    let (dir, files) = copy_series(&tmp2);
    let mut by_z: Vec<(Vec<f64>, &PathBuf)> = files.iter().map(|f| (position(f), f)).collect();
    by_z.sort_by(|a, b| a.0[2].total_cmp(&b.0[2]));
    for (n, (p, f)) in by_z.iter().enumerate() {
        let moved = format!("{}\\{}\\{}", p[0], p[1] + 0.5 * n as f64, p[2]);
        set_attr(f, tags::IMAGE_POSITION_PATIENT, &moved);
    }
    let msg = err_text(read_dicom_series(&dir, None));
    assert_mentions(&msg, &["gantry tilt", "degrees"]);
}

#[test]
fn misaligned_ct_and_mask() {
    let ct = Volume::zeros([4, 5, 6], [1.0, 1.0, 2.0]);
    let mask = Volume::zeros([4, 5, 7], [1.0, 1.0, 2.0]);
    let msg = check_aligned(&ct, &mask, "case_0001 L ct/mc").unwrap_err().to_string();
    assert_mentions(&msg, &["case_0001 L ct/mc", "[4, 5, 6]", "[4, 5, 7]"]);
    let mut shifted = Volume::zeros([4, 5, 6], [1.0, 1.0, 2.0]);
    shifted.affine[2][3] = 0.5;
    let msg = check_aligned(&ct, &shifted, "ct/tb").unwrap_err().to_string();
    assert_mentions(&msg, &["ct/tb", "affine[2][3]", "0.5"]);
    // float32 header rounding is not a misalignment.
    shifted.affine[2][3] = 1e-6;
    check_aligned(&ct, &shifted, "ct/tb").unwrap();
}

#[test]
fn failed_writes_leave_no_output() {
    let tmp = TempDir::new("write");
    let mut vol = Volume::zeros([3, 3, 3], [1.0; 3]);
    vol.data[0] = 300.0;
    let out = tmp.path("mask.nii.gz");
    assert!(write_nifti(&out, &vol, VoxelKind::Mask).is_err());
    assert!(!out.exists());
    // An existing output survives a failed overwrite untouched.
    std::fs::write(&out, b"previous").unwrap();
    assert!(write_nifti(&out, &vol, VoxelKind::Mask).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    let nowhere = tmp.path("no_such_dir/out.nii");
    let msg = write_nifti(&nowhere, &vol, VoxelKind::Image).unwrap_err().to_string();
    assert_mentions(&msg, &["no_such_dir/out.nii"]);
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 1, "no temporary files left behind");
}

#[test]
fn cli_convert_and_info_fail_cleanly() {
    let exe = env!("CARGO_BIN_EXE_dnvs-engine");
    let tmp = TempDir::new("cli");
    let raw = std::fs::read(data_path("real/totalseg_example_ct_sm.nii.gz")).unwrap();
    let cut = tmp.path("cut.nii.gz");
    std::fs::write(&cut, &raw[..raw.len() / 3]).unwrap();
    let out = tmp.path("out.nii.gz");
    let run = std::process::Command::new(exe).arg("convert").arg(&cut).arg(&out).output().unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_mentions(&stderr, &["cut.nii.gz", "truncated"]);
    assert!(!out.exists(), "no output after a failed convert");
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 1, "no temporary files left behind");

    let run = std::process::Command::new(exe).arg("info").arg(&cut).output().unwrap();
    assert!(!run.status.success());
    assert_mentions(&String::from_utf8_lossy(&run.stderr), &["cut.nii.gz"]);

    // And the happy path: convert a real NIfTI, describe the result.
    let good = tmp.path("ct.nii");
    let src = data_path("real/niivue_CT_pitch.nii.gz");
    let run = std::process::Command::new(exe).arg("convert").arg(&src).arg(&good).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run = std::process::Command::new(exe).arg("info").arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_mentions(
        &stdout,
        &["175 x 248 x 58", "uint8", "qform_code 2 sform_code 2", "RAS", "0 .. 255"],
    );
}

#[test]
fn vox_offset_zero_in_a_single_file_reads_from_352() {
    let tmp = TempDir::new("vox0");
    let mut bytes = small_nii_bytes();
    bytes[108..112].copy_from_slice(&0f32.to_le_bytes());
    let p = tmp.path("v0.nii");
    std::fs::write(&p, &bytes).unwrap();
    let vol = read_nifti(&p).unwrap();
    let sum: f64 = vol.data.iter().map(|&v| v as f64).sum();
    assert_eq!(sum, -130894872.0);
}
