//! Issue 11 regressions, one per numbered item, on the crafted inputs in tests/data/bad/ (made by
//! tests/tools/make_bad_inputs.py): no wrong data with exit 0, no panic, clear errors naming the
//! file and the value.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::data_path;
use dnvs_engine::io::{read_dicom_series, read_nifti, read_volume};

const EXE: &str = env!("CARGO_BIN_EXE_dnvs-engine");

fn bad(name: &str) -> PathBuf {
    data_path(&format!("bad/{name}"))
}

fn err_of<T: std::fmt::Debug>(r: dnvs_engine::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should mention {p:?}");
    }
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(EXE).args(args).output().expect("run dnvs-engine")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// A temp folder holding `good` slices of the real series plus `extra` files; removed on drop.
struct Series(PathBuf);

impl Series {
    fn new(tag: &str, good: usize, extra: &[PathBuf]) -> Series {
        let dir = std::env::temp_dir().join(format!("dnvs_hard_{tag}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut src: Vec<PathBuf> = std::fs::read_dir(data_path("real/totalseg_example_ct_dicom"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        src.sort();
        // Slice 0 is the one the bad files were made from: take its neighbours.
        for f in &src[1..=good] {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
        for f in extra {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
        Series(dir)
    }
}

impl Drop for Series {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- 1: corrupt .nii.gz

#[test]
fn item1_gzip_crc_and_length_are_checked() {
    let good = read_nifti(&bad("ramp_8x8x4.nii")).unwrap();
    assert_eq!(good.value_range(), Some((5.0, 5.0 + 3.0 * 255.0)));
    for name in ["crc_mismatch.nii.gz", "isize_mismatch.nii.gz"] {
        let msg = err_of(read_nifti(&bad(name)));
        assert_mentions(&msg, &[name, "corrupt"]);
        let o = run(&["info".as_ref(), bad(name).as_os_str()]);
        assert_eq!(o.status.code(), Some(1), "info must fail on {name}");
        assert!(text(&o).0.find("values:").is_none(), "no statistics from a corrupt file");
    }
}

// ---- 2: DICOM numbers that do not parse

#[test]
fn item2_unparsable_rescale_intercept_names_the_file_and_value() {
    for (name, value) in
        [("dicom_intercept_abc.dcm", "\"abc\""), ("dicom_intercept_1.2.3.dcm", "\"1.2.3\"")]
    {
        let s = Series::new(&name[15..18], 2, &[bad(name)]);
        let msg = err_of(read_dicom_series(&s.0, None));
        assert_mentions(&msg, &[name, "RescaleIntercept", value, "not a number"]);
    }
}

// ---- 3 (info's part): non-finite voxels are counted

#[test]
fn item3_info_counts_nan_and_infinite_voxels() {
    let o = run(&["info".as_ref(), bad("nan_inf_8x8x4.nii").as_os_str()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_mentions(&out, &["non-finite voxels: 5 (3 NaN, 2 infinite)", "values: 0 .. 255"]);
    let o = run(&["info".as_ref(), bad("ramp_8x8x4.nii").as_os_str()]);
    assert_mentions(&text(&o).0, &["non-finite voxels: 0", "values: 5 .. 770"]);
}

// ---- 5: metrics --label

#[test]
fn item5_metrics_label_absent_or_out_of_range_is_an_error() {
    let m = bad("mask_01.nii");
    let l = bad("mask_labels_0_1_2_255.nii");
    let both = |label: &str, a: &Path, b: &Path| {
        run(&[
            "metrics".as_ref(),
            "--pred".as_ref(),
            a.as_os_str(),
            "--gt".as_ref(),
            b.as_os_str(),
            "--label".as_ref(),
            label.as_ref(),
        ])
    };
    let o = both("3", &m, &m);
    assert_eq!(o.status.code(), Some(1));
    assert_mentions(&text(&o).1, &["--label 3", "outside", "[0, 1]"]);
    let o = both("2", &m, &l);
    assert!(o.status.success(), "label 2 is in the ground truth: {}", text(&o).1);
    assert_mentions(&text(&o).0, &["\"dice\": 0.0"]);
    let o = both("7", &l, &l);
    assert_eq!(o.status.code(), Some(1));
    assert_mentions(&text(&o).1, &["--label 7", "absent from both", "[0, 1, 2, 255]"]);
    let o = both("1", &m, &m);
    assert!(o.status.success());
    assert_mentions(&text(&o).0, &["\"dice\": 1.0"]);
}

// ---- 6: masks that are not 0/1

#[test]
fn item6_convert_mask_says_what_it_found_and_did() {
    let dir = std::env::temp_dir().join(format!("dnvs_hard_mask_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.nii.gz");
    let conv = |src: &Path| {
        run(&["convert".as_ref(), src.as_os_str(), out.as_os_str(), "--mask".as_ref()])
    };
    let o = conv(&bad("mask_fractional.nii"));
    assert!(o.status.success());
    assert_mentions(&text(&o).1, &["warning", "not whole numbers", "0.3", "0.7", "rounded"]);
    let back = read_nifti(&out).unwrap();
    assert_eq!(back.value_range(), Some((0.0, 1.0)));
    let o = conv(&bad("mask_labels_0_1_2_255.nii"));
    assert!(o.status.success());
    assert_mentions(&text(&o).1, &["not a 0/1 mask", "[0, 1, 2, 255]"]);
    std::fs::remove_file(&out).unwrap();
    let o = conv(&bad("mask_negative.nii"));
    assert_eq!(o.status.code(), Some(1));
    assert_mentions(&text(&o).1, &["mask_negative.nii", "outside", "-1.0", "nothing was written"]);
    assert!(!out.exists());
    let o = conv(&bad("mask_01.nii"));
    assert!(o.status.success() && text(&o).1.is_empty(), "a 0/1 mask converts silently");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- 7: JPEG 2000 codestream that disagrees with the slice header

#[test]
fn item7_j2k_size_mismatch_is_an_error_not_a_panic() {
    let s = Series::new("j2k", 2, &[bad("dicom_j2k_width_513.dcm")]);
    let msg = err_of(read_dicom_series(&s.0, None));
    assert_mentions(&msg, &["dicom_j2k_width_513.dcm", "513x512", "512x512"]);
    let o = run(&["info".as_ref(), s.0.as_os_str()]);
    assert_eq!(o.status.code(), Some(1), "exit 1, not a panic (101): {}", text(&o).1);
}

// ---- 8: one wrong length field

#[test]
fn item8_length_past_the_end_of_the_file_is_refused_before_allocating() {
    let s = Series::new("len", 1, &[bad("dicom_length_1337.dcm")]);
    let msg = err_of(read_volume(&s.0));
    assert_mentions(&msg, &["dicom_length_1337.dcm", "declares", "remain in the file"]);
}

// ---- 10: broken pipe

#[test]
fn item10_closed_stdout_ends_quietly() {
    let mut child = Command::new(EXE)
        .args(["info".as_ref(), bad("ramp_8x8x4.nii").as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before anything is printed: every write meets a broken pipe.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("failed printing"), "{err}");
    assert_ne!(o.status.code(), Some(101));
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(o.status.success() || o.status.signal() == Some(13), "{:?}", o.status);
    }
}

// ---- info: spacing and dim[0]

#[test]
fn info_refuses_zero_or_nan_spacing_and_names_dim0() {
    for (name, want) in [
        ("spacing_zero.nii", ["pixdim[2] = 0", "axis j"]),
        ("spacing_nan.nii", ["pixdim[3] = NaN", "axis k"]),
        ("dim0_9.nii", ["dim[0] = 9", "1..7"]),
    ] {
        let o = run(&["info".as_ref(), bad(name).as_os_str()]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = text(&o).1;
        assert_mentions(&err, &[name]);
        assert_mentions(&err, &want);
        assert!(!err.contains("sizeof_hdr"), "{err}");
    }
}
