//! The self-check a GPU passes before the engine trusts it.
//!
//! On the first use of a GPU (per device architecture, kernel-source hash and precision) the
//! engine runs the same small workload on the GPU and on the CPU (the oracle) and compares:
//! single ops in the order a V-Net uses them (convolution, down and up convolution, batch norm,
//! activations, softmax, losses, one Adam step), then a small V-Net's forward, loss and parameter
//! gradients. The verdict is cached next to the kernel cache, so later runs only read a file.
//! When the GPU disagrees, `device: auto` falls back to the CPU with one line naming the first
//! op that disagreed, and an explicit `cuda` is an error with the same message.
//!
//! Single ops, `|gpu - cpu| <= rtol * |cpu| + atol * max|cpu|` per element:
//! - f32: rtol 1e-3, atol 1e-4. The kernels sum in a different order than the CPU; f32 has
//!   2^-24 relative rounding, so a difference above 1e-3 is a bug, not rounding.
//! - bf16 convolutions: rtol 3e-2, atol 2e-2. Each operand is rounded to 8 mantissa bits (relative
//!   error 2^-9 = 2e-3), a product carries two such roundings (4e-3), and the error of a sum of
//!   products is bounded relative to the sum of magnitudes, which for zero-mean activations is
//!   several times the result: about 1e-2 of the tensor's scale per layer. The check runs a few
//!   layers deep, so twice that plus margin; a wrong kernel is off by O(1).
//!
//! The V-Net runs in f32 whatever the precision checked: it tests that the kernels chain (the
//! tape, skips, concatenation, dropout, gradients meeting), which f32 shows sharply, while bf16
//! accuracy is a property of the single convolutions above. Its forward and loss are compared
//! per element at the f32 tolerance, its gradients per tensor:
//! `||gpu - cpu|| <= 1e-3 ||cpu|| + 1e-4 ||g||`, `g` every gradient of the network together.
//! Per element would be wrong there: the bias of a convolution that a batch norm follows has an
//! exactly zero gradient, so both devices return the rounding noise of a sum over every voxel,
//! which no relative tolerance can match, and a weight gradient of a deep layer sums many
//! products whose order differs, leaving a few small elements far off in relative terms while
//! the tensor as a whole agrees. On an H200 (2026-11-30) every weight gradient agreed to a
//! relative 1.5e-5 or better, while the per-element check failed on those biases, and a floor of
//! `1e-4 rms sqrt(n)` per tensor still failed the 2-element output bias (2.1x).

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{build_seeded, init::Rng, Arch, Mode};
use crate::autograd::{backward, backward_with};
use crate::backend::norm::BatchStats;
use crate::optim::{Adam, AdamConfig};
use crate::tensor::{Device, Precision, Tensor};
use crate::{loss, ops, Error, Result};

/// How an entry of the workload is compared (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Per element at the checked precision's tolerance (the single ops).
    Elements,
    /// Per element at the f32 tolerance whatever the precision (what always computes in f32).
    ElementsF32,
    /// As a whole tensor by its L2 norm, with a floor from the norm of all such entries together
    /// (the gradients of a network).
    Norm,
}

/// One named result of the workload (an op's output or a gradient), on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    pub values: Vec<f32>,
    pub check: Check,
}

impl Entry {
    fn new(name: impl Into<String>, values: Vec<f32>, check: Check) -> Self {
        Entry { name: name.into(), values, check }
    }
}

/// How one entry of the GPU run compares with the CPU's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpAgreement {
    pub name: String,
    /// The largest `|gpu - cpu| / tolerance` over the elements: <= 1 agrees.
    pub worst: f64,
    pub agrees: bool,
}

/// The outcome of a self-check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// What the verdict is cached for: architecture, kernel-source hash, precision.
    pub key: String,
    pub ops: Vec<OpAgreement>,
}

impl Verdict {
    /// The first entry that disagreed, in workload order.
    pub fn first_disagreement(&self) -> Option<&OpAgreement> {
        self.ops.iter().find(|o| !o.agrees)
    }

    pub fn passed(&self) -> bool {
        self.first_disagreement().is_none()
    }
}

/// What the user asked for: `auto` may fall back to the CPU, an explicit GPU may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(DeviceChoice::Auto);
        }
        let d: Device = s
            .parse()
            .map_err(|_| Error::arg("device", format!("'{s}' is not auto, cpu, cuda or cuda:N")))?;
        Ok(match d {
            Device::Cpu => DeviceChoice::Cpu,
            Device::Cuda(n) => DeviceChoice::Cuda(n),
        })
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

