// conv3d.cu: 3-D convolution and transposed convolution over channels-last tensors as implicit
// GEMM, forward, backward-input and backward-weight, with bf16 tensor-core and fp32 variants.
//
// Why implicit GEMM: with channels-last activations (N, D, H, W, C) and weights (K, kd, kh, kw, C)
// a convolution is C[m, n] = sum_r A[m, r] B[r, n] where the reduction index r = (tap, channel)
// walks contiguous channels, so the operand tiles are gathered straight from the tensors with no
// im2col buffer. Every pass of both ops is one such GEMM; they differ only in which tensor is
// gathered and in which direction a kernel tap moves (the table under "modes").
//
// Tiles: 64 x 64 outputs x 32 reduction per step, 256 threads. The bf16 kernels round both
// operands to bf16 while staging them into shared memory and multiply them with
// mma.sync.m16n8k16 (fp32 accumulation): 8 warps as 2 (M) x 4 (N), each warp 32 x 16 outputs =
// 2 x 2 mma tiles. The fp32 kernels use the same staging and a 4 x 4 register micro-tile per
// thread. Global loads of the next tile are issued before the current tile is multiplied, so the
// memory latency hides behind the math.
//
// Split-K: the backward-weight GEMM has few outputs (K x taps*C, e.g. 16 x 2000) and a huge
// reduction (every output voxel), so the launcher splits the reduction over grid z and the
// slices meet by atomicAdd; the same happens for backward-input when its output tiles cannot
// fill the SMs. The 2x2x2 stride-2 down-convolution needs no special forward (its gathers never
// leave the volume, so the implicit GEMM reads it as a permuted plain GEMM), but its backward-input
// does: there every input voxel receives exactly one tap, so conv3d_bwd_input_tap_* runs one dense
// GEMM per tap (grid z) instead of a reduction that is 7/8 zeros.
//
// Dedicated kernels: conv3d_fwd_cin1_f32 (the 1-channel CT input: a GEMM with C = 1 would waste
// 31 of 32 lanes of a reduction step) and conv3d_fwd_cout2_f32 (the 2-class output layer: a
// 64-wide N tile would be 97% padding); both keep the weights in shared memory and give each
// thread one output voxel.
#include "implicit_gemm.cuh"

// ---- entry points: conv3d ----------------------------------------------------------------------
// Grid: (ceil(M / 64), ceil(N / 64), split_k), block 256. Outputs are overwritten when
// split_k == 1 and accumulated into a zeroed buffer otherwise.


// a = x (N, D, H, W, C); b = w (K, kd, kh, kw, C); bias (K) or null; out (N, OD, OH, OW, K)
CONV_ENTRY(conv3d_fwd_bf16, CONV_FWD, true)
CONV_ENTRY(conv3d_fwd_f32, CONV_FWD, false)
// a = gout (N, OD, OH, OW, K); b = w; out = gx (N, D, H, W, C)
CONV_ENTRY(conv3d_bwd_input_bf16, CONV_BWD_INPUT, true)
CONV_ENTRY(conv3d_bwd_input_f32, CONV_BWD_INPUT, false)
// kernel == stride, padding 0: one dense GEMM per tap (grid z = taps * split); a = gout, b = w,
// out = gx (N, D, H, W, C) zeroed (voxels past OD * stride get no gradient)
CONV_ENTRY(conv3d_bwd_input_tap_bf16, CONV_BWD_INPUT_TAP, true)
CONV_ENTRY(conv3d_bwd_input_tap_f32, CONV_BWD_INPUT_TAP, false)
// a = gout (N, OD, OH, OW, K); b = x (N, D, H, W, C); out = gw (K, kd, kh, kw, C)
CONV_ENTRY(conv3d_bwd_weight_bf16, CONV_BWD_WEIGHT, true)
CONV_ENTRY(conv3d_bwd_weight_f32, CONV_BWD_WEIGHT, false)

