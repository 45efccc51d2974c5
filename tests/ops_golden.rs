//! Every non-convolution op, loss and optimiser step against PyTorch's values
//! (`tests/data/golden/ops.safetensors`, README there): forward outputs and every gradient,
//! `|got - want| <= 1e-5 + 1e-4 |want|`. Gradients are those of `sum(out * grad_out)`.

mod common;

use std::sync::OnceLock;

use common::{assert_close, Golden};
use dnvs_engine::autograd::backward_with;
use dnvs_engine::ops::{self, BatchStats, RunningStats};
use dnvs_engine::optim::{Adam, AdamConfig};
use dnvs_engine::{loss, Result, Tensor};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| Golden::load("ops.safetensors"))
}

/// A golden tensor in the engine's layout.
fn t(key: &str) -> Tensor {
    golden().engine(key)
}

/// A golden tensor as a leaf that collects gradients.
fn leaf(key: &str) -> Tensor {
    t(key).requires_grad()
}

fn check(what: &str, got: &Tensor, key: &str) {
    let want = t(key);
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert_close(what, &got.to_vec().unwrap(), &want.to_vec().unwrap(), RTOL, ATOL);
}

/// Runs `f` on the leaves `inputs` of `case` (`in0`, `weight`, ...), checks `out`, back-propagates
/// `grad_out` and checks the gradient of each input against `grads[i]` (skipped where `None`).
fn case(
    name: &str,
    inputs: &[&str],
    grads: &[Option<&str>],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let xs: Vec<Tensor> = inputs.iter().map(|k| leaf(&format!("{name}.{k}"))).collect();
    let out = f(&xs).unwrap();
    check(&format!("{name}.out"), &out, &format!("{name}.out"));
    let g = backward_with(&out, t(&format!("{name}.grad_out"))).unwrap();
    for (x, key) in xs.iter().zip(grads) {
        let Some(key) = key else { continue };
        let got = g.get(x).unwrap_or_else(|| panic!("{name}: no gradient for {key}"));
        check(&format!("{name}.{key}"), got, &format!("{name}.{key}"));
    }
}

fn unary(name: &str, f: impl Fn(&Tensor) -> Result<Tensor>) {
    case(name, &["in0"], &[Some("grad_in0")], |x| f(&x[0]));
}

#[test]
fn relu() {
    unary("relu", ops::relu);
}

#[test]
fn elu() {
    unary("elu", |x| ops::elu(x, 1.0));
}

#[test]
fn sigmoid() {
    unary("sigmoid", ops::sigmoid);
}

#[test]
fn prelu_per_channel() {
    case("prelu", &["in0", "weight"], &[Some("grad_in0"), Some("grad_weight")], |x| {
        ops::prelu(&x[0], &x[1])
    });
}

#[test]
fn softmax_channels() {
    unary("softmax_c", ops::softmax_channels);
}

#[test]
fn log_softmax_channels() {
    unary("log_softmax_c", ops::log_softmax_channels);
}

#[test]
fn max_pool3d_k2() {
    unary("max_pool3d_k2", ops::max_pool3d_k2);
}

#[test]
fn upsample_nearest_x2() {
    unary("upsample_nearest_x2", ops::upsample_nearest_x2);
}

#[test]
fn upsample_nearest_to_size() {
    unary("upsample_nearest_size", |x| ops::upsample_nearest(x, [5, 7, 3]));
}

#[test]
fn concat_channels() {
    case("concat_c", &["in0", "in1"], &[Some("grad_in0"), Some("grad_in1")], |x| {
        ops::concat_channels(&[&x[0], &x[1]])
    });
}

#[test]
fn gate_mul_of_sigmoid() {
    case("gate_mul", &["in0", "in1"], &[Some("grad_in0"), Some("grad_in1")], |x| {
        ops::gate_mul(&x[0], &ops::sigmoid(&x[1])?)
    });
}

