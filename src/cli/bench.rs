//! `dnvs-engine bench`: times the conv3d kernels on the V-Net's layer shapes (forward on the CPU;
//! forward, backward-input and backward-weight in fp32 and bf16 on a GPU) and reports
//! TFLOP/s (GPU) or GFLOP/s (CPU), after warm-up, synchronised before every clock read; then
//! times one V-Net training step (forward, `nll_probs`, backward, Adam, `set_parameters`) at the
//! anchor patch 112x144x64 on a GPU or a small patch on the CPU (`--patch`), median of N steps.
//! Optionally times a no-grad forward at the patch (`--forward`), a sliding-window inference
//! over a volume with the patch as window (`--window-over`), and prints where a step's time goes,
//! per phase and per convolution shape and pass on the CPU, per kernel and grid on a GPU
//! (`--profile`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use dnvs_engine::backend::cpu::conv3d::ConvGeom;
use dnvs_engine::backend::cpu::profile;
use dnvs_engine::backend::cuda::{self as cu, Precision};
use dnvs_engine::nn::gpu_check::{self, DeviceChoice};
use dnvs_engine::nn::{self, Arch, Mode, Network};
use dnvs_engine::optim::{Adam, AdamConfig};
use dnvs_engine::tensor::{Device, Tensor};
use dnvs_engine::volume::Volume;
use dnvs_engine::{autograd, loss, Error};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  dnvs-engine bench --device cpu --quick\n  \
                        dnvs-engine bench --device cpu --width 8 --patch 48,48,32\n  \
                        dnvs-engine bench --device cpu --patch 32,32,32 --profile\n  \
                        dnvs-engine bench --device cpu --no-kernels --patch 64,64,32 --forward \
                        --window-over 120,150,70\n  \
                        dnvs-engine bench --device cuda --json bench-h100.json\n  \
                        dnvs-engine bench --device cuda --no-kernels --profile --reps 3")]
pub struct Args {
    /// cpu or cuda (cuda:N for another GPU). A GPU is timed without the self-check: a benchmark
    /// measures a device, it does not trust its numbers.
    #[arg(long, value_parser = super::parse_device, default_value = "cpu")]
    device: DeviceChoice,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Fewer repetitions (and quarter-size shapes on the CPU): a smoke run, not a measurement.
    #[arg(long)]
    quick: bool,
    /// V-Net width (channels of the first level) for the training-step timing.
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Training-step patch D,H,W (multiples of 16); default 112,144,64 on a GPU, 32,32,32 on
    /// the CPU (the anchor patch takes minutes per step there; 48,48,32 took ~50 s per step on
    /// the shared 2-core VM).
    #[arg(long, value_name = "D,H,W", value_parser = super::parse_dhw)]
    patch: Option<[usize; 3]>,
    /// Skip the V-Net training-step timing.
    #[arg(long)]
    no_step: bool,
    /// Skip the single-convolution timings.
    #[arg(long)]
    no_kernels: bool,
    /// Also time a forward pass without the tape (eval mode) at the patch.
    #[arg(long)]
    forward: bool,
    /// Also time a sliding-window inference (window = the patch, overlap 0.5, Gaussian
    /// blending) over a random volume of D,H,W voxels.
    #[arg(long, value_name = "D,H,W", value_parser = super::parse_dhw)]
    window_over: Option<[usize; 3]>,
    /// Print where the training step's time goes: forward, backward and Adam per step, and
    /// every kernel by op, shape and pass (CPU) or by kernel and grid (GPU, each launch
    /// synchronised: slower than a plain step), per step over the timed steps. With `--forward
    /// --no-step` (CPU), the same table for the tape-free forward instead.
    #[arg(long)]
    profile: bool,
    /// Timed repetitions of the step / forward (median reported); default 5 on the CPU.
    #[arg(long)]
    reps: Option<usize>,
}

/// The anchor patch of the paper's V-Net training (GPU).
const GPU_PATCH: [usize; 3] = [112, 144, 64];
/// A CPU patch small enough for a quick run on a few cores.
const CPU_PATCH: [usize; 3] = [32, 32, 32];
/// The V-Net halves the patch four times: every side must be a multiple of this.
const VNET_MULTIPLE: usize = 16;

