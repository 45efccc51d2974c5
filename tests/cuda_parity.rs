//! CUDA kernels against the CPU reference (`crate::ops`, the oracle): random inputs with fixed
//! seeds at nice and odd sizes (1-voxel axes, extents off the 64-wide tiles), launcher outputs
//! NaN-poisoned before each run, `|gpu - cpu| <= atol + rtol |cpu|` with fp32 rtol 1e-4 and bf16
//! rtol 2e-2, the op, the case and the first five mismatches printed on failure. Each test skips
//! with a printed reason when there is no GPU and fails when DNVS_REQUIRE_GPU=1. Gradients come
//! from the CPU ops' autograd (`backward_with`) and from the CUDA backward launchers.

mod common;

use common::{assert_close, cuda_device, random_vec};
use dnvs_engine::autograd;
use dnvs_engine::backend::cpu::conv3d::ConvGeom;
use dnvs_engine::backend::cpu::conv_transpose3d::geometry as tconv_geometry;
use dnvs_engine::backend::cuda::{self as cu, Precision};
use dnvs_engine::ops;
use dnvs_engine::tensor::{Device, Tensor};
use dnvs_engine::{Error, Result};

const F32_RTOL: f32 = 1e-4;
const BF16_RTOL: f32 = 2e-2;

/// The GPU ordinal, with output poisoning on; `None` (reason printed) without a GPU.
fn gpu() -> Option<usize> {
    let d = cuda_device()?;
    cu::poison_outputs(true);
    match d {
        Device::Cuda(o) => Some(o),
        Device::Cpu => None,
    }
}

/// The CPU reference's value; a reference that is not built yet skips the case (printed), or
/// fails under DNVS_REQUIRE_GPU=1 where every comparison must run.
fn reference<T>(op: &str, case: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Error::NotImplemented(what)) => {
            if std::env::var("DNVS_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{op} {case}: CPU reference {what} is not implemented");
            }
            eprintln!("{op} {case}: skipped, CPU reference {what} not implemented yet");
            None
        }
        Err(e) => panic!("{op} {case}: CPU reference failed: {e}"),
    }
}

fn rand(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(random_vec(n, seed), dims.to_vec()).expect("shape fits")
}

fn up(t: &Tensor, o: usize) -> Tensor {
    t.to_device(Device::Cuda(o)).expect("upload")
}

/// Compares with an atol scaled to the reference's magnitude (bf16 rounding is relative to the
/// operands, not to each output, so near-zero outputs need it).
fn check(op: &str, case: &str, got: &Tensor, want: &Tensor, rtol: f32) {
    assert_eq!(got.dims(), want.dims(), "{op} {case}: shapes differ");
    let g = got.to_vec().expect("download");
    let w = want.to_vec().expect("cpu values");
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    assert_close(&format!("{op} [{case}]"), &g, &w, rtol, rtol * scale * 0.5);
}

/// Gradients of `f` (a CPU op of the leaves) for upstream gradient `g`, one per leaf.
fn cpu_grads(
    leaves: &[&Tensor],
    g: &Tensor,
    f: impl FnOnce(&[Tensor]) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
    let params: Vec<Tensor> = leaves.iter().map(|t| t.requires_grad()).collect();
    let out = f(&params)?;
    let grads = autograd::backward_with(&out, g.clone())?;
    Ok(params.iter().map(|p| grads.get(p).cloned().expect("leaf has a gradient")).collect())
}

// ---- convolutions ------------------------------------------------------------------------------

struct ConvCase {
    name: &'static str,
    x: [usize; 5],
    k: usize,
    ks: usize,
    stride: usize,
    pad: usize,
}

