//! The model card: it round-trips through the weights file and `info`; `segment` with a card
//! needs no flags and gives the probabilities of the same weights run with explicit flags; weights
//! without a card name the flags they need; bad inputs and outputs fail before any work.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_close, data_path};
use dnvs_engine::io::normalize::Normalization;
use dnvs_engine::io::{self, Volume, VoxelKind};
use dnvs_engine::nn::model::{self, LoadedModel, ModelCard, ModelOverrides};
use dnvs_engine::nn::{self, Arch};
use dnvs_engine::Device;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dnvs_card_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cli(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dnvs-engine"));
    c.args(args);
    for (flag, p) in paths {
        if !flag.is_empty() {
            c.arg(flag);
        }
        c.arg(p);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The golden V-Net (width 2) with a card that says min-max over [-500, 1500] HU, 0.5 mm, window
/// 32,32,16 (what the explicit flags below say too).
fn carded_golden(dir: &Path) -> (PathBuf, ModelCard) {
    let mut net = nn::build(Arch::VNet, 2).unwrap();
    net.load_safetensors(&data_path("golden/vnet_b2.weights.safetensors")).unwrap();
    let card = ModelCard {
        format: model::CARD_FORMAT,
        arch: Arch::VNet,
        width: 2,
        target: "mc".into(),
        classes: 2,
        spacing_mm: [0.5; 3],
        normalization: Normalization::Minmax { min: -500.0, max: 1500.0 },
        patch: [32, 32, 16],
        window: [32, 32, 16],
        config_sha256: model::sha256_hex(b"{}"),
        dataset: "phantoms".into(),
        seed: 1,
        train_cases: vec!["case_0003".into()],
        val_cases: vec!["case_0001".into()],
        dice: Some(0.97),
        hd95_mm: Some(0.8),
        engine_version: dnvs_engine::VERSION.into(),
        scan_mm: None,
    };
    let path = dir.join("vnet.safetensors");
    model::save_with_card(net.as_ref(), &path, &card).unwrap();
    (path, card)
}

/// A 48 x 40 x 24 "CT" at 0.5 mm: a bright ball in soft tissue, values in HU.
fn ct(dir: &Path) -> (PathBuf, Volume) {
    let mut v = Volume::zeros([48, 40, 24], [0.5; 3]);
    v.affine[0][3] = -10.0;
    for i in 0..48 {
        for j in 0..40 {
            for k in 0..24 {
                let r2 = (i as f32 - 24.0).powi(2)
                    + (j as f32 - 20.0).powi(2)
                    + (k as f32 - 12.0).powi(2);
                let at = v.index(i, j, k);
                v.data[at] = if r2 < 100.0 { 1200.0 } else { 40.0 + (at % 7) as f32 };
            }
        }
    }
    let p = dir.join("ct.nii.gz");
    io::write_nifti(&p, &v, VoxelKind::Image).unwrap();
    (p, v)
}

#[test]
fn the_card_round_trips_through_the_file_and_info() {
    let dir = scratch("roundtrip");
    let (path, card) = carded_golden(&dir);
    assert_eq!(model::read_card(&path).unwrap(), Some(card.clone()));
    // The weights are untouched by the card.
    let mut net = nn::build(Arch::VNet, 2).unwrap();
    net.load_safetensors(&path).unwrap();
    // Converted weights have none.
    let plain = data_path("golden/vnet_b2.weights.safetensors");
    assert_eq!(model::read_card(&plain).unwrap(), None);
    let out = cli(&["info"], &[("", &path)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    for want in [
        "arch: vnet width 2",
        "target: mc",
        "0.5 x 0.5 x 0.5 mm",
        "\"kind\":\"minmax\"",
        "Dice 0.9700",
    ] {
        assert!(text.contains(want), "info should print {want}:\n{text}");
    }
    let out = cli(&["info"], &[("", &plain)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no model card"));
    // A card from a newer engine is refused with a message.
    let newer = ModelCard { format: 99, ..card };
    let net = nn::build(Arch::VNet, 2).unwrap();
    let p2 = dir.join("newer.safetensors");
    model::save_with_card(net.as_ref(), &p2, &newer).unwrap();
    let e = model::read_card(&p2).unwrap_err().to_string();
    assert!(e.contains("newer") && e.contains("newer.safetensors"), "{e}");
}

#[test]
fn segment_with_a_card_needs_no_flags_and_matches_explicit_flags() {
    let dir = scratch("segment");
    let (carded, _) = carded_golden(&dir);
    let (input, _) = ct(&dir);
    let plain = data_path("golden/vnet_b2.weights.safetensors");
    let (m1, p1, m2, p2) = (
        dir.join("m1.nii.gz"),
        dir.join("p1.nii.gz"),
        dir.join("m2.nii.gz"),
        dir.join("p2.nii.gz"),
    );
    let out = cli(
        &["segment", "--device", "cpu"],
        &[("--model", &carded), ("--input", &input), ("--output", &m1), ("--probs", &p1)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("model card"), "{}", stderr(&out));
    let out = cli(
        &["segment", "--device", "cpu", "--arch", "vnet", "--normalize", "minmax"],
        &[("--range", Path::new("-500,1500")), ("--window", Path::new("32,32,16"))],
    );
    assert!(!out.status.success(), "no --model: clap refuses");
    let out = cli(
        &[
            "segment",
            "--device",
            "cpu",
            "--arch",
            "vnet",
            "--normalize",
            "minmax",
            "--range",
            "-500,1500",
            "--window",
            "32,32,16",
        ],
        &[("--model", &plain), ("--input", &input), ("--output", &m2), ("--probs", &p2)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (io::read_nifti(&p1).unwrap(), io::read_nifti(&p2).unwrap());
    assert_close("card vs flags", &a.data, &b.data, 0.0, 0.0);
    assert_eq!(io::read_nifti(&m1).unwrap().data, io::read_nifti(&m2).unwrap().data);

    // Without a card the error names every missing flag.
    let out = cli(
        &["segment", "--device", "cpu"],
        &[("--model", &plain), ("--input", &input), ("--output", &m2)],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("no model card") && e.contains("--arch") && e.contains("--normalize"),
        "{e}"
    );

    // An override that contradicts the card warns and is used.
    let out = cli(
        &["segment", "--device", "cpu", "--normalize", "none"],
        &[("--model", &carded), ("--input", &input), ("--output", &m2)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning") && stderr(&out).contains("overrides the model card"));
}

#[test]
fn the_card_spacing_resamples_the_input_and_comes_back() {
    let dir = scratch("spacing");
    let (carded, _) = carded_golden(&dir);
    let (_, vol) = ct(&dir);
    let mut model = LoadedModel::open(&carded, &ModelOverrides::default(), Device::Cpu).unwrap();
    // The same CT at 0.4 mm: predicted at 0.5 mm, returned on the 0.4 mm grid.
    let fine =
        io::resample::resample_to_spacing(&vol, [0.4; 3], io::resample::Interp::Linear).unwrap();
    let pred = model.predict(&fine).unwrap();
    assert_eq!(pred.labels.dims, fine.dims);
    assert_eq!(pred.labels.affine, fine.affine);
    assert_eq!(pred.probs.len(), 2);
    for (b, f) in pred.probs[0].data.iter().zip(&pred.probs[1].data) {
        assert!((b + f - 1.0).abs() < 1e-5 && (0.0..=1.0).contains(f));
    }
}

#[test]
fn bad_inputs_and_outputs_fail_before_any_work() {
    let dir = scratch("refusals");
    let (carded, _) = carded_golden(&dir);
    let (input, mut vol) = ct(&dir);
    // NaN/Inf voxels: an error naming the file and the count, unless --nan-to.
    for i in [5, 77, 901] {
        vol.data[i] = f32::NAN;
    }
    vol.data[1000] = f32::INFINITY;
    vol.header = None;
    let nan = dir.join("nan.nii.gz");
    io::write_nifti(&nan, &vol, VoxelKind::Image).unwrap();
    let mask = dir.join("m.nii.gz");
    let out = cli(
        &["segment", "--device", "cpu"],
        &[("--model", &carded), ("--input", &nan), ("--output", &mask)],
    );
    let e = stderr(&out);
    assert!(!out.status.success() && e.contains("nan.nii.gz") && e.contains("4 of"), "{e}");
    assert!(!mask.exists(), "no output after a refusal");
    let out = cli(
        &["segment", "--device", "cpu", "--nan-to", "-1000"],
        &[("--model", &carded), ("--input", &nan), ("--output", &mask)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(&mask).unwrap();
    // --probs into a missing folder: refused before the mask is written.
    let out = cli(
        &["segment", "--device", "cpu"],
        &[
            ("--model", &carded),
            ("--input", &input),
            ("--output", &mask),
            ("--probs", &dir.join("nowhere/p.nii.gz")),
        ],
    );
    assert!(!out.status.success() && stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!mask.exists(), "nothing written when an output cannot be");
    // A window under the V-Net's real minimum is refused up front, naming it.
    let out = cli(
        &["segment", "--device", "cpu", "--window", "16,16,16"],
        &[("--model", &carded), ("--input", &input), ("--output", &mask)],
    );
    let e = stderr(&out);
    assert!(!out.status.success() && e.contains("too small") && e.contains("32"), "{e}");
    // While an input smaller than the window is padded and works (a 16^3 VOI).
    let mut small = Volume::zeros([16, 16, 16], [0.5; 3]);
    small.data.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 13) as f32 * 100.0);
    let mut m = LoadedModel::open(&carded, &ModelOverrides::default(), Device::Cpu).unwrap();
    assert_eq!(m.predict(&small).unwrap().labels.dims, [16, 16, 16]);
}
