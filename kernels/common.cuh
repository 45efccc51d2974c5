// common.cuh: types and helpers shared by every kernel file. Inlined by build.rs, so it includes
// no headers at all: bf16 is handled as raw 16-bit patterns and tensor-core math goes through
// inline PTX, which keeps NVRTC independent of the toolkit's include directory.
//
// Conventions (docs/ARCHITECTURE.md): activations are channels-last (N, D, H, W, C) f32; conv
// weights are (K, kd, kh, kw, C). Forward kernels overwrite their output; backward kernels that
// reduce (split-K, scatter) accumulate with atomics into buffers the launcher zeroed.
#pragma once

typedef unsigned short bf16_t;  // raw bfloat16 bits
typedef long long i64;

// ---- bf16 conversion (round to nearest even, NaN kept quiet) -----------------------------------

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// ---- grid-stride loops -----------------------------------------------------------------------

#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); \
         i += (i64)gridDim.x * blockDim.x)

// ---- reductions --------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// `scratch` holds 32 floats of shared memory; the call contains __syncthreads, so every thread
// of the block must reach it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// ---- per-channel reductions over channels-last rows ---------------------------------------------
// The pattern shared by bias gradients, batch-norm statistics and PReLU slope gradients: a tensor
// viewed as (rows, C); block (32, 8): threadIdx.x walks channels, threadIdx.y and blockIdx.x walk
// rows; the 8 row-partials meet in shared memory and one atomicAdd per channel per block leaves.
#define CHANNEL_REDUCE_BLOCK_X 32
#define CHANNEL_REDUCE_BLOCK_Y 8

__device__ __forceinline__ void channel_reduce_commit(float acc, int c, int C, float* out) {
    __shared__ float part[CHANNEL_REDUCE_BLOCK_Y][CHANNEL_REDUCE_BLOCK_X];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0) {
        float s = 0.0f;
        for (int j = 0; j < CHANNEL_REDUCE_BLOCK_Y; ++j) s += part[j][threadIdx.x];
        if (c < C) atomicAdd(out + c, s);
    }
    __syncthreads();
}

// ---- convolution parameters (mirrored by ConvParams in src/backend/cuda/conv3d.rs) -------------
// One struct for conv3d and conv_transpose3d, every pass. (d, h, w, c) is the input of the op's
// forward, (od, oh, ow, k) its output; the weight is (k, kd, kh, kw, c) for both ops.
struct ConvParams {
    int n, d, h, w, c;     // input (N, D, H, W, C)
    int od, oh, ow, k;     // output (N, OD, OH, OW, K)
    int kd, kh, kw;        // kernel extent
    int stride, pad;
    int split_k;           // reduction slices (grid z); > 1 means the output is accumulated
};
