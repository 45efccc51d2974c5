//! Convolutions against PyTorch's golden values, a naive direct-loop reference at odd sizes, and
//! central finite differences; plus one test per family of shape error.
//!
//! The golden cases come from `F.conv3d(x, w, b, stride, padding)` and
//! `F.conv_transpose3d(x, w, b, stride=2)` with `grad_* = d(sum(out * grad_out)) / d(*)`
//! (tests/data/golden/README.md).

mod common;

use common::{assert_close, random_vec, Golden};
use dnvs_engine::{autograd, ops, Error, Tensor};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

// ---- golden ------------------------------------------------------------------------------------

/// PyTorch transposed-conv weight `(C_in, C_out, kd, kh, kw)` -> engine
/// `(C_out, kd, kh, kw, C_in)`.
fn transposed_weight_to_engine(w: &[f32], [ci, co, kd, kh, kw]: [usize; 5]) -> Tensor {
    let kvol = kd * kh * kw;
    let mut out = vec![0.0; w.len()];
    for i in 0..ci {
        for o in 0..co {
            for t in 0..kvol {
                out[(o * kvol + t) * ci + i] = w[(i * co + o) * kvol + t];
            }
        }
    }
    Tensor::from_vec(out, [co, kd, kh, kw, ci]).unwrap()
}

struct GoldenCase {
    name: &'static str,
    transposed: bool,
}

fn check_golden(case: &GoldenCase) {
    let gold = Golden::load("ops.safetensors");
    let key = |f: &str| format!("{}.{f}", case.name);
    let x = gold.engine(&key("in0")).requires_grad();
    let b = gold.has(&key("bias")).then(|| gold.engine(&key("bias")).requires_grad());
    let (wraw, wshape) = gold.raw(&key("weight"));
    let (out, w) = if case.transposed {
        let w = transposed_weight_to_engine(&wraw, wshape.try_into().unwrap()).requires_grad();
        (ops::conv_transpose3d(&x, &w, b.as_ref(), 2).unwrap(), w)
    } else {
        let meta = gold.raw(&key("meta")).0;
        let (stride, padding) = (meta[0] as usize, meta[1] as usize);
        let w = gold.engine(&key("weight")).requires_grad();
        (ops::conv3d(&x, &w, b.as_ref(), stride, padding).unwrap(), w)
    };
    let want = gold.engine(&key("out"));
    assert_eq!(out.dims(), want.dims(), "{}: output shape", case.name);
    assert_close(case.name, out.as_slice().unwrap(), want.as_slice().unwrap(), RTOL, ATOL);

    let grads = autograd::backward_with(&out, gold.engine(&key("grad_out"))).unwrap();
    let gx = grads.get(&x).expect("grad of input");
    let want_gx = gold.engine(&key("grad_in0"));
    assert_close(&key("grad_in0"), gx.as_slice().unwrap(), want_gx.as_slice().unwrap(), RTOL, ATOL);

    let gw = grads.get(&w).expect("grad of weight");
    let (gwraw, gwshape) = gold.raw(&key("grad_weight"));
    let want_gw = if case.transposed {
        transposed_weight_to_engine(&gwraw, gwshape.try_into().unwrap())
    } else {
        gold.engine(&key("grad_weight"))
    };
    assert_eq!(gw.dims(), w.dims());
    assert_close(
        &key("grad_weight"),
        gw.as_slice().unwrap(),
        want_gw.as_slice().unwrap(),
        RTOL,
        ATOL,
    );

    if let Some(b) = &b {
        let gb = grads.get(b).expect("grad of bias");
        let want_gb = gold.raw(&key("grad_bias")).0;
        assert_close(&key("grad_bias"), gb.as_slice().unwrap(), &want_gb, RTOL, ATOL);
    }
}

#[test]
fn golden_conv3d() {
    for name in ["conv3d_k5", "conv3d_k3", "conv3d_k2s2", "conv3d_k1", "conv3d_k5_wide"] {
        check_golden(&GoldenCase { name, transposed: false });
    }
}

#[test]
fn golden_conv_transpose3d() {
    for name in ["conv_transpose3d_k2s2", "conv_transpose3d_k2s2_b2"] {
        check_golden(&GoldenCase { name, transposed: true });
    }
}

// ---- naive reference ---------------------------------------------------------------------------

/// A convolution's dims: input `(N, D, H, W, C)`, weight `(K, kd, kh, kw, C)`.
#[derive(Clone, Copy, Debug)]
struct ConvCase {
    x: [usize; 5],
    w: [usize; 5],
    stride: usize,
    padding: usize,
}

