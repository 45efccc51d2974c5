//! Launchers for `kernels/conv3d.cu`: 3-D convolution over channels-last tensors as implicit GEMM
//! (bf16 tensor cores with f32 accumulation, or f32), forward, backward-input and backward-weight
//! with split-K; dedicated forward kernels for a 1-channel input and a 2-channel output. Same semantics as `crate::ops::conv3d`, whose one shape
//! check ([`ConvGeom::check`]) gives the geometry every pass here builds its parameters from.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::launch::{self, gemm_grid, grid_1d, int, kernel_name, Pass, Precision};
pub(crate) use super::launch::{TILE_K, TILE_M, TILE_N};
use super::{alloc, common_gpu, f32_slice, wrap, zeros, Gpu};
use crate::backend::cpu::conv3d::ConvGeom;
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "conv3d";
const OP: &str = "conv3d";

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
}

// SAFETY: ConvParams is #[repr(C)], plain i32 fields, no padding, and matches the CUDA struct's
// layout (see the layout test), so it can be passed by value as a kernel argument.
unsafe impl DeviceRepr for ConvParams {}

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

impl ConvParams {
    /// The kernel parameters of the convolution `g` (checked by `ConvGeom::check`).
    ///
    /// # Errors
    /// [`Error::Arg`] when a size exceeds the kernels' 32-bit `int`.
    pub fn conv(g: &ConvGeom) -> Result<ConvParams> {
        let i = |v: usize| int(OP, v);
        let ([d, h, w], [od, oh, ow], [kd, kh, kw]) = (g.input, g.output, g.kernel);
        Ok(ConvParams {
            n: i(g.n)?,
            d: i(d)?,
            h: i(h)?,
            w: i(w)?,
            c: i(g.c)?,
            od: i(od)?,
            oh: i(oh)?,
            ow: i(ow)?,
            k: i(g.k)?,
            kd: i(kd)?,
            kh: i(kh)?,
            kw: i(kw)?,
            stride: i(g.stride)?,
            pad: i(g.padding)?,
            split_k: 1,
        })
    }

    /// The kernel parameters of the transposed convolution whose mirror convolution is `g`
    /// (`g.input` is the transposed convolution's output): input and output swap roles.
    pub fn transposed(g: &ConvGeom) -> Result<ConvParams> {
        let p = ConvParams::conv(g)?;
        Ok(ConvParams { d: p.od, h: p.oh, w: p.ow, c: p.k, od: p.d, oh: p.h, ow: p.w, k: p.c, ..p })
    }

    /// Output dims `(N, OD, OH, OW, K)`.
    pub(crate) fn out_dims(&self) -> [usize; 5] {
        [self.n, self.od, self.oh, self.ow, self.k].map(|v| v as usize)
    }

    /// Input dims `(N, D, H, W, C)`.
    pub(crate) fn in_dims(&self) -> [usize; 5] {
        [self.n, self.d, self.h, self.w, self.c].map(|v| v as usize)
    }

    /// Weight dims `(K, kd, kh, kw, C)`.
    pub(crate) fn w_dims(&self) -> [usize; 5] {
        [self.k, self.kd, self.kh, self.kw, self.c].map(|v| v as usize)
    }
}

/// Blocks per SM that split-K aims for when the output tiles are too few. The weight gradients of
/// the large layers (a 32 x 4000 output over a million voxels) are latency-bound chains of
/// reduction tiles: on an H200 (2026-11-30, V-Net bf16 step, two alternating rounds) a target of
/// 2 blocks per SM gave 297 ms, 8 gave 265 ms, 16 gave 255 ms. 8 is the one whose CUDA tests ran
/// on that card.
const SPLIT_BLOCKS_PER_SM: usize = 8;