const CONV_CASES: &[ConvCase] = &[
    ConvCase { name: "k3 C16->32 8^3", x: [1, 8, 8, 8, 16], k: 32, ks: 3, stride: 1, pad: 1 },
    ConvCase { name: "k3 C3->5 odd 5x7x3 N2", x: [2, 5, 7, 3, 3], k: 5, ks: 3, stride: 1, pad: 1 },
    ConvCase { name: "k5 C8->70 6x5x9", x: [1, 6, 5, 9, 8], k: 70, ks: 5, stride: 1, pad: 2 },
    ConvCase { name: "k2 s2 C16->32 down", x: [1, 8, 6, 4, 16], k: 32, ks: 2, stride: 2, pad: 0 },
    ConvCase {
        name: "k2 s2 C4->6 down, odd 5x7x3",
        x: [1, 5, 7, 3, 4],
        k: 6,
        ks: 2,
        stride: 2,
        pad: 0,
    },
    ConvCase { name: "k5 C1->16 input layer", x: [1, 9, 7, 6, 1], k: 16, ks: 5, stride: 1, pad: 2 },
    ConvCase {
        name: "k1 C16->2 output layer",
        x: [1, 5, 6, 7, 16],
        k: 2,
        ks: 1,
        stride: 1,
        pad: 0,
    },
    ConvCase { name: "k3 1-voxel depth", x: [1, 1, 9, 10, 4], k: 8, ks: 3, stride: 1, pad: 1 },
];

#[test]
fn conv3d_forward_and_backward() {
    let Some(o) = gpu() else { return };
    for (i, case) in CONV_CASES.iter().enumerate() {
        let c = case.x[4];
        let wd = [case.k, case.ks, case.ks, case.ks, c];
        let (x, w, b) =
            (rand(&case.x, 10 + i as u64), rand(&wd, 20 + i as u64), rand(&[case.k], 30));
        let Some(want) =
            reference("conv3d", case.name, ops::conv3d(&x, &w, Some(&b), case.stride, case.pad))
        else {
            continue;
        };
        let g = rand(want.dims(), 40 + i as u64);
        let Some(grads) = reference(
            "conv3d",
            case.name,
            cpu_grads(&[&x, &w, &b], &g, |p| {
                ops::conv3d(&p[0], &p[1], Some(&p[2]), case.stride, case.pad)
            }),
        ) else {
            continue;
        };
        let (xg, wg, bg, gg) = (up(&x, o), up(&w, o), up(&b, o), up(&g, o));
        let geom = ConvGeom::check(&x, &w, Some(&b), case.stride, case.pad).unwrap();
        for (prec, rtol) in [(Precision::F32, F32_RTOL), (Precision::Bf16, BF16_RTOL)] {
            let tag = format!("{} {prec:?}", case.name);
            let out = cu::conv3d::conv3d(&xg, &wg, Some(&bg), &geom, prec).unwrap();
            check("conv3d fwd", &tag, &out, &want, rtol);
            let gx = cu::conv3d::conv3d_backward_input(&gg, &wg, &geom, prec).unwrap();
            check("conv3d bwd_input", &tag, &gx, &grads[0], rtol);
            let gw = cu::conv3d::conv3d_backward_weight(&gg, &xg, &geom, prec).unwrap();
            check("conv3d bwd_weight", &tag, &gw, &grads[1], rtol);
            let gb = cu::reduce::sum_channels(&gg).unwrap();
            check("conv3d bias grad", &tag, &gb, &grads[2], F32_RTOL);
        }
    }
}

