//! NIfTI reading and writing on the real CT files in tests/data/real: shapes, spacing, datatype,
//! value ranges, affines (checked against nibabel, see below) and exact write/read round trips.
//!
//! Expected affines and voxel values were printed once with nibabel 5.4.2 (not needed to run the
//! tests):
//! ```python
//! import nibabel as nib, numpy as np
//! im = nib.load(f); h = im.header; d = im.get_fdata(dtype=np.float64)
//! print(im.shape, h.get_data_dtype(), h.get_zooms(), h['qform_code'], h['sform_code'])
//! print(im.affine.tolist(), h.get_qform().tolist(), d.min(), d.max(), d.sum(), d[i, j, k])
//! ```

mod common;

use common::data_path;
use dnvs_engine::io::nifti::{read_nifti_with_info, DataType};
use dnvs_engine::io::orientation::axis_codes;
use dnvs_engine::io::{read_nifti, write_nifti, Volume, VoxelKind};

/// What nibabel says about one file.
struct NiftiCase {
    file: &'static str,
    shape: [usize; 3],
    zooms: [f64; 3],
    datatype: DataType,
    qform_code: i16,
    sform_code: i16,
    affine: [[f64; 4]; 4],
    range: (f32, f32),
    sum: f64,
    voxels: &'static [([usize; 3], f32)],
    codes: &'static str,
}

const CASES: &[NiftiCase] = &[
    NiftiCase {
        file: "real/totalseg_example_ct_sm.nii.gz",
        shape: [122, 101, 30],
        zooms: [3.0, 3.0, 3.0],
        datatype: DataType::I16,
        qform_code: 0,
        sform_code: 2,
        affine: [
            [3.0, 0.0, 0.0, -177.95632934570312],
            [0.0, 3.0, 0.0, 11.319000244140625],
            [0.0, 0.0, 3.0, 94.3017578125],
            [0.0, 0.0, 0.0, 1.0],
        ],
        range: (-1100.0, 1207.0),
        sum: -130894872.0,
        voxels: &[([40, 67, 7], -104.0), ([1, 2, 3], -1023.0), ([61, 50, 15], 0.0)],
        codes: "RAS",
    },
    NiftiCase {
        file: "real/niivue_CT_pitch.nii.gz",
        shape: [175, 248, 58],
        zooms: [0.8125, 0.8125, 2.3970494270324707],
        datatype: DataType::U8,
        qform_code: 2,
        sform_code: 2,
        affine: [
            [0.8125, 0.0, 0.0, -69.02075958251953],
            [0.0, 0.779041051864624, 0.6807987689971924, -134.38560485839844],
            [0.0, -0.23076248168945312, 2.2983384132385254, -13.56882095336914],
            [0.0, 0.0, 0.0, 1.0],
        ],
        range: (0.0, 255.0),
        sum: 95678796.0,
        voxels: &[([87, 124, 29], 156.0), ([58, 165, 14], 203.0)],
        codes: "RAS",
    },
    NiftiCase {
        // uint8 with scl_slope 2.2086275: values are scaled on read.
        file: "real/niivue_CT_AVM.nii.gz",
        shape: [256, 242, 154],
        zooms: [0.719942569732666, 0.7209135890007019, 1.0],
        datatype: DataType::U8,
        qform_code: 1,
        sform_code: 1,
        affine: [
            [0.719942569732666, 0.0, 0.0, -73.39768981933594],
            [0.0, 0.7209135890007019, 0.0, -69.69419860839844],
            [0.0, 0.0, 1.0, -64.11000061035156],
            [0.0, 0.0, 0.0, 1.0],
        ],
        range: (0.0, 563.2),
        sum: 49383836.6660285,
        voxels: &[([63, 111, 9], 563.2), ([102, 37, 57], 35.33804)],
        codes: "RAS",
    },
];

fn assert_affine(what: &str, got: &[[f64; 4]; 4], want: &[[f64; 4]; 4], tol: f64) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (got[r][c] - want[r][c]).abs() <= tol,
                "{what}: affine[{r}][{c}] = {} want {} (got {got:?})",
                got[r][c],
                want[r][c]
            );
        }
    }
}

