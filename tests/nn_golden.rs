//! The paper's four networks against PyTorch (tests/data/golden, see its README): parameter names
//! and counts, eval-mode output, loss and every parameter gradient, and weight files that round-trip
//! bit for bit.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{assert_close, data_path, Golden};
use dnvs_engine::autograd;
use dnvs_engine::io::weights::{self, Layout, Stored};
use dnvs_engine::nn::{self, Arch, Mode};
use dnvs_engine::tensor::Precision;
use dnvs_engine::{Device, Tensor};

/// One golden network: file stem, architecture, width.
struct Case {
    name: &'static str,
    arch: Arch,
    width: usize,
}

const CASES: [Case; 4] = [
    Case { name: "vnet_b2", arch: Arch::VNet, width: 2 },
    Case { name: "vnet_att_b2", arch: Arch::VNetAtt, width: 2 },
    Case { name: "unet3d_f8", arch: Arch::UNet, width: 8 },
    Case { name: "unet3d_att_f8", arch: Arch::UNetAtt, width: 8 },
];

fn case(name: &str) -> &'static Case {
    CASES.iter().find(|c| c.name == name).expect("known case")
}

fn golden_weights(c: &Case) -> PathBuf {
    data_path(&format!("golden/{}.weights.safetensors", c.name))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dnvs-nn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// `-mean(log p[target])` over every voxel, with its gradient: what
/// `nll_loss(log(output), target)` computes for softmax probabilities `(N, D, H, W, 2)`.
fn nll_of_probs(probs: &Tensor, target: &[f32]) -> Tensor {
    let p = probs.to_vec().expect("host copy");
    let m = target.len();
    let pick = |i: usize| p[i * 2 + target[i] as usize];
    let loss = -(0..m).map(|i| (pick(i) as f64).ln()).sum::<f64>() / m as f64;
    let (dims, target) = (probs.dims().to_vec(), target.to_vec());
    let device = probs.device();
    autograd::record("nll_of_probs", Tensor::scalar(loss as f32), &[probs], move |g| {
        let g = g.item()?;
        let mut grad = vec![0.0f32; p.len()];
        for (i, &t) in target.iter().enumerate() {
            let k = i * 2 + t as usize;
            grad[k] = -g / (m as f32 * p[k]);
        }
        Ok(vec![Some(Tensor::from_vec(grad, dims.clone())?.to_device(device)?)])
    })
}

/// The PyTorch layout of a parameter, from its name and rank.
fn layout_of(name: &str, rank: usize) -> Layout {
    match (rank, name.contains("up_conv")) {
        (5, true) => Layout::ConvTranspose,
        (5, false) => Layout::Conv,
        _ => Layout::Plain,
    }
}

/// Eval-mode forward, loss and backward of one golden network on `device`, all compared.
fn check_golden(c: &Case, device: Device) {
    let (rtol, atol) = (1e-3, 1e-4);
    let io = Golden::load(&format!("{}.io.safetensors", c.name));
    let mut net = nn::build(c.arch, c.width).unwrap();
    net.load_safetensors(&golden_weights(c)).unwrap();
    net.to_device(device).unwrap();
    // PyTorch computed in f32: so do the GPU's convolutions here (bf16 is the GPU's default).
    net.set_precision(Precision::F32);
    let x = io.engine("input").to_device(device).unwrap();
    let t0 = std::time::Instant::now();
    let out = net.forward(&x, Mode::Eval).unwrap();
    let fwd = t0.elapsed();
    assert_close(
        &format!("{} output", c.name),
        &out.to_vec().unwrap(),
        &io.engine("output").to_vec().unwrap(),
        rtol,
        atol,
    );
    // With the tape off: the same values, nothing recorded.
    let quiet = autograd::no_grad(|| net.forward(&x, Mode::Eval)).unwrap();
    assert!(!quiet.tracks_grad() && out.tracks_grad());
    // Bit for bit on the CPU; a GPU's reductions meet by atomic adds in whatever order the
    // blocks finish, so two runs agree to rounding only.
    let (q, o) = (quiet.to_vec().unwrap(), out.to_vec().unwrap());
    match device {
        Device::Cpu => assert_eq!(q, o, "{} no_grad forward", c.name),
        Device::Cuda(_) => assert_close(&format!("{} no_grad forward", c.name), &q, &o, 1e-5, 1e-6),
    }
    let (target, _) = io.raw("target");
    let loss = nll_of_probs(&out, &target);
    assert_close(
        &format!("{} loss", c.name),
        &[loss.item().unwrap()],
        &io.raw("loss").0,
        1e-4,
        0.0,
    );
    let t1 = std::time::Instant::now();
    let grads = autograd::backward(&loss).unwrap();
    let bwd = t1.elapsed();
    let names = net.parameter_names();
    let params = net.parameters();
    assert_eq!(names.len(), io.keys().iter().filter(|k| k.starts_with("grad.")).count());
    for (name, p) in names.iter().zip(&params) {
        let g = grads.get(p).unwrap_or_else(|| panic!("{}: no gradient for {name}", c.name));
        let layout = layout_of(name, p.rank());
        let got = layout.to_torch(&g.to_vec().unwrap(), g.dims());
        let (want, dims) = io.raw(&format!("grad.{name}"));
        assert_eq!(layout.torch_dims(g.dims()), dims, "{name} dims");
        // Gradients that should be zero (a PReLU slope whose inputs are all positive) come out
        // as tiny sums of cancelling terms: atol scaled to the largest gradient of the tensor.
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("{} grad.{name}", c.name), &got, &want, rtol, atol.max(1e-4 * scale));
    }
    eprintln!("{} on {device}: forward {fwd:.2?}, backward {bwd:.2?}", c.name);
}