#[test]
fn conv_transpose3d_forward_and_backward() {
    let Some(o) = gpu() else { return };
    let cases: [(&str, [usize; 5], usize, usize, usize); 3] = [
        ("k2 s2 C32->16 up", [1, 4, 5, 3, 32], 16, 2, 2),
        ("k2 s2 C3->70 odd N2", [2, 3, 1, 5, 3], 70, 2, 2),
        ("k3 s2 C4->6 overlapping", [1, 3, 4, 2, 4], 6, 3, 2),
    ];
    for (i, (name, xd, k, ks, s)) in cases.into_iter().enumerate() {
        let wd = [k, ks, ks, ks, xd[4]];
        let (x, w, b) = (rand(&xd, 50 + i as u64), rand(&wd, 60 + i as u64), rand(&[k], 70));
        let Some(want) =
            reference("conv_transpose3d", name, ops::conv_transpose3d(&x, &w, Some(&b), s))
        else {
            continue;
        };
        let g = rand(want.dims(), 80 + i as u64);
        let Some(grads) = reference(
            "conv_transpose3d",
            name,
            cpu_grads(&[&x, &w], &g, |p| ops::conv_transpose3d(&p[0], &p[1], Some(&b), s)),
        ) else {
            continue;
        };
        let (xg, wg, bg, gg) = (up(&x, o), up(&w, o), up(&b, o), up(&g, o));
        let geom = tconv_geometry(xd, k, [ks; 3], s).expect("a valid transposed conv");
        for (prec, rtol) in [(Precision::F32, F32_RTOL), (Precision::Bf16, BF16_RTOL)] {
            let tag = format!("{name} {prec:?}");
            let t =
                &cu::conv_transpose3d::conv_transpose3d(&xg, &wg, Some(&bg), &geom, prec).unwrap();
            check("conv_transpose3d fwd", &tag, t, &want, rtol);
            let gx = cu::conv_transpose3d::conv_transpose3d_backward_input(&gg, &wg, &geom, prec)
                .unwrap();
            check("conv_transpose3d bwd_input", &tag, &gx, &grads[0], rtol);
            let gw = cu::conv_transpose3d::conv_transpose3d_backward_weight(&gg, &xg, &geom, prec)
                .unwrap();
            check("conv_transpose3d bwd_weight", &tag, &gw, &grads[1], rtol);
        }
    }
}

// ---- elementwise ---------------------------------------------------------------------------------

const EW_SHAPES: &[(&str, [usize; 5])] = &[
    ("nice 2x8x8x8x16", [2, 8, 8, 8, 16]),
    ("odd 1x3x5x7x3", [1, 3, 5, 7, 3]),
    ("1 voxel", [1, 1, 1, 1, 1]),
];

/// Forward and input-gradient parity of a unary op.
fn unary_case(
    o: usize,
    op: &str,
    cpu: impl Fn(&Tensor) -> Result<Tensor>,
    gpu_fwd: impl Fn(&Tensor) -> Result<Tensor>,
    gpu_bwd: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>, // (x, y, g)
) {
    for (i, (name, d)) in EW_SHAPES.iter().enumerate() {
        let x = rand(d, 100 + i as u64);
        let Some(want) = reference(op, name, cpu(&x)) else { return };
        let g = rand(d, 200 + i as u64);
        let Some(grads) = reference(op, name, cpu_grads(&[&x], &g, |p| cpu(&p[0]))) else { return };
        let (xg, gg) = (up(&x, o), up(&g, o));
        let y = gpu_fwd(&xg).unwrap();
        check(op, name, &y, &want, F32_RTOL);
        check(
            &format!("{op} bwd_input"),
            name,
            &gpu_bwd(&xg, &y, &gg).unwrap(),
            &grads[0],
            F32_RTOL,
        );
    }
}

#[test]
fn activations() {
    let Some(o) = gpu() else { return };
    use cu::elementwise as ew;
    unary_case(o, "relu", ops::relu, ew::relu, |x, _, g| ew::relu_backward(x, g));
    unary_case(
        o,
        "elu",
        |x| ops::elu(x, 1.0),
        |x| ew::elu(x, 1.0),
        |x, _, g| ew::elu_backward(x, g, 1.0),
    );
    unary_case(o, "sigmoid", ops::sigmoid, ew::sigmoid, |_, y, g| ew::sigmoid_backward(y, g));
    unary_case(
        o,
        "scale",
        |x| ops::scale(x, -0.75),
        |x| ew::scale(x, -0.75),
        |_, _, g| ew::scale(g, -0.75),
    );
    unary_case(
        o,
        "softmax_channels",
        ops::softmax_channels,
        cu::softmax::softmax_channels,
        |_, y, g| cu::softmax::softmax_channels_backward(y, g),
    );
    unary_case(
        o,
        "log_softmax_channels",
        ops::log_softmax_channels,
        cu::softmax::log_softmax_channels,
        |_, y, g| cu::softmax::log_softmax_channels_backward(y, g),
    );
}