fn temp_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dnvs_io_nifti_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn real_files_read_as_nibabel_reads_them() {
    for case in CASES {
        let (vol, info) = read_nifti_with_info(&data_path(case.file)).unwrap();
        let f = case.file;
        assert_eq!(vol.dims, case.shape, "{f}");
        assert_eq!(vol.data.len(), case.shape.iter().product::<usize>(), "{f}");
        for a in 0..3 {
            assert!(
                (vol.spacing[a] - case.zooms[a]).abs() < 1e-6,
                "{f}: spacing {:?}",
                vol.spacing
            );
        }
        assert_eq!(info.datatype, case.datatype, "{f}");
        assert_eq!((info.qform_code, info.sform_code), (case.qform_code, case.sform_code), "{f}");
        // The sform is float32 in the file: nibabel's float64 values are those exactly.
        assert_affine(f, &vol.affine, &case.affine, 0.0);
        assert_eq!(axis_codes(&vol.affine), case.codes, "{f}");
        let (lo, hi) = vol.value_range().unwrap();
        assert!(
            (lo - case.range.0).abs() < 1e-3 && (hi - case.range.1).abs() < 1e-3,
            "{f}: {lo}..{hi}"
        );
        let sum: f64 = vol.data.iter().map(|&v| v as f64).sum();
        assert!(
            (sum - case.sum).abs() <= 1e-6 * case.sum.abs(),
            "{f}: sum {sum} want {}",
            case.sum
        );
        for &([i, j, k], want) in case.voxels {
            let got = vol.data[vol.index(i, j, k)];
            assert!((got - want).abs() < 1e-3, "{f}: voxel ({i},{j},{k}) = {got}, want {want}");
        }
    }
}

#[test]
fn header_fields_decoded_by_hand_agree() {
    // Independent of the nifti crate: decode srow_* (offset 280) and codes from the raw bytes.
    let vol = read_nifti(&data_path("real/niivue_CT_pitch.nii.gz")).unwrap();
    let h = vol.header.as_ref().unwrap();
    let f32_at = |o: usize| f32::from_le_bytes(h[o..o + 4].try_into().unwrap()) as f64;
    let i16_at = |o: usize| i16::from_le_bytes(h[o..o + 2].try_into().unwrap());
    assert_eq!(i16_at(252), 2, "qform_code");
    assert_eq!(i16_at(254), 2, "sform_code");
    for r in 0..3 {
        for c in 0..4 {
            assert_eq!(vol.affine[r][c], f32_at(280 + 16 * r + 4 * c));
        }
    }
}