impl ConvCase {
    fn out_dims(&self) -> [usize; 5] {
        let o = |a: usize| (self.x[a] + 2 * self.padding - self.w[a]) / self.stride + 1;
        [self.x[0], o(1), o(2), o(3), self.w[0]]
    }
    fn transposed_out_dims(&self) -> [usize; 5] {
        let o = |a: usize| (self.x[a] - 1) * self.stride + self.w[a];
        [self.x[0], o(1), o(2), o(3), self.w[0]]
    }
}

/// Calls `f(n, input voxel, output voxel, tap)` for every (input, output) pair a window links,
/// with flat voxel indices (no channel) and the tap index into `kd*kh*kw`.
fn for_each_link(
    n: usize,
    inp: [usize; 3],
    out: [usize; 3],
    k: [usize; 3],
    stride: usize,
    padding: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    for b in 0..n {
        for o in 0..out[0] * out[1] * out[2] {
            let oc = [o / (out[1] * out[2]), (o / out[2]) % out[1], o % out[2]];
            for t in 0..k[0] * k[1] * k[2] {
                let tc = [t / (k[1] * k[2]), (t / k[2]) % k[1], t % k[2]];
                let i: Vec<isize> =
                    (0..3).map(|a| (oc[a] * stride + tc[a]) as isize - padding as isize).collect();
                if (0..3).any(|a| i[a] < 0 || i[a] >= inp[a] as isize) {
                    continue;
                }
                let iv = (i[0] as usize * inp[1] + i[1] as usize) * inp[2] + i[2] as usize;
                f(b * inp.iter().product::<usize>() + iv, b * out.iter().product::<usize>() + o, t);
            }
        }
    }
}

/// Direct-loop convolution and its gradients for upstream `go`: `(out, grad_x, grad_w)`.
fn naive_conv3d(cs: ConvCase, x: &[f32], w: &[f32], go: &[f32]) -> [Vec<f32>; 3] {
    let od = cs.out_dims();
    let [k, kd, kh, kw, c] = cs.w;
    let kvol = kd * kh * kw;
    let mut out = vec![0.0f64; od.iter().product()];
    let (mut gx, mut gw) = (vec![0.0f64; x.len()], vec![0.0f64; w.len()]);
    let (inp, outp) = ([cs.x[1], cs.x[2], cs.x[3]], [od[1], od[2], od[3]]);
    for_each_link(cs.x[0], inp, outp, [kd, kh, kw], cs.stride, cs.padding, |iv, ov, t| {
        for kk in 0..k {
            for ch in 0..c {
                let wi = (kk * kvol + t) * c + ch;
                out[ov * k + kk] += (x[iv * c + ch] * w[wi]) as f64;
                gx[iv * c + ch] += (go[ov * k + kk] * w[wi]) as f64;
                gw[wi] += (go[ov * k + kk] * x[iv * c + ch]) as f64;
            }
        }
    });
    [out, gx, gw].map(|v| v.into_iter().map(|a| a as f32).collect())
}

/// Direct-loop transposed convolution (`w (K, kd, kh, kw, C)`) and its gradients.
fn naive_conv_transpose3d(cs: ConvCase, x: &[f32], w: &[f32], go: &[f32]) -> [Vec<f32>; 3] {
    let od = cs.transposed_out_dims();
    let [k, kd, kh, kw, c] = cs.w;
    let kvol = kd * kh * kw;
    let mut out = vec![0.0f64; od.iter().product()];
    let (mut gx, mut gw) = (vec![0.0f64; x.len()], vec![0.0f64; w.len()]);
    let (inp, outp) = ([cs.x[1], cs.x[2], cs.x[3]], [od[1], od[2], od[3]]);
    // The transposed output plays the convolution's input: links are the same, roles swapped.
    for_each_link(cs.x[0], outp, inp, [kd, kh, kw], cs.stride, 0, |ov, iv, t| {
        for kk in 0..k {
            for ch in 0..c {
                let wi = (kk * kvol + t) * c + ch;
                out[ov * k + kk] += (x[iv * c + ch] * w[wi]) as f64;
                gx[iv * c + ch] += (go[ov * k + kk] * w[wi]) as f64;
                gw[wi] += (go[ov * k + kk] * x[iv * c + ch]) as f64;
            }
        }
    });
    [out, gx, gw].map(|v| v.into_iter().map(|a| a as f32).collect())
}