#[test]
fn prelu_per_channel_and_shared() {
    let Some(o) = gpu() else { return };
    for (i, (name, d)) in EW_SHAPES.iter().enumerate() {
        for nw in [d[4], 1] {
            let case = format!("{name} slopes {nw}");
            let (x, w, g) = (rand(d, 300 + i as u64), rand(&[nw], 310), rand(d, 320 + i as u64));
            let Some(want) = reference("prelu", &case, ops::prelu(&x, &w)) else { return };
            let Some(gr) =
                reference("prelu", &case, cpu_grads(&[&x, &w], &g, |p| ops::prelu(&p[0], &p[1])))
            else {
                return;
            };
            let (xg, wg, gg) = (up(&x, o), up(&w, o), up(&g, o));
            check("prelu", &case, &cu::elementwise::prelu(&xg, &wg).unwrap(), &want, F32_RTOL);
            let (gx, gw) = cu::elementwise::prelu_backward(&xg, &wg, &gg).unwrap();
            check("prelu bwd_input", &case, &gx, &gr[0], F32_RTOL);
            check("prelu bwd_weight", &case, &gw, &gr[1], 1e-3);
        }
    }
}

#[test]
fn binary_ops_gate_and_concat() {
    let Some(o) = gpu() else { return };
    use cu::elementwise as ew;
    for (i, (name, d)) in EW_SHAPES.iter().enumerate() {
        let (a, b) = (rand(d, 400 + i as u64), rand(d, 410 + i as u64));
        let (ag, bg) = (up(&a, o), up(&b, o));
        if let Some(want) = reference("add", name, ops::add(&a, &b)) {
            check("add", name, &ew::add(&ag, &bg).unwrap(), &want, F32_RTOL);
        }
        if let Some(want) = reference("mul", name, ops::mul(&a, &b)) {
            check("mul", name, &ew::mul(&ag, &bg).unwrap(), &want, F32_RTOL);
        }
        let gd = [d[0], d[1], d[2], d[3], 1];
        let (gate, g) = (rand(&gd, 420 + i as u64), rand(d, 430 + i as u64));
        if let (Some(want), Some(gr)) = (
            reference("gate_mul", name, ops::gate_mul(&a, &gate)),
            reference(
                "gate_mul",
                name,
                cpu_grads(&[&a, &gate], &g, |p| ops::gate_mul(&p[0], &p[1])),
            ),
        ) {
            let gateg = up(&gate, o);
            check("gate_mul", name, &ew::gate_mul(&ag, &gateg).unwrap(), &want, F32_RTOL);
            let (gx, ggate) = ew::gate_mul_backward(&ag, &gateg, &up(&g, o)).unwrap();
            check("gate_mul bwd_input", name, &gx, &gr[0], F32_RTOL);
            check("gate_mul bwd_weight", name, &ggate, &gr[1], 1e-3);
        }
        let cd = [d[0], d[1], d[2], d[3], 5];
        let c2 = rand(&cd, 440 + i as u64);
        if let Some(want) = reference("concat_channels", name, ops::concat_channels(&[&a, &c2])) {
            let got = ew::concat_channels(&[&ag, &up(&c2, o)]).unwrap();
            check("concat_channels", name, &got, &want, 0.0);
            let parts = ew::concat_channels_backward(&got, &[d[4], 5]).unwrap();
            check("concat_channels bwd_input", name, &parts[0], &a, 0.0);
            check("concat_channels bwd_input", name, &parts[1], &c2, 0.0);
        }
    }
}