#[test]
fn qform_only_file_uses_the_quaternion() {
    // Pitch with sform_code cleared must give nibabel's get_qform() of that file.
    let path = temp_path("qform_only.nii");
    let raw = std::fs::read(data_path("real/niivue_CT_pitch.nii.gz")).unwrap();
    let mut bytes = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut bytes).unwrap();
    bytes[254..256].copy_from_slice(&0i16.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let q = read_nifti(&path).unwrap();
    let want = [
        [0.8125, 0.0, 0.0, -69.02075958251953],
        [0.0, 0.7790410405164548, 0.680798760169364, -134.38560485839844],
        [0.0, -0.230762447532174, 2.2983383136058437, -13.56882095336914],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_affine("qform", &q.affine, &want, 1e-6);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

fn assert_round_trip(src: &Volume, kind: VoxelKind, name: &str) -> Volume {
    let path = temp_path(name);
    write_nifti(&path, src, kind).unwrap();
    let (back, _) = read_nifti_with_info(&path).unwrap();
    assert_eq!(back.dims, src.dims, "{name}");
    assert_eq!(back.spacing, src.spacing, "{name}");
    assert_affine(name, &back.affine, &src.affine, 0.0);
    assert!(back.data == src.data, "{name}: data differ");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    back
}

#[test]
fn write_read_round_trip_keeps_data_geometry_and_codes() {
    for case in CASES {
        let src = read_nifti(&data_path(case.file)).unwrap();
        let back = assert_round_trip(&src, VoxelKind::Image, "rt.nii.gz");
        let (a, b) = (src.header.unwrap(), back.header.unwrap());
        // The datatype (70..72) and, for the AVM's uint8 with slope 2.2086, scl_slope/scl_inter
        // (112..120) are kept too: the values are reproduced exactly by them.
        assert_eq!(a[70..72], b[70..72], "{}: datatype", case.file);
        assert_eq!(a[112..120], b[112..120], "{}: scl_slope, scl_inter", case.file);
        // codes (252..256), quatern + srow (256..328), pixdim (76..108), xyzt_units (123).
        assert_eq!(a[252..328], b[252..328], "{}: qform/sform fields", case.file);
        assert_eq!(a[76..108], b[76..108], "{}: pixdim", case.file);
        assert_eq!(a[123], b[123], "{}: xyzt_units", case.file);
    }
}

#[test]
fn masks_are_uint8_probabilities_float32_and_generated_volumes_get_scanner_codes() {
    let mut vol = Volume::zeros([4, 5, 6], [0.4, 0.5, 0.6]);
    vol.affine[0][3] = -10.0;
    vol.data = (0..vol.len()).map(|v| (v % 3) as f32).collect();
    let path = temp_path("mask.nii.gz");
    write_nifti(&path, &vol, VoxelKind::Mask).unwrap();
    let (back, info) = read_nifti_with_info(&path).unwrap();
    assert_eq!(info.datatype, DataType::U8);
    assert_eq!((info.qform_code, info.sform_code, info.xyzt_units), (1, 1, 2));
    assert_eq!(back.data, vol.data);
    assert_affine("generated", &back.affine, &vol.affine, 1e-6);

    let prob = vol.with_data(vol.data.iter().map(|v| v / 3.0).collect());
    let path = temp_path("prob.nii");
    write_nifti(&path, &prob, VoxelKind::Probability).unwrap();
    let (back, info) = read_nifti_with_info(&path).unwrap();
    assert_eq!(info.datatype, DataType::F32);
    assert_eq!(back.data, prob.data);

    let bad = vol.with_data(vec![256.0; vol.len()]);
    let err = write_nifti(&temp_path("bad.nii"), &bad, VoxelKind::Mask).unwrap_err();
    assert!(err.to_string().contains("256"), "{err}");
}

#[test]
fn every_common_datatype_reads() {
    // A 2x3x4 volume written by hand in each datatype, big- and little-endian, with scaling.
    let values: Vec<f64> = (0..24).map(|v| v as f64).collect();
    let types = [
        (2i16, 1usize),
        (4, 2),
        (8, 4),
        (16, 4),
        (64, 8),
        (256, 1),
        (512, 2),
        (768, 4),
        (1024, 8),
        (1280, 8),
    ];
    for &(code, size) in &types {
        for big in [false, true] {
            let mut h = vec![0u8; 352];
            let put_i16 = |h: &mut [u8], o: usize, v: i16| {
                h[o..o + 2].copy_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() })
            };
            let put_f32 = |h: &mut [u8], o: usize, v: f32| {
                h[o..o + 4].copy_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() })
            };
            h[0..4].copy_from_slice(&if big { 348i32.to_be_bytes() } else { 348i32.to_le_bytes() });
            for (n, d) in [3i16, 2, 3, 4, 1, 1, 1, 1].iter().enumerate() {
                put_i16(&mut h, 40 + 2 * n, *d);
            }
            put_i16(&mut h, 70, code);
            put_i16(&mut h, 72, (size * 8) as i16);
            for (n, p) in [1.0f32, 1.5, 2.0, 2.5].iter().enumerate() {
                put_f32(&mut h, 76 + 4 * n, *p);
            }
            put_f32(&mut h, 108, 352.0);
            put_f32(&mut h, 112, 2.0); // scl_slope
            put_f32(&mut h, 116, -3.0); // scl_inter
            h[344..348].copy_from_slice(b"n+1\0");
            // Disk order: i fastest.
            for k in 0..4 {
                for j in 0..3 {
                    for i in 0..2 {
                        let v = values[(i * 3 + j) * 4 + k];
                        let b: Vec<u8> = match code {
                            2 => vec![v as u8],
                            256 => vec![v as i8 as u8],
                            4 => e(&(v as i16).to_le_bytes(), big),
                            512 => e(&(v as u16).to_le_bytes(), big),
                            8 => e(&(v as i32).to_le_bytes(), big),
                            768 => e(&(v as u32).to_le_bytes(), big),
                            1024 => e(&(v as i64).to_le_bytes(), big),
                            1280 => e(&(v as u64).to_le_bytes(), big),
                            16 => e(&(v as f32).to_le_bytes(), big),
                            _ => e(&v.to_le_bytes(), big),
                        };
                        h.extend(b);
                    }
                }
            }
            let path = temp_path("dt.nii");
            std::fs::write(&path, &h).unwrap();
            let vol = read_nifti(&path).unwrap_or_else(|e| panic!("code {code} big {big}: {e}"));
            assert_eq!(vol.dims, [2, 3, 4]);
            assert_eq!(vol.spacing, [1.5, 2.0, 2.5]);
            let want: Vec<f32> = values.iter().map(|v| (v * 2.0 - 3.0) as f32).collect();
            assert_eq!(vol.data, want, "code {code} big {big}");
            std::fs::remove_dir_all(path.parent().unwrap()).ok();
        }
    }
}

