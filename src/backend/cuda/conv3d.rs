//! Launchers for `kernels/conv3d.cu`: 3-D convolution over channels-last tensors as implicit GEMM
//! (bf16 tensor cores with f32 accumulation, or f32), forward with optional per-channel output
//! statistics, backward-input and backward-weight with split-K; dedicated forward kernels for a
//! 1-channel input and a 2-channel output. Same semantics as `crate::ops::conv3d`.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::launch::{self, grid_1d, int, kernel_name, Pass, Precision, THREADS};
use super::{alloc, common_gpu, f32_slice, wrap, zeros, Gpu};
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "conv3d";
const OP: &str = "conv3d";

/// Output tile of the implicit GEMM (BM x BN in implicit_gemm.cuh) and its reduction step (BK).
pub(crate) const TILE_M: usize = 64;
pub(crate) const TILE_N: usize = 64;
pub(crate) const TILE_K: usize = 32;
/// Weights the dedicated small kernels keep in shared memory (SMALL_W_MAX floats).
const SMALL_W_MAX: usize = 8192;

/// Shape and geometry of one convolution, shared by conv3d and conv_transpose3d and every pass;
/// mirrors `struct ConvParams` in `kernels/common.cuh` field for field (tested below).
/// `(d, h, w, c)` is the op's forward input, `(od, oh, ow, k)` its forward output; the weight is
/// `(k, kd, kh, kw, c)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvParams {
    pub n: i32,
    pub d: i32,
    pub h: i32,
    pub w: i32,
    pub c: i32,
    pub od: i32,
    pub oh: i32,
    pub ow: i32,
    pub k: i32,
    pub kd: i32,
    pub kh: i32,
    pub kw: i32,
    pub stride: i32,
    pub pad: i32,
    pub split_k: i32,
    pub flags: i32,
}

// SAFETY: ConvParams is #[repr(C)], plain i32 fields, no padding, and matches the CUDA struct's
// layout (see the layout test), so it can be passed by value as a kernel argument.
unsafe impl DeviceRepr for ConvParams {}

/// `CONV_FLAG_STATS` in common.cuh.
const FLAG_STATS: i32 = 1;

impl ConvParams {
    pub(crate) fn taps(&self) -> usize {
        (self.kd * self.kh * self.kw) as usize
    }
    pub(crate) fn in_voxels(&self) -> usize {
        (self.n as usize) * (self.d * self.h * self.w) as usize
    }
    pub(crate) fn out_voxels(&self) -> usize {
        (self.n as usize) * (self.od * self.oh * self.ow) as usize
    }
}

/// Geometry of `conv3d(x, w, stride, padding)` after checking the shapes.
///
/// # Errors
/// [`Error::Shape`] / [`Error::Arg`] for ranks, channel mismatch, zero stride or a kernel larger
/// than the padded input.
pub fn conv3d_params(
    x: &[usize],
    w: &[usize],
    stride: usize,
    padding: usize,
) -> Result<ConvParams> {
    let [n, d, h, wd, c]: [usize; 5] =
        x.try_into().map_err(|_| Error::shape(OP, "x (N, D, H, W, C)", x))?;
    let [k, kd, kh, kw, wc]: [usize; 5] =
        w.try_into().map_err(|_| Error::shape(OP, "w (K, kd, kh, kw, C)", w))?;
    if wc != c {
        return Err(Error::shape(OP, format!("w with C = {c}"), w));
    }
    if stride == 0 {
        return Err(Error::arg(OP, "stride must be at least 1"));
    }
    let out = |len: usize, kk: usize| -> Result<usize> {
        let padded = len + 2 * padding;
        if kk == 0 || padded < kk {
            return Err(Error::shape(OP, format!("kernel <= padded input {padded}"), w));
        }
        Ok((padded - kk) / stride + 1)
    };
    let (od, oh, ow) = (out(d, kd)?, out(h, kh)?, out(wd, kw)?);
    let i = |v: usize| int(OP, v);
    Ok(ConvParams {
        n: i(n)?,
        d: i(d)?,
        h: i(h)?,
        w: i(wd)?,
        c: i(c)?,
        od: i(od)?,
        oh: i(oh)?,
        ow: i(ow)?,
        k: i(k)?,
        kd: i(kd)?,
        kh: i(kh)?,
        kw: i(kw)?,
        stride: i(stride)?,
        pad: i(padding)?,
        split_k: 1,
        flags: 0,
    })
}