#[test]
fn pool_and_upsample() {
    let Some(o) = gpu() else { return };
    let shapes: [(&str, [usize; 5]); 3] = [
        ("even 2x8x6x4x16", [2, 8, 6, 4, 16]),
        ("odd 1x5x7x3x3", [1, 5, 7, 3, 3]),
        ("2^3", [1, 2, 2, 2, 1]),
    ];
    for (i, (name, d)) in shapes.iter().enumerate() {
        let x = rand(d, 500 + i as u64);
        if let Some(want) = reference("max_pool3d_k2", name, ops::max_pool3d_k2(&x)) {
            let g = rand(want.dims(), 510 + i as u64);
            let gr = reference(
                "max_pool3d_k2",
                name,
                cpu_grads(&[&x], &g, |p| ops::max_pool3d_k2(&p[0])),
            );
            let xg = up(&x, o);
            check("max_pool3d_k2", name, &cu::pool::max_pool3d_k2(&xg).unwrap(), &want, 0.0);
            if let Some(gr) = gr {
                let gx = cu::pool::max_pool3d_k2_backward(&xg, &up(&g, o)).unwrap();
                check("max_pool3d_k2 bwd_input", name, &gx, &gr[0], 0.0);
            }
        }
        for size in [[2 * d[1], 2 * d[2], 2 * d[3]], [d[1] + 3, 2 * d[2] + 1, d[3]]] {
            let case = format!("{name} -> {size:?}");
            let Some(want) = reference("upsample_nearest", &case, ops::upsample_nearest(&x, size))
            else {
                continue;
            };
            let g = rand(want.dims(), 520 + i as u64);
            let xg = up(&x, o);
            check(
                "upsample_nearest",
                &case,
                &cu::upsample::upsample_nearest(&xg, size).unwrap(),
                &want,
                0.0,
            );
            if let Some(gr) = reference(
                "upsample_nearest",
                &case,
                cpu_grads(&[&x], &g, |p| ops::upsample_nearest(&p[0], size)),
            ) {
                let gx = cu::upsample::upsample_nearest_backward(&up(&g, o), d).unwrap();
                check("upsample_nearest bwd_input", &case, &gx, &gr[0], F32_RTOL);
            }
        }
    }
}

// ---- norms ---------------------------------------------------------------------------------------

#[test]
fn batch_norm_batch_and_running() {
    let Some(o) = gpu() else { return };
    let shapes: [(&str, [usize; 5]); 2] =
        [("2x6x5x4x16", [2, 6, 5, 4, 16]), ("odd 1x3x1x5x3", [1, 3, 1, 5, 3])];
    for (i, (name, d)) in shapes.iter().enumerate() {
        let c = d[4];
        // A mean far from zero next to the spread: what the two-pass statistics are for.
        let xv: Vec<f32> =
            random_vec(d.iter().product(), 600 + i as u64).iter().map(|v| 5.0 + v).collect();
        let x = Tensor::from_vec(xv, d.to_vec()).unwrap();
        let (w, b, g) = (rand(&[c], 610), rand(&[c], 620), rand(d, 630 + i as u64));
        let mut rs_cpu = ops::RunningStats {
            mean: rand(&[c], 640),
            var: Tensor::full([c], 1.5, Device::Cpu).unwrap(),
            momentum: 0.1,
        };
        let Some(want) = reference(
            "batch_norm",
            name,
            ops::batch_norm(
                &x,
                Some(&w),
                Some(&b),
                ops::BatchStats::Batch { running: Some(&mut rs_cpu) },
                1e-5,
            ),
        ) else {
            return;
        };
        let mut rs_gpu = ops::RunningStats {
            mean: up(&rand(&[c], 640), o),
            var: cu::elementwise::full([c], 1.5, o).unwrap(),
            momentum: 0.1,
        };
        let (xg, wg, bg, gg) = (up(&x, o), up(&w, o), up(&b, o), up(&g, o));
        let (out, saved) = cu::norm::batch_norm(
            &xg,
            Some(&wg),
            Some(&bg),
            ops::BatchStats::Batch { running: Some(&mut rs_gpu) },
            1e-5,
        )
        .unwrap();
        check("batch_norm batch", name, &out, &want, 1e-3);
        check("batch_norm running mean", name, &rs_gpu.mean, &rs_cpu.mean, 1e-4);
        check("batch_norm running var", name, &rs_gpu.var, &rs_cpu.var, 1e-4);
        if let Some(gr) = reference(
            "batch_norm",
            name,
            cpu_grads(&[&x, &w, &b], &g, |p| {
                ops::batch_norm(
                    &p[0],
                    Some(&p[1]),
                    Some(&p[2]),
                    ops::BatchStats::Batch { running: None },
                    1e-5,
                )
            }),
        ) {
            let (gx, gw, gb) = cu::norm::batch_norm_backward(&xg, Some(&wg), &gg, &saved).unwrap();
            check("batch_norm bwd_input", name, &gx, &gr[0], 1e-3);
            check("batch_norm bwd_weight", name, &gw, &gr[1], 1e-3);
            check("batch_norm bwd_bias", name, &gb, &gr[2], 1e-3);
        }
        // Running statistics (eval).
        if let Some(want) = reference(
            "batch_norm",
            name,
            ops::batch_norm(&x, Some(&w), Some(&b), ops::BatchStats::Running(&rs_cpu), 1e-5),
        ) {
            let (out, _) = cu::norm::batch_norm(
                &xg,
                Some(&wg),
                Some(&bg),
                ops::BatchStats::Running(&rs_gpu),
                1e-5,
            )
            .unwrap();
            check("batch_norm running", name, &out, &want, 1e-3);
        }
    }
}