#[test]
fn vnet_b2_matches_pytorch() {
    check_golden(case("vnet_b2"), Device::Cpu);
}

#[test]
fn vnet_att_b2_matches_pytorch() {
    check_golden(case("vnet_att_b2"), Device::Cpu);
}

#[test]
fn unet3d_f8_matches_pytorch() {
    check_golden(case("unet3d_f8"), Device::Cpu);
}

#[test]
fn unet3d_att_f8_matches_pytorch() {
    check_golden(case("unet3d_att_f8"), Device::Cpu);
}

#[test]
fn networks_match_pytorch_on_cuda() {
    let Some(dev) = common::cuda_device() else { return };
    for c in &CASES {
        check_golden(c, dev);
    }
}

#[test]
fn parameter_counts_match_models_json() {
    let text = std::fs::read_to_string(data_path("golden/models.json")).unwrap();
    let counts: serde_json::Value = serde_json::from_str(&text).unwrap();
    for c in &CASES {
        let want = counts[c.name].as_u64().unwrap() as usize;
        assert_eq!(nn::param_count(c.arch, c.width).unwrap(), want, "{}", c.name);
        assert_eq!(nn::build(c.arch, c.width).unwrap().param_count(), want, "{}", c.name);
    }
    let vnet16 = counts["vnet16_params"].as_u64().unwrap() as usize;
    assert_eq!(nn::param_count(Arch::VNet, 16).unwrap(), vnet16, "vnet16");
}

#[test]
fn state_names_match_pytorch() {
    for c in &CASES {
        let golden = weights::read_safetensors(&golden_weights(c)).unwrap();
        let mut ours = nn::state_names(c.arch, c.width).unwrap();
        ours.sort();
        let theirs: Vec<String> = golden.keys().cloned().collect();
        assert_eq!(ours, theirs, "{}", c.name);
        let net = nn::build(c.arch, c.width).unwrap();
        let names = net.parameter_names();
        assert!(names.iter().all(|n| !n.contains("running_")), "{}", c.name);
        assert_eq!(names.len(), net.parameters().len());
    }
}

#[test]
fn weights_round_trip_bitwise() {
    for c in &CASES {
        // Golden -> engine -> file: every tensor, running statistics included, bit for bit.
        let mut net = nn::build(c.arch, c.width).unwrap();
        net.load_safetensors(&golden_weights(c)).unwrap();
        let path = tmp(&format!("{}.safetensors", c.name));
        net.save_safetensors(&path).unwrap();
        let golden = weights::read_safetensors(&golden_weights(c)).unwrap();
        let saved = weights::read_safetensors(&path).unwrap();
        assert_eq!(saved.len(), golden.len());
        for (k, g) in &golden {
            let s = &saved[k];
            assert_eq!(s.dims, g.dims, "{k}");
            let same = s.data.iter().zip(&g.data).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{}: {k} changed in the round trip", c.name);
        }
        // Engine -> file -> another engine: identical files.
        let mut other = nn::build_seeded(c.arch, c.width, 99).unwrap();
        other.load_safetensors(&path).unwrap();
        let again = tmp(&format!("{}.again.safetensors", c.name));
        other.save_safetensors(&again).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap(), "{}", c.name);
        for (a, b) in net.parameters().iter().zip(other.parameters()) {
            assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
        }
    }
}

#[test]
fn seeded_init_is_deterministic_and_plausible() {
    let a = nn::build_seeded(Arch::UNetAtt, 8, 3).unwrap();
    let b = nn::build_seeded(Arch::UNetAtt, 8, 3).unwrap();
    let c = nn::build_seeded(Arch::UNetAtt, 8, 4).unwrap();
    let (pa, pb, pc) = (a.parameters(), b.parameters(), c.parameters());
    assert_eq!(pa[0].to_vec().unwrap(), pb[0].to_vec().unwrap());
    assert_ne!(pa[0].to_vec().unwrap(), pc[0].to_vec().unwrap());
    // encoders.0.basic_module.SingleConv1.conv.weight: fan_in 27, bound 1/sqrt(27).
    let w = pa[0].to_vec().unwrap();
    let bound = 1.0 / 27f32.sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.5 * bound));
    assert!(pa.iter().all(|p| p.tracks_grad()));
}