/// How many reduction slices give the GPU enough blocks when `tiles` output tiles do not: about
/// [`SPLIT_BLOCKS_PER_SM`] blocks per SM, at least four reduction steps per slice.
pub(crate) fn split_k(gpu: &Gpu, tiles: usize, reduction: usize) -> usize {
    split_k_for(gpu.sms as usize, tiles, reduction)
}

/// [`split_k`] for a GPU with `sms` multiprocessors.
pub(crate) fn split_k_for(sms: usize, tiles: usize, reduction: usize) -> usize {
    let target = SPLIT_BLOCKS_PER_SM * sms;
    if tiles >= target {
        return 1;
    }
    let max_split = reduction.div_ceil(TILE_K).div_ceil(4).max(1);
    target.div_ceil(tiles.max(1)).min(max_split).clamp(1, 65535)
}

/// Launches one implicit-GEMM entry point `name(p, a, b, bias, out)` of module `stem`.
///
/// # Safety
/// `a`, `b`, `bias` and `out` must have the sizes the mode of `name` reads and writes for `p`
/// (the table in implicit_gemm.cuh); `out` must be zeroed when `p.split_k > 1` or the mode
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
    // SAFETY: the argument list matches CONV_ENTRY's (p, a, b, bias, out); sizes are the caller's
    // contract.
    unsafe { launch::launch(gpu, name, &mut lb, cfg) }
}

/// One pass of the implicit GEMM: which entry point, the GEMM's extent, how its reduction may be
/// split, and the output buffer it writes. Every conv and transposed-conv pass is one of these.
pub(crate) struct GemmPass<'a> {
    pub stem: &'static str,
    pub name: String,
    /// Rows and columns of one GEMM (one tap's GEMM for the per-tap modes).
    pub m: usize,
    pub n: usize,
    /// Independent GEMMs on grid z (kernel taps for the per-tap modes), else 1.
    pub taps: usize,
    /// The reduction length split-K may cut (0: never split).
    pub reduction: usize,
    /// Elements of the output buffer.
    pub out_len: usize,
    /// The output must start at zero even unsplit (the mode accumulates or leaves gaps).
    pub zero: bool,
    pub bias: Option<&'a CudaSlice<f32>>,
}

/// Runs `pass` with operands `a`, `b`: chooses split-K, allocates the output (zeroed when split
/// or asked), launches, and returns the output buffer.
///
/// # Safety
/// `a`, `b` and the bias must have the sizes the mode of `pass.name` reads for `p` (the table in
/// implicit_gemm.cuh), and `pass.out_len` must be what that mode writes.
pub(crate) unsafe fn gemm_pass(
    gpu: &Gpu,
    mut p: ConvParams,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    pass: GemmPass<'_>,
) -> Result<CudaSlice<f32>> {
    let tiles = pass.m.div_ceil(TILE_M) * pass.n.div_ceil(TILE_N) * pass.taps;
    let split = if pass.reduction == 0 { 1 } else { split_k(gpu, tiles, pass.reduction) };
    p.split_k = int(OP, split)?;
    let mut out =
        if split > 1 || pass.zero { zeros(gpu, pass.out_len)? } else { alloc(gpu, pass.out_len)? };
    let grid = gemm_grid(pass.m, pass.n, pass.taps * split)?;
    // SAFETY: forwarded from this function's contract; `out` is zeroed whenever the slices
    // accumulate (split > 1) or the mode asks for it.
    unsafe { run_gemm(gpu, pass.stem, &pass.name, &p, a, b, pass.bias, &mut out, grid)? };
    Ok(out)
}

