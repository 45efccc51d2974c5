//! A training step on the GPU stays on the GPU: host<->device copies are counted in the CUDA
//! storage (`tensor::transfers`), and a V-Net step with Adam makes only the ones it must (the
//! batch's input and targets up once, the Adam pointer table up, the loss down once; dropout
//! masks, the backward's seed and zero gradients are made on the device). The counter's
//! own logic is unit-tested in `tensor::device` (snapshot, record, diff); these tests diff the
//! same snapshots around real steps. The GPU halves skip without a GPU (and fail under
//! DNVS_REQUIRE_GPU=1, see `common::cuda_device`); the CPU halves run everywhere.

mod common;

use std::sync::Mutex;

use common::{cuda_device, devices};
use dnvs_engine::nn::{self, Arch, Mode, Network};
use dnvs_engine::optim::{Adam, AdamConfig};
use dnvs_engine::tensor::{transfers, Device, Tensor, Transfers};
use dnvs_engine::train::config::Config;
use dnvs_engine::train::evaluate::{criterion_unread, pack, Scores};
use dnvs_engine::{autograd, loss};

/// The counter is process-wide and the test harness runs tests on parallel threads: each test
/// holds this lock so that another test's copies never land between its two snapshots.
static COUNTER: Mutex<()> = Mutex::new(());

fn counter_lock() -> std::sync::MutexGuard<'static, ()> {
    COUNTER.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_vnet_training_step_moves_only_the_batch_and_the_loss() {
    let _serial = counter_lock();
    // Without a GPU nothing may be counted by CPU work.
    let before = transfers();
    let x = Tensor::from_vec(vec![0.5; 8], [1, 2, 2, 2, 1]).expect("cpu tensor");
    let _ = dnvs_engine::ops::relu(&x).expect("relu");
    assert_eq!(transfers().since(before), Default::default(), "CPU ops move nothing");

    let Some(dev) = cuda_device() else {
        eprintln!("transfers: GPU half skipped, no GPU");
        return;
    };
    let mut net = nn::build_seeded(Arch::VNet, 8, 3).expect("vnet");
    net.to_device(dev).expect("params to the GPU");
    let mut adam = Adam::new(AdamConfig::default());
    let dims = [1, 32, 32, 16];
    let n: usize = dims.iter().product();
    let host_x: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let host_y: Vec<f32> = (0..n).map(|i| f32::from(u8::from(i % 7 == 0))).collect();
    for step in 0..3u64 {
        let t0 = transfers();
        let x =
            Tensor::from_vec(host_x.clone(), [1, 32, 32, 16, 1]).unwrap().to_device(dev).unwrap();
        let y = Tensor::from_vec(host_y.clone(), dims).unwrap().to_device(dev).unwrap();
        let probs = net.forward(&x, Mode::Train { seed: step }).expect("forward");
        let l = loss::nll_probs(&probs, &y, None).expect("loss");
        let grads = autograd::backward(&l).expect("backward");
        let params = net.parameters();
        let g: Vec<Tensor> = params
            .iter()
            .map(|p| grads.get(p).cloned().unwrap_or_else(|| Tensor::zeros(p.dims(), dev).unwrap()))
            .collect();
        let new = adam.step(&params, &g).expect("adam");
        net.set_parameters(new).expect("set");
        let value = l.item().expect("the one read");
        assert!(value.is_finite());
        let d = transfers().since(t0);
        eprintln!("step {step}: {d:?}");
        // Up: x, y and the Adam pointer table, nothing else: the backward's seed and zero
        // gradients are filled on the device, the dropout masks drawn there.
        assert_eq!(d.uploads, 3, "step {step}: {d:?}");
        assert_eq!(d.downloads, 1, "step {step}: the loss is read once: {d:?}");
    }
    assert_eq!(Device::Cuda(0), dev);
}

/// The sum of every element of `ts` (of its square when `square`) as a scalar on `dev`, nothing
/// read: what the trainer's step computes for its gradient-norm and weight-sum checks (on the
/// CPU over the buffers in place, on a GPU with the `sum_all` kernel).
fn device_sum(ts: &[Tensor], square: bool, dev: Device) -> Tensor {
    if dev == Device::Cpu {
        let s: f64 = ts
            .iter()
            .flat_map(|t| t.as_slice().expect("cpu tensor").iter())
            .map(|v| if square { f64::from(*v).powi(2) } else { f64::from(*v) })
            .sum();
        return Tensor::scalar(s as f32);
    }
    autograd::no_grad(|| {
        let mut acc = Tensor::zeros(Vec::<usize>::new(), dev)?;
        for t in ts {
            let x = if square { dnvs_engine::ops::mul(t, t)? } else { t.clone() };
            acc = dnvs_engine::ops::add(&acc, &dnvs_engine::backend::cuda::reduce::sum_all(&x)?)?;
        }
        Ok::<_, dnvs_engine::Error>(acc)
    })
    .expect("device sum")
}