// ---- dedicated forward kernels -------------------------------------------------------------------
#define SMALL_W_MAX 8192  // floats of weight kept in shared memory (32 KiB)
#define CIN1_CHUNK 16

// C == 1: thread per output voxel, 16 output channels at a time in registers; the weight sits in
// shared memory tap-major so the inner loop reads 16 consecutive floats (a broadcast).
// Needs k * taps <= SMALL_W_MAX. Grid-stride over output voxels, block 256.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv3d_fwd_cin1_f32(ConvParams p,
                        const float* __restrict__ x,     // (N, D, H, W, 1)
                        const float* __restrict__ w,     // (K, kd, kh, kw, 1)
                        const float* __restrict__ bias,  // (K) or null
                        float* __restrict__ out) {       // (N, OD, OH, OW, K)
    __shared__ float sw[SMALL_W_MAX];
    int taps = p.kd * p.kh * p.kw;
    for (int i = threadIdx.x; i < taps * p.k; i += blockDim.x) {
        int ko = i / taps, tap = i % taps;
        sw[tap * p.k + ko] = w[i];
    }
    __syncthreads();
    i64 M = (i64)p.n * p.od * p.oh * p.ow;
    GRID_STRIDE(m, M) {
        Voxel v = split_voxel(m, p.od, p.oh, p.ow);
        for (int k0 = 0; k0 < p.k; k0 += CIN1_CHUNK) {
            float acc[CIN1_CHUNK];
#pragma unroll
            for (int j = 0; j < CIN1_CHUNK; ++j) acc[j] = 0.0f;
            for (int tap = 0; tap < taps; ++tap) {
                float xv = gather(x, p.d, p.h, p.w, 1, v.b, v.z, v.y, v.x, tap, 0, p, false);
                const float* wr = sw + tap * p.k + k0;
#pragma unroll
                for (int j = 0; j < CIN1_CHUNK; ++j)
                    if (k0 + j < p.k) acc[j] = fmaf(xv, wr[j], acc[j]);
            }
#pragma unroll
            for (int j = 0; j < CIN1_CHUNK; ++j)
                if (k0 + j < p.k)
                    out[m * p.k + k0 + j] = acc[j] + (bias ? bias[k0 + j] : 0.0f);
        }
    }
}

// K == 2: thread per output voxel, both outputs in registers, weight in shared memory.
// Needs 2 * taps * c <= SMALL_W_MAX. Grid-stride over output voxels, block 256.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv3d_fwd_cout2_f32(ConvParams p,
                         const float* __restrict__ x,     // (N, D, H, W, C)
                         const float* __restrict__ w,     // (2, kd, kh, kw, C)
                         const float* __restrict__ bias,  // (2) or null
                         float* __restrict__ out) {       // (N, OD, OH, OW, 2)
    __shared__ float sw[SMALL_W_MAX];
    int taps = p.kd * p.kh * p.kw;
    int per = taps * p.c;
    for (int i = threadIdx.x; i < 2 * per; i += blockDim.x) sw[i] = w[i];
    __syncthreads();
    i64 M = (i64)p.n * p.od * p.oh * p.ow;
    GRID_STRIDE(m, M) {
        Voxel v = split_voxel(m, p.od, p.oh, p.ow);
        float a0 = 0.0f, a1 = 0.0f;
        for (int tap = 0; tap < taps; ++tap) {
            for (int ch = 0; ch < p.c; ++ch) {
                float xv = gather(x, p.d, p.h, p.w, p.c, v.b, v.z, v.y, v.x, tap, ch, p, false);
                a0 = fmaf(xv, sw[tap * p.c + ch], a0);
                a1 = fmaf(xv, sw[per + tap * p.c + ch], a1);
            }
        }
        out[m * 2] = a0 + (bias ? bias[0] : 0.0f);
        out[m * 2 + 1] = a1 + (bias ? bias[1] : 0.0f);
    }
}
