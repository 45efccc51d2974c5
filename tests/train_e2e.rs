//! Training end to end on phantoms, on the CPU: a small V-Net learns the condyle, a resumed run
//! is bitwise the run that never stopped, and bad configs and data fail before training starts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dnvs_engine::io::normalize::Normalization;
use dnvs_engine::train::config::Config;
use dnvs_engine::train::dataset::{Dataset, Side};
use dnvs_engine::train::trainer::{self, TrainOptions};
use dnvs_engine::{Device, Error};

/// A fresh folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dnvs_train_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const VOI: [usize; 3] = [32, 40, 32];
const CASES: usize = 6;

/// The phantom data set all tests share (written once per test binary).
fn dataset() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch("data").join("phantoms");
        dnvs_engine::train::synth_bridge::write_phantoms(
            &d,
            CASES,
            3,
            VOI,
            None,
            Default::default(),
        )
        .expect("phantoms");
        d
    })
}

/// A small config: V-Net width 4, 16^3 patches, CE + hard Dice, light augmentation.
fn config_json(data: &Path, run: &Path, epochs: usize, samples: usize) -> String {
    format!(
        r#"{{
 "manual_seed": 11,
 "training": {{"device": "cpu", "model_name": "VNet", "width": 4, "num_epochs": {epochs},
   "k_follds_number": 3, "folds": [1], "batch_size": 2, "learning_rate": 0.003, "wd": 0.0,
   "step_size": 20, "gamma": 0.5, "precision": "fp32", "run_dir": "{run}"}},
 "loss": {{"loss_type": "DCE", "dce_w": 1, "w0": 1, "w1": 1, "nll": "True"}},
 "loaders": {{
   "dataset_dir": "{data}", "target": "mc", "voi_shape": [{}, {}, {}],
   "train_patch": [16, 16, 16], "window": [32, 32, 32], "overlap": 0.25, "fg_fraction": 0.33,
   "train_dataset_size": {samples},
   "transformer": {{
     "train": {{"raw": [{{"name": "Normalize"}}, {{"name": "RandomFlip", "axes": [0], "execution_probability": 0.5}}],
               "label": [{{"name": "RandomFlip", "axes": [0], "execution_probability": 0.5}}]}},
     "test": {{"raw": [{{"name": "Normalize"}}], "label": []}}
   }}
 }}
}}"#,
        VOI[0],
        VOI[1],
        VOI[2],
        data = data.display(),
        run = run.display()
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("config.json");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_small_vnet_learns_the_condyle() {
    let dir = scratch("learn");
    let run = dir.join("run");
    // Trained on a 0.8 mm grid (the default configs' choice): the VOIs are resampled for
    // training, and validation, the test rows and `segment` resample the 0.4 mm VOIs to it.
    let text = config_json(dataset(), &run, 8, 24).replace(
        r#""window": [32, 32, 32],"#,
        r#""window": [32, 32, 32], "spacing_mm": [0.8, 0.8, 0.8],"#,
    );
    let cfg = Config::load(&write_config(&dir, &text)).unwrap();
    let t = std::time::Instant::now();
    let summary =
        trainer::train(&cfg, &TrainOptions { quiet: true, ..Default::default() }).unwrap();
    assert!(summary.finished);
    let dice: Vec<f64> = summary.tests.iter().map(|r| r.scores.dice).collect();
    let mean = dice.iter().sum::<f64>() / dice.len() as f64;
    // Chance: a constant prediction scores 0 (nothing) or 2f/(1+f) (everything, foreground
    // fraction f); a random one with rate q scores at most about that. Take the best of those
    // over the held-out joints.
    let prep = trainer::prepare(&cfg).unwrap();
    let chance = prep
        .samples
        .iter()
        .filter(|s| summary.tests.iter().any(|r| r.id == s.id))
        .map(|s| {
            let f = s.label.data.iter().sum::<f32>() as f64 / s.label.data.len() as f64;
            2.0 * f / (1.0 + f)
        })
        .fold(0.0, f64::max);
    eprintln!(
        "held-out MC Dice per joint {dice:?}, mean {mean:.3} (chance at most {chance:.3}), {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(mean > 0.6 && mean > chance + 0.1, "held-out Dice {mean:.3} is no better than chance");
    for f in [
        "loss_convergence.csv",
        "test_results.csv",
        "progress.png",
        "state.json",
        "fold1/best.safetensors",
        "fold1/last.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} written");
    }
    let conv = std::fs::read_to_string(run.join("loss_convergence.csv")).unwrap();
    assert!(conv.starts_with("k,epoch,mode,iter,loss,ce,dice,IoU\n"));
    let tests = std::fs::read_to_string(run.join("test_results.csv")).unwrap();
    assert_eq!(tests.lines().count(), 1 + summary.tests.len());
    one_normalisation_and_one_inference_path(&cfg, &summary);
    // eval: each fold's best weights on its held-out joints, CSV and the Table 1 shape.
    let report = dnvs_engine::train::eval::eval(&cfg, &Default::default()).unwrap();
    assert_eq!(report.rows.len(), summary.tests.len());
    assert!(report.table.contains("| MC | DICE |"), "{}", report.table);
    assert!(run.join("eval_results.csv").exists() && run.join("table_1.md").exists());
    eprintln!("{}", report.table);
}

