//! Every differentiable op's tape gradient against central finite differences
//! (`autograd::gradcheck::gradcheck`), on tiny shapes with kinks kept away from the inputs:
//! relu/prelu/elu inputs at least 0.1 from zero, max-pool inputs pairwise distinct.
//! The hard Dice is left out on purpose: its backward is the original's hand-made surrogate,
//! not a derivative (tests/ops_golden.rs checks it against the original's values).

mod common;

use common::random_vec;
use dnvs_engine::autograd::gradcheck::gradcheck;
use dnvs_engine::ops::{self, BatchStats, RunningStats};
use dnvs_engine::{loss, Result, Tensor};

const EPS: f32 = 1e-2;
const RTOL: f32 = 1e-2;
const ATOL: f32 = 1e-3;

/// A leaf of random values in [-1, 1).
fn rand(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::param(random_vec(n, seed), dims).unwrap()
}

/// Random values pushed at least 0.1 away from zero (no kink within reach of the step).
fn away_from_zero(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    let v = random_vec(n, seed).into_iter().map(|a| a.signum() * (0.1 + a.abs())).collect();
    Tensor::param(v, dims).unwrap()
}

/// Values in (0.15, 0.85): valid probabilities for the losses on probabilities.
fn probs(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::param(random_vec(n, seed).into_iter().map(|a| 0.5 + 0.35 * a).collect(), dims).unwrap()
}

fn target(dims: &[usize], classes: usize, seed: u64) -> Tensor {
    let n = dims.iter().product();
    let v = random_vec(n, seed)
        .into_iter()
        .map(|a| ((a + 1.0) * 0.5 * classes as f32).floor().min(classes as f32 - 1.0))
        .collect();
    Tensor::from_vec(v, dims).unwrap()
}

fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    gradcheck(f, inputs, EPS, RTOL, ATOL).unwrap();
}

const X: [usize; 5] = [2, 2, 2, 3, 3];

#[test]
fn arithmetic() {
    let (a, b) = (rand(&X, 1), rand(&X, 2));
    check(|x| ops::add(&x[0], &x[1]), &[a.clone(), b.clone()]);
    check(|x| ops::mul(&x[0], &x[1]), &[a.clone(), b.clone()]);
    check(|x| ops::scale(&x[0], -1.7), std::slice::from_ref(&a));
    // An input used twice: gradients must accumulate.
    check(|x| ops::mul(&x[0], &ops::add(&x[0], &x[1])?), &[a, b]);
}

#[test]
fn gate_mul() {
    check(|x| ops::gate_mul(&x[0], &x[1]), &[rand(&X, 3), rand(&[2, 2, 2, 3, 1], 4)]);
}

#[test]
fn activations() {
    let x = away_from_zero(&X, 5);
    check(|x| ops::relu(&x[0]), std::slice::from_ref(&x));
    check(|x| ops::elu(&x[0], 1.3), std::slice::from_ref(&x));
    check(|x| ops::sigmoid(&x[0]), &[rand(&X, 6)]);
    let w = Tensor::param(vec![0.25, -0.4, 0.6], [3]).unwrap();
    check(|x| ops::prelu(&x[0], &x[1]), &[x.clone(), w]);
    let shared = Tensor::param(vec![0.3], [1]).unwrap();
    check(|x| ops::prelu(&x[0], &x[1]), &[x, shared]);
}

#[test]
fn softmax_and_log_softmax() {
    check(|x| ops::softmax_channels(&x[0]), &[rand(&X, 7)]);
    check(|x| ops::log_softmax_channels(&x[0]), &[rand(&X, 8)]);
}

#[test]
fn batch_norm_batch_and_running_stats() {
    let (x, w, b) = (rand(&X, 9), rand(&[3], 10), rand(&[3], 11));
    check(
        |t| {
            ops::batch_norm(
                &t[0],
                Some(&t[1]),
                Some(&t[2]),
                BatchStats::Batch { running: None },
                1e-5,
            )
        },
        &[x.clone(), w.clone(), b.clone()],
    );
    check(
        |t| ops::batch_norm(&t[0], None, None, BatchStats::Batch { running: None }, 1e-5),
        std::slice::from_ref(&x),
    );
    let mut rs = RunningStats::new(3, 0.1);
    rs.mean = Tensor::from_vec(vec![0.1, -0.2, 0.3], [3]).unwrap();
    rs.var = Tensor::from_vec(vec![0.5, 1.5, 2.0], [3]).unwrap();
    check(
        |t| ops::batch_norm(&t[0], Some(&t[1]), Some(&t[2]), BatchStats::Running(&rs), 1e-5),
        &[x, w, b],
    );
}