#[test]
fn group_norm_forward_and_backward() {
    let Some(o) = gpu() else { return };
    let cases: [(&str, [usize; 5], usize); 3] = [
        ("2x4x5x6x16 G4", [2, 4, 5, 6, 16], 4),
        ("odd 1x3x1x7x6 G3", [1, 3, 1, 7, 6], 3),
        ("G = C", [2, 2, 3, 2, 4], 4),
    ];
    for (i, (name, d, groups)) in cases.into_iter().enumerate() {
        let c = d[4];
        let xv: Vec<f32> =
            random_vec(d.iter().product(), 700 + i as u64).iter().map(|v| 3.0 + 2.0 * v).collect();
        let x = Tensor::from_vec(xv, d.to_vec()).unwrap();
        let (w, b, g) = (rand(&[c], 710), rand(&[c], 720), rand(&d, 730 + i as u64));
        let Some(want) =
            reference("group_norm", name, ops::group_norm(&x, groups, Some(&w), Some(&b), 1e-5))
        else {
            return;
        };
        let (xg, wg, bg, gg) = (up(&x, o), up(&w, o), up(&b, o), up(&g, o));
        let (out, saved) = cu::norm::group_norm(&xg, groups, Some(&wg), Some(&bg), 1e-5).unwrap();
        check("group_norm", name, &out, &want, 1e-3);
        if let Some(gr) = reference(
            "group_norm",
            name,
            cpu_grads(&[&x, &w, &b], &g, |p| {
                ops::group_norm(&p[0], groups, Some(&p[1]), Some(&p[2]), 1e-5)
            }),
        ) {
            let (gx, gw, gb) =
                cu::norm::group_norm_backward(&xg, groups, Some(&wg), &gg, &saved).unwrap();
            check("group_norm bwd_input", name, &gx, &gr[0], 1e-3);
            check("group_norm bwd_weight", name, &gw, &gr[1], 1e-3);
            check("group_norm bwd_bias", name, &gb, &gr[2], 1e-3);
        }
    }
}

// ---- losses and Adam (self-contained f64 references) ---------------------------------------------