/// The fold's normalisation is in state.json and in the best model's card; `segment`'s path
/// (`LoadedModel::predict` on the held-out VOI file) reproduces the test row's Dice; the same VOI
/// resampled to 0.5 mm segments within 0.03 Dice of the 0.4 mm one.
fn one_normalisation_and_one_inference_path(cfg: &Config, summary: &trainer::RunSummary) {
    use dnvs_engine::io::resample::{resample_to_spacing, Interp};
    use dnvs_engine::nn::model::{read_card, LoadedModel, ModelOverrides};
    let st = trainer::load_state(&summary.run_dir).unwrap();
    let card = read_card(&summary.best_model).unwrap().expect("best.safetensors has a card");
    assert_eq!(Some(card.normalization.clone()), st.normalization, "one normalisation");
    assert!(matches!(card.normalization, Normalization::Minmax { .. }));
    assert_eq!(card.target, "mc");
    assert!(card.spacing_mm.iter().all(|s| (s - 0.8).abs() < 1e-6), "{:?}", card.spacing_mm);
    assert!(card.dice.is_some_and(|d| d > 0.0) && card.hd95_mm.is_some());
    assert_eq!(card.config_sha256.len(), 64);
    let mut model =
        LoadedModel::open(&summary.best_model, &ModelOverrides::default(), Device::Cpu).unwrap();
    let ds = Dataset::open(&cfg.loaders.dataset_dir).unwrap();
    let row = &summary.tests[0];
    let side = if row.side == "L" { Side::L } else { Side::R };
    let voi = ds.load_voi(&row.id, side).unwrap();
    let dice = |pred: &[f32], truth: &[f32]| {
        let (mut inter, mut a, mut b) = (0.0, 0.0, 0.0);
        for (p, t) in pred.iter().zip(truth) {
            let (p, t) = (f64::from(u8::from(*p > 0.5)), f64::from(u8::from(*t > 0.5)));
            inter += p * t;
            a += p;
            b += t;
        }
        2.0 * inter / (a + b).max(1.0)
    };
    let d04 = dice(&model.predict(&voi.ct).unwrap().labels.data, &voi.mc.data);
    assert!(
        (d04 - row.scores.dice).abs() < 1e-3,
        "segment's Dice {d04} vs the test row's {}",
        row.scores.dice
    );
    let ct05 = resample_to_spacing(&voi.ct, [0.5; 3], Interp::Linear).unwrap();
    let mc05 = resample_to_spacing(&voi.mc, [0.5; 3], Interp::Nearest).unwrap();
    let pred05 = model.predict(&ct05).unwrap();
    assert_eq!(pred05.labels.dims, ct05.dims);
    let d05 = dice(&pred05.labels.data, &mc05.data);
    eprintln!("held-out {} {}: Dice {d04:.3} at 0.4 mm, {d05:.3} at 0.5 mm", row.id, row.side);
    // Both inputs are resampled to the card's 0.8 mm, so they must segment alike.
    assert!((d05 - d04).abs() <= 0.03, "0.5 mm input: Dice {d05:.3} vs {d04:.3} at 0.4 mm");
}