#[test]
fn group_norm() {
    let x = rand(&[2, 2, 1, 3, 4], 12);
    let (w, b) = (rand(&[4], 13), rand(&[4], 14));
    for groups in [1, 2, 4] {
        check(
            |t| ops::group_norm(&t[0], groups, Some(&t[1]), Some(&t[2]), 1e-5),
            &[x.clone(), w.clone(), b.clone()],
        );
    }
    check(|t| ops::group_norm(&t[0], 2, None, None, 1e-5), &[x]);
}

#[test]
fn max_pool3d_k2() {
    // A permutation of a grid of values 0.06 apart: all distinct, no tie within a step. The odd
    // width exercises the dropped trailing voxel.
    let dims = [1, 2, 4, 5, 2];
    let n: usize = dims.iter().product();
    let v = (0..n).map(|i| ((i * 37) % n) as f32 * 0.06 - 2.0).collect();
    check(|x| ops::max_pool3d_k2(&x[0]), &[Tensor::param(v, dims).unwrap()]);
}

#[test]
fn upsample_nearest() {
    let x = rand(&[1, 2, 3, 2, 2], 15);
    check(|x| ops::upsample_nearest_x2(&x[0]), std::slice::from_ref(&x));
    check(|x| ops::upsample_nearest(&x[0], [5, 3, 4]), std::slice::from_ref(&x));
    check(|x| ops::upsample_nearest(&x[0], [2, 2, 1]), &[x]);
}

#[test]
fn concat_and_reshape() {
    let (a, b, c) =
        (rand(&[1, 2, 2, 2, 1], 16), rand(&[1, 2, 2, 2, 3], 17), rand(&[1, 2, 2, 2, 2], 18));
    check(|x| ops::concat_channels(&[&x[0], &x[1], &x[2]]), &[a.clone(), b, c]);
    check(|x| ops::reshape(&x[0], [8]), &[a]);
}

#[test]
fn channel_dropout() {
    check(|x| ops::channel_dropout(&x[0], 0.5, 42), &[rand(&X, 19)]);
}

#[test]
fn losses() {
    let dims = [2, 2, 3, 2, 2];
    let t = target(&dims[..4], 2, 20);
    let w = [0.7f32, 2.0];
    check(|x| loss::cross_entropy(&x[0], &t, Some(&w)), &[rand(&dims, 21)]);
    check(|x| loss::cross_entropy(&x[0], &t, None), &[rand(&dims, 22)]);
    let p = probs(&dims, 23);
    check(|x| loss::nll_probs(&x[0], &t, Some(&w)), std::slice::from_ref(&p));
    check(|x| loss::soft_dice(&x[0], &t), std::slice::from_ref(&p));
    check(|x| loss::dice_ce(&x[0], &t, Some(&w), 0.5, true), &[p]);
    // Three classes: the Dice foreground is class 1 only.
    let three = [1, 2, 2, 2, 3];
    let t3 = target(&three[..4], 3, 24);
    check(|x| loss::cross_entropy(&x[0], &t3, None), &[rand(&three, 25)]);
    check(|x| loss::soft_dice(&ops::softmax_channels(&x[0])?, &t3), &[rand(&three, 26)]);
}

#[test]
fn gradcheck_reports_a_wrong_gradient() {
    // reshape's gradient is right; scaling the output of a function whose input is detached inside
    // gives a zero tape gradient against a nonzero numeric one.
    let x = rand(&[4], 27);
    let err = gradcheck(|x| ops::scale(&x[0].detach(), 2.0), &[x], EPS, RTOL, ATOL).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("gradcheck") && msg.contains("4 of 4"), "{msg}");
}