/// (loss, d loss / d input) in f64 for `dice_w * softDice + ce_w * weighted CE`.
fn loss_reference(
    x: &[f32],
    t: &[f32],
    c: usize,
    w: Option<&[f32]>,
    dice_w: f64,
    ce_w: f64,
    logits: bool,
) -> (f64, Vec<f64>) {
    let v = t.len();
    let p: Vec<f64> = (0..v)
        .flat_map(|i| {
            let r: Vec<f64> = x[i * c..(i + 1) * c].iter().map(|&a| f64::from(a)).collect();
            if logits {
                let m = r.iter().cloned().fold(f64::MIN, f64::max);
                let s: f64 = r.iter().map(|a| (a - m).exp()).sum();
                r.iter().map(|a| (a - m).exp() / s).collect::<Vec<_>>()
            } else {
                r
            }
        })
        .collect();
    let wt = |k: usize| w.map(|w| f64::from(w[k])).unwrap_or(1.0);
    let (mut sw, mut nll, mut inter, mut ps, mut gs) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..v {
        let k = t[i] as usize;
        sw += wt(k);
        nll -= wt(k) * p[i * c + k].ln();
        let fg = if k == 1 { 1.0 } else { 0.0 };
        inter += p[i * c + 1] * fg;
        ps += p[i * c + 1];
        gs += fg;
    }
    let den = ps + gs + 1e-6;
    let loss = dice_w * (1.0 - 2.0 * inter / den) + ce_w * nll / sw;
    let mut grad = vec![0.0; v * c];
    for i in 0..v {
        let k = t[i] as usize;
        let fg = if k == 1 { 1.0 } else { 0.0 };
        let mut gp = vec![0.0; c];
        gp[1] += dice_w * (2.0 * inter / (den * den) - 2.0 * fg / den);
        gp[k] -= ce_w * wt(k) / (sw * p[i * c + k]);
        for ch in 0..c {
            grad[i * c + ch] = if logits {
                let dot: f64 = (0..c).map(|j| gp[j] * p[i * c + j]).sum();
                p[i * c + ch] * (gp[ch] - dot)
            } else {
                gp[ch]
            };
        }
    }
    (loss, grad)
}

#[test]
fn fused_losses() {
    let Some(o) = gpu() else { return };
    use cu::loss::{dice_ce, dice_ce_backward, LossSpec};
    let d = [2, 5, 3, 7];
    let v: usize = d.iter().product();
    for (c, seed) in [(2usize, 800u64), (4, 810)] {
        let t: Vec<f32> = random_vec(v, seed)
            .iter()
            .map(|r| ((r + 1.0) * 0.5 * c as f32).floor().min(c as f32 - 1.0))
            .collect();
        let logits_v = random_vec(v * c, seed + 1).iter().map(|r| 3.0 * r).collect::<Vec<_>>();
        let probs_v: Vec<f32> = (0..v)
            .flat_map(|i| {
                let r = &logits_v[i * c..(i + 1) * c];
                let m = r.iter().cloned().fold(f32::MIN, f32::max);
                let s: f32 = r.iter().map(|a| (a - m).exp()).sum();
                r.iter().map(move |a| (a - m).exp() / s).collect::<Vec<_>>()
            })
            .collect();
        let weights: Vec<f32> = (0..c).map(|k| 0.5 + k as f32).collect();
        let shape = [d[0], d[1], d[2], d[3], c];
        let tg = up(&Tensor::from_vec(t.clone(), d.to_vec()).unwrap(), o);
        for (spec, wopt) in [
            (LossSpec::CROSS_ENTROPY, Some(weights.as_slice())),
            (LossSpec::NLL_PROBS, None),
            (LossSpec::SOFT_DICE, None),
            (LossSpec::dice_ce(0.7), Some(weights.as_slice())),
        ] {
            let case = format!("C{c} {spec:?} weighted={}", wopt.is_some());
            let xv = if spec.logits { &logits_v } else { &probs_v };
            let (want_loss, want_grad) = loss_reference(
                xv,
                &t,
                c,
                wopt,
                f64::from(spec.dice_w),
                f64::from(spec.ce_w),
                spec.logits,
            );
            let xg = up(&Tensor::from_vec(xv.clone(), shape.to_vec()).unwrap(), o);
            let (loss, sums) = dice_ce(&xg, &tg, wopt, spec).unwrap();
            let got = loss.item().unwrap();
            assert!(
                (f64::from(got) - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
                "loss {case}: gpu {got} cpu {want_loss}"
            );
            let one = cu::elementwise::full(Vec::<usize>::new(), 1.0, o).unwrap();
            let gx = dice_ce_backward(&xg, &tg, wopt, &sums, spec, &one).unwrap();
            let want: Vec<f32> = want_grad.iter().map(|&g| g as f32).collect();
            check(
                "loss bwd_input",
                &case,
                &gx,
                &Tensor::from_vec(want, shape.to_vec()).unwrap(),
                1e-3,
            );
        }
    }
}

#[test]
fn multi_tensor_adam() {
    let Some(o) = gpu() else { return };
    use cu::optim::{AdamHyper, CudaAdam};
    let hp = AdamHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-4 };
    let sizes = [1usize, 7, 300, 5000];
    let mut p_cpu: Vec<Vec<f64>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| random_vec(n, 900 + i as u64).iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut m = p_cpu.iter().map(|p| vec![0.0; p.len()]).collect::<Vec<_>>();
    let mut vv = m.clone();
    let mut params: Vec<Tensor> = p_cpu
        .iter()
        .zip(&sizes)
        .map(|(p, &n)| {
            up(&Tensor::from_vec(p.iter().map(|&x| x as f32).collect(), [n]).unwrap(), o)
        })
        .collect();
    let mut adam = CudaAdam::new();
    for step in 1..=3 {
        let grads_cpu: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| random_vec(n, 950 + 10 * step + i as u64))
            .collect();
        let grads: Vec<Tensor> = grads_cpu
            .iter()
            .zip(&sizes)
            .map(|(g, &n)| up(&Tensor::from_vec(g.clone(), [n]).unwrap(), o))
            .collect();
        params = adam.step(hp, &params, &grads).unwrap();
        let (b1, b2) = (f64::from(hp.beta1), f64::from(hp.beta2));
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..sizes.len() {
            for j in 0..sizes[i] {
                let g = f64::from(grads_cpu[i][j]) + f64::from(hp.weight_decay) * p_cpu[i][j];
                m[i][j] = b1 * m[i][j] + (1.0 - b1) * g;
                vv[i][j] = b2 * vv[i][j] + (1.0 - b2) * g * g;
                let denom = vv[i][j].sqrt() / bc2.sqrt() + f64::from(hp.eps);
                p_cpu[i][j] -= f64::from(hp.lr) / bc1 * m[i][j] / denom;
            }
            let want =
                Tensor::from_vec(p_cpu[i].iter().map(|&x| x as f32).collect(), [sizes[i]]).unwrap();
            check(
                "adam",
                &format!("step {step} tensor {i} (n = {})", sizes[i]),
                &params[i],
                &want,
                1e-5,
            );
        }
    }
}