#[test]
fn resume_is_bitwise_the_uninterrupted_run() {
    let dir = scratch("resume");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let once = Config::load(&write_config(&dir, &config_json(dataset(), &a, 4, 4))).unwrap();
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    trainer::train(&once, &quiet).unwrap();
    let dir_b = dir.join("cfg_b");
    std::fs::create_dir_all(&dir_b).unwrap();
    let sliced = Config::load(&write_config(&dir_b, &config_json(dataset(), &b, 4, 4))).unwrap();
    let first =
        trainer::train(&sliced, &TrainOptions { stop_after_epochs: Some(2), ..quiet.clone() })
            .unwrap();
    assert!(!first.finished);
    assert_eq!(trainer::load_state(&b).unwrap().epoch_done, 2);
    let resumed = trainer::load_run_config(&b).unwrap();
    trainer::train(&resumed, &TrainOptions { resume: true, ..quiet }).unwrap();
    // The tensors, bit for bit. (The files' cards differ by design: each run's config file
    // names its own run folder, so `config_sha256` differs.)
    let read = |run: &Path| {
        dnvs_engine::io::weights::read_safetensors(&run.join("fold1/last.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.dims, t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    assert!(
        read(&a) == read(&b),
        "weights after 4 epochs differ between the resumed and the uninterrupted run"
    );
    let (sa, sb) = (trainer::load_state(&a).unwrap(), trainer::load_state(&b).unwrap());
    assert_eq!(sa.adam_step, sb.adam_step);
    let moments = |p: &Path, s: &trainer::TrainState| {
        std::fs::read(p.join(s.adam_file.as_ref().unwrap())).unwrap()
    };
    assert!(moments(&a, &sa) == moments(&b, &sb), "Adam moments differ");
    let rows = |p: &Path| std::fs::read_to_string(p.join("loss_convergence.csv")).unwrap();
    assert_eq!(rows(&a), rows(&b), "the logs match too");
}

fn expect_err(cfg_text: &str, dir: &Path, needle: &str) {
    let run = dir.join("run");
    let _ = std::fs::remove_dir_all(&run);
    let r = Config::load(&write_config(dir, cfg_text))
        .and_then(|c| trainer::train(&c, &TrainOptions { quiet: true, ..Default::default() }));
    let e = r.err().unwrap_or_else(|| panic!("training started; expected an error about {needle}"));
    assert!(e.to_string().contains(needle), "error {e} should mention {needle}");
    assert!(!run.exists(), "failed before anything was written");
}

#[test]
fn bad_configs_and_data_fail_before_training() {
    let dir = scratch("bad");
    let run = dir.join("run");
    let good = config_json(dataset(), &run, 1, 2);
    // Unknown key: the error lists the valid ones.
    expect_err(&good.replace("\"wd\"", "\"weight_decay\""), &dir, "learning_rate");
    // Unknown transform.
    expect_err(&good.replacen("\"RandomFlip\"", "\"RandomFlop\"", 1), &dir, "RandomFlop");
    // Patch larger than the VOI.
    expect_err(
        &good.replace("\"train_patch\": [16, 16, 16]", "\"train_patch\": [64, 16, 16]"),
        &dir,
        "train_patch",
    );
    // A patch that fits the 0.4 mm VOI but not the VOI on a 0.8 mm training grid (16 voxels).
    expect_err(
        &good.replace(
            "\"train_patch\": [16, 16, 16]",
            "\"train_patch\": [32, 16, 16], \"spacing_mm\": [0.8, 0.8, 0.8]",
        ),
        &dir,
        "training grid",
    );
    // A data set without dataset.json and no synth section.
    expect_err(
        &good.replace(&dataset().display().to_string(), &dir.join("nowhere").display().to_string()),
        &dir,
        "dataset.json",
    );
    // A data set whose file is missing: copy dataset.json only.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(dataset().join("dataset.json"), broken.join("dataset.json")).unwrap();
    let r = Config::load(&write_config(
        &dir,
        &good.replace(&dataset().display().to_string(), &broken.display().to_string()),
    ))
    .and_then(|c| trainer::train(&c, &TrainOptions { quiet: true, ..Default::default() }));
    assert!(r.is_err(), "missing VOI files are an error");
    assert!(!run.join("state.json").exists());
    // A VOI smaller than voi_shape.
    expect_err(
        &good.replace(
            &format!("\"voi_shape\": [{}, {}, {}]", VOI[0], VOI[1], VOI[2]),
            &format!("\"voi_shape\": [{}, {}, {}]", VOI[0] + 8, VOI[1], VOI[2]),
        ),
        &dir,
        "smaller than loaders.voi_shape",
    );
    // Values that parse but cannot train: refused before the run directory exists.
    expect_err(
        &good.replace("\"k_follds_number\": 3", "\"k_follds_number\": 1"),
        &dir,
        "k_follds_number",
    );
    expect_err(&good.replace("\"width\": 4", "\"width\": 0"), &dir, "width");
    expect_err(&good.replace("\"gamma\": 0.5", "\"gamma\": -0.5"), &dir, "gamma");
    expect_err(&good.replace("\"num_epochs\": 1", "\"num_epochs\": 0"), &dir, "num_epochs");
    expect_err(
        &good.replace("\"window\": [32, 32, 32]", "\"window\": [16, 16, 16]"),
        &dir,
        "too small",
    );
}

#[test]
fn nan_voxels_in_a_training_ct_are_refused_unless_replaced() {
    let dir = scratch("nan");
    let data = dir.join("data");
    copy_dir(dataset(), &data);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("dataset.json")).unwrap()).unwrap();
    let ct = manifest["cases"][1]["sides"]["R"]["image"].as_str().unwrap().to_string();
    let mut vol = dnvs_engine::io::read_nifti(&data.join(&ct)).unwrap();
    vol.data[10] = f32::NAN;
    vol.data[20] = f32::NEG_INFINITY;
    vol.header = None;
    dnvs_engine::io::write_nifti(&data.join(&ct), &vol, dnvs_engine::io::VoxelKind::Image).unwrap();
    let run = dir.join("run");
    let cfg = Config::load(&write_config(&dir, &config_json(&data, &run, 1, 2))).unwrap();
    let quiet = TrainOptions { quiet: true, stop_after_epochs: Some(0), ..Default::default() };
    let e = trainer::train(&cfg, &quiet).expect_err("NaN voxels are an error").to_string();
    let file = Path::new(&ct).file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.contains(&file) && e.contains("2 of") && e.contains("--nan-to"), "{e}");
    assert!(!run.exists());
    trainer::train(&cfg, &TrainOptions { nan_to: Some(-1000.0), ..quiet }).unwrap();
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("diverge");
    let run = dir.join("run");
    let text = config_json(dataset(), &run, 3, 4);
    let cfg = Config::load(&write_config(&dir, &text)).unwrap();
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    trainer::train(&cfg, &TrainOptions { stop_after_epochs: Some(1), ..quiet.clone() }).unwrap();
    let before = std::fs::read(run.join("fold1/last.safetensors")).unwrap();
    let state_before = std::fs::read(run.join("state.json")).unwrap();
    // The same run with an absurd learning rate (Adam's, saved in state.json) diverges in its
    // second epoch.
    let state_file = run.join("state.json");
    let mut st: serde_json::Value = serde_json::from_slice(&state_before).unwrap();
    st["base_lr"] = serde_json::json!(3e38);
    let state_bad = serde_json::to_vec(&st).unwrap();
    std::fs::write(&state_file, &state_bad).unwrap();
    let resumed = trainer::load_run_config(&run).unwrap();
    let e = trainer::train(&resumed, &TrainOptions { resume: true, ..quiet.clone() })
        .expect_err("a divergence is an error");
    assert!(matches!(e, Error::Diverged(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("epoch 2"), "{msg}");
    assert!(msg.contains("after 1 epoch"), "{msg}");
    assert_eq!(
        std::fs::read(run.join("fold1/last.safetensors")).unwrap(),
        before,
        "last good checkpoint intact"
    );
    assert_eq!(std::fs::read(&state_file).unwrap(), state_bad, "state untouched");
    // And it resumes from there once the learning rate is sane again.
    std::fs::write(&state_file, &state_before).unwrap();
    let resumed = trainer::load_run_config(&run).unwrap();
    let s = trainer::train(&resumed, &TrainOptions { resume: true, ..quiet.clone() }).unwrap();
    assert!(s.finished);
    // A finished run says so; more epochs extend it.
    let again = trainer::load_run_config(&run).unwrap();
    let e = trainer::train(&again, &TrainOptions { resume: true, ..quiet.clone() }).unwrap_err();
    assert!(e.to_string().contains("finished") && e.to_string().contains("--epochs"), "{e}");
    let mut more = trainer::load_run_config(&run).unwrap();
    more.training.num_epochs = 4;
    let s = trainer::train(&more, &TrainOptions { resume: true, ..quiet }).unwrap();
    assert!(s.finished);
    assert_eq!(trainer::load_state(&run).unwrap().epoch_done, 4);
}

#[test]
fn ctrl_c_stops_training_with_130_and_the_run_resumes() {
    let dir = scratch("sigint");
    let run = dir.join("run");
    let cfg = write_config(&dir, &config_json(dataset(), &run, 40, 4));
    let bin = env!("CARGO_BIN_EXE_dnvs-engine");
    let child = std::process::Command::new(bin)
        .args(["train", "--quiet", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !run.join("state.json").exists() {
        assert!(t.elapsed().as_secs() < 120, "no epoch finished in 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // SAFETY: signalling our own child process by its id.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted") && err.contains("--resume"), "{err}");
    let st = trainer::load_state(&run).unwrap();
    assert!(st.epoch_done >= 1 && st.epoch_done < 40);
    // The run continues from where it stands.
    let out = std::process::Command::new(bin)
        .args(["train", "--quiet", "--epochs", &(st.epoch_done + 1).to_string(), "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("best.safetensors"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_mask_that_does_not_align_with_its_ct_fails_before_training() {
    let dir = scratch("misaligned");
    let data = dir.join("data");
    copy_dir(dataset(), &data);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("dataset.json")).unwrap()).unwrap();
    let mc =
        manifest["cases"][0]["sides"]["L"]["mc"].as_str().expect("an MC mask path").to_string();
    let mut vol = dnvs_engine::io::read_nifti(&data.join(&mc)).unwrap();
    vol.affine[0][3] += 5.0; // shifted by 5 mm: same shape, another place
    vol.header = None;
    dnvs_engine::io::write_nifti(&data.join(&mc), &vol, dnvs_engine::io::VoxelKind::Mask).unwrap();
    let run = dir.join("run");
    let cfg = Config::load(&write_config(&dir, &config_json(&data, &run, 1, 2))).unwrap();
    let e = trainer::train(&cfg, &TrainOptions { quiet: true, ..Default::default() })
        .expect_err("a misaligned mask is an error");
    assert!(e.to_string().to_lowercase().contains("align"), "{e}");
    assert!(!run.join("state.json").exists(), "failed before training");
}

/// `loss.joint_w` adds the NLL over the joint region to the loss: on the first step (same
/// weights, same batch) the logged CE is unchanged and the loss grows by the joint term; the run
/// trains to the end with a finite loss.
#[test]
fn the_joint_term_adds_to_the_loss_and_trains() {
    let dir = scratch("joint");
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    let first_step = |name: &str, joint_w: f32| {
        let run = dir.join(name);
        let text = config_json(dataset(), &run, 1, 4)
            .replace("\"nll\": \"True\"", &format!("\"nll\": \"True\", \"joint_w\": {joint_w}"));
        let sub = dir.join(format!("cfg_{name}"));
        std::fs::create_dir_all(&sub).unwrap();
        let cfg = Config::load(&write_config(&sub, &text)).unwrap();
        assert!(trainer::train(&cfg, &quiet).unwrap().finished);
        let csv = std::fs::read_to_string(run.join("loss_convergence.csv")).unwrap();
        let row = csv.lines().find(|l| l.contains(",train,")).expect("a training row").to_string();
        let cols: Vec<f64> = row.split(',').skip(4).map(|v| v.parse().unwrap()).collect();
        (cols[0], cols[1])
    };
    let (loss0, ce0) = first_step("plain", 0.0);
    let (loss1, ce1) = first_step("joint", 1.0);
    assert!(loss0.is_finite() && loss1.is_finite());
    assert!((ce1 - ce0).abs() < 1e-6, "the whole-patch CE is the same: {ce0} vs {ce1}");
    assert!(loss1 > loss0 + 1e-3, "the joint term adds to the loss: {loss0} vs {loss1}");
}