/// Refuses a patch the V-Net cannot take before anything is timed (a bad `--patch` used to fail
/// only after the kernel timings, minutes into the run).
fn check_patch(patch: [usize; 3]) -> anyhow::Result<()> {
    if patch.iter().any(|&s| s % VNET_MULTIPLE != 0) {
        let [d, h, w] = patch;
        bail!(
            "--patch {d},{h},{w}: every side must be a multiple of {VNET_MULTIPLE} (the V-Net \
             halves it four times); try {}",
            patch
                .map(|s| s.div_ceil(VNET_MULTIPLE).max(1) * VNET_MULTIPLE)
                .map(|s| s.to_string())
                .join(",")
        );
    }
    Ok(())
}

/// One conv3d layer shape: C in = C out = `c`, a cube kernel `k`, padding `k / 2`, stride 1.
struct Layer {
    k: usize,
    c: usize,
    dhw: [usize; 3],
}

const GPU_LAYERS: &[Layer] = &[
    Layer { k: 5, c: 16, dhw: [112, 144, 64] },
    Layer { k: 5, c: 32, dhw: [56, 72, 32] },
    Layer { k: 5, c: 128, dhw: [14, 18, 8] },
    Layer { k: 3, c: 32, dhw: [112, 144, 64] },
    Layer { k: 3, c: 64, dhw: [56, 72, 32] },
];

const CPU_LAYERS: &[Layer] = &[
    Layer { k: 5, c: 16, dhw: [56, 72, 32] },
    Layer { k: 5, c: 32, dhw: [56, 72, 32] },
    Layer { k: 5, c: 64, dhw: [28, 36, 16] },
    Layer { k: 3, c: 32, dhw: [56, 72, 32] },
];

impl Layer {
    fn name(&self, dhw: [usize; 3]) -> String {
        format!("k{} C{} {}x{}x{}", self.k, self.c, dhw[0], dhw[1], dhw[2])
    }
    /// Multiply-adds x 2 of one pass (forward, backward-input and backward-weight all equal).
    fn flops(&self, dhw: [usize; 3]) -> f64 {
        let vox = (dhw[0] * dhw[1] * dhw[2]) as f64;
        2.0 * vox * (self.c * self.c * self.k.pow(3)) as f64
    }
}

/// Uniform values in `[-0.5, 0.5)` from the crate's generator, seeded per operand.
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut g = dnvs_engine::rng::Xoshiro256::seeded(seed);
    (0..n).map(|_| dnvs_engine::rng::unit_f32(g.next_u64()) - 0.5).collect()
}

/// Median seconds of `iters` runs of `f` after `warm` warm-up runs; `sync` is called before every
/// clock read so GPU work is timed, not its queueing.
fn time(
    warm: usize,
    iters: usize,
    mut f: impl FnMut() -> dnvs_engine::Result<()>,
    sync: &dyn Fn() -> dnvs_engine::Result<()>,
) -> dnvs_engine::Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    sync()?;
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        sync()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn result(
    device: &str,
    pass: &str,
    prec: &str,
    layer: &Layer,
    dhw: [usize; 3],
    secs: f64,
) -> Value {
    let flops = layer.flops(dhw);
    let name = format!("{device}/conv3d_{pass}_{prec}/{}", layer.name(dhw));
    let rate = if device == "cpu" { flops / secs / 1e9 } else { flops / secs / 1e12 };
    let unit = if device == "cpu" { "GFLOP/s" } else { "TFLOP/s" };
    println!("{name:<48} {:>9.3} ms {rate:>9.2} {unit}", secs * 1e3);
    json!({ "name": name, "pass": pass, "precision": prec, "shape": layer.name(dhw),
            "ms": secs * 1e3, "flops": flops, unit: rate })
}

fn skipped(device: &str, pass: &str, layer: &Layer, dhw: [usize; 3], why: &str) -> Value {
    let name = format!("{device}/conv3d_{pass}/{}", layer.name(dhw));
    println!("{name:<48} {why}");
    json!({ "name": name, "pass": pass, "shape": layer.name(dhw), "status": why })
}

