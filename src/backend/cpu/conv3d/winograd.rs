//! Winograd convolution `F(m x m x m, 5 x 5 x 5)` for the V-Net's 5x5x5, stride-1, padding-2
//! convolutions, forward only, x86-64 with AVX2 + FMA.
//!
//! The direct kernel already runs these layers at 93-97 % of the FMA ceiling, so the only way
//! to make them faster is fewer multiply-adds. Winograd's minimal filtering computes `m` outputs
//! of a 5-tap correlation from `n = m + 4` inputs with `n` products; in 3-D an `n^3` input tile
//! gives `m^3` outputs, so a `(tile, C) x (C, K)` product per transform point replaces
//! `125 * C * K` multiply-adds per output voxel by `n^3 / m^3 * C * K` (4.6x fewer for m = 2,
//! 15.6x for m = 4). Per call:
//!
//! 1. the weight is transformed once, `U[kb][p][c][16] = (G w G^T)[p]` for every 16-channel
//!    output block `kb` and transform point `p < n^3`;
//! 2. tiles are processed in blocks of `T` (one rayon task per block and output-channel chunk):
//!    the input transform `V[p][t][c] = (B^T d B)[p]` of the block's tiles goes into per-thread
//!    scratch, `n^3` small GEMMs `M[p] (T x Kc) = V[p] (T x C) * U[p] (C x Kc)` follow, and the
//!    inverse transform `A^T M A` writes the output (plus bias) directly. `V` and `M` are never
//!    materialised for the whole volume (that would be hundreds of MB).
//!
//! The 1-D transforms are not typed in: [`Transforms::derive`] builds them from the interpolation
//! points by Toom-Cook (checked against the direct correlation in f64 by a test). Edge tiles read
//! zeros outside the input and write only the outputs that exist, so any size is exact.
//!
//! Layouts: `x (N, D, H, W, C)`, `w (K, 5, 5, 5, C)`, `out (N, D, H, W, K)` (same spatial size).

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::{direct, ConvGeom};

/// Kernel taps per axis.
const R: usize = 5;
/// Channels per transform vector: one ymm register.
const LANES: usize = 8;
/// Output channels per GEMM tile (two ymm registers per row).
const NK: usize = 16;
/// Rows (tiles) per GEMM microkernel call: 12 accumulators + 2 weight vectors + 1 broadcast.
const NJ: usize = 6;

type Lane = [f32; LANES];

// ---- transforms -------------------------------------------------------------------------------

/// A sparse matrix row: `(column, coefficient)` for the nonzero entries.
type Row = Vec<(usize, f32)>;

/// The 1-D transforms of `F(m, 5)`: `y = A^T [(G g) . (B^T d)]` for an `n`-input tile `d`, the
/// 5 taps `g` and the `m` outputs `y_i = sum_j d[i + j] g[j]`.
#[derive(Debug)]
struct Transforms {
    n: usize,
    /// `B^T`: n rows over the n tile inputs.
    bt: Vec<Row>,
    /// `G`: n rows over the 5 taps.
    g: Vec<Row>,
    /// `A^T`: m rows over the n products.
    at: Vec<Row>,
}

/// Dense f64 transforms, as derived.
struct Dense {
    bt: Vec<Vec<f64>>,
    g: Vec<Vec<f64>>,
    at: Vec<Vec<f64>>,
}

/// The interpolation points of `F(m, 5)` besides infinity (measured: these keep the f32 error
/// lowest among the small-integer and half-integer sets tried, see the module tests).
fn points(m: usize) -> &'static [f64] {
    match m {
        2 => &[0.0, 1.0, -1.0, 2.0, -2.0],
        3 => &[0.0, 1.0, -1.0, 2.0, -2.0, 0.5],
        _ => &[0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5],
    }
}

/// Coefficients (lowest degree first) of `prod (x - r)` over `roots`.
fn poly_from_roots(roots: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut c = vec![1.0];
    for r in roots {
        let mut next = vec![0.0; c.len() + 1];
        for (i, &ci) in c.iter().enumerate() {
            next[i + 1] += ci;
            next[i] -= r * ci;
        }
        c = next;
    }
    c
}