// ---- the workload ---------------------------------------------------------------------------------

/// Deterministic values in [-scale, scale].
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    Rng::new(seed).uniform(n, scale)
}

/// `f` on `inputs` (made trainable leaves on `dev`), then the backward of `sum(out * seed)`: the
/// output and each input's gradient, named `<name> out`, `<name> grad <i>`.
fn op_entries(
    name: &str,
    dev: Device,
    inputs: &[(Vec<usize>, u64)],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Vec<Entry>> {
    let ts = inputs
        .iter()
        .map(|(dims, seed)| {
            let n = dims.iter().product();
            Ok(Tensor::from_vec(values(n, *seed, 1.0), dims.clone())?
                .to_device(dev)?
                .requires_grad())
        })
        .collect::<Result<Vec<_>>>()?;
    let out = f(&ts)?;
    let seed = Tensor::from_vec(values(out.numel(), 99, 1.0), out.dims().to_vec())?;
    let grads = backward_with(&out, seed.to_device(dev)?)?;
    let mut entries = vec![Entry::new(format!("{name} out"), out.to_vec()?, Check::Elements)];
    for (i, t) in ts.iter().enumerate() {
        if let Some(g) = grads.get(t) {
            entries.push(Entry::new(format!("{name} grad {i}"), g.to_vec()?, Check::Elements));
        }
    }
    Ok(entries)
}

/// Single ops, in the order a V-Net meets them.
fn op_workload(dev: Device, prec: Precision) -> Result<Vec<Entry>> {
    let x = vec![1, 6, 5, 4, 3];
    let mut out = Vec::new();
    out.extend(op_entries("conv3d k5", dev, &[(x.clone(), 1), (vec![4, 5, 5, 5, 3], 2)], |t| {
        ops::conv3d_prec(&t[0], &t[1], None, 1, 2, prec)
    })?);
    out.extend(op_entries(
        "conv3d k2 s2",
        dev,
        &[(x.clone(), 3), (vec![4, 2, 2, 2, 3], 4)],
        |t| ops::conv3d_prec(&t[0], &t[1], None, 2, 0, prec),
    )?);
    out.extend(op_entries(
        "conv_transpose3d",
        dev,
        &[(vec![1, 3, 2, 2, 4], 5), (vec![3, 2, 2, 2, 4], 6)],
        |t| ops::conv_transpose3d_prec(&t[0], &t[1], None, 2, prec),
    )?);
    out.extend(op_entries(
        "batch_norm",
        dev,
        &[(x.clone(), 7), (vec![3], 8), (vec![3], 9)],
        |t| {
            ops::batch_norm(
                &t[0],
                Some(&t[1]),
                Some(&t[2]),
                BatchStats::Batch { running: None },
                1e-5,
            )
        },
    )?);
    out.extend(op_entries("prelu", dev, &[(x.clone(), 10), (vec![3], 11)], |t| {
        ops::prelu(&t[0], &t[1])
    })?);
    out.extend(op_entries("elu", dev, &[(x.clone(), 12)], |t| ops::elu(&t[0], 1.0))?);
    out.extend(op_entries("softmax_channels", dev, &[(x.clone(), 13)], |t| {
        ops::softmax_channels(&t[0])
    })?);
    let target =
        Tensor::from_vec((0..30).map(|i| f32::from(u8::from(i % 3 == 0))).collect(), [1, 6, 5, 1])?
            .to_device(dev)?;
    let probs = |t: &[Tensor]| ops::softmax_channels(&ops::reshape(&t[0], [1, 6, 5, 1, 2])?);
    out.extend(op_entries("nll_probs", dev, &[(vec![1, 6, 5, 1, 2], 14)], |t| {
        loss::nll_probs(&probs(t)?, &target, None)
    })?);
    out.extend(op_entries("soft_dice", dev, &[(vec![1, 6, 5, 1, 2], 15)], |t| {
        loss::soft_dice(&probs(t)?, &target)
    })?);
    out.extend(op_entries("hard_dice", dev, &[(vec![1, 6, 5, 1, 2], 16)], |t| {
        Ok(loss::hard_dice(&probs(t)?, &target)?.loss)
    })?);
    out.extend(adam_entries(dev)?);
    Ok(out)
}

/// One Adam step (lr 1e-2, weight decay 0.1) of two parameters from the same gradients on each
/// device: the new parameters (Adam computes in f32 on both).
fn adam_entries(dev: Device) -> Result<Vec<Entry>> {
    let up = |dims: Vec<usize>, seed: u64| -> Result<Tensor> {
        let n = dims.iter().product();
        Tensor::from_vec(values(n, seed, 1.0), dims)?.to_device(dev)
    };
    let params = [up(vec![4, 3, 3, 3, 2], 31)?, up(vec![5], 32)?];
    let grads = [up(vec![4, 3, 3, 3, 2], 33)?, up(vec![5], 34)?];
    let cfg = AdamConfig { lr: 1e-2, weight_decay: 0.1, ..AdamConfig::default() };
    let new = Adam::new(cfg).step(&params, &grads)?;
    new.iter()
        .enumerate()
        .map(|(i, p)| Ok(Entry::new(format!("adam param {i}"), p.to_vec()?, Check::ElementsF32)))
        .collect()
}

/// A width-4 V-Net in f32 on a 32^3 input (its deepest batch norm sees 2x2x2 voxels): forward,
/// loss and the gradient of every parameter.
fn vnet_workload(dev: Device) -> Result<Vec<Entry>> {
    let mut net = build_seeded(Arch::VNet, 4, 7)?;
    net.to_device(dev)?;
    net.set_precision(Precision::F32);
    let dims = [1, 32, 32, 32];
    let n: usize = dims.iter().product();
    let x = Tensor::from_vec(values(n, 21, 1.0), [1, 32, 32, 32, 1])?.to_device(dev)?;
    let labels: Vec<f32> = values(n, 22, 1.0).into_iter().map(|v| f32::from(v > 0.3)).collect();
    let y = Tensor::from_vec(labels, dims)?.to_device(dev)?;
    let probs = net.forward(&x, Mode::Train { seed: 5 })?;
    let l = loss::nll_probs(&probs, &y, None)?;
    let grads = backward(&l)?;
    let names = net.parameter_names();
    let params = net.parameters();
    let mut out = vec![
        Entry::new("vnet forward", probs.to_vec()?, Check::ElementsF32),
        Entry::new("vnet loss", l.to_vec()?, Check::ElementsF32),
    ];
    for (name, p) in names.iter().zip(&params) {
        let values = match grads.get(p) {
            Some(gp) => gp.to_vec()?,
            None => vec![0.0; p.numel()],
        };
        out.push(Entry::new(format!("vnet grad {name}"), values, Check::Norm));
    }
    Ok(out)
}

/// The whole workload on `dev`: single ops (convolutions in `prec`), then the f32 V-Net.
pub fn workload(dev: Device, prec: Precision) -> Result<Vec<Entry>> {
    let mut out = op_workload(dev, prec)?;
    out.extend(vnet_workload(dev)?);
    Ok(out)
}

// ---- comparing ------------------------------------------------------------------------------------

/// `(rtol, atol relative to the tensor's largest magnitude)` for `prec` (see the module docs).
pub fn tolerance(prec: Precision) -> (f64, f64) {
    match prec {
        Precision::F32 => (1e-3, 1e-4),
        Precision::Bf16 => (3e-2, 2e-2),
    }
}

/// `(rtol, atol relative to the norm of all gradients)` of the per-tensor [`Check::Norm`]
/// comparison.
pub const NORM_TOLERANCE: (f64, f64) = (1e-3, 1e-4);

/// The largest `|gpu - cpu| / (rtol |cpu| + atol max|cpu|)` over the elements.
fn worst_element(cpu: &[f32], gpu: &[f32], (rtol, atol): (f64, f64)) -> f64 {
    let scale = cpu.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    cpu.iter()
        .zip(gpu)
        .map(|(&a, &b)| {
            let tol = rtol * f64::from(a.abs()) + atol * scale + f64::MIN_POSITIVE;
            let err = f64::from((a - b).abs());
            if err.is_finite() {
                err / tol
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// `||gpu - cpu|| / (rtol ||cpu|| + atol ||all||)`, `||all||` the norm of every gradient.
fn norm_ratio(cpu: &[f32], gpu: &[f32], all: f64) -> f64 {
    let (rtol, atol) = NORM_TOLERANCE;
    let err = norm(cpu.iter().zip(gpu).map(|(&a, &b)| f64::from(a) - f64::from(b)));
    let reference = norm(cpu.iter().map(|&a| f64::from(a)));
    let tol = rtol * reference + atol * all + f64::MIN_POSITIVE;
    if err.is_finite() {
        err / tol
    } else {
        f64::INFINITY
    }
}

/// Compares the GPU run with the CPU run entry by entry (a missing or mis-sized entry, or a
/// non-finite value, disagrees).
pub fn compare(cpu: &[Entry], gpu: &[Entry], prec: Precision, key: &str) -> Verdict {
    let all = norm(
        cpu.iter()
            .filter(|e| e.check == Check::Norm)
            .flat_map(|e| &e.values)
            .map(|&v| f64::from(v)),
    );
    let ops = cpu
        .iter()
        .map(|c| {
            let worst = match gpu.iter().find(|g| g.name == c.name) {
                Some(g) if g.values.len() == c.values.len() => match c.check {
                    Check::Elements => worst_element(&c.values, &g.values, tolerance(prec)),
                    Check::ElementsF32 => {
                        worst_element(&c.values, &g.values, tolerance(Precision::F32))
                    }
                    Check::Norm => norm_ratio(&c.values, &g.values, all),
                },
                _ => f64::INFINITY,
            };
            OpAgreement { name: c.name.clone(), worst, agrees: worst <= 1.0 }
        })
        .collect();
    Verdict { key: key.to_string(), ops }
}

/// What to do with a verdict: the device to use, and the one line to print when falling back.
///
/// # Errors
/// [`Error::Device`] when the user asked for this GPU explicitly and it disagreed (or the check
/// could not run).
pub fn decide(
    choice: DeviceChoice,
    gpu: Device,
    verdict: Result<Verdict>,
) -> Result<(Device, Option<String>)> {
    let msg = match &verdict {
        Ok(v) => match v.first_disagreement() {
            None => return Ok((gpu, None)),
            Some(op) => format!(
                "{gpu} failed its self-check against the CPU: `{}` disagrees ({:.1}x the tolerance)",
                op.name, op.worst
            ),
        },
        Err(e) => format!("{gpu} failed its self-check against the CPU: it could not run: {e}"),
    };
    match choice {
        DeviceChoice::Auto => Ok((Device::Cpu, Some(format!("dnvs-engine: {msg}; using the CPU")))),
        _ => Err(Error::Device { op: "gpu self-check", msg }),
    }
}

// ---- running and caching --------------------------------------------------------------------------

/// The cache key of GPU `ordinal`: architecture, kernel-source hash, precision.
fn key(ordinal: usize, prec: Precision) -> Result<String> {
    let gpu = crate::backend::cuda::gpu(ordinal)?;
    Ok(format!(
        "{}-{:016x}-{}",
        gpu.arch_name(),
        crate::backend::cuda::sources_hash(),
        prec.suffix()
    ))
}

/// Where the verdict for `key` is cached: beside the compiled kernels.
pub fn cache_path(key: &str) -> Option<PathBuf> {
    crate::backend::cuda::nvrtc::cache_dir().map(|d| d.join(format!("selfcheck-{key}.json")))
}

/// Reads a cached verdict (`None` when absent or unreadable: the check then runs again).
pub fn load_cached(path: &std::path::Path) -> Option<Verdict> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a verdict atomically (temp file + rename), creating the cache folder.
pub fn store(path: &std::path::Path, v: &Verdict) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let bytes = serde_json::to_vec_pretty(v)
        .map_err(|e| Error::format(path, format!("cannot encode the verdict: {e}")))?;
    crate::atomic::write_atomic(path, &bytes)
}

/// Runs the self-check on GPU `ordinal` now (and caches the verdict).
///
/// # Errors
/// Any error of the workload on either device (a kernel that does not compile, a CUDA fault).
pub fn run_check(ordinal: usize, prec: Precision) -> Result<Verdict> {
    let key = key(ordinal, prec)?;
    let cpu = workload(Device::Cpu, prec)?;
    let gpu = workload(Device::Cuda(ordinal), prec)?;
    let v = compare(&cpu, &gpu, prec, &key);
    if let Some(p) = cache_path(&key) {
        // A cache that cannot be written only means the check runs again next time.
        let _ = store(&p, &v);
    }
    Ok(v)
}

/// The verdict for GPU `ordinal`: the cached one, else a fresh run.
pub fn verdict(ordinal: usize, prec: Precision) -> Result<Verdict> {
    let key = key(ordinal, prec)?;
    if let Some(v) = cache_path(&key).as_deref().and_then(load_cached) {
        if v.key == key {
            return Ok(v);
        }
    }
    run_check(ordinal, prec)
}

/// The device to run on for `choice`: the CPU, or a GPU that is present and passed its
/// self-check. `auto` without a usable GPU, or with one that disagrees, is the CPU (one line on
/// stderr says why); an explicit GPU that is missing or disagrees is an error.
///
/// # Errors
/// [`Error::Device`] for an explicit GPU that is unusable or fails the self-check.
pub fn resolve(choice: DeviceChoice, prec: Precision) -> Result<Device> {
    let ordinal = match choice {
        DeviceChoice::Cpu => return Ok(Device::Cpu),
        DeviceChoice::Auto => 0,
        DeviceChoice::Cuda(n) => n,
    };
    if let Err(why) = crate::tensor::probe(ordinal) {
        if choice == DeviceChoice::Auto {
            eprintln!("dnvs-engine: using the CPU ({why})");
            return Ok(Device::Cpu);
        }
        return Err(Error::Device { op: "device", msg: format!("cuda:{ordinal}: {why}") });
    }
    let (dev, line) = decide(choice, Device::Cuda(ordinal), verdict(ordinal, prec))?;
    if let Some(line) = line {
        eprintln!("{line}");
    }
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, values: &[f32]) -> Entry {
        Entry::new(name, values.to_vec(), Check::Elements)
    }

    fn grad(name: &str, values: &[f32]) -> Entry {
        Entry::new(name, values.to_vec(), Check::Norm)
    }

    /// A gradient whose true value is zero (a bias before a batch norm) is rounding noise on
    /// both devices and agrees; a weight gradient with a few small elements far off in relative
    /// terms agrees as a tensor; a wrong one (5 % off as a whole) does not.
    #[test]
    fn gradients_compare_as_tensors_against_the_networks_scale() {
        let w: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3).collect();
        let cpu = [grad("w", &w), grad("bias", &[1e-9, -2e-9, 3e-10])];
        let mut w_gpu: Vec<f32> = w.iter().map(|x| x * (1.0 + 1e-6)).collect();
        let zero = w.iter().position(|x| *x == 0.0).expect("one element is 0");
        w_gpu[zero] = 1e-6; // infinitely far off relatively, nothing next to the tensor
        let noise = [grad("w", &w_gpu), grad("bias", &[-4e-9, 1e-9, 0.0])];
        let v = compare(&cpu, &noise, Precision::F32, "k");
        assert!(v.passed(), "{:?}", v.first_disagreement());
        let wrong: Vec<f32> = w.iter().map(|x| x * 1.05).collect();
        let v = compare(&cpu, &[grad("w", &wrong), grad("bias", &[0.0; 3])], Precision::F32, "k");
        assert_eq!(v.first_disagreement().map(|o| o.name.as_str()), Some("w"));
        // The same zero-gradient noise compared per element fails: why gradients are tensors.
        let per_element = compare(
            &[entry("bias", &[1e-9, -2e-9, 3e-10])],
            &[entry("bias", &[-4e-9, 1e-9, 0.0])],
            Precision::F32,
            "k",
        );
        assert!(!per_element.passed());
    }

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse::<DeviceChoice>().expect("auto"), DeviceChoice::Auto);
        assert_eq!("cuda:2".parse::<DeviceChoice>().expect("cuda:2"), DeviceChoice::Cuda(2));
        assert!("gpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn tolerance_scales_with_the_tensor_and_catches_nan() {
        let cpu = [entry("a", &[1.0, 1000.0]), entry("b", &[1.0])];
        let close = [entry("a", &[1.05, 1000.5]), entry("b", &[1.0005])];
        assert!(compare(&cpu, &close, Precision::F32, "k").passed());
        let nan = [entry("a", &[1.0, 1000.0]), entry("b", &[f32::NAN])];
        let v = compare(&cpu, &nan, Precision::F32, "k");
        assert_eq!(v.first_disagreement().map(|o| o.name.as_str()), Some("b"));
        let missing = [entry("a", &[1.0, 1000.0])];
        assert!(!compare(&cpu, &missing, Precision::F32, "k").passed());
    }

    #[test]
    fn verdict_round_trips_through_the_cache_file() {
        let dir = std::env::temp_dir().join(format!("dnvs-selfcheck-{}", std::process::id()));
        let path = dir.join("selfcheck-test.json");
        let v = compare(&[entry("a", &[1.0])], &[entry("a", &[2.0])], Precision::F32, "sm_90-x");
        store(&path, &v).expect("store");
        assert_eq!(load_cached(&path), Some(v));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
