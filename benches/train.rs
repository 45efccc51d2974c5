//! Criterion benches of the CPU V-Net at a tiny patch: one training step (forward in train mode,
//! `nll_probs` against a fixed random 0/1 target, backward, Adam, `set_parameters`) and a
//! forward-only pass under `no_grad`. Names are `cpu/vnet_step/<width>/<patch>` and
//! `cpu/vnet_fwd_nograd/<width>/<patch>`; throughput is in voxels.
//!
//! `cargo bench --bench train` (10 samples; a tiny patch so it finishes in about a minute).
//! `DNVS_BENCH_WIDTH` and `DNVS_BENCH_PATCH=D,H,W` (multiples of 16) change the size.
//! `dnvs-engine bench` times the same step at larger patches and on a GPU.

use std::time::Duration;

use criterion::{black_box, Criterion, Throughput};
use dnvs_engine::nn::{self, Arch, Mode, Network};
use dnvs_engine::optim::{Adam, AdamConfig};
use dnvs_engine::tensor::Tensor;
use dnvs_engine::{autograd, loss};

/// Deterministic values in [-0.5, 0.5).
fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 1.6e7 - 0.5)
        .collect()
}

fn settings() -> (usize, [usize; 3]) {
    let width = std::env::var("DNVS_BENCH_WIDTH").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let patch = std::env::var("DNVS_BENCH_PATCH")
        .ok()
        .and_then(|v| {
            let p: Vec<usize> = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
            <[usize; 3]>::try_from(p).ok()
        })
        .unwrap_or([32, 32, 16]);
    (width, patch)
}

/// One training step; the returned loss keeps the work observable.
fn step(net: &mut dyn Network, adam: &mut Adam, x: &Tensor, target: &Tensor, seed: u64) -> f32 {
    let probs = net.forward(x, Mode::Train { seed }).expect("forward");
    let l = loss::nll_probs(&probs, target, None).expect("nll_probs");
    let grads = autograd::backward(&l).expect("backward");
    let loss = l.item().expect("scalar loss");
    drop((l, probs)); // the tape shares the parameters' buffers; Adam then updates them in place
    nn::adam_step(net, adam, &grads).expect("adam");
    loss
}

fn bench_vnet(c: &mut Criterion) {
    let (width, [d, h, w]) = settings();
    let n = d * h * w;
    let x = Tensor::from_vec(data(n, 1), [1, d, h, w, 1]).expect("input");
    let labels = data(n, 2).into_iter().map(|v| f32::from(v > 0.0)).collect();
    let target = Tensor::from_vec(labels, [1, d, h, w]).expect("target");
    let mut net = nn::build(Arch::VNet, width).expect("V-Net");
    let mut adam = Adam::new(AdamConfig::default());
    let label = format!("w{width}/{d}x{h}x{w}");

    let mut group = c.benchmark_group("cpu/vnet_step");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(n as u64));
    let mut seed = 0;
    group.bench_function(&label, |b| {
        b.iter(|| {
            seed += 1;
            black_box(step(net.as_mut(), &mut adam, &x, &target, seed))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("cpu/vnet_fwd_nograd");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(&label, |b| {
        b.iter(|| {
            let p = autograd::no_grad(|| net.forward(&x, Mode::Eval)).expect("forward");
            black_box(p)
        })
    });
    group.finish();
}

fn main() {
    // As the CLI does: keep freed step buffers in the process (see `backend::cpu::memory`).
    dnvs_engine::backend::cpu::memory::keep_freed_buffers();
    let mut c = Criterion::default().configure_from_args();
    bench_vnet(&mut c);
    c.final_summary();
}
