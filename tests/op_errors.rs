//! Bad shapes and arguments give an `Err` whose message names the op and the shapes involved,
//! one or more cases per op family; nothing panics.

use dnvs_engine::ops::{self, BatchStats, RunningStats};
use dnvs_engine::optim::{Adam, AdamConfig};
use dnvs_engine::{loss, Error, Result, Tensor};

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::from_vec(vec![0.0; dims.iter().product()], dims).unwrap()
}

/// Asserts a shape error naming `op` and containing every one of `parts`.
fn shape_err<T: std::fmt::Debug>(r: Result<T>, op: &str, parts: &[&str]) {
    let err = r.unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{op}: not a shape error: {err}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.starts_with(&format!("{op}:")), "message does not name {op}: {msg}");
    for p in parts {
        assert!(msg.contains(p), "{op}: message lacks {p}: {msg}");
    }
}

fn arg_err<T: std::fmt::Debug>(r: Result<T>, op: &str, part: &str) {
    let err = r.unwrap_err();
    assert!(matches!(err, Error::Arg { .. }), "{op}: not an argument error: {err}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{op}:")) && msg.contains(part), "{msg}");
}

#[test]
fn elementwise() {
    let (a, b) = (zeros(&[1, 2, 2, 2, 3]), zeros(&[1, 2, 2, 2, 4]));
    shape_err(ops::add(&a, &b), "add", &["[1, 2, 2, 2, 3]", "[1, 2, 2, 2, 4]"]);
    shape_err(ops::mul(&a, &b), "mul", &["[1, 2, 2, 2, 3]", "[1, 2, 2, 2, 4]"]);
    shape_err(
        ops::gate_mul(&a, &zeros(&[1, 2, 2, 2, 3])),
        "gate_mul",
        &["[1, 2, 2, 2, 1]", "[1, 2, 2, 2, 3]"],
    );
    shape_err(
        ops::gate_mul(&zeros(&[2, 3]), &zeros(&[2, 1])),
        "gate_mul",
        &["(N, D, H, W, C)", "[2, 3]"],
    );
    shape_err(ops::prelu(&a, &zeros(&[2])), "prelu", &["[3]", "[1, 2, 2, 2, 3]", "[2]"]);
}

#[test]
fn softmax() {
    shape_err(ops::softmax_channels(&Tensor::scalar(1.0)), "softmax_channels", &["[]"]);
    shape_err(ops::log_softmax_channels(&zeros(&[2, 0])), "log_softmax_channels", &["[2, 0]"]);
}

#[test]
fn norms() {
    let x = zeros(&[2, 2, 2, 2, 4]);
    let batch = || BatchStats::Batch { running: None };
    shape_err(
        ops::batch_norm(&x, Some(&zeros(&[3])), None, batch(), 1e-5),
        "batch_norm",
        &["[4]", "[3]"],
    );
    shape_err(ops::batch_norm(&zeros(&[4]), None, None, batch(), 1e-5), "batch_norm", &["[4]"]);
    let rs = RunningStats::new(3, 0.1);
    shape_err(
        ops::batch_norm(&x, None, None, BatchStats::Running(&rs), 1e-5),
        "batch_norm",
        &["[4]", "[3]"],
    );
    arg_err(
        ops::batch_norm(&zeros(&[1, 1, 1, 1, 4]), None, None, batch(), 1e-5),
        "batch_norm",
        "[1, 1, 1, 1, 4]",
    );
    shape_err(
        ops::group_norm(&x, 3, None, None, 1e-5),
        "group_norm",
        &["3 groups", "[2, 2, 2, 2, 4]"],
    );
    shape_err(ops::group_norm(&x, 0, None, None, 1e-5), "group_norm", &["0 groups"]);
    shape_err(
        ops::group_norm(&x, 2, None, Some(&zeros(&[2])), 1e-5),
        "group_norm",
        &["[4]", "[2]"],
    );
}