impl Dense {
    /// Toom-Cook with the finite points `a` and infinity. The correlation is the transpose of
    /// the polynomial product `c = h * g` (`sum_k h_k y_k = sum_i d_i c_i`), whose Toom-Cook form
    /// is `c = V^-1 [(E_m h) . (E_5 g)]` with `E_j` evaluating a degree-`j-1` polynomial at the
    /// points (the leading coefficient at infinity). Hence `A^T = E_m^T`, `G = E_5` and
    /// `B^T = V^-T`, whose row `p` holds the coefficients of the Lagrange basis polynomial
    /// `prod_{k != p} (x - a_k) / f_p` (and, for infinity, of `prod_k (x - a_k)`). The factor
    /// `1 / f_p` moves into `G`, so `B^T` holds small integers (or halves): exact in f32.
    fn derive(m: usize, a: &[f64]) -> Dense {
        let n = m + R - 1;
        assert_eq!(a.len(), n - 1, "F({m}, 5) needs {} finite points", n - 1);
        let mut bt = Vec::with_capacity(n);
        let mut g = Vec::with_capacity(n);
        let mut at = vec![vec![0.0; n]; m];
        for (p, &ap) in a.iter().enumerate() {
            let others = || a.iter().enumerate().filter(move |&(k, _)| k != p).map(|(_, &v)| v);
            let f: f64 = others().map(|ak| ap - ak).product();
            let mut row = poly_from_roots(others());
            row.resize(n, 0.0);
            bt.push(row);
            g.push((0..R).map(|j| ap.powi(j as i32) / f).collect());
            for (i, at_i) in at.iter_mut().enumerate() {
                at_i[p] = ap.powi(i as i32);
            }
        }
        bt.push(poly_from_roots(a.iter().copied()));
        g.push((0..R).map(|j| if j == R - 1 { 1.0 } else { 0.0 }).collect());
        at[m - 1][n - 1] = 1.0;
        Dense { bt, g, at }
    }
}

impl Transforms {
    /// The transforms of `F(m, 5)` (m = 2, 3 or 4), derived once per process.
    fn get(m: usize) -> &'static Transforms {
        static CACHE: [OnceLock<Transforms>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        assert!((2..=4).contains(&m), "winograd: F({m}, 5) is not provided");
        CACHE[m - 2].get_or_init(|| {
            let d = Dense::derive(m, points(m));
            let sparse = |rows: &[Vec<f64>]| -> Vec<Row> {
                let keep = |(j, &v): (usize, &f64)| (v != 0.0).then_some((j, v as f32));
                rows.iter().map(|r| r.iter().enumerate().filter_map(keep).collect()).collect()
            };
            Transforms { n: m + R - 1, bt: sparse(&d.bt), g: sparse(&d.g), at: sparse(&d.at) }
        })
    }
}

/// One separable pass of a 3-D transform, contracting the outermost axis and rotating it to
/// the innermost place: `dst[i][r] = sum over (l, c) in rows[r]: c * src[l][i]` with
/// `src (len_in, inner)`, `dst (inner, rows.len())`. Three such passes transform all three axes
/// and leave them in their original order. Eight (then four, then one) `i` share each
/// coefficient: independent FMA chains in registers, where one chain per output would wait on
/// the FMA latency.
#[inline(always)]
fn pass(rows: &[Row], src: &[Lane], inner: usize, dst: &mut [Lane]) {
    assert!(dst.len() >= inner * rows.len() && src.len() >= inner, "winograd::pass: sizes");
    let mut i = 0;
    while i + 8 <= inner {
        pass_block::<8>(rows, src, inner, i, dst);
        i += 8;
    }
    while i + 4 <= inner {
        pass_block::<4>(rows, src, inner, i, dst);
        i += 4;
    }
    while i < inner {
        pass_block::<1>(rows, src, inner, i, dst);
        i += 1;
    }
}