/// The joint term's target: class ids inside the joint region, `IGNORE_INDEX` outside. The GPU's
/// fused NLL skips those voxels as the CPU's does (no loss, no weight, no gradient).
#[test]
fn ignored_voxels_match_between_devices() {
    let Some(o) = gpu() else { return };
    let d = [2, 5, 3, 7];
    let v: usize = d.iter().product();
    let t: Vec<f32> = random_vec(v, 830)
        .iter()
        .map(|r| {
            if *r < -0.3 {
                dnvs_engine::loss::IGNORE_INDEX
            } else {
                f32::from(u8::from(*r > 0.3))
            }
        })
        .collect();
    let probs: Vec<f32> =
        random_vec(v, 831).iter().flat_map(|r| [0.5 - 0.45 * r, 0.5 + 0.45 * r]).collect();
    let shape = vec![d[0], d[1], d[2], d[3], 2];
    let w = [0.6f32, 1.7];
    let on = |dev: Device| {
        let p = Tensor::from_vec(probs.clone(), shape.clone()).unwrap().to_device(dev).unwrap();
        let p = p.requires_grad();
        let tg = Tensor::from_vec(t.clone(), d.to_vec()).unwrap().to_device(dev).unwrap();
        let l = dnvs_engine::loss::nll_probs(&p, &tg, Some(&w)).unwrap();
        let g = autograd::backward(&l).unwrap().get(&p).unwrap().to_device(Device::Cpu).unwrap();
        (l.item().unwrap(), g)
    };
    let (cpu_loss, cpu_grad) = on(Device::Cpu);
    let (gpu_loss, gpu_grad) = on(Device::Cuda(o));
    assert!(
        (gpu_loss - cpu_loss).abs() <= 1e-5 * cpu_loss.abs().max(1.0),
        "{gpu_loss} vs {cpu_loss}"
    );
    check("nll with ignored voxels", "bwd", &gpu_grad, &cpu_grad, 1e-4);
}