fn check_against_naive(cs: ConvCase, transposed: bool, seed: u64) {
    let what = format!("{cs:?} transposed={transposed}");
    let xv = random_vec(cs.x.iter().product(), seed);
    let wv = random_vec(cs.w.iter().product(), seed + 1);
    let od = if transposed { cs.transposed_out_dims() } else { cs.out_dims() };
    let gov = random_vec(od.iter().product(), seed + 2);
    let x = Tensor::from_vec(xv.clone(), cs.x).unwrap().requires_grad();
    let w = Tensor::from_vec(wv.clone(), cs.w).unwrap().requires_grad();
    let (out, want) = if transposed {
        let out = ops::conv_transpose3d(&x, &w, None, cs.stride).unwrap();
        (out, naive_conv_transpose3d(cs, &xv, &wv, &gov))
    } else {
        let out = ops::conv3d(&x, &w, None, cs.stride, cs.padding).unwrap();
        (out, naive_conv3d(cs, &xv, &wv, &gov))
    };
    assert_eq!(out.dims(), od, "{what}: output dims");
    let grads = autograd::backward_with(&out, Tensor::from_vec(gov, od).unwrap()).unwrap();
    let got = [&out, grads.get(&x).unwrap(), grads.get(&w).unwrap()];
    for ((name, got), want) in ["out", "grad_x", "grad_w"].iter().zip(got).zip(&want) {
        assert_close(&format!("{what} {name}"), got.as_slice().unwrap(), want, RTOL, ATOL);
    }
}

#[test]
fn conv3d_odd_sizes_match_direct_loops() {
    let cases = [
        // 1-voxel axes, non-cubic kernel, padding.
        ConvCase { x: [2, 1, 7, 5, 3], w: [5, 1, 3, 2, 3], stride: 1, padding: 1 },
        // Tiles that do not divide the 9*11*13 output voxels.
        ConvCase { x: [1, 9, 11, 13, 3], w: [4, 3, 3, 3, 3], stride: 1, padding: 1 },
        // Strided with overlap (general input-gradient path) and odd sizes.
        ConvCase { x: [1, 7, 6, 9, 2], w: [3, 3, 3, 3, 2], stride: 2, padding: 1 },
        // Kernel 2, stride 2 on odd sizes: the trailing input slice lies under no window.
        ConvCase { x: [2, 5, 4, 7, 3], w: [6, 2, 2, 2, 3], stride: 2, padding: 0 },
        // Pointwise, more voxels than one tile.
        ConvCase { x: [1, 5, 7, 9, 4], w: [3, 1, 1, 1, 4], stride: 1, padding: 0 },
        // Padding larger than the kernel's reach and a 5-kernel over a 1-voxel axis.
        ConvCase { x: [1, 1, 4, 3, 2], w: [2, 5, 3, 1, 2], stride: 1, padding: 2 },
        // 16+ output and 6+ input channels take the direct SIMD kernels where the CPU has them:
        // rows not a multiple of 6, channels not of 16, the flipped-weight input gradient.
        ConvCase { x: [1, 3, 5, 7, 6], w: [16, 5, 5, 5, 6], stride: 1, padding: 2 },
        ConvCase { x: [2, 4, 3, 9, 7], w: [17, 3, 3, 3, 7], stride: 1, padding: 1 },
        ConvCase { x: [1, 5, 7, 8, 9], w: [32, 3, 3, 3, 9], stride: 2, padding: 1 },
        ConvCase { x: [1, 4, 5, 6, 8], w: [16, 3, 1, 3, 8], stride: 1, padding: 1 },
    ];
    for (i, cs) in cases.into_iter().enumerate() {
        check_against_naive(cs, false, 100 + i as u64);
    }
}

#[test]
fn conv_transpose3d_odd_sizes_match_direct_loops() {
    let cases = [
        ConvCase { x: [2, 1, 3, 5, 3], w: [4, 2, 2, 2, 3], stride: 2, padding: 0 },
        ConvCase { x: [1, 3, 2, 4, 2], w: [3, 3, 3, 3, 2], stride: 2, padding: 0 },
        ConvCase { x: [1, 2, 3, 3, 2], w: [2, 3, 2, 1, 2], stride: 1, padding: 0 },
        ConvCase { x: [1, 2, 2, 3, 2], w: [2, 1, 2, 2, 2], stride: 3, padding: 0 },
    ];
    for (i, cs) in cases.into_iter().enumerate() {
        check_against_naive(cs, true, 200 + i as u64);
    }
}

// ---- finite differences ------------------------------------------------------------------------