fn bench_cpu(quick: bool) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let (warm, iters) = if quick { (0, 1) } else { (1, 3) };
    for layer in CPU_LAYERS {
        let dhw = if quick { layer.dhw.map(|v| v / 4) } else { layer.dhw };
        let xd = [1, dhw[0], dhw[1], dhw[2], layer.c];
        let wd = [layer.c, layer.k, layer.k, layer.k, layer.c];
        let x = Tensor::from_vec(random(xd.iter().product(), 1), xd)?;
        let w = Tensor::from_vec(random(wd.iter().product(), 2), wd)?;
        let pad = layer.k / 2;
        let run = || dnvs_engine::ops::conv3d(&x, &w, None, 1, pad).map(|_| ());
        match time(warm, iters, run, &|| Ok(())) {
            Ok(s) => out.push(result("cpu", "fwd", "f32", layer, dhw, s)),
            Err(Error::NotImplemented(_)) => {
                out.push(skipped("cpu", "fwd", layer, dhw, "not implemented yet (ops::conv3d)"))
            }
            Err(e) => return Err(e).context(format!("cpu conv3d {}", layer.name(dhw))),
        }
    }
    Ok(out)
}

fn bench_cuda(ordinal: usize, quick: bool) -> anyhow::Result<Vec<Value>> {
    let name = cu::probe(ordinal).map_err(|why| anyhow::anyhow!("cuda:{ordinal}: {why}"))?;
    println!("cuda:{ordinal}: {name} (kernels compile at first use: the warm-up absorbs it)");
    let dev = format!("cuda:{ordinal}");
    let sync = || cu::synchronize(ordinal);
    let (warm, iters) = if quick { (1, 3) } else { (3, 10) };
    let mut out = Vec::new();
    for layer in GPU_LAYERS {
        let dhw = layer.dhw;
        let xd = [1, dhw[0], dhw[1], dhw[2], layer.c];
        let wd = [layer.c, layer.k, layer.k, layer.k, layer.c];
        let pad = layer.k / 2;
        let up = |v: Vec<f32>, d: [usize; 5]| -> dnvs_engine::Result<Tensor> {
            Tensor::from_vec(v, d)?.to_device(Device::Cuda(ordinal))
        };
        let x = up(random(xd.iter().product(), 1), xd)?;
        let w = up(random(wd.iter().product(), 2), wd)?;
        let g = up(random(xd.iter().product(), 3), xd)?;
        let geom = ConvGeom::check(&x, &w, None, 1, pad)?;
        for prec in [Precision::F32, Precision::Bf16] {
            let p = prec.suffix();
            let fwd = || cu::conv3d::conv3d(&x, &w, None, &geom, prec).map(|_| ());
            out.push(result(&dev, "fwd", p, layer, dhw, time(warm, iters, fwd, &sync)?));
            let bi = || cu::conv3d::conv3d_backward_input(&g, &w, &geom, prec).map(|_| ());
            out.push(result(&dev, "bwd_input", p, layer, dhw, time(warm, iters, bi, &sync)?));
            let bw = || cu::conv3d::conv3d_backward_weight(&g, &x, &geom, prec).map(|_| ());
            out.push(result(&dev, "bwd_weight", p, layer, dhw, time(warm, iters, bw, &sync)?));
        }
    }
    Ok(out)
}

/// A V-Net with Adam and a fixed input and random 0/1 target, ready to take training steps.
struct Trainer {
    net: Box<dyn Network>,
    adam: Adam,
    x: Tensor,
    target: Tensor,
    seed: u64,
}

