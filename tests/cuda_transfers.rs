//! A training step on the GPU stays on the GPU: host<->device copies are counted in the CUDA
//! storage (`tensor::transfers`), and a V-Net step with Adam makes only the ones it must (the
//! batch's input and targets up once, the Adam pointer table up, the loss down once). The counter's
//! own logic is unit-tested in `tensor::device`; this test needs a GPU and skips without one.

mod common;

use common::cuda_device;
use dnvs_engine::nn::{self, Arch, Mode};
use dnvs_engine::optim::{Adam, AdamConfig};
use dnvs_engine::tensor::{transfers, Device, Tensor};
use dnvs_engine::{autograd, loss};

#[test]
fn a_vnet_training_step_moves_only_the_batch_and_the_loss() {
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
        // Up: x, y, the Adam pointer table (+ dropout masks of the V-Net's up path).
        assert!(d.uploads <= 3 + 8, "step {step}: {d:?}");
        assert_eq!(d.downloads, 1, "step {step}: the loss is read once: {d:?}");
    }
    assert_eq!(Device::Cuda(0), dev);
}