/// How many reduction slices give the GPU enough blocks when `tiles` output tiles do not: about
/// two blocks per SM, at least four reduction steps per slice.
pub(crate) fn split_k(gpu: &Gpu, tiles: usize, reduction: usize) -> usize {
    split_k_for(gpu.sms as usize, tiles, reduction)
}

/// [`split_k`] for a GPU with `sms` multiprocessors.
pub(crate) fn split_k_for(sms: usize, tiles: usize, reduction: usize) -> usize {
    let target = 2 * sms;
    if tiles >= target {
        return 1;
    }
    let max_split = reduction.div_ceil(TILE_K).div_ceil(4).max(1);
    target.div_ceil(tiles.max(1)).min(max_split).clamp(1, 65535)
}

/// Grid of the implicit GEMM for an `m x n` output and `z` slices.
pub(crate) fn gemm_grid(m: usize, n: usize, z: usize) -> Result<LaunchConfig> {
    let gx = u32::try_from(m.div_ceil(TILE_M)).map_err(|_| Error::arg(OP, "too many rows"))?;
    let gy = n.div_ceil(TILE_N);
    if gy > 65535 || z > 65535 {
        return Err(Error::arg(OP, format!("GEMM grid too large: {gy} x {z}")));
    }
    Ok(LaunchConfig {
        grid_dim: (gx, gy as u32, z as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Launches one implicit-GEMM entry point `name(p, a, b, bias, out, stats)` of module `stem`.
///
/// # Safety
/// `a`, `b`, `bias`, `out` and `stats` must have the sizes the mode of `name` reads and writes
/// for `p` (the table in conv3d.cu); `out` must be zeroed when `p.split_k > 1` or the mode
/// accumulates.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run_gemm(
    gpu: &Gpu,
    stem: &'static str,
    name: &str,
    p: &ConvParams,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    out: &mut CudaSlice<f32>,
    stats: Option<&mut CudaSlice<f32>>,
    cfg: LaunchConfig,
) -> Result<()> {
    if name.ends_with(Precision::Bf16.suffix()) && gpu.arch.0 < 8 {
        return Err(Error::Device {
            op: OP,
            msg: format!("bf16 tensor cores need sm_80 or newer, this GPU is {}", gpu.arch_name()),
        });
    }
    let f = gpu.function(stem, name)?;
    let null: u64 = 0;
    let mut lb = gpu.stream.launch_builder(&f);
    lb.arg(p).arg(a).arg(b);
    match bias {
        Some(s) => lb.arg(s),
        None => lb.arg(&null),
    };
    lb.arg(out);
    match stats {
        Some(s) => lb.arg(s),
        None => lb.arg(&null),
    };
    // SAFETY: the argument list matches CONV_ENTRY's (p, a, b, bias, out, stats); sizes are the
    // caller's contract.
    unsafe { launch::launch(gpu, name, &mut lb, cfg) }
}

fn prec_name(pass: Pass, prec: Precision) -> String {
    kernel_name(OP, pass, None, prec.suffix())
}

/// Forward convolution, optionally with per-channel sums of the output and of its square.
fn forward(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    prec: Precision,
    want_stats: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut p = conv3d_params(x.dims(), w.dims(), stride, padding)?;
    let mut all = vec![x, w];
    if let Some(b) = b {
        if b.numel() != p.k as usize {
            return Err(Error::shape(OP, format!("bias ({})", p.k), b.dims()));
        }
        all.push(b);
    }
    let gpu = common_gpu(OP, &all)?;
    let (sx, sw) = (f32_slice(OP, x)?, f32_slice(OP, w)?);
    let sb = b.map(|b| f32_slice(OP, b)).transpose()?;
    let (k, taps, c) = (p.k as usize, p.taps(), p.c as usize);
    let m = p.out_voxels();
    let shape = [p.n as usize, p.od as usize, p.oh as usize, p.ow as usize, k];

    // The dedicated kernels: 1-channel input (the CT) and 2-channel output (the class layer).
    let small = if want_stats {
        None
    } else if c == 1 && k * taps <= SMALL_W_MAX {
        Some("cin1")
    } else if k == 2 && 2 * taps * c <= SMALL_W_MAX {
        Some("cout2")
    } else {
        None
    };
    if let Some(which) = small {
        let mut out = alloc(&gpu, m * k)?;
        small_kernel(&gpu, which, &p, sx, sw, sb, &mut out, m)?;
        return Ok((wrap(&gpu, out, shape)?, None));
    }
    let mut stats = if want_stats { Some(zeros(&gpu, 2 * k)?) } else { None };
    if want_stats {
        p.flags |= FLAG_STATS;
    } else {
        // Deep layers (C128 at 14x18x8: 64 output tiles for 132 SMs) split the reduction; the
        // epilogue statistics need whole sums, so they keep split 1.
        let split = split_k(&gpu, m.div_ceil(TILE_M) * k.div_ceil(TILE_N), taps * c);
        p.split_k = int(OP, split)?;
    }
    let split = p.split_k.max(1) as usize;
    let mut out = if split > 1 { zeros(&gpu, m * k)? } else { alloc(&gpu, m * k)? };
    let name = prec_name(Pass::Fwd, prec);
    // SAFETY: forward mode: a = x (N, D, H, W, C), b = w (K, taps * C), bias (K) added by slice 0
    // only, out holds M * K = out voxels * K, overwritten (split 1) or zeroed and accumulated
    // (split > 1), stats (2, K) zeroed and only with split 1.
    unsafe {
        run_gemm(
            &gpu,
            STEM,
            &name,
            &p,
            sx,
            sw,
            sb,
            &mut out,
            stats.as_mut(),
            gemm_grid(m, k, split)?,
        )?
    };
    let stats = stats.map(|s| wrap(&gpu, s, [2, k])).transpose()?;
    Ok((wrap(&gpu, out, shape)?, stats))
}

#[allow(clippy::too_many_arguments)]
fn small_kernel(
    gpu: &Gpu,
    which: &str,
    p: &ConvParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    out: &mut CudaSlice<f32>,
    m: usize,
) -> Result<()> {
    let name = kernel_name(OP, Pass::Fwd, Some(which), "f32");
    let f = gpu.function(STEM, &name)?;
    let null: u64 = 0;
    let mut lb = gpu.stream.launch_builder(&f);
    lb.arg(p).arg(x).arg(w);
    match bias {
        Some(s) => lb.arg(s),
        None => lb.arg(&null),
    };
    lb.arg(out);
    // SAFETY: conv3d_fwd_{cin1,cout2}_f32(p, x, w, bias, out): x (N, D, H, W, C), w (K, taps, C)
    // with K * taps * C <= SMALL_W_MAX (checked by the caller, so the shared copy fits), bias (K)
    // or null, out (M, K) with every element written by the grid-stride loop over M.
    unsafe { launch::launch(gpu, &name, &mut lb, grid_1d(gpu, m)) }
}

/// 3-D convolution, channels-last. Operands are rounded to bf16 for the tensor cores when `prec`
/// is [`Precision::Bf16`] (accumulation is always f32); the 1-channel-input and 2-channel-output
/// cases use dedicated f32 kernels in either precision.
///
/// # Shapes
/// `x (N, D, H, W, C)`, `w (K, kd, kh, kw, C)`, `b (K)`; output `(N, OD, OH, OW, K)` with
/// `OD = (D + 2 padding - kd) / stride + 1`.
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    prec: Precision,
) -> Result<Tensor> {
    Ok(forward(x, w, b, stride, padding, prec, false)?.0)
}

/// [`conv3d`] that also returns the per-channel sums of the output and of its square, `(2, K)`,
/// accumulated in the GEMM epilogue, for a following batch norm (saves one read of the output).
pub fn conv3d_with_stats(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    prec: Precision,
) -> Result<(Tensor, Tensor)> {
    let (out, stats) = forward(x, w, b, stride, padding, prec, true)?;
    Ok((out, stats.expect("forward with stats returns them")))
}

/// Gradient of [`conv3d`] w.r.t. `x`, of shape `x_dims`.
///
/// # Shapes
/// `g (N, OD, OH, OW, K)`, `w (K, kd, kh, kw, C)`; output `x_dims = (N, D, H, W, C)`.
pub fn conv3d_backward_input(
    g: &Tensor,
    w: &Tensor,
    x_dims: &[usize],
    stride: usize,
    padding: usize,
    prec: Precision,
) -> Result<Tensor> {
    let mut p = conv3d_params(x_dims, w.dims(), stride, padding)?;
    let want = [p.n as usize, p.od as usize, p.oh as usize, p.ow as usize, p.k as usize];
    if g.dims() != want {
        return Err(Error::shape(OP, want, g.dims()));
    }
    let gpu = common_gpu(OP, &[g, w])?;
    let (sg, sw) = (f32_slice(OP, g)?, f32_slice(OP, w)?);
    if p.pad == 0 && p.kd == p.stride && p.kh == p.stride && p.kw == p.stride {
        // Non-overlapping windows: one dense GEMM per tap, rows = output voxels.
        let (m, n, r, taps) = (p.out_voxels(), p.c as usize, p.k as usize, p.taps());
        let split = split_k(&gpu, m.div_ceil(TILE_M) * n.div_ceil(TILE_N) * taps, r);
        p.split_k = int(OP, split)?;
        let mut gx = zeros(&gpu, p.in_voxels() * n)?;
        let name = kernel_name(OP, Pass::BwdInput, Some("tap"), prec.suffix());
        // SAFETY: CONV_BWD_INPUT_TAP: a = g (out voxels, K), b = w (K, taps, C), gx (N, D, H, W, C)
        // zeroed; row q and tap t write voxel q * stride + t < D (kernel == stride, no padding).
        unsafe {
            run_gemm(
                &gpu,
                STEM,
                &name,
                &p,
                sg,
                sw,
                None,
                &mut gx,
                None,
                gemm_grid(m, n, taps * split)?,
            )?
        };
        return wrap(&gpu, gx, x_dims);
    }
    let (m, n, r) = (p.in_voxels(), p.c as usize, p.taps() * p.k as usize);
    let split = split_k(&gpu, m.div_ceil(TILE_M) * n.div_ceil(TILE_N), r);
    p.split_k = int(OP, split)?;
    let mut gx = if split > 1 { zeros(&gpu, m * n)? } else { alloc(&gpu, m * n)? };
    let name = prec_name(Pass::BwdInput, prec);
    // SAFETY: backward-input mode: a = g (out voxels, K), b = w (K, taps, C), gx (in voxels, C),
    // zeroed when split (the slices accumulate), else fully overwritten.
    unsafe {
        run_gemm(&gpu, STEM, &name, &p, sg, sw, None, &mut gx, None, gemm_grid(m, n, split)?)?
    };
    wrap(&gpu, gx, x_dims)
}

/// Gradient of [`conv3d`] w.r.t. `w`, of shape `w_dims`. The bias gradient is
/// `reduce::sum_channels(g)`.
///
/// # Shapes
/// `g (N, OD, OH, OW, K)`, `x (N, D, H, W, C)`; output `w_dims = (K, kd, kh, kw, C)`.
pub fn conv3d_backward_weight(
    g: &Tensor,
    x: &Tensor,
    w_dims: &[usize],
    stride: usize,
    padding: usize,
    prec: Precision,
) -> Result<Tensor> {
    let mut p = conv3d_params(x.dims(), w_dims, stride, padding)?;
    let want = [p.n as usize, p.od as usize, p.oh as usize, p.ow as usize, p.k as usize];
    if g.dims() != want {
        return Err(Error::shape(OP, want, g.dims()));
    }
    let gpu = common_gpu(OP, &[g, x])?;
    let (m, n, r) = (p.k as usize, p.taps() * p.c as usize, p.out_voxels());
    let split = split_k(&gpu, m.div_ceil(TILE_M) * n.div_ceil(TILE_N), r);
    p.split_k = int(OP, split)?;
    let mut gw = if split > 1 { zeros(&gpu, m * n)? } else { alloc(&gpu, m * n)? };
    let name = prec_name(Pass::BwdWeight, prec);
    // SAFETY: backward-weight mode: a = g (out voxels, K), b = x (N, D, H, W, C), gw (K, taps * C),
    // zeroed when split, else fully overwritten.
    unsafe {
        run_gemm(
            &gpu,
            STEM,
            &name,
            &p,
            f32_slice(OP, g)?,
            f32_slice(OP, x)?,
            None,
            &mut gw,
            None,
            gemm_grid(m, n, split)?,
        )?
    };
    wrap(&gpu, gw, w_dims)
}

/// Field names of a C struct `struct <name> { ... };` in `src`, in order (for layout tests).
#[cfg(test)]
pub(crate) fn c_struct_fields(src: &str, name: &str) -> Vec<String> {
    let start = src.find(&format!("struct {name} {{")).expect("struct present");
    let body = &src[start..];
    let body = &body[body.find('{').expect("brace") + 1..body.find("};").expect("end")];
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .flat_map(|l| l.split(';'))
        .flat_map(|decl| {
            // "const float* p" -> p; "int n, d, h" -> n, d, h: the first name is the last token
            // of the first comma part, the others are whole parts.
            decl.split(',')
                .enumerate()
                .map(|(i, part)| {
                    let name =
                        if i == 0 { part.split_whitespace().last().unwrap_or("") } else { part };
                    name.trim().trim_start_matches('*').to_string()
                })
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_params_layout_matches_common_cuh() {
        assert_eq!(std::mem::size_of::<ConvParams>(), 16 * 4);
        assert_eq!(std::mem::align_of::<ConvParams>(), 4);
        assert_eq!(std::mem::offset_of!(ConvParams, od), 5 * 4);
        assert_eq!(std::mem::offset_of!(ConvParams, flags), 15 * 4);
        let src = super::super::sources::CONV3D;
        let fields = c_struct_fields(src, "ConvParams");
        let want = [
            "n", "d", "h", "w", "c", "od", "oh", "ow", "k", "kd", "kh", "kw", "stride", "pad",
            "split_k", "flags",
        ];
        assert_eq!(fields, want);
        assert!(src.contains("#define CONV_FLAG_STATS 1"));
    }

    #[test]
    fn split_k_fills_an_h100_only_when_tiles_are_few() {
        let h100 = 132;
        // conv3d backward-weight, k5 C16 at 112x144x64: a 16 x 2000 output (32 tiles) reduced
        // over 1 M voxels: split 9 gives 288 blocks for 132 SMs.
        assert_eq!(split_k_for(h100, 32, 112 * 144 * 64), 9);
        // Forward k5 C128 at 14x18x8: 2016 voxels x 128 = 64 tiles -> split 5.
        assert_eq!(split_k_for(h100, 64, 125 * 128), 5);
        // Forward k3 C32 at 112x144x64: 16128 tiles, no split.
        assert_eq!(split_k_for(h100, 16128, 27 * 32), 1);
        // A short reduction is never cut below four 32-wide steps per slice.
        assert_eq!(split_k_for(h100, 1, 256), 2);
    }

    #[test]
    fn params_follow_the_output_size_formula() {
        let p = conv3d_params(&[1, 56, 72, 32, 16], &[32, 5, 5, 5, 16], 1, 2).unwrap();
        assert_eq!((p.od, p.oh, p.ow, p.k), (56, 72, 32, 32));
        let p = conv3d_params(&[2, 9, 8, 7, 4], &[8, 2, 2, 2, 4], 2, 0).unwrap();
        assert_eq!((p.od, p.oh, p.ow), (4, 4, 3));
        assert!(conv3d_params(&[1, 4, 4, 4, 3], &[8, 3, 3, 3, 2], 1, 1).is_err());
        assert!(conv3d_params(&[1, 2, 4, 4, 3], &[8, 3, 3, 3, 3], 1, 0).is_err());
        assert!(conv3d_params(&[1, 4, 4, 4, 3], &[8, 3, 3, 3, 3], 0, 0).is_err());
    }
}