/// 3-D convolution of geometry `g`, channels-last. Operands are rounded to bf16 for the tensor
/// cores when `prec` is [`Precision::Bf16`] (accumulation is always f32); the 1-channel-input and
/// 2-channel-output cases use dedicated f32 kernels in either precision.
///
/// # Shapes
/// `x (N, D, H, W, C)`, `w (K, kd, kh, kw, C)`, `b (K)` as `g` says; output `(N, OD, OH, OW, K)`.
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &ConvGeom,
    prec: Precision,
) -> Result<Tensor> {
    let p = ConvParams::conv(g)?;
    let gpu = common_gpu(OP, &[&[x, w], b.as_slice()].concat())?;
    let (sx, sw) = (f32_slice(OP, x)?, f32_slice(OP, w)?);
    let sb = b.map(|b| f32_slice(OP, b)).transpose()?;
    let (k, taps, c, m) = (g.k, g.kvol(), g.c, g.out_voxels());
    let shape = p.out_dims();

    // The dedicated kernels: 1-channel input (the CT) and 2-channel output (the class layer).
    let small = if c == 1 && k * taps <= SMALL_W_MAX {
        Some("cin1")
    } else if k == 2 && 2 * taps * c <= SMALL_W_MAX {
        Some("cout2")
    } else {
        None
    };
    if let Some(which) = small {
        let mut out = alloc(&gpu, m * k)?;
        small_kernel(&gpu, which, &p, sx, sw, sb, &mut out, m)?;
        return wrap(&gpu, out, shape);
    }
    let pass = GemmPass {
        stem: STEM,
        name: kernel_name(OP, Pass::Fwd, None, prec.suffix()),
        m,
        n: k,
        taps: 1,
        // Deep layers (C128 at 14x18x8: 64 output tiles for 132 SMs) split the reduction.
        reduction: taps * c,
        out_len: m * k,
        zero: false,
        bias: sb,
    };
    // SAFETY: forward mode: a = x (N, D, H, W, C), b = w (K, taps * C), bias (K) added by slice 0
    // only, out M * K = out voxels * K.
    let out = unsafe { gemm_pass(&gpu, p, sx, sw, pass)? };
    wrap(&gpu, out, shape)
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

/// Gradient of [`conv3d`] w.r.t. `x`.
///
/// # Shapes
/// `g (N, OD, OH, OW, K)`, `w (K, kd, kh, kw, C)`; output `(N, D, H, W, C)`.
pub fn conv3d_backward_input(
    go: &Tensor,
    w: &Tensor,
    g: &ConvGeom,
    prec: Precision,
) -> Result<Tensor> {
    let p = ConvParams::conv(g)?;
    let gpu = common_gpu(OP, &[go, w])?;
    let (sg, sw) = (f32_slice(OP, go)?, f32_slice(OP, w)?);
    let (in_len, c, k, taps) = (g.in_voxels() * g.c, g.c, g.k, g.kvol());
    let per_tap = g.padding == 0 && g.kernel == [g.stride; 3];
    let pass = if per_tap {
        // Non-overlapping windows: one dense GEMM per tap, rows = output voxels; voxels past the
        // last whole window get no tap, hence the zeroed output.
        GemmPass {
            stem: STEM,
            name: kernel_name(OP, Pass::BwdInput, Some("tap"), prec.suffix()),
            m: g.out_voxels(),
            n: c,
            taps,
            reduction: k,
            out_len: in_len,
            zero: true,
            bias: None,
        }
    } else {
        GemmPass {
            stem: STEM,
            name: kernel_name(OP, Pass::BwdInput, None, prec.suffix()),
            m: g.in_voxels(),
            n: c,
            taps: 1,
            reduction: taps * k,
            out_len: in_len,
            zero: false,
            bias: None,
        }
    };
    // SAFETY: backward-input modes: a = g (out voxels, K), b = w (K, taps, C), gx (in voxels, C);
    // the tap mode writes voxel q * stride + t < D (kernel == stride, no padding) into a zeroed
    // buffer, the general mode overwrites every element (or accumulates into zeros when split).
    let gx = unsafe { gemm_pass(&gpu, p, sg, sw, pass)? };
    wrap(&gpu, gx, p.in_dims())
}

/// Gradient of [`conv3d`] w.r.t. `w`. The bias gradient is `reduce::sum_channels(g)`.
///
/// # Shapes
/// `g (N, OD, OH, OW, K)`, `x (N, D, H, W, C)`; output `(K, kd, kh, kw, C)`.
pub fn conv3d_backward_weight(
    go: &Tensor,
    x: &Tensor,
    g: &ConvGeom,
    prec: Precision,
) -> Result<Tensor> {
    let p = ConvParams::conv(g)?;
    let gpu = common_gpu(OP, &[go, x])?;
    let (m, n) = (g.k, g.patch_len());
    let pass = GemmPass {
        stem: STEM,
        name: kernel_name(OP, Pass::BwdWeight, None, prec.suffix()),
        m,
        n,
        taps: 1,
        reduction: g.out_voxels(),
        out_len: m * n,
        zero: false,
        bias: None,
    };
    // SAFETY: backward-weight mode: a = g (out voxels, K), b = x (N, D, H, W, C), gw
    // (K, taps * C), zeroed when split, else fully overwritten.
    let gw = unsafe { gemm_pass(&gpu, p, f32_slice(OP, go)?, f32_slice(OP, x)?, pass)? };
    wrap(&gpu, gw, p.w_dims())
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
        assert_eq!(std::mem::size_of::<ConvParams>(), 15 * 4);
        assert_eq!(std::mem::align_of::<ConvParams>(), 4);
        assert_eq!(std::mem::offset_of!(ConvParams, od), 5 * 4);
        assert_eq!(std::mem::offset_of!(ConvParams, split_k), 14 * 4);
        let src = super::super::sources::CONV3D;
        let fields = c_struct_fields(src, "ConvParams");
        let want = [
            "n", "d", "h", "w", "c", "od", "oh", "ow", "k", "kd", "kh", "kw", "stride", "pad",
            "split_k",
        ];
        assert_eq!(fields, want);
    }

    #[test]
    fn split_k_fills_an_h100_only_when_tiles_are_few() {
        let h100 = 132;
        // conv3d backward-weight, k5 C16 at 112x144x64: a 16 x 2000 output (32 tiles) reduced
        // over 1 M voxels: split 33 gives 1056 blocks, 8 per SM.
        assert_eq!(split_k_for(h100, 32, 112 * 144 * 64), 33);
        // Forward k5 C128 at 14x18x8: 2016 voxels x 128 = 64 tiles -> split 17.
        assert_eq!(split_k_for(h100, 64, 125 * 128), 17);
        // Forward k3 C32 at 112x144x64: 16128 tiles, no split.
        assert_eq!(split_k_for(h100, 16128, 27 * 32), 1);
        // A short reduction is never cut below four 32-wide steps per slice.
        assert_eq!(split_k_for(h100, 1, 256), 2);
    }

    #[test]
    fn params_follow_the_checked_geometry() {
        let g = ConvGeom::new(1, [56, 72, 32], 16, 32, [5, 5, 5], 1, 2).expect("fits");
        let p = ConvParams::conv(&g).expect("fits int");
        assert_eq!((p.od, p.oh, p.ow, p.k, p.pad), (56, 72, 32, 32, 2));
        let g = ConvGeom::new(2, [9, 8, 7], 4, 8, [2, 2, 2], 2, 0).expect("fits");
        let p = ConvParams::conv(&g).expect("fits int");
        assert_eq!((p.od, p.oh, p.ow), (4, 4, 3));
        // The transposed convolution 7x9x4 -> 14x18x8 (C_in 32, K_out 16) mirrors a conv.
        let g = crate::backend::cpu::conv_transpose3d::geometry([1, 7, 9, 4, 32], 16, [2; 3], 2)
            .expect("fits");
        let p = ConvParams::transposed(&g).expect("fits int");
        assert_eq!(p.in_dims(), [1, 7, 9, 4, 32]);
        assert_eq!(p.out_dims(), [1, 14, 18, 8, 16]);
        assert_eq!(p.w_dims(), [16, 2, 2, 2, 32]);
    }
}