/// [`pass`] for `i .. i + U` (a constant count, so the accumulators stay in registers).
#[inline(always)]
fn pass_block<const U: usize>(
    rows: &[Row],
    src: &[Lane],
    inner: usize,
    i: usize,
    dst: &mut [Lane],
) {
    let q = rows.len();
    for (r, row) in rows.iter().enumerate() {
        let mut acc = [[0.0f32; LANES]; U];
        for &(l, c) in row {
            let s = &src[l * inner + i..][..U];
            for j in 0..U {
                for t in 0..LANES {
                    acc[j][t] = c.mul_add(s[j][t], acc[j][t]);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            dst[(i + j) * q + r] = *a;
        }
    }
}

/// The separable 3-D transform `rows (x) rows (x) rows` of a cube `src (s, s, s)` of lanes into
/// `out (q, q, q)` (`q = rows.len()`), through the two buffers in `t`.
#[inline(always)]
fn transform3(rows: &[Row], s: usize, src: &[Lane], t: &mut [Vec<Lane>; 2], out: &mut [Lane]) {
    let q = rows.len();
    let [t1, t2] = t;
    t1.resize(s * s * q, [0.0; LANES]);
    t2.resize(s * q * q, [0.0; LANES]);
    // (D, H, W) -> (H, W, D') -> (W, D', H') -> (D', H', W').
    pass(rows, &src[..s * s * s], s * s, t1);
    pass(rows, &t1[..s * s * q], s * q, t2);
    pass(rows, &t2[..s * q * q], q * q, &mut out[..q * q * q]);
}

// ---- per-thread scratch -----------------------------------------------------------------------

#[derive(Default)]
struct Scratch {
    /// `V (n^3, T, C)` of the current block.
    v: Vec<f32>,
    /// `M (n^3, T, Kc)` of the current block.
    m: Vec<f32>,
    /// Cube and pass buffers of the transforms.
    cube: Vec<Lane>,
    t: [Vec<Lane>; 2],
    res: Vec<Lane>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

// ---- entry ------------------------------------------------------------------------------------

/// Whether [`fwd`] serves `g`: a 5x5x5 kernel, stride 1, padding 2 (output size = input size),
/// input channels a multiple of 8 and an AVX2 + FMA CPU.
pub(super) fn applies(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    let isa = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let isa = false;
    isa && g.kernel == [R; 3]
        && g.stride == 1
        && g.padding == 2
        && g.c > 0
        && g.c.is_multiple_of(LANES)
        && g.k > 0
}

/// Geometry of one call: tiles, block size and output-channel chunks.
struct Plan {
    m: usize,
    n3: usize,
    /// Tiles per axis `[D, H, W]` (per batch item) and in total.
    tiles: [usize; 3],
    total: usize,
    /// Tiles per block.
    t: usize,
    /// Output channels padded to 16, and per chunk (a multiple of 16).
    k16: usize,
    kc: usize,
}

impl Plan {
    fn new(g: &ConvGeom, m: usize) -> Plan {
        let n = m + R - 1;
        let n3 = n * n * n;
        let tiles = g.output.map(|o| o.div_ceil(m));
        let total = g.n * tiles.iter().product::<usize>();
        let k16 = g.k.div_ceil(NK) * NK;
        // V and M of a block within ~1.5 MB (L2), unless U would not stay in cache anyway:
        // then blocks of at least 48 tiles amortise streaming it.
        let l2 = (3 << 19) / (n3 * (g.c + k16) * 4);
        let u_bytes = n3 * g.c * k16 * 4;
        let mut t = if u_bytes > (2 << 20) { l2.max(48) } else { l2 }.clamp(NJ, 240);
        // Two tasks per thread: first by splitting the tiles (each task transforms its own
        // input), then by splitting the output channels (each chunk transforms the input again).
        let want = 2 * rayon::current_num_threads();
        if total.div_ceil(t) < want {
            t = total.div_ceil(want).max(NJ);
        }
        let mut kc = k16;
        while total.div_ceil(t) * (k16 / kc) < want && (kc / NK).is_multiple_of(2) {
            kc /= 2;
        }
        Plan { m, n3, tiles, total, t, k16, kc }
    }
}

/// A pointer to the output shared by the tasks, each of which writes a disjoint set of
/// (voxel, channel) elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32, usize);
// SAFETY: only used by `fwd`, whose tasks write disjoint elements (their own tiles' voxels and
// their own output-channel chunk) inside the buffer's bounds, and `fwd` joins them before the
// buffer is read.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Forward convolution by `F(m^3, 5^3)` (`m` = 2, 3 or 4). Same contract as [`super::fwd`];
/// requires [`applies`].
pub(super) fn fwd(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom, m: usize) -> Vec<f32> {
    assert!(applies(g), "winograd::fwd: {} is not a 5x5x5 s1 p2 convolution", g.label());
    let tr = Transforms::get(m);
    let plan = Plan::new(g, m);
    let mut out = vec![0.0f32; g.out_voxels() * g.k];
    if out.is_empty() {
        return out;
    }
    let u = weight_transform(w, g, tr, plan.k16);
    let blocks = plan.total.div_ceil(plan.t);
    let chunks = plan.k16 / plan.kc;
    let ptr = OutPtr(out.as_mut_ptr(), out.len());
    (0..blocks * chunks).into_par_iter().for_each(|task| {
        let (blk, ch) = (task / chunks, task % chunks);
        let t0 = blk * plan.t;
        let nt = plan.t.min(plan.total - t0);
        let k0 = ch * plan.kc;
        let kc = plan.kc.min(plan.k16 - k0);
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            s.v.resize(plan.n3 * nt * g.c, 0.0);
            s.m.resize(plan.n3 * nt * kc, 0.0);
            s.cube.resize(512, [0.0; LANES]);
            s.res.resize(512, [0.0; LANES]);
            let job = Job { x, bias, g, tr, plan: &plan, u: &u, tiles: (t0, nt), chunk: (k0, kc) };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` (asserted above) checked AVX2 + FMA.
            unsafe {
                job_avx2(&job, s, ptr)
            }
            #[cfg(not(target_arch = "x86_64"))]
            job.run(s, ptr)
        });
    });
    out
}

/// One task of [`fwd`]: a block of tiles and a chunk of output channels.
struct Job<'a> {
    x: &'a [f32],
    bias: Option<&'a [f32]>,
    g: &'a ConvGeom,
    tr: &'a Transforms,
    plan: &'a Plan,
    u: &'a [f32],
    /// First tile and tile count.
    tiles: (usize, usize),
    /// First output channel and channel count (multiples of 16).
    chunk: (usize, usize),
}

impl Job<'_> {
    /// Input transform, GEMMs, output transform.
    #[inline(always)]
    fn run(&self, s: &mut Scratch, out: OutPtr) {
        let (Job { x, g, tr, plan, .. }, (_, nt), (k0, kc)) = (self, self.tiles, self.chunk);
        input_transform(x, g, tr, plan, self.tiles, s);
        gemm(&s.v[..plan.n3 * nt * g.c], self.u, g.c, plan, nt, k0, kc, &mut s.m);
        output_transform(self.bias, g, tr, plan, self.tiles, self.chunk, s, out);
    }
}

/// [`Job::run`] compiled for AVX2 + FMA: the transforms' 8-lane loops (inlined into it) become
/// ymm FMAs only inside such a function.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn job_avx2(job: &Job, s: &mut Scratch, out: OutPtr) {
    job.run(s, out)
}

// ---- weight transform -------------------------------------------------------------------------

/// `U (K16 / 16, n^3, C, 16)`: `U[kb][p][c][kk] = (G w[kb*16 + kk, .., c] G^T)[p]`, zero for the
/// padding channels `k >= K`. One task per 16-channel block, which owns a contiguous chunk.
fn weight_transform(w: &[f32], g: &ConvGeom, tr: &Transforms, k16: usize) -> direct::Scratch {
    let (c, k) = (g.c, g.k);
    let n3 = tr.n * tr.n * tr.n;
    let taps = R * R * R;
    // Reused between calls: fresh, a 128-channel layer's 34 MB would cost page faults each time.
    let mut u = direct::Scratch::new(k16 * n3 * c);
    u.par_chunks_mut(n3 * c * NK).enumerate().for_each(|(kb, ub)| {
        let ks = kb * NK..(kb * NK + NK).min(k);
        let wb = &w[ks.start * taps * c..ks.end * taps * c];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `fwd` checked AVX2 + FMA through `applies`.
        unsafe {
            weight_block_avx2(wb, c, tr, ub)
        }
        #[cfg(not(target_arch = "x86_64"))]
        weight_block(wb, c, tr, ub)
    });
    u
}

/// [`weight_block`] compiled for AVX2 + FMA (see [`job_avx2`]).
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_block_avx2(wb: &[f32], c: usize, tr: &Transforms, ub: &mut [f32]) {
    weight_block(wb, c, tr, ub)
}

/// Input channels whose transformed weights [`weight_block`] stages before storing them.
const WB_CI: usize = 8;

/// One 16-channel block `ub (n^3, C, 16)` of `U` from the weights `wb (<= 16, 5, 5, 5, C)` of
/// its output channels, zero for the padding channels past them. The lanes run over 8 output
/// channels, and `WB_CI` input channels are staged so that each point's results go out as one
/// contiguous `WB_CI * 16`-float run: stored as computed, they would land `C * 64` bytes apart
/// (34 MB of scattered half-lines for a 128-channel F(4,5) weight).
#[inline(always)]
fn weight_block(wb: &[f32], c: usize, tr: &Transforms, ub: &mut [f32]) {
    let taps = R * R * R;
    let n3 = tr.n * tr.n * tr.n;
    let ks = wb.len() / (taps * c);
    let mut cube = vec![[0.0f32; LANES]; taps];
    let mut t = [Vec::new(), Vec::new()];
    let mut res = vec![[0.0f32; LANES]; n3];
    // stage[(ci - ci0) * n3 + p] = the 16 output channels of point p, input channel ci.
    let mut stage = vec![[0.0f32; NK]; WB_CI * n3];
    for ci0 in (0..c).step_by(WB_CI) {
        let cis = WB_CI.min(c - ci0);
        for kk0 in (0..NK).step_by(LANES) {
            let lanes = LANES.min(ks.saturating_sub(kk0));
            cube.fill([0.0; LANES]);
            for cl in 0..cis {
                for (tap, lane) in cube.iter_mut().enumerate() {
                    for (l, v) in lane[..lanes].iter_mut().enumerate() {
                        *v = wb[((kk0 + l) * taps + tap) * c + ci0 + cl];
                    }
                }
                transform3(&tr.g, R, &cube, &mut t, &mut res);
                for (st, lane) in stage[cl * n3..][..n3].iter_mut().zip(&res) {
                    st[kk0..kk0 + LANES].copy_from_slice(lane);
                }
            }
        }
        for p in 0..n3 {
            for cl in 0..cis {
                ub[(p * c + ci0 + cl) * NK..][..NK].copy_from_slice(&stage[cl * n3 + p]);
            }
        }
    }
}

// ---- input transform --------------------------------------------------------------------------

/// `V[p][tl][c]` for the block's tiles `t0 .. t0 + nt`: each tile's `n^3` input cube (zeros
/// outside the input) through `B^T` on every axis.
#[inline(always)]
fn input_transform(
    x: &[f32],
    g: &ConvGeom,
    tr: &Transforms,
    plan: &Plan,
    (t0, nt): (usize, usize),
    s: &mut Scratch,
) {
    let (n, c, m) = (tr.n, g.c, plan.m);
    let [d, h, w] = g.input;
    let Scratch { v, cube, t, res, .. } = s;
    for tl in 0..nt {
        let (b, [tz, ty, tx]) = super::decode(t0 + tl, plan.tiles);
        // Input coordinate of the cube's first element on each axis (may be negative: padding).
        let (z0, y0, x0) = ((tz * m) as isize - 2, (ty * m) as isize - 2, (tx * m) as isize - 2);
        let inside = |v: isize, size: usize| v >= 0 && (v as usize) < size;
        for c0 in (0..c).step_by(LANES) {
            for a in 0..n {
                let z = z0 + a as isize;
                for bb in 0..n {
                    let y = y0 + bb as isize;
                    let row = &mut cube[(a * n + bb) * n..][..n];
                    if !inside(z, d) || !inside(y, h) {
                        row.fill([0.0; LANES]);
                        continue;
                    }
                    let base = ((b * d + z as usize) * h + y as usize) * w;
                    for (e, lane) in row.iter_mut().enumerate() {
                        let xx = x0 + e as isize;
                        if inside(xx, w) {
                            lane.copy_from_slice(&x[(base + xx as usize) * c + c0..][..LANES]);
                        } else {
                            *lane = [0.0; LANES];
                        }
                    }
                }
            }
            transform3(&tr.bt, n, cube, t, res);
            for (p, lane) in res[..plan.n3].iter().enumerate() {
                v[(p * nt + tl) * c + c0..][..LANES].copy_from_slice(lane);
            }
        }
    }
}

// ---- GEMMs ------------------------------------------------------------------------------------

/// `M[p] (nt x kc) = V[p] (nt x C) * U[p][k0 .. k0 + kc]` for every transform point `p`.
#[allow(clippy::too_many_arguments)]
fn gemm(
    v: &[f32],
    u: &[f32],
    c: usize,
    plan: &Plan,
    nt: usize,
    k0: usize,
    kc: usize,
    m: &mut [f32],
) {
    let n3 = plan.n3;
    assert!(v.len() >= n3 * nt * c && m.len() >= n3 * nt * kc, "winograd::gemm: scratch");
    assert!(u.len() >= plan.k16 * n3 * c && k0 + kc <= plan.k16, "winograd::gemm: weight");
    // Points outer: `V[p]` (nt x C) stays in L1/L2 while every output-channel block uses it.
    for p in 0..n3 {
        for kb in k0 / NK..(k0 + kc) / NK {
            let b = &u[(kb * n3 + p) * c * NK..][..c * NK];
            let col = kb * NK - k0;
            for r0 in (0..nt).step_by(NJ) {
                let a = &v[(p * nt + r0) * c..];
                let dst = &mut m[(p * nt + r0) * kc + col..];
                tile(a, b, c, kc, NJ.min(nt - r0), dst);
            }
        }
    }
}

/// `dst[j * ldc + 0..16] = sum_q a[j * len + q] * b[q * 16 + 0..16]` for `j < nj` (<= 6).
fn tile(a: &[f32], b: &[f32], len: usize, ldc: usize, nj: usize, dst: &mut [f32]) {
    assert!(nj <= NJ && a.len() >= nj * len && b.len() >= len * NK, "winograd::tile: operands");
    assert!(dst.len() >= (nj - 1) * ldc + NK, "winograd::tile: dst");
    #[cfg(target_arch = "x86_64")]
    {
        let (pa, pb, pd) = (a.as_ptr(), b.as_ptr(), dst.as_mut_ptr());
        // SAFETY (six arms): the asserts bound every read and write; `applies` checked AVX2+FMA.
        unsafe {
            match nj {
                6 => tile_avx2::<6>(pa, pb, len, pd, ldc),
                5 => tile_avx2::<5>(pa, pb, len, pd, ldc),
                4 => tile_avx2::<4>(pa, pb, len, pd, ldc),
                3 => tile_avx2::<3>(pa, pb, len, pd, ldc),
                2 => tile_avx2::<2>(pa, pb, len, pd, ldc),
                _ => tile_avx2::<1>(pa, pb, len, pd, ldc),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    panic!("winograd::tile needs x86-64 ({nj} {len} {ldc}); check applies()");
}

/// The `J`x16 AVX2 microkernel: `2 * J` accumulators, per reduction step two weight loads and
/// `J` broadcasts feed `2 * J` FMAs; the result is stored, not accumulated.
///
/// # Safety
/// AVX2 + FMA; `a[0 .. J*len]`, `b[0 .. 16*len]` readable; `d[j*ldc .. j*ldc+16]` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const J: usize>(
    a: *const f32,
    b: *const f32,
    len: usize,
    d: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; J];
    for q in 0..len {
        let b0 = _mm256_loadu_ps(b.add(q * NK));
        let b1 = _mm256_loadu_ps(b.add(q * NK + 8));
        for (j, cj) in acc.iter_mut().enumerate() {
            let x = _mm256_broadcast_ss(&*a.add(j * len + q));
            cj[0] = _mm256_fmadd_ps(x, b0, cj[0]);
            cj[1] = _mm256_fmadd_ps(x, b1, cj[1]);
        }
    }
    for (j, cj) in acc.iter().enumerate() {
        _mm256_storeu_ps(d.add(j * ldc), cj[0]);
        _mm256_storeu_ps(d.add(j * ldc + 8), cj[1]);
    }
}

// ---- output transform -------------------------------------------------------------------------

/// `out[voxel][k0 + kk] = (A^T M A)[voxel] + bias` for the block's tiles and channel chunk,
/// writing only voxels inside the output and channels below K.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_transform(
    bias: Option<&[f32]>,
    g: &ConvGeom,
    tr: &Transforms,
    plan: &Plan,
    (t0, nt): (usize, usize),
    (k0, kc): (usize, usize),
    s: &mut Scratch,
    out: OutPtr,
) {
    let (m, k) = (plan.m, g.k);
    let [d, h, w] = g.output;
    let Scratch { m: mm, cube, t, res, .. } = s;
    for tl in 0..nt {
        let (b, [tz, ty, tx]) = super::decode(t0 + tl, plan.tiles);
        for kk0 in (0..kc).step_by(LANES) {
            let kg = k0 + kk0;
            if kg >= k {
                break;
            }
            let lanes = LANES.min(k - kg);
            for (p, lane) in cube[..plan.n3].iter_mut().enumerate() {
                lane.copy_from_slice(&mm[(p * nt + tl) * kc + kk0..][..LANES]);
            }
            transform3(&tr.at, tr.n, cube, t, res);
            let mut bl = [0.0f32; LANES];
            if let Some(bias) = bias {
                bl[..lanes].copy_from_slice(&bias[kg..kg + lanes]);
            }
            for (i, lane) in res[..m * m * m].iter().enumerate() {
                let (oz, oy, ox) = (tz * m + i / (m * m), ty * m + (i / m) % m, tx * m + i % m);
                if oz >= d || oy >= h || ox >= w {
                    continue;
                }
                let at = (((b * d + oz) * h + oy) * w + ox) * k + kg;
                assert!(at + lanes <= out.1, "winograd: output index");
                // SAFETY: in bounds (asserted); this task alone writes channels k0 .. k0 + kc of
                // its own tiles' voxels (see `OutPtr`).
                let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), lanes) };
                for ((o, v), bv) in dst.iter_mut().zip(lane).zip(&bl) {
                    *o = v + bv;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived transforms compute the 5-tap correlation exactly (in f64) for every `m`.
    #[test]
    fn transforms_compute_the_correlation() {
        for m in 2..=4 {
            let n = m + R - 1;
            let t = Dense::derive(m, points(m));
            let dv: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37 - 1.1).sin()).collect();
            let gv: Vec<f64> = (0..R).map(|i| (i as f64 * 0.71 + 0.3).cos()).collect();
            let prod: Vec<f64> = (0..n)
                .map(|p| {
                    let gg: f64 = (0..R).map(|j| t.g[p][j] * gv[j]).sum();
                    let dd: f64 = (0..n).map(|l| t.bt[p][l] * dv[l]).sum();
                    gg * dd
                })
                .collect();
            for i in 0..m {
                let y: f64 = (0..n).map(|p| t.at[i][p] * prod[p]).sum();
                let want: f64 = (0..R).map(|j| dv[i + j] * gv[j]).sum();
                assert!((y - want).abs() < 1e-12, "F({m},5) y[{i}] = {y}, want {want}");
            }
        }
    }

    /// Deterministic values, uniform in [-1, 1) times `scale` (the crate's one generator).
    fn rand(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = crate::rng::Xoshiro256::seeded(seed);
        (0..len).map(|_| (rng.unit_f64() * 2.0 - 1.0) as f32 * scale).collect()
    }

    /// One convolution's operands: unit-variance input, He-initialised weight (std
    /// `sqrt(2 / fan_in)`, as the V-Net's), small bias.
    fn operands(g: &ConvGeom, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = rand(g.in_voxels() * g.c, seed, 3f32.sqrt());
        let std = (2.0 / (125 * g.c) as f32).sqrt();
        let w = rand(g.k * g.patch_len(), seed + 1, std * 3f32.sqrt());
        (x, w, rand(g.k, seed + 2, 0.1))
    }

    /// `max |a - b|` and `rms(b)`.
    fn max_err_rms(a: &[f32], b: &[f32]) -> (f32, f32) {
        let rms = (b.iter().map(|v| v * v).sum::<f32>() / b.len() as f32).sqrt();
        (a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max), rms)
    }

    /// Winograd agrees with the direct kernel at edge sizes (outputs not a multiple of the
    /// tile, 1- and 2-voxel axes), batch 2, C != K, K not a multiple of 16 and with bias, for
    /// every tile size. The bound, 2e-3 x the output's RMS, is 5x the largest error measured on
    /// realistic data (`winograd_error`: 3.9e-4 for F(4,5) at C256).
    #[test]
    fn winograd_matches_direct() {
        if !applies(&ConvGeom::new(1, [4, 4, 4], 8, 16, [R; 3], 1, 2).unwrap()) {
            eprintln!("skipping: no AVX2+FMA");
            return;
        }
        let cases = [
            (2, [5, 7, 3], 16, 24),
            (1, [9, 4, 6], 8, 40),
            (1, [2, 2, 2], 32, 16),
            (1, [1, 3, 11], 24, 8),
            (2, [6, 5, 8], 48, 33),
        ];
        for (i, &(n, dims, c, k)) in cases.iter().enumerate() {
            let g = ConvGeom::new(n, dims, c, k, [R; 3], 1, 2).unwrap();
            let (x, w, bias) = operands(&g, i as u64);
            let want = super::super::fwd(&x, &w, Some(&bias), &g);
            for m in 2..=4 {
                let got = fwd(&x, &w, Some(&bias), &g, m);
                let (err, rms) = max_err_rms(&got, &want);
                assert!(err <= 2e-3 * rms, "case {i} {} F({m},5): {err} vs rms {rms}", g.label());
            }
        }
    }

    /// Prints Winograd's and the direct kernel's error against an f64 sum at sampled outputs.
    #[test]
    #[ignore = "measurement: cargo test --release --lib winograd_error -- --ignored --nocapture"]
    fn winograd_error() {
        for &(dims, c, k) in &[([8, 8, 8], 16, 16), ([8, 8, 4], 64, 64), ([8, 8, 4], 256, 256)] {
            let g = ConvGeom::new(1, dims, c, k, [R; 3], 1, 2).unwrap();
            let (x, w, bias) = operands(&g, 5);
            let direct = super::super::fwd(&x, &w, Some(&bias), &g);
            // f64 reference at every 7th output voxel.
            let [d, h, wd] = dims;
            let mut idx = Vec::new();
            let mut want = Vec::new();
            for v in (0..g.out_voxels()).step_by(7) {
                let (z, y, xx) = (v / (h * wd), (v / wd) % h, v % wd);
                for (kk, &bk) in bias.iter().enumerate() {
                    let mut acc = bk as f64;
                    for tap in 0..125 {
                        let (a, b, e) = (tap / 25, (tap / 5) % 5, tap % 5);
                        let (zi, yi, xi) = (z + a, y + b, xx + e);
                        if zi < 2 || yi < 2 || xi < 2 || zi >= d + 2 || yi >= h + 2 || xi >= wd + 2
                        {
                            continue;
                        }
                        let xo = (((zi - 2) * h + yi - 2) * wd + xi - 2) * c;
                        let wo = (kk * 125 + tap) * c;
                        for ci in 0..c {
                            acc += x[xo + ci] as f64 * w[wo + ci] as f64;
                        }
                    }
                    idx.push(v * k + kk);
                    want.push(acc as f32);
                }
            }
            let pick = |o: &[f32]| idx.iter().map(|&i| o[i]).collect::<Vec<f32>>();
            let (e, rms) = max_err_rms(&pick(&direct), &want);
            println!("{} direct: max abs {e:.2e}, /rms {:.2e}", g.label(), e / rms);
            for m in 2..=4 {
                let (e, rms) = max_err_rms(&pick(&fwd(&x, &w, Some(&bias), &g, m)), &want);
                println!("{} F({m},5): max abs {e:.2e}, /rms {:.2e}", g.label(), e / rms);
            }
        }
    }
}
