//! DICOM series reading on the real 20-slice JPEG 2000 CT in tests/data/real: geometry must equal
//! what dcm2niix computed for the same series (the affine of the TotalSegmentator segmentation
//! written from it), compared after both are brought to the closest canonical RAS+ orientation.

mod common;

use common::data_path;
use dnvs_engine::io::orientation::axis_codes;
use std::sync::OnceLock;

use dnvs_engine::io::{
    as_closest_canonical, read_nifti, read_volume, write_nifti, Volume, VoxelKind,
};

/// The series, decoded once for all tests here (20 JPEG 2000 slices take a while on 2 cores).
fn series() -> &'static Volume {
    static CT: OnceLock<Volume> = OnceLock::new();
    CT.get_or_init(|| read_volume(&data_path("real/totalseg_example_ct_dicom")).unwrap())
}

#[test]
fn series_geometry_matches_dcm2niix_and_values_are_hu() {
    let ct = series();
    let seg = read_nifti(&data_path("real/totalseg_example_ct_dicom_seg.nii.gz")).unwrap();
    let (a, b) = (as_closest_canonical(ct), as_closest_canonical(&seg));
    assert_eq!(a.dims, [512, 512, 20]);
    assert_eq!(a.dims, b.dims);
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (a.affine[r][c] - b.affine[r][c]).abs() < 1e-3,
                "affine[{r}][{c}]: dicom {} vs dcm2niix {}\n{:?}\n{:?}",
                a.affine[r][c],
                b.affine[r][c],
                a.affine,
                b.affine
            );
        }
    }
    // Slices are 2 mm apart although SliceThickness says 3.
    assert!((ct.spacing[2] - 2.0).abs() < 1e-3, "spacing {:?}", ct.spacing);
    assert!((ct.spacing[0] - 0.9765625).abs() < 1e-6);
    let (lo, hi) = ct.value_range().unwrap();
    assert!((-1100.0..=-1000.0).contains(&lo), "min HU {lo}");
    assert!(hi > 300.0, "max HU {hi}: no bone");
    let bone = ct.data.iter().filter(|&&v| v > 300.0).count();
    assert!(bone > 1000, "{bone} bone voxels");
    // Segmented voxels (labels > 0) should be mostly tissue, not air.
    let (mut tissue, mut labelled) = (0usize, 0usize);
    for (v, l) in a.data.iter().zip(&b.data) {
        if *l > 0.0 {
            labelled += 1;
            if *v > -200.0 {
                tissue += 1;
            }
        }
    }
    assert!(labelled > 0 && tissue as f64 > 0.9 * labelled as f64, "{tissue} of {labelled}");
    println!("dicom codes {} canonical {}", axis_codes(&ct.affine), axis_codes(&a.affine));
}

#[test]
fn series_converts_to_int16_nifti_and_back() {
    let ct = series();
    let out = std::env::temp_dir().join(format!("dnvs_io_dicom_{}.nii.gz", std::process::id()));
    write_nifti(&out, ct, VoxelKind::Image).unwrap();
    let (back, info) = dnvs_engine::io::nifti::read_nifti_with_info(&out).unwrap();
    std::fs::remove_file(&out).ok();
    assert_eq!(info.datatype.name(), "int16");
    assert_eq!((info.qform_code, info.sform_code), (1, 1));
    assert_eq!(back.dims, ct.dims);
    assert!(back.data == ct.data);
    for r in 0..4 {
        for c in 0..4 {
            assert!((back.affine[r][c] - ct.affine[r][c]).abs() < 1e-4);
        }
    }
}
