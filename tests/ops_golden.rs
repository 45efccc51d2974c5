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

// ---- large shapes: the parallel kernels --------------------------------------------------------
//
// The golden cases are small enough that every kernel runs on one thread. Here each op runs on a
// tensor made of K copies of a small one along the batch axis (above the size where the kernels
// split work across threads) and must give K copies of the small result, or for a parameter's
// gradient K times it (for the losses, a weighted mean: the same value and gradients / K).

const K: usize = 100;

fn tile(x: &Tensor) -> Tensor {
    let mut dims = x.dims().to_vec();
    dims[0] *= K;
    Tensor::from_vec(x.to_vec().unwrap().repeat(K), dims).unwrap()
}

fn scaled(x: &Tensor, s: f32) -> Vec<f32> {
    x.to_vec().unwrap().iter().map(|v| v * s).collect()
}

/// `f` on `inputs` (tiled where `tiled[i]`) against `f` on the small inputs.
fn tiled_case(
    what: &str,
    inputs: &[Tensor],
    tiled: &[bool],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let small: Vec<Tensor> = inputs.iter().map(Tensor::requires_grad).collect();
    let big: Vec<Tensor> = small
        .iter()
        .zip(tiled)
        .map(|(x, &t)| if t { tile(x) } else { x.clone() }.requires_grad())
        .collect();
    let (out_s, out_b) = (f(&small).unwrap(), f(&big).unwrap());
    let out_tiled = out_s.rank() > 0;
    let want = if out_tiled { tile(&out_s) } else { out_s.clone() };
    assert_close(
        &format!("{what} (K copies): out"),
        &out_b.to_vec().unwrap(),
        &want.to_vec().unwrap(),
        RTOL,
        ATOL,
    );
    let g_s = Tensor::from_vec(common::random_vec(out_s.numel(), 5), out_s.shape()).unwrap();
    let g_b = if out_tiled { tile(&g_s) } else { g_s.clone() };
    let (gs, gb) = (backward_with(&out_s, g_s).unwrap(), backward_with(&out_b, g_b).unwrap());
    for (i, ((s, b), &t)) in small.iter().zip(&big).zip(tiled).enumerate() {
        let (gs, gb) = (gs.get(s).unwrap(), gb.get(b).unwrap());
        let want = match (t, out_tiled) {
            (true, true) => tile(gs).to_vec().unwrap(),
            (true, false) => scaled(&tile(gs), 1.0 / K as f32),
            (false, true) => scaled(gs, K as f32),
            (false, false) => gs.to_vec().unwrap(),
        };
        assert_close(
            &format!("{what} (K copies): grad of input {i}"),
            &gb.to_vec().unwrap(),
            &want,
            RTOL,
            ATOL,
        );
    }
}

fn small_x(seed: u64) -> Tensor {
    Tensor::from_vec(common::random_vec(4 * 6 * 6 * 8, seed), [1, 4, 6, 6, 8]).unwrap()
}

#[test]
fn large_elementwise_and_softmax() {
    let (a, b) = (small_x(1), small_x(2));
    tiled_case("relu", std::slice::from_ref(&a), &[true], |x| ops::relu(&x[0]));
    tiled_case("elu", std::slice::from_ref(&a), &[true], |x| ops::elu(&x[0], 0.7));
    tiled_case("sigmoid", std::slice::from_ref(&a), &[true], |x| ops::sigmoid(&x[0]));
    tiled_case("scale", std::slice::from_ref(&a), &[true], |x| ops::scale(&x[0], 3.0));
    tiled_case("add", &[a.clone(), b.clone()], &[true, true], |x| ops::add(&x[0], &x[1]));
    tiled_case("mul", &[a.clone(), b.clone()], &[true, true], |x| ops::mul(&x[0], &x[1]));
    let w = Tensor::from_vec(common::random_vec(8, 3), [8]).unwrap();
    tiled_case("prelu", &[a.clone(), w], &[true, false], |x| ops::prelu(&x[0], &x[1]));
    let g = Tensor::from_vec(common::random_vec(4 * 6 * 6, 4), [1, 4, 6, 6, 1]).unwrap();
    tiled_case("gate_mul", &[a.clone(), g], &[true, true], |x| ops::gate_mul(&x[0], &x[1]));
    tiled_case("softmax", std::slice::from_ref(&a), &[true], |x| ops::softmax_channels(&x[0]));
    tiled_case("log_softmax", std::slice::from_ref(&a), &[true], |x| {
        ops::log_softmax_channels(&x[0])
    });
    tiled_case("concat", &[a.clone(), b], &[true, true], |x| {
        ops::concat_channels(&[&x[0], &x[1], &x[0]])
    });
}