impl Trainer {
    fn new(
        device: Device,
        width: usize,
        patch: [usize; 3],
        precision: Precision,
    ) -> dnvs_engine::Result<Self> {
        let mut net = nn::build(Arch::VNet, width)?;
        net.to_device(device)?;
        net.set_precision(precision);
        let [d, h, w] = patch;
        let n = d * h * w;
        let x = Tensor::from_vec(random(n, 11), [1, d, h, w, 1])?.to_device(device)?;
        let labels = random(n, 12).into_iter().map(|v| f32::from(v > 0.0)).collect();
        let target = Tensor::from_vec(labels, [1, d, h, w])?.to_device(device)?;
        Ok(Trainer { net, adam: Adam::new(AdamConfig::default()), x, target, seed: 0 })
    }

    /// One step; returns the loss, read back to the host (which also waits for the GPU).
    fn step(&mut self) -> dnvs_engine::Result<f32> {
        self.step_phases().map(|(l, _)| l)
    }

    /// One step and the seconds of its forward (with the loss), backward and Adam phases (the
    /// phases are only meaningful on the CPU: a GPU's work is timed where it is waited for).
    fn step_phases(&mut self) -> dnvs_engine::Result<(f32, [f64; 3])> {
        self.seed += 1;
        let t0 = Instant::now();
        let probs = self.net.forward(&self.x, Mode::Train { seed: self.seed })?;
        let l = loss::nll_probs(&probs, &self.target, None)?;
        let t1 = Instant::now();
        let grads = autograd::backward(&l)?;
        let t2 = Instant::now();
        let loss = l.item()?;
        // Release the tape (its saved inputs share the parameters' buffers) so that Adam updates
        // the parameters in place, as the training loop does.
        drop((l, probs));
        nn::adam_step(self.net.as_mut(), &mut self.adam, &grads)?;
        let t3 = Instant::now();
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        Ok((loss, [secs(t0, t1), secs(t1, t2), secs(t2, t3)]))
    }
}