/// `sum(f(inputs) * r)` in f64, the scalar whose gradient the checks compare.
fn weighted_sum(out: &Tensor, r: &[f32]) -> f64 {
    out.as_slice().unwrap().iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Compares the analytic gradient of `sum(f(inputs) * r)` with central differences
/// (`eps = 1e-2`; the ops are linear in each input, so only rounding separates them).
fn check_finite_differences(what: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    let out = f(inputs);
    let r = random_vec(out.numel(), 7);
    let grads =
        autograd::backward_with(&out, Tensor::from_vec(r.clone(), out.dims()).unwrap()).unwrap();
    let eps = 1e-2f32;
    for (which, input) in inputs.iter().enumerate() {
        let analytic = grads.get(input).expect("gradient for every input").to_vec().unwrap();
        let base = input.to_vec().unwrap();
        for i in 0..base.len() {
            let eval = |delta: f32| {
                let mut v = base.clone();
                v[i] += delta;
                let mut perturbed = inputs.to_vec();
                perturbed[which] = Tensor::from_vec(v, input.dims()).unwrap();
                autograd::no_grad(|| weighted_sum(&f(&perturbed), &r))
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            let a = analytic[i] as f64;
            assert!(
                (numeric - a).abs() <= 1e-2 * a.abs().max(1.0),
                "{what}: input {which} element {i}: analytic {a}, numeric {numeric}"
            );
        }
    }
}

fn param(dims: &[usize], seed: u64) -> Tensor {
    Tensor::param(random_vec(dims.iter().product(), seed), dims.to_vec()).unwrap()
}

#[test]
fn conv3d_finite_differences() {
    // (input, weight, stride, padding)
    let cases: [([usize; 5], [usize; 5], usize, usize); 3] = [
        ([1, 3, 4, 3, 2], [2, 3, 3, 3, 2], 1, 1),
        ([1, 5, 4, 5, 2], [3, 3, 2, 3, 2], 2, 1),
        ([2, 4, 2, 4, 1], [2, 2, 2, 2, 1], 2, 0),
    ];
    for (i, (xd, wd, stride, padding)) in cases.into_iter().enumerate() {
        let inputs = [param(&xd, 10 + i as u64), param(&wd, 20 + i as u64), param(&[wd[0]], 30)];
        check_finite_differences(&format!("conv3d case {i}"), &inputs, |t| {
            ops::conv3d(&t[0], &t[1], Some(&t[2]), stride, padding).unwrap()
        });
    }
}

#[test]
fn conv_transpose3d_finite_differences() {
    let cases: [([usize; 5], [usize; 5], usize); 3] = [
        ([1, 2, 3, 2, 2], [3, 2, 2, 2, 2], 2),
        ([1, 2, 2, 3, 2], [2, 3, 3, 2, 2], 2),
        ([1, 2, 2, 2, 1], [2, 2, 3, 2, 1], 1),
    ];
    for (i, (xd, wd, stride)) in cases.into_iter().enumerate() {
        let inputs = [param(&xd, 40 + i as u64), param(&wd, 50 + i as u64), param(&[wd[0]], 60)];
        check_finite_differences(&format!("conv_transpose3d case {i}"), &inputs, |t| {
            ops::conv_transpose3d(&t[0], &t[1], Some(&t[2]), stride).unwrap()
        });
    }
}

// ---- errors ------------------------------------------------------------------------------------

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::from_vec(vec![0.0; dims.iter().product()], dims.to_vec()).unwrap()
}

fn assert_shape_err(what: &str, r: dnvs_engine::Result<Tensor>) {
    match r {
        Err(Error::Shape { op, expected, got }) => {
            assert!(op.starts_with("conv"), "{what}: op {op}");
            eprintln!("{what}: expected {expected}, got {got}");
        }
        other => panic!("{what}: wanted a shape error, got {other:?}"),
    }
}

#[test]
fn wrong_rank_is_a_shape_error() {
    let (x, w) = (zeros(&[1, 4, 4, 4, 2]), zeros(&[3, 3, 3, 3, 2]));
    assert_shape_err("4-D input", ops::conv3d(&zeros(&[4, 4, 4, 2]), &w, None, 1, 1));
    assert_shape_err("4-D weight", ops::conv3d(&x, &zeros(&[3, 3, 3, 2]), None, 1, 1));
    assert_shape_err("4-D input", ops::conv_transpose3d(&zeros(&[4, 4, 4, 2]), &w, None, 2));
}

#[test]
fn channel_mismatch_is_a_shape_error() {
    let (x, w) = (zeros(&[1, 4, 4, 4, 2]), zeros(&[3, 3, 3, 3, 5]));
    assert_shape_err("channels", ops::conv3d(&x, &w, None, 1, 1));
    assert_shape_err("channels", ops::conv_transpose3d(&x, &w, None, 2));
}

#[test]
fn bias_of_wrong_length_is_a_shape_error() {
    let (x, w) = (zeros(&[1, 4, 4, 4, 2]), zeros(&[3, 3, 3, 3, 2]));
    assert_shape_err("bias", ops::conv3d(&x, &w, Some(&zeros(&[2])), 1, 1));
    assert_shape_err("bias rank", ops::conv3d(&x, &w, Some(&zeros(&[3, 1])), 1, 1));
    assert_shape_err("bias", ops::conv_transpose3d(&x, &w, Some(&zeros(&[4])), 2));
}

#[test]
fn kernel_larger_than_padded_input_is_a_shape_error() {
    let (x, w) = (zeros(&[1, 2, 4, 4, 2]), zeros(&[3, 5, 3, 3, 2]));
    assert_shape_err("kernel", ops::conv3d(&x, &w, None, 1, 1));
    assert!(ops::conv3d(&x, &w, None, 1, 2).is_ok(), "padding 2 makes room");
}

#[test]
fn zero_stride_is_an_argument_error() {
    let (x, w) = (zeros(&[1, 4, 4, 4, 2]), zeros(&[3, 3, 3, 3, 2]));
    for r in [ops::conv3d(&x, &w, None, 0, 1), ops::conv_transpose3d(&x, &w, None, 0)] {
        assert!(matches!(r, Err(Error::Arg { .. })), "got {r:?}");
    }
}

#[test]
fn empty_channel_and_batch_axes_do_not_panic() {
    let bias = Tensor::from_vec(vec![0.5; 16], [16]).unwrap();
    let y = ops::conv3d(&zeros(&[1, 3, 3, 3, 0]), &zeros(&[16, 3, 3, 3, 0]), Some(&bias), 1, 1);
    assert!(y.unwrap().to_vec().unwrap().iter().all(|&v| v == 0.5));
    let y = ops::conv3d(&zeros(&[0, 3, 3, 3, 8]), &zeros(&[16, 3, 3, 3, 8]), None, 1, 1).unwrap();
    assert_eq!(y.dims(), &[0, 3, 3, 3, 16]);
    let y = ops::conv_transpose3d(&zeros(&[1, 2, 2, 2, 0]), &zeros(&[16, 2, 2, 2, 0]), None, 2);
    assert_eq!(y.unwrap().dims(), &[1, 4, 4, 4, 16]);
}

#[test]
fn no_grad_records_nothing() {
    let x = param(&[1, 3, 3, 3, 2], 1);
    let w = param(&[2, 3, 3, 3, 2], 2);
    let y = autograd::no_grad(|| ops::conv3d(&x, &w, None, 1, 1).unwrap());
    assert!(!y.tracks_grad());
    let y = ops::conv3d(&x.detach(), &w.detach(), None, 1, 1).unwrap();
    assert!(!y.tracks_grad());
}

/// A tape-free 5x5x5 convolution over enough voxels takes the Winograd path on AVX2 CPUs (see
/// `backend::cpu::conv3d::fwd_inference`); the taped one keeps the direct kernel, so training
/// and its gradients are unchanged. The two agree to Winograd's f32 rounding: measured at most
/// 4e-4 x the output's RMS on He-initialised layers, bounded here at 2e-3 x RMS. Odd sizes
/// (17x16x9: tiles overhanging two axes) and C != K.
#[test]
fn tape_free_forward_matches_taped_forward() {
    let (c, k) = (16, 24);
    let x = param(&[1, 17, 16, 9, c], 3);
    let scale = (2.0 / (125 * c) as f32).sqrt();
    let wv: Vec<f32> = random_vec(k * 125 * c, 4).iter().map(|v| v * scale).collect();
    let w = Tensor::param(wv, [k, 5, 5, 5, c]).unwrap();
    let b = param(&[k], 5);
    let taped = ops::conv3d(&x, &w, Some(&b), 1, 2).unwrap();
    assert!(taped.tracks_grad());
    let quiet = autograd::no_grad(|| ops::conv3d(&x, &w, Some(&b), 1, 2)).unwrap();
    let (t, q) = (taped.to_vec().unwrap(), quiet.to_vec().unwrap());
    let rms = (t.iter().map(|v| v * v).sum::<f32>() / t.len() as f32).sqrt();
    let err = t.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err <= 2e-3 * rms, "tape-free vs taped: max |diff| {err}, rms {rms}");
}