#[test]
fn large_norms_pool_upsample() {
    let x = small_x(6);
    let (w, b) = (
        Tensor::from_vec(common::random_vec(8, 7), [8]).unwrap(),
        Tensor::from_vec(common::random_vec(8, 8), [8]).unwrap(),
    );
    let ins = [x.clone(), w, b];
    tiled_case("batch_norm", &ins, &[true, false, false], |t| {
        ops::batch_norm(&t[0], Some(&t[1]), Some(&t[2]), BatchStats::Batch { running: None }, 1e-5)
    });
    let mut rs = RunningStats::new(8, 0.1);
    rs.var = Tensor::from_vec(vec![0.7; 8], [8]).unwrap();
    tiled_case("batch_norm running", &ins, &[true, false, false], |t| {
        ops::batch_norm(&t[0], Some(&t[1]), Some(&t[2]), BatchStats::Running(&rs), 1e-5)
    });
    tiled_case("group_norm", &ins, &[true, false, false], |t| {
        ops::group_norm(&t[0], 4, Some(&t[1]), Some(&t[2]), 1e-5)
    });
    tiled_case("max_pool3d_k2", std::slice::from_ref(&x), &[true], |t| ops::max_pool3d_k2(&t[0]));
    tiled_case("upsample x2", std::slice::from_ref(&x), &[true], |t| {
        ops::upsample_nearest_x2(&t[0])
    });
    tiled_case("upsample size", &[x], &[true], |t| ops::upsample_nearest(&t[0], [7, 9, 5]));
}

#[test]
fn large_losses() {
    let logits = Tensor::from_vec(common::random_vec(4 * 6 * 6 * 2, 9), [1, 4, 6, 6, 2]).unwrap();
    let target: Vec<f32> =
        common::random_vec(4 * 6 * 6, 10).iter().map(|v| f32::from(*v > 0.3)).collect();
    let t_small = Tensor::from_vec(target, [1, 4, 6, 6]).unwrap();
    let t_big = tile(&t_small);
    let pick = |x: &Tensor| if x.dims()[0] == 1 { t_small.clone() } else { t_big.clone() };
    let w = [0.4f32, 2.5];
    tiled_case("cross_entropy", std::slice::from_ref(&logits), &[true], |x| {
        loss::cross_entropy(&x[0], &pick(&x[0]), Some(&w))
    });
    let probs = ops::softmax_channels(&logits).unwrap();
    tiled_case("nll_probs", std::slice::from_ref(&probs), &[true], |x| {
        loss::nll_probs(&x[0], &pick(&x[0]), Some(&w))
    });
    tiled_case("soft_dice", std::slice::from_ref(&probs), &[true], |x| {
        loss::soft_dice(&x[0], &pick(&x[0]))
    });
    tiled_case("hard_dice", &[probs], &[true], |x| Ok(loss::hard_dice(&x[0], &pick(&x[0]))?.loss));
}

#[test]
fn large_adam_and_dropout() {
    let (p, g) = (small_x(11), small_x(12));
    let cfg = AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let (mut a, mut b) = (Adam::new(cfg), Adam::new(cfg));
    let (mut ps, mut pb) = (p.clone(), tile(&p));
    for _ in 0..3 {
        ps = a.step(&[ps], std::slice::from_ref(&g)).unwrap().remove(0);
        pb = b.step(&[pb], &[tile(&g)]).unwrap().remove(0);
    }
    assert_close(
        "adam (K copies)",
        &pb.to_vec().unwrap(),
        &tile(&ps).to_vec().unwrap(),
        RTOL,
        ATOL,
    );
    // Dropout on a large tensor: one multiplier (0 or 1/(1-p)) per sample and channel.
    let x = tile(&small_x(13));
    let y = ops::channel_dropout(&x, 0.25, 3).unwrap().to_vec().unwrap();
    let xs = x.to_vec().unwrap();
    let per = xs.len() / K;
    for (i, (&yv, &xv)) in y.iter().zip(&xs).enumerate() {
        let (s, c) = (i / per, i % 8);
        let first = s * per + c;
        let m = y[first] / xs[first];
        assert!(m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-5, "multiplier {m}");
        assert!(
            (yv - m * xv).abs() <= 1e-6 * xv.abs().max(1.0),
            "sample {s} channel {c} is not whole"
        );
    }
}

// ---- timing ------------------------------------------------------------------------------------