/// Prints the median phase times of CPU steps and the per-convolution table of
/// [`profile`], and returns both as JSON.
fn profile_step(
    device: Device,
    precision: Precision,
    width: usize,
    patch: [usize; 3],
    reps: usize,
) -> anyhow::Result<Value> {
    let mut t = Trainer::new(device, width, patch, precision)?;
    // Warm-up: first-touch pages and the thread pool (CPU), kernel compilation (GPU).
    t.step()?;
    profile::enable(true);
    let mut phases = Vec::with_capacity(reps);
    for _ in 0..reps {
        phases.push(t.step_phases()?.1);
    }
    profile::enable(false);
    let rows = profile::take();
    let median = |i: usize| {
        let mut v: Vec<f64> = phases.iter().map(|p| p[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [d, h, w] = patch;
    let prec = precision.suffix();
    println!("profile of {device}/vnet_step_{prec}/w{width}/{d}x{h}x{w}, median of {reps} steps:");
    let names = ["forward+loss", "backward", "adam+set_parameters"];
    for (i, n) in names.iter().enumerate() {
        println!("  {n:<22} {:>9.1} ms", median(i) * 1e3);
    }
    let (conv_total, ops) = print_ops(&rows, reps, "step");
    Ok(json!({ "device": device.to_string(), "precision": prec,
               "steps": reps, "forward_ms": median(0) * 1e3, "backward_ms": median(1) * 1e3,
               "adam_ms": median(2) * 1e3, "conv_ms": conv_total, "ops": ops }))
}

/// Prints the per-op table of [`profile`] (ms per `unit` over `reps` runs, slowest first) and
/// returns the convolutions' ms per unit and the table as JSON.
fn print_ops(rows: &[(String, profile::Entry)], reps: usize, unit: &str) -> (f64, Vec<Value>) {
    let per = |e: &profile::Entry| e.secs / reps as f64 * 1e3;
    let is_conv = |n: &str| n.starts_with("conv");
    let conv_ms: f64 = rows.iter().filter(|(n, _)| is_conv(n)).map(|(_, e)| per(e)).sum();
    let all_ms: f64 = rows.iter().map(|(_, e)| per(e)).sum();
    println!(
        "  profiled ops {all_ms:>9.1} ms per {unit}, convolutions (all passes) {conv_ms:>9.1}; \
         by op, shape and pass:"
    );
    for (name, e) in rows {
        let calls = e.calls / reps as u64;
        println!("  {name:<52} {:>9.2} ms/{unit}  {calls:>4} calls", per(e));
    }
    let ops = rows
        .iter()
        .map(|(n, e)| {
            json!({ "op": n, "ms_per_run": per(e), "calls_per_run": e.calls as f64 / reps as f64 })
        })
        .collect();
    (conv_ms, ops)
}

/// Median seconds of a tape-free eval forward of a fresh V-Net at `patch` (CPU).
/// With `profiled`, also prints (and returns) the per-op table of the timed runs.
fn bench_forward(
    width: usize,
    patch: [usize; 3],
    reps: usize,
    profiled: bool,
) -> anyhow::Result<Value> {
    let mut net = nn::build(Arch::VNet, width)?;
    let [d, h, w] = patch;
    let x = Tensor::from_vec(random(d * h * w, 11), [1, d, h, w, 1])?;
    let mut f = || autograd::no_grad(|| net.forward(&x, Mode::Eval)).map(|_| ());
    f()?; // warm-up outside the profile
    profile::enable(profiled);
    let secs = time(0, reps, &mut f, &|| Ok(()));
    profile::enable(false);
    let secs = secs?;
    let name = format!("cpu/vnet_forward_f32/w{width}/{d}x{h}x{w}");
    println!("{name:<48} {:>9.1} ms  (no tape, eval, median of {reps})", secs * 1e3);
    let ops = if profiled { print_ops(&profile::take(), reps, "forward").1 } else { Vec::new() };
    Ok(json!({ "name": name, "width": width, "patch": patch, "ms": secs * 1e3, "reps": reps,
               "ops": ops }))
}

/// Seconds of one sliding-window inference (window `patch`, overlap 0.5, Gaussian) over a
/// random volume of `dims`, median of `reps` after one warm-up (CPU).
fn bench_window(
    width: usize,
    patch: [usize; 3],
    dims: [usize; 3],
    reps: usize,
) -> anyhow::Result<Value> {
    let mut net = nn::build(Arch::VNet, width)?;
    let mut vol = Volume::zeros(dims, [0.4; 3]);
    vol.data = random(vol.data.len(), 13);
    let opt =
        nn::segment::Options { window: patch, overlap: 0.5, blend: nn::segment::Blend::Gaussian };
    let mut f = || nn::segment::sliding_window_with(net.as_mut(), &vol, &opt).map(|_| ());
    let secs = time(1, reps, &mut f, &|| Ok(()))?;
    let [d, h, w] = dims;
    let [pd, ph, pw] = patch;
    let name = format!("cpu/vnet_sliding_window/w{width}/{d}x{h}x{w}/win{pd}x{ph}x{pw}");
    println!("{name:<48} {:>9.1} ms  (overlap 0.5, gaussian, median of {reps})", secs * 1e3);
    Ok(json!({ "name": name, "width": width, "window": patch, "volume": dims, "ms": secs * 1e3,
               "reps": reps }))
}

/// Median training-step time of a V-Net at `patch`; a "not wired" entry when an op cannot run
/// on `device` (a device, CUDA or not-implemented error) rather than a failed run.
fn bench_step(
    device: Device,
    width: usize,
    patch: [usize; 3],
    quick: bool,
    reps: Option<usize>,
    precision: Precision,
) -> anyhow::Result<Value> {
    let [d, h, w] = patch;
    let prec = precision.suffix();
    let name = format!("{device}/vnet_step_{prec}/w{width}/{d}x{h}x{w}");
    let (warm, iters) = match (device, quick) {
        (Device::Cpu, true) => (1, 3),
        (Device::Cpu, false) => (1, 5),
        (Device::Cuda(_), true) => (2, 5),
        (Device::Cuda(_), false) => (3, 20),
    };
    let iters = reps.unwrap_or(iters).max(1);
    let sync = || match device {
        Device::Cpu => Ok(()),
        Device::Cuda(o) => cu::synchronize(o),
    };
    let mut last = f32::NAN;
    let timed = Trainer::new(device, width, patch, precision)
        .and_then(|mut t| time(warm, iters, || t.step().map(|l| last = l), &sync));
    let secs = match timed {
        Ok(s) => s,
        Err(e @ (Error::Device { .. } | Error::NotImplemented(_) | Error::Cuda(_))) => {
            let why = format!("not wired on {device}: {e}");
            println!("{name:<48} {why}");
            return Ok(json!({ "name": name, "status": why, "precision": prec }));
        }
        Err(e) => return Err(e).context(format!("V-Net training step {name}")),
    };
    let voxels = (d * h * w) as f64;
    println!(
        "{name:<48} {:>9.1} ms/step {:>9.3} Mvox/s  ({prec} convs, median of {iters}, loss {last:.4})",
        secs * 1e3,
        voxels / secs / 1e6
    );
    Ok(json!({ "name": name, "precision": prec, "width": width, "patch": patch,
               "warmup": warm, "steps": iters, "ms": secs * 1e3,
               "voxels_per_s": voxels / secs, "loss": last }))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = match args.device {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda(n) => Device::Cuda(n),
        DeviceChoice::Auto => gpu_check::resolve(DeviceChoice::Auto, Precision::default())?,
    };
    if let Some(p) = args.patch {
        check_patch(p)?;
    }
    if (args.forward || args.window_over.is_some()) && device != Device::Cpu {
        bail!("--forward and --window-over time the CPU only (got --device {device})");
    }
    let kernels = match device {
        _ if args.no_kernels => Vec::new(),
        Device::Cpu => bench_cpu(args.quick)?,
        Device::Cuda(o) => {
            if cfg!(debug_assertions) {
                eprintln!(
                    "note: a debug build synchronises after every launch; time a --release build"
                );
            }
            bench_cuda(o, args.quick)?
        }
    };
    let step = if args.no_step {
        println!("{device}/vnet_step skipped (--no-step)");
        json!({ "status": "skipped (--no-step)" })
    } else {
        let patch = args.patch.unwrap_or(match device {
            Device::Cpu => CPU_PATCH,
            Device::Cuda(_) => GPU_PATCH,
        });
        // The CPU computes in f32 only; a GPU is timed with f32 and with bf16 convolutions.
        let precisions: &[Precision] = match device {
            Device::Cpu => &[Precision::F32],
            Device::Cuda(_) => &[Precision::F32, Precision::Bf16],
        };
        let steps = precisions
            .iter()
            .map(|&p| bench_step(device, args.width, patch, args.quick, args.reps, p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Value::Array(steps)
    };
    let patch = args.patch.unwrap_or(match device {
        Device::Cpu => CPU_PATCH,
        Device::Cuda(_) => GPU_PATCH,
    });
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 5 }).max(1);
    // With --forward and --no-step, --profile profiles the forward instead of a step.
    let step_profile = args.profile && !(args.forward && args.no_step);
    let profiled = match (step_profile, device) {
        (false, _) => Value::Null,
        (true, Device::Cpu) => profile_step(device, Precision::F32, args.width, patch, reps)?,
        (true, Device::Cuda(_)) => Value::Array(
            [Precision::Bf16, Precision::F32]
                .into_iter()
                .map(|p| profile_step(device, p, args.width, patch, reps))
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
    };
    let forward = match args.forward {
        true => bench_forward(args.width, patch, reps, args.profile && !step_profile)?,
        false => Value::Null,
    };
    let window = match args.window_over {
        Some(dims) => bench_window(args.width, patch, dims, reps.min(3))?,
        None => Value::Null,
    };
    let card = match device {
        Device::Cpu => format!("{} threads", rayon::current_num_threads()),
        Device::Cuda(o) => cu::probe(o).unwrap_or_default(),
    };
    let report = json!({
        "device": device.to_string(),
        "card": card,
        "version": env!("CARGO_PKG_VERSION"),
        "quick": args.quick,
        "kernels": kernels,
        "vnet_train_step": step,
        "vnet_step_profile": profiled,
        "vnet_forward": forward,
        "vnet_sliding_window": window,
    });
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if kernels.is_empty() && !args.no_kernels {
        bail!("no kernels were timed");
    }
    Ok(())
}