#[test]
fn batch_norm_batch_stats() {
    for name in ["batch_norm", "batch_norm_n1"] {
        let c = t(&format!("{name}.weight")).numel();
        let mut running = RunningStats::new(c, 0.1);
        let xs: Vec<Tensor> =
            ["in0", "weight", "bias"].iter().map(|k| leaf(&format!("{name}.{k}"))).collect();
        let stats = BatchStats::Batch { running: Some(&mut running) };
        let out = ops::batch_norm(&xs[0], Some(&xs[1]), Some(&xs[2]), stats, 1e-5).unwrap();
        check(&format!("{name}.out"), &out, &format!("{name}.out"));
        check(
            &format!("{name}.running_mean_after"),
            &running.mean,
            &format!("{name}.running_mean_after"),
        );
        check(
            &format!("{name}.running_var_after"),
            &running.var,
            &format!("{name}.running_var_after"),
        );
        let g = backward_with(&out, t(&format!("{name}.grad_out"))).unwrap();
        for (x, key) in xs.iter().zip(["grad_in0", "grad_weight", "grad_bias"]) {
            check(&format!("{name}.{key}"), g.get(x).unwrap(), &format!("{name}.{key}"));
        }
    }
}

#[test]
fn group_norm() {
    for name in ["group_norm", "group_norm_g8"] {
        let groups = t(&format!("{name}.meta")).to_vec().unwrap()[0] as usize;
        let grads = [Some("grad_in0"), Some("grad_weight"), Some("grad_bias")];
        case(name, &["in0", "weight", "bias"], &grads, |x| {
            ops::group_norm(&x[0], groups, Some(&x[1]), Some(&x[2]), 1e-5)
        });
    }
}

fn ce_weight() -> Vec<f32> {
    t("losses.ce_weight").to_vec().unwrap()
}

#[test]
fn cross_entropy_weighted() {
    let w = ce_weight();
    unary("cross_entropy_weighted", |x| loss::cross_entropy(x, &t("losses.target"), Some(&w)));
}

#[test]
fn nll_of_softmax_weighted() {
    let w = ce_weight();
    unary("nll_of_softmax_weighted", |x| {
        loss::nll_probs(&ops::softmax_channels(x)?, &t("losses.target"), Some(&w))
    });
}

#[test]
fn soft_dice_of_softmax() {
    unary("soft_dice_loss", |x| loss::soft_dice(&ops::softmax_channels(x)?, &t("losses.target")));
}

#[test]
fn original_hard_dice() {
    let probs = leaf("original_dice.probs");
    let hd = loss::hard_dice(&probs, &t("losses.target")).unwrap();
    assert_close(
        "original_dice.dice",
        &[hd.dice],
        &t("original_dice.dice").to_vec().unwrap(),
        RTOL,
        ATOL,
    );
    assert_close(
        "original_dice.iou",
        &[hd.iou],
        &t("original_dice.iou").to_vec().unwrap(),
        RTOL,
        ATOL,
    );
    assert_close("1 - dice", &[hd.loss.item().unwrap()], &[1.0 - hd.dice], RTOL, ATOL);
    let g = backward_with(&hd.loss, Tensor::scalar(1.0)).unwrap();
    check(
        "original_dice.grad_probs_of_one_minus_dice",
        g.get(&probs).unwrap(),
        "original_dice.grad_probs_of_one_minus_dice",
    );
}

#[test]
fn adam_three_steps() {
    let h = t("adam.hyper").to_vec().unwrap();
    let cfg = AdamConfig { lr: h[0], beta1: h[1], beta2: h[2], eps: h[3], weight_decay: h[4] };
    let mut adam = Adam::new(cfg);
    let mut p = t("adam.param_before");
    let (grads, gshape) = golden().raw("adam.grads");
    let per = p.numel();
    for i in 0..gshape[0] {
        let g = Tensor::from_vec(grads[i * per..(i + 1) * per].to_vec(), p.shape()).unwrap();
        p = adam.step(&[p], &[g]).unwrap().remove(0);
    }
    assert_eq!(adam.state().step, 3);
    check("adam.param_after", &p, "adam.param_after");
}