/// Little-endian bytes, reversed for big-endian.
fn e(le: &[u8], big: bool) -> Vec<u8> {
    let mut v = le.to_vec();
    if big {
        v.reverse();
    }
    v
}

#[test]
fn reorienting_and_writing_moves_the_geometry_along() {
    // An LPS-ordered copy of a real file written and read back must give the same canonical
    // volume as the original.
    let src = read_nifti(&data_path("real/totalseg_example_ct_sm.nii.gz")).unwrap();
    let mut lps = src.clone();
    // Flip i and j: new voxel (i, j, k) = old (ni-1-i, nj-1-j, k).
    let [ni, nj, nk] = src.dims;
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                let at = lps.index(i, j, k);
                lps.data[at] = src.data[src.index(ni - 1 - i, nj - 1 - j, k)];
            }
        }
    }
    for r in 0..3 {
        lps.affine[r][3] += src.affine[r][0] * (ni - 1) as f64 + src.affine[r][1] * (nj - 1) as f64;
        lps.affine[r][0] = -src.affine[r][0];
        lps.affine[r][1] = -src.affine[r][1];
    }
    assert_eq!(axis_codes(&lps.affine), "LPS");
    let path = temp_path("lps.nii.gz");
    write_nifti(&path, &lps, VoxelKind::Image).unwrap();
    let back = read_nifti(&path).unwrap();
    assert_affine("lps", &back.affine, &lps.affine, 1e-4);
    let can = dnvs_engine::io::as_closest_canonical(&back);
    assert_affine("canonical", &can.affine, &src.affine, 1e-4);
    assert!(can.data == src.data);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn changed_geometry_is_written_consistently_in_qform_and_sform() {
    use dnvs_engine::io::orientation::{apply, quatern_to_affine, Quatern};
    use dnvs_engine::io::resample::{crop_centered, resample_to_spacing, Interp};
    // Oblique source, resampled to 1.2 mm and cut to a VOI: the writer must re-derive both forms,
    // keep the codes (2 = aligned) and the units, and the VOI must sit where it sat in the source.
    let src = read_nifti(&data_path("real/niivue_CT_pitch.nii.gz")).unwrap();
    let res = resample_to_spacing(&src, [1.2, 1.2, 1.2], Interp::Linear).unwrap();
    assert_eq!(res.dims, [118, 168, 116]);
    let voi = crop_centered(&res, [60, 80, 50], [40, 50, 30], 0.0).unwrap();
    // Voxel centre (0,0,0) of the VOI is resampled voxel (40, 55, 35) = source index
    // (40, 55, 35) * 1.2 / spacing.
    let world = apply(&voi.affine, [0.0; 3]);
    let src_idx = [40.0 * 1.2 / 0.8125, 55.0 * 1.2 / 0.8125, 35.0 * 1.2 / src.spacing[2]];
    let want = apply(&src.affine, src_idx);
    for a in 0..3 {
        assert!((world[a] - want[a]).abs() < 1e-9, "{world:?} vs {want:?}");
    }
    let path = temp_path("voi.nii.gz");
    write_nifti(&path, &voi, VoxelKind::Image).unwrap();
    let (back, info) = read_nifti_with_info(&path).unwrap();
    assert_eq!((info.qform_code, info.sform_code, info.xyzt_units), (2, 2, 10));
    // Interpolated values no longer fit the source's uint8.
    assert_eq!(info.datatype, DataType::F32);
    assert_eq!(back.dims, [40, 50, 30]);
    assert!(back.data == voi.data);
    assert_affine("voi sform", &back.affine, &voi.affine, 1e-4);
    let h = back.header.as_ref().unwrap();
    let f = |o: usize| f32::from_le_bytes(h[o..o + 4].try_into().unwrap()) as f64;
    let q = quatern_to_affine(&Quatern {
        bcd: [f(256), f(260), f(264)],
        offset: [f(268), f(272), f(276)],
        pixdim: [f(80), f(84), f(88)],
        qfac: f(76),
    });
    assert_affine("voi qform", &q, &voi.affine, 1e-4);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}
