//! Losses, channel dropout, Adam and StepLR beyond the golden values: known closed forms,
//! consistency between the losses, determinism, and Adam's resume from serialised state.

mod common;

use common::{assert_close, random_vec};
use dnvs_engine::autograd::backward;
use dnvs_engine::optim::{Adam, AdamConfig, AdamState, StepLR};
use dnvs_engine::{loss, ops, Tensor};

fn tensor(v: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(v, dims).unwrap()
}

/// Two-class probabilities `(1, 2, 2, 2, 2)` with foreground probability `p1[v]`.
fn two_class(p1: &[f32]) -> Tensor {
    let v = p1.iter().flat_map(|&p| [1.0 - p, p]).collect();
    Tensor::param(v, [1, 2, 2, 2, 2]).unwrap()
}

fn target(t: &[f32]) -> Tensor {
    tensor(t.to_vec(), &[1, 2, 2, 2])
}

#[test]
fn hard_dice_closed_forms() {
    let t = target(&[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    // Perfect: Dice and IoU 1 (up to the 2e-6 smoothing).
    let hd = loss::hard_dice(&two_class(&[0.9, 0.8, 0.1, 0.2, 0.7, 0.3, 0.4, 0.0]), &t).unwrap();
    assert!((hd.dice - 1.0).abs() < 1e-5 && (hd.iou - 1.0).abs() < 1e-5, "{hd:?}");
    assert!(hd.loss.item().unwrap().abs() < 1e-5);
    // Two of three found, one false positive: I = 2, |r| = 3, |g| = 3 -> Dice 2/3, IoU 1/2.
    let hd = loss::hard_dice(&two_class(&[0.9, 0.8, 0.6, 0.2, 0.3, 0.3, 0.4, 0.0]), &t).unwrap();
    assert!((hd.dice - 2.0 / 3.0).abs() < 1e-5 && (hd.iou - 0.5).abs() < 1e-5, "{hd:?}");
    // A tie (0.5, 0.5) is background, as torch.max picks the first maximum.
    let hd = loss::hard_dice(&two_class(&[0.5; 8]), &t).unwrap();
    assert!(hd.dice.abs() < 1e-5, "{hd:?}");
}

#[test]
fn hard_dice_gradient_is_the_originals() {
    // U = 3 + 3, I = 2: channel 0 gets 2 g / U - 4 p1 I / U^2, channel 1 its negative.
    let t = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let p1 = [0.9, 0.8, 0.6, 0.2, 0.3, 0.3, 0.4, 0.0];
    let p = two_class(&p1);
    let hd = loss::hard_dice(&p, &target(&t)).unwrap();
    let g = backward(&hd.loss).unwrap().get(&p).unwrap().to_vec().unwrap();
    let u = 6.0f32;
    let want: Vec<f32> = t
        .iter()
        .zip(p1)
        .flat_map(|(&gv, pv)| {
            let d = 2.0 * gv / u - 4.0 * pv * 2.0 / (u * u);
            [d, -d]
        })
        .collect();
    assert_close("hard dice grad", &g, &want, 1e-5, 1e-6);
}

#[test]
fn soft_dice_and_losses_agree() {
    let dims = [2, 3, 2, 2, 2];
    let logits = tensor(random_vec(48, 1).iter().map(|v| 3.0 * v).collect(), &dims);
    let t = tensor(random_vec(24, 2).iter().map(|v| f32::from(*v > 0.0)).collect(), &dims[..4]);
    let probs = ops::softmax_channels(&logits).unwrap();
    // Cross-entropy on logits is NLL on their softmax, weighted or not.
    for w in [None, Some(&[0.3f32, 4.0][..])] {
        let ce = loss::cross_entropy(&logits, &t, w).unwrap().item().unwrap();
        let nll = loss::nll_probs(&probs, &t, w).unwrap().item().unwrap();
        assert!((ce - nll).abs() < 1e-5, "{ce} vs {nll}");
    }
    // Uniform weights change nothing.
    let a = loss::cross_entropy(&logits, &t, Some(&[2.0, 2.0])).unwrap().item().unwrap();
    let b = loss::cross_entropy(&logits, &t, None).unwrap().item().unwrap();
    assert!((a - b).abs() < 1e-6);
    // Dice + CE is the sum of its parts.
    let w = [1.0f32, 3.0];
    let dce = loss::dice_ce(&probs, &t, Some(&w), 0.25, true).unwrap().item().unwrap();
    let sd = loss::soft_dice(&probs, &t).unwrap().item().unwrap();
    let nll = loss::nll_probs(&probs, &t, Some(&w)).unwrap().item().unwrap();
    assert!((dce - (sd + 0.25 * nll)).abs() < 1e-5);
    let hard = loss::dice_ce(&probs, &t, Some(&w), 0.25, false).unwrap().item().unwrap();
    let hd = loss::hard_dice(&probs, &t).unwrap();
    assert!((hard - (1.0 - hd.dice + 0.25 * nll)).abs() < 1e-5);
    // A perfect one-hot prediction has soft Dice loss ~0 and NLL 0.
    let onehot: Vec<f32> = t.to_vec().unwrap().iter().flat_map(|&g| [1.0 - g, g]).collect();
    let p = tensor(onehot, &dims);
    assert!(loss::soft_dice(&p, &t).unwrap().item().unwrap().abs() < 1e-5);
    assert!(loss::nll_probs(&p, &t, None).unwrap().item().unwrap().abs() < 1e-6);
}

#[test]
fn nll_of_a_zero_probability_stays_finite() {
    let p = two_class(&[0.0; 8]);
    let t = target(&[1.0; 8]);
    let l = loss::nll_probs(&p, &t, None).unwrap();
    assert!(l.item().unwrap().is_finite());
    let g = backward(&l).unwrap();
    assert!(g.get(&p).unwrap().to_vec().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn ignored_voxels_leave_the_cross_entropies_untouched() {
    // Voxels 2, 5 and 7 ignored: the weighted mean runs over the other five only, and the
    // ignored rows get no gradient, as PyTorch's `ignore_index` does.
    let ig = loss::IGNORE_INDEX;
    let p1: [f32; 8] = [0.9, 0.8, 0.6, 0.2, 0.3, 0.3, 0.4, 0.1];
    let t = [1.0, 1.0, ig, 0.0, 1.0, ig, 0.0, ig];
    let w: [f32; 2] = [0.7, 2.0];
    let kept: Vec<usize> = (0..8).filter(|&v| t[v] != ig).collect();
    let p_t = |v: usize| if t[v] == 1.0 { p1[v] } else { 1.0 - p1[v] };
    let w_t = |v: usize| w[t[v] as usize];
    let want = kept.iter().map(|&v| -w_t(v) * p_t(v).ln()).sum::<f32>()
        / kept.iter().map(|&v| w_t(v)).sum::<f32>();
    let p = two_class(&p1);
    let nll = loss::nll_probs(&p, &target(&t), Some(&w)).unwrap();
    assert!((nll.item().unwrap() - want).abs() < 1e-6, "{} vs {want}", nll.item().unwrap());
    let g = backward(&nll).unwrap().get(&p).unwrap().to_vec().unwrap();
    for v in [2, 5, 7] {
        assert_eq!(&g[2 * v..2 * v + 2], &[0.0, 0.0], "ignored voxel {v} got a gradient");
    }
    assert!(g[0..2].iter().any(|&x| x != 0.0));
    // Logits: the same rule (the probabilities' logs are logits of the same softmax).
    let logits =
        Tensor::param(p1.iter().flat_map(|&q| [(1.0 - q).ln(), q.ln()]).collect(), [1, 2, 2, 2, 2])
            .unwrap();
    let ce = loss::cross_entropy(&logits, &target(&t), Some(&w)).unwrap();
    assert!((ce.item().unwrap() - want).abs() < 1e-5, "{} vs {want}", ce.item().unwrap());
    // The Dice losses have no ignore label: an ignored voxel there is an error, not a 0.
    assert!(loss::soft_dice(&p, &target(&t)).is_err());
    assert!(loss::hard_dice(&p, &target(&t)).is_err());
}

#[test]
fn channel_dropout_is_seeded_and_whole_channel() {
    let dims = [3, 2, 2, 2, 16];
    let x = tensor(vec![1.0; 3 * 8 * 16], &dims);
    let a = ops::channel_dropout(&x, 0.5, 7).unwrap().to_vec().unwrap();
    assert_eq!(a, ops::channel_dropout(&x, 0.5, 7).unwrap().to_vec().unwrap());
    assert_ne!(a, ops::channel_dropout(&x, 0.5, 8).unwrap().to_vec().unwrap());
    let mut dropped = 0;
    for s in 0..3 {
        for c in 0..16 {
            let vals: Vec<f32> = (0..8).map(|v| a[(s * 8 + v) * 16 + c]).collect();
            assert!(vals.iter().all(|&v| v == vals[0]), "channel {c} of sample {s} is not whole");
            assert!(vals[0] == 0.0 || vals[0] == 2.0, "{}", vals[0]);
            dropped += usize::from(vals[0] == 0.0);
        }
    }
    assert!((8..=40).contains(&dropped), "{dropped} of 48 channels dropped at p = 0.5");
    // p = 0 is the identity (the very same tensor); p = 1 drops everything.
    assert_eq!(ops::channel_dropout(&x, 0.0, 7).unwrap().id(), x.id());
    assert!(ops::channel_dropout(&x, 1.0, 7).unwrap().to_vec().unwrap().iter().all(|&v| v == 0.0));
}

fn cfg() -> AdamConfig {
    AdamConfig { lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 }
}

fn grads(step: u64) -> Vec<Tensor> {
    vec![tensor(random_vec(6, 100 + step), &[2, 3]), tensor(random_vec(2, 200 + step), &[2])]
}

#[test]
fn adam_first_step_moves_by_lr() {
    // Step 1 without decay: m_hat = g, v_hat = g^2, so each parameter moves by lr * sign(g).
    let mut adam = Adam::new(AdamConfig { weight_decay: 0.0, ..cfg() });
    let p = Tensor::param(vec![1.0, -1.0, 0.5], [3]).unwrap();
    let g = tensor(vec![0.3, -2.0, 1e-3], &[3]);
    let q = adam.step(&[p], &[g]).unwrap().remove(0);
    assert!(q.tracks_grad());
    assert_close("adam step 1", &q.to_vec().unwrap(), &[0.95, -0.95, 0.45], 1e-5, 1e-5);
}

#[test]
fn adam_resumes_from_serialised_state() {
    let start = vec![tensor(random_vec(6, 1), &[2, 3]), tensor(random_vec(2, 2), &[2])];
    let mut straight = Adam::new(cfg());
    let mut p = start.clone();
    for s in 0..4 {
        p = straight.step(&p, &grads(s)).unwrap();
    }
    let mut first = Adam::new(cfg());
    let mut q = start;
    for s in 0..2 {
        q = first.step(&q, &grads(s)).unwrap();
    }
    let json = serde_json::to_string(&first.state()).unwrap();
    let state: AdamState = serde_json::from_str(&json).unwrap();
    assert_eq!(state, first.state());
    let mut resumed = Adam::from_state(cfg(), state);
    for s in 2..4 {
        q = resumed.step(&q, &grads(s)).unwrap();
    }
    assert_eq!(resumed.state().step, 4);
    for (a, b) in p.iter().zip(&q) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "resume is not bit-identical");
    }
}

#[test]
fn adam_learning_rate_and_step_lr() {
    let mut adam = Adam::new(cfg());
    adam.set_lr(0.2);
    assert_eq!(adam.lr(), 0.2);
    let s = StepLR { step_size: 10, gamma: 0.5 };
    assert_eq!(s.lr_at(0.1, 0), 0.1);
    assert_eq!(s.lr_at(0.1, 9), 0.1);
    assert!((s.lr_at(0.1, 10) - 0.05).abs() < 1e-9);
    assert!((s.lr_at(0.1, 35) - 0.0125).abs() < 1e-9);
}

/// `step_in_place` rewrites an unshared CPU parameter in its own buffer (no fresh pages) with
/// exactly the values `step` returns, and copies a parameter that something else still holds.
#[test]
fn adam_in_place_reuses_unshared_buffers_with_the_same_values() {
    let start = vec![tensor(random_vec(6, 1), &[2, 3]), tensor(random_vec(2, 2), &[2])];
    let (mut copying, mut in_place) = (Adam::new(cfg()), Adam::new(cfg()));
    let mut want = start.clone();
    let mut lent: Vec<Tensor> = start
        .iter()
        .map(|t| Tensor::param(t.to_vec().unwrap(), t.shape().clone()).unwrap())
        .collect();
    for s in 0..3 {
        want = copying.step(&want, &grads(s)).unwrap();
        let before: Vec<*const f32> = lent.iter().map(|t| t.as_slice().unwrap().as_ptr()).collect();
        in_place.step_in_place(&mut lent, &grads(s)).unwrap();
        for (i, (t, w)) in lent.iter().zip(&want).enumerate() {
            assert_eq!(t.as_slice().unwrap().as_ptr(), before[i], "step {s}: parameter {i} moved");
            assert_eq!(t.to_vec().unwrap(), w.to_vec().unwrap(), "step {s}: parameter {i}");
            assert!(t.tracks_grad());
        }
    }
    // A parameter someone else holds (here: `held`) is not overwritten under them.
    let held = lent[1].clone();
    let kept = held.to_vec().unwrap();
    in_place.step_in_place(&mut lent, &grads(3)).unwrap();
    assert_eq!(held.to_vec().unwrap(), kept, "a shared parameter was written in place");
    assert_ne!(lent[1].as_slice().unwrap().as_ptr(), held.as_slice().unwrap().as_ptr());
}

/// A network step through `nn::adam_step` updates the network's CPU parameters in place once the
/// step's graph is dropped, and matches the copying `Adam::step` bit for bit.
#[test]
fn network_adam_step_updates_parameters_in_place() {
    use dnvs_engine::{autograd, nn};
    let mut net = nn::build_seeded(nn::Arch::VNet, 2, 7).unwrap();
    let mut twin = nn::build_seeded(nn::Arch::VNet, 2, 7).unwrap();
    let x = tensor(random_vec(2 * 16 * 16 * 16, 5), &[2, 16, 16, 16, 1]);
    let target = tensor(
        (0..2 * 16 * 16 * 16).map(|i| (i % 3 == 0) as u8 as f32).collect(),
        &[2, 16, 16, 16],
    );
    let (mut a, mut b) = (Adam::new(cfg()), Adam::new(cfg()));
    let mode = || nn::Mode::Train { seed: 3 };
    let probs = net.forward(&x, mode()).unwrap();
    let l = loss::nll_probs(&probs, &target, None).unwrap();
    let grads = autograd::backward(&l).unwrap();
    drop((l, probs));
    let before: Vec<*const f32> =
        net.parameters().iter().map(|t| t.as_slice().unwrap().as_ptr()).collect();
    nn::adam_step(net.as_mut(), &mut a, &grads).unwrap();
    let after: Vec<*const f32> =
        net.parameters().iter().map(|t| t.as_slice().unwrap().as_ptr()).collect();
    assert_eq!(before, after, "every parameter buffer is reused");

    let probs = twin.forward(&x, mode()).unwrap();
    let l = loss::nll_probs(&probs, &target, None).unwrap();
    let g = autograd::backward(&l).unwrap().ordered(&twin.parameters()).unwrap();
    let new = b.step(&twin.parameters(), &g).unwrap();
    for (p, q) in net.parameters().iter().zip(&new) {
        assert_eq!(p.to_vec().unwrap(), q.to_vec().unwrap());
    }
}