#[test]
fn pool_and_upsample() {
    shape_err(ops::max_pool3d_k2(&zeros(&[1, 4, 4, 4])), "max_pool3d_k2", &["[1, 4, 4, 4]"]);
    shape_err(ops::max_pool3d_k2(&zeros(&[1, 1, 4, 4, 2])), "max_pool3d_k2", &["[1, 1, 4, 4, 2]"]);
    shape_err(
        ops::upsample_nearest(&zeros(&[4, 4, 4]), [8, 8, 8]),
        "upsample_nearest",
        &["[4, 4, 4]"],
    );
    shape_err(
        ops::upsample_nearest(&zeros(&[1, 2, 2, 2, 1]), [4, 0, 4]),
        "upsample_nearest",
        &["[4, 0, 4]", "[1, 2, 2, 2, 1]"],
    );
    shape_err(ops::upsample_nearest_x2(&zeros(&[2, 2])), "upsample_nearest_x2", &["[2, 2]"]);
}

#[test]
fn concat_reshape_dropout() {
    let (a, b) = (zeros(&[1, 2, 2, 2, 3]), zeros(&[1, 2, 3, 2, 3]));
    shape_err(
        ops::concat_channels(&[&a, &b]),
        "concat_channels",
        &["[1, 2, 2, 2, 3]", "[1, 2, 3, 2, 3]"],
    );
    shape_err(ops::concat_channels(&[]), "concat_channels", &["at least one"]);
    shape_err(ops::reshape(&a, [5, 5]), "reshape", &["24 elements", "[5, 5]"]);
    arg_err(ops::channel_dropout(&a, 1.5, 0), "channel_dropout", "1.5");
    arg_err(ops::channel_dropout(&a, f32::NAN, 0), "channel_dropout", "NaN");
    shape_err(ops::channel_dropout(&zeros(&[3]), 0.5, 0), "channel_dropout", &["[3]"]);
}

#[test]
fn losses() {
    let p = zeros(&[1, 2, 2, 2, 2]);
    shape_err(
        loss::cross_entropy(&p, &zeros(&[1, 2, 2, 3]), None),
        "cross_entropy",
        &["[1, 2, 2, 2]", "[1, 2, 2, 3]"],
    );
    shape_err(
        loss::nll_probs(&p, &zeros(&[1, 2, 2, 2]), Some(&[1.0])),
        "nll_probs",
        &["2 class weights", "1"],
    );
    let bad = Tensor::from_vec(vec![0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1, 2, 2, 2]).unwrap();
    arg_err(loss::soft_dice(&p, &bad), "soft_dice", "target value 2");
    let half = Tensor::from_vec(vec![0.5; 8], [1, 2, 2, 2]).unwrap();
    arg_err(loss::nll_probs(&p, &half, None), "nll_probs", "0.5");
    shape_err(
        loss::hard_dice(&zeros(&[1, 2, 2, 2, 3]), &zeros(&[1, 2, 2, 2])),
        "hard_dice",
        &["[1, 2, 2, 2, 3]"],
    );
    shape_err(
        loss::soft_dice(&zeros(&[1, 2, 2, 2, 1]), &zeros(&[1, 2, 2, 2])),
        "soft_dice",
        &["[1, 2, 2, 2, 1]"],
    );
}

#[test]
fn adam() {
    let mut adam = Adam::new(AdamConfig::default());
    let p = Tensor::param(vec![1.0, 2.0], [2]).unwrap();
    shape_err(adam.step(std::slice::from_ref(&p), &[zeros(&[3])]), "adam", &["[2]", "[3]"]);
    shape_err(adam.step(std::slice::from_ref(&p), &[]), "adam", &["1 gradients", "0"]);
    adam.step(&[p], &[zeros(&[2])]).unwrap();
    // The state holds one parameter of 2 elements; another layout is refused.
    let q = Tensor::param(vec![0.0; 3], [3]).unwrap();
    shape_err(adam.step(std::slice::from_ref(&q), &[zeros(&[3])]), "adam", &["[2]", "[3]"]);
}