fn write(path: &Path, map: &BTreeMap<String, Stored>) {
    weights::write_safetensors(path, map).unwrap();
}

#[test]
fn load_errors_name_the_keys() {
    let c = case("vnet_b2");
    let golden = weights::read_safetensors(&golden_weights(c)).unwrap();
    let mut net = nn::build(c.arch, c.width).unwrap();

    let mut missing = golden.clone();
    missing.remove("up_tr64.ops.1.conv1.bias");
    let p = tmp("missing.safetensors");
    write(&p, &missing);
    let e = net.load_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("missing 1 key(s): up_tr64.ops.1.conv1.bias"), "{e}");

    let mut extra = golden.clone();
    extra.insert("up_tr64.attention.psi.0.bias".into(), Stored { dims: vec![1], data: vec![0.0] });
    let p = tmp("extra.safetensors");
    write(&p, &extra);
    let e = net.load_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("unexpected 1 key(s): up_tr64.attention.psi.0.bias"), "{e}");

    let mut shaped = golden.clone();
    shaped.insert("in_tr.relu1.weight".into(), Stored { dims: vec![3], data: vec![0.25; 3] });
    let p = tmp("shaped.safetensors");
    write(&p, &shaped);
    let e = net.load_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("in_tr.relu1.weight (expected [2], got [3])"), "{e}");

    // A wider network's file: every conv mis-shaped, reported with a hint.
    let e = nn::build(Arch::VNet, 4).unwrap().load_safetensors(&golden_weights(c)).unwrap_err();
    assert!(e.to_string().contains("--width"), "{e}");

    // Nothing was half-loaded by the failures: the golden file still loads and matches.
    net.load_safetensors(&golden_weights(c)).unwrap();
    assert_eq!(nn::checkpoint_width(Arch::VNet, &golden_weights(c)).unwrap(), 2);
    assert!(nn::checkpoint_width(Arch::UNet, &golden_weights(c)).is_err());
}

#[test]
fn set_parameters_keeps_leaves_and_checks_shapes() {
    let mut net = nn::build(Arch::VNet, 2).unwrap();
    let mut p = net.parameters();
    let first = Tensor::param(vec![0.5; p[0].numel()], p[0].dims().to_vec()).unwrap();
    p[0] = first.clone();
    net.set_parameters(p.clone()).unwrap();
    assert_eq!(net.parameters()[0].id(), first.id());
    p.pop();
    assert!(net.set_parameters(p).is_err());
    let mut p = net.parameters();
    p[1] = Tensor::zeros([7], Device::Cpu).unwrap();
    let e = net.set_parameters(p).unwrap_err().to_string();
    assert!(e.contains("in_tr.conv1.bias"), "{e}");
}

#[test]
fn train_mode_drops_channels_and_updates_running_stats() {
    let c = case("vnet_att_b2");
    let io = Golden::load(&format!("{}.io.safetensors", c.name));
    let x = io.engine("input");
    let mut net = nn::build(c.arch, c.width).unwrap();
    net.load_safetensors(&golden_weights(c)).unwrap();
    let a = net.forward(&x, Mode::Train { seed: 1 }).unwrap().to_vec().unwrap();
    let b = net.forward(&x, Mode::Train { seed: 1 }).unwrap().to_vec().unwrap();
    let e = net.forward(&x, Mode::Eval).unwrap().to_vec().unwrap();
    let d = net.forward(&x, Mode::Train { seed: 2 }).unwrap();
    let (target, _) = io.raw("target");
    let grads = autograd::backward(&nll_of_probs(&d, &target)).unwrap();
    assert!(net.parameters().iter().all(|p| grads.get(p).is_some()));
    let d = d.to_vec().unwrap();
    // Same seed: same masks (the attention gates' batch statistics are the same input's too).
    assert_eq!(a, b);
    assert_ne!(a, d);
    assert_ne!(a, e);
    // Training updated the attention gates' running statistics (momentum 0.1 from the golden).
    let path = tmp("trained.safetensors");
    net.save_safetensors(&path).unwrap();
    let saved = weights::read_safetensors(&path).unwrap();
    let golden = weights::read_safetensors(&golden_weights(c)).unwrap();
    let key = "up_tr32.attention.W_x.1.running_mean";
    assert_ne!(saved[key].data, golden[key].data);
}