/// Rough CPU timings for docs/PERF.md (not a test of correctness):
/// `cargo test --test ops_golden -- --ignored --nocapture bench_cpu_ops`.
#[test]
#[ignore = "timing only; run by hand for docs/PERF.md"]
fn bench_cpu_ops() {
    let dims = [1, 64, 64, 32, 16];
    let n: usize = dims.iter().product();
    let x = Tensor::from_vec(common::random_vec(n, 1), dims).unwrap().requires_grad();
    let y = Tensor::from_vec(common::random_vec(n, 2), dims).unwrap();
    let w = Tensor::from_vec(vec![0.25; 16], [16]).unwrap().requires_grad();
    let mb = (n * 4) as f64 / 1e6;
    let time = |name: &str, traffic: f64, f: &dyn Fn() -> Tensor| {
        let _ = f();
        let reps = 5;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            let _ = f();
        }
        let s = t0.elapsed().as_secs_f64() / f64::from(reps);
        println!("cpu/{name}/{dims:?}: {:.2} ms, {:.2} GB/s", s * 1e3, traffic * mb / 1e3 / s);
    };
    time("add", 3.0, &|| ops::add(&x, &y).unwrap());
    time("relu", 2.0, &|| ops::relu(&x).unwrap());
    time("prelu", 2.0, &|| ops::prelu(&x, &w).unwrap());
    time("softmax_channels", 2.0, &|| ops::softmax_channels(&x).unwrap());
    let bn = || {
        ops::batch_norm(&x, Some(&w), Some(&w), BatchStats::Batch { running: None }, 1e-5).unwrap()
    };
    time("batch_norm fwd", 4.0, &bn);
    time("batch_norm fwd+bwd", 9.0, &|| {
        let out = bn();
        backward_with(&out, y.clone()).unwrap();
        out
    });
    time("group_norm fwd", 4.0, &|| ops::group_norm(&x, 8, Some(&w), Some(&w), 1e-5).unwrap());
    time("max_pool3d_k2", 1.125, &|| ops::max_pool3d_k2(&x).unwrap());
    time("upsample_nearest_x2 (out 8x)", 9.0, &|| ops::upsample_nearest_x2(&x).unwrap());
    time("concat_channels (2 inputs)", 4.0, &|| ops::concat_channels(&[&x, &y]).unwrap());
}

// ---- PyTorch conventions the golden inputs do not exercise --------------------------------------

#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum() {
    // All equal: PyTorch's argmax is the first element of each window in (kd, kh, kw) order.
    let x = Tensor::from_vec(vec![1.0; 2 * 4 * 4 * 3], [1, 2, 4, 4, 3]).unwrap().requires_grad();
    let out = ops::max_pool3d_k2(&x).unwrap();
    let g =
        backward_with(&out, Tensor::from_vec(vec![1.0; 4 * 3], [1, 1, 2, 2, 3]).unwrap()).unwrap();
    let gx = g.get(&x).unwrap().to_vec().unwrap();
    for (i, &v) in gx.iter().enumerate() {
        let (w, h, d) = ((i / 3) % 4, (i / 12) % 4, i / 48);
        let first = d % 2 == 0 && h % 2 == 0 && w % 2 == 0;
        assert_eq!(v, if first { 1.0 } else { 0.0 }, "element {i}");
    }
}

#[test]
fn upsample_nearest_downsizes_with_pytorchs_rule() {
    // in 5 -> out 3: scale 5/3, sources floor(0), floor(1.67), floor(3.33) = 0, 1, 3.
    let x = Tensor::from_vec(vec![10.0, 11.0, 12.0, 13.0, 14.0], [1, 5, 1, 1, 1]).unwrap();
    let y = ops::upsample_nearest(&x, [3, 1, 1]).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![10.0, 11.0, 13.0]);
}

#[test]
fn large_reductions_are_reproducible() {
    // Partial sums are folded in block order, whatever rayon's split: bit-identical reruns.
    let x = tile(&small_x(14)).requires_grad();
    let w = Tensor::from_vec(common::random_vec(8, 15), [8]).unwrap().requires_grad();
    let g = tile(&small_x(16));
    let run = || {
        let out =
            ops::batch_norm(&x, Some(&w), None, BatchStats::Batch { running: None }, 1e-5).unwrap();
        let grads = backward_with(&out, g.clone()).unwrap();
        (
            out.to_vec().unwrap(),
            grads.get(&x).unwrap().to_vec().unwrap(),
            grads.get(&w).unwrap().to_vec().unwrap(),
        )
    };
    let first = run();
    for _ in 0..3 {
        assert!(run() == first, "batch norm differs between identical runs");
    }
}