/// One step as `train::trainer` takes it, with the default config's loss (Dice + CE with the
/// original's hard Dice): batch up, forward, `criterion_unread`, backward, the squared gradient
/// norm, the in-place Adam step (`nn::adam_step`), the weight sum, and the one read of the packed
/// scalars. Returns those scalars and the copies the step made.
fn trainer_step(
    cfg: &Config,
    net: &mut dyn Network,
    adam: &mut Adam,
    batch: (&[f32], &[f32]),
    dims: [usize; 4],
    seed: u64,
) -> (Vec<f32>, Transfers) {
    let dev = net.parameters()[0].device();
    let t0 = transfers();
    let [n, d, h, w] = dims;
    let x = Tensor::from_vec(batch.0.to_vec(), [n, d, h, w, 1]).unwrap().to_device(dev).unwrap();
    let y = Tensor::from_vec(batch.1.to_vec(), dims).unwrap().to_device(dev).unwrap();
    let probs = net.forward(&x, Mode::Train { seed }).expect("forward");
    let (l, scalars) = criterion_unread(cfg, &probs, &y, None).expect("criterion");
    let grads = autograd::backward(&l).expect("backward");
    drop((l, probs));
    let params = net.parameters();
    let g: Vec<Tensor> = params.iter().filter_map(|p| grads.get(p).cloned()).collect();
    assert_eq!(g.len(), params.len(), "every parameter gets a gradient");
    let grad_sq = device_sum(&g, true, dev);
    drop((params, g));
    nn::adam_step(net, adam, &grads).expect("adam");
    drop(grads);
    let weight_sum = device_sum(&net.parameters(), false, dev);
    let host = pack(&[&scalars, &grad_sq, &weight_sum]).unwrap().to_vec().expect("the one read");
    (host, transfers().since(t0))
}

/// The trainer's step reads the device exactly once (the packed loss, scores, gradient norm and
/// weight sum), uploads only the batch and Adam's pointer table, and on the CPU copies nothing.
#[test]
fn the_trainers_step_reads_the_device_once() {
    let _serial = counter_lock();
    let cfg = Config::parse(include_str!("../configs/default.json")).expect("default config");
    let dims = [1, 32, 16, 16];
    let n: usize = dims.iter().product();
    let host_x: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let host_y: Vec<f32> = (0..n).map(|i| f32::from(u8::from(i % 5 == 0))).collect();
    for dev in devices() {
        let mut net = nn::build_seeded(Arch::VNet, 4, 5).expect("vnet");
        net.to_device(dev).expect("params to the device");
        let mut adam = Adam::new(AdamConfig::default());
        let mut last_weight_sum = None;
        for step in 0..3u64 {
            let (host, d) =
                trainer_step(&cfg, net.as_mut(), &mut adam, (&host_x, &host_y), dims, step);
            eprintln!("{dev} step {step}: {d:?}");
            let sc = Scores::from_packed(&host).expect("packed scores");
            assert!(sc.loss.is_finite() && (0.0..=1.0).contains(&sc.dice), "{dev}: {sc:?}");
            assert!(host[5] > 0.0 && host[5].is_finite(), "{dev}: gradient norm^2 {}", host[5]);
            assert!(host[6].is_finite(), "{dev}: weight sum {}", host[6]);
            // Adam moved the weights in place: the sum read after the update changes each step.
            assert_ne!(last_weight_sum.replace(host[6]), Some(host[6]), "{dev} step {step}");
            match dev {
                Device::Cpu => assert_eq!(d, Transfers::default(), "the CPU step copies nothing"),
                Device::Cuda(_) => {
                    assert_eq!(d.downloads, 1, "{dev} step {step}: one read per step: {d:?}");
                    // x, y, Adam's pointer table, and the loss's class weights (two floats,
                    // once for the cross-entropy and once for the Dice kernel).
                    assert!(d.uploads <= 3 + 2, "{dev} step {step}: {d:?}");
                }
            }
        }
    }
}
