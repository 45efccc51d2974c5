// reduce.cu: sums that other ops and the launchers need: of a whole tensor (loss means, tests) and
// per channel of a channels-last tensor (bias gradients).
//
// Both accumulate in f32 per thread, then per block, then one atomicAdd per block into an output
// the launcher zeroed: with a few hundred blocks the order-dependent rounding stays far below the
// fp32 test tolerance.
#include "common.cuh"

// out[0] += sum of x. Grid-stride, block 256.
extern "C" __global__ void sum_all_fwd_f32(i64 n, const float* __restrict__ x,  // (n)
                                           float* __restrict__ out) {           // (1), zeroed
    __shared__ float scratch[32];
    float acc = 0.0f;
    GRID_STRIDE(i, n) acc += x[i];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) atomicAdd(out, acc);
}

// out[ch] += sum over rows of x[row, ch]. Block (32, 8), grid (row blocks, ceil(C / 32)).
extern "C" __global__ void sum_channels_fwd_f32(i64 rows, int c,
                                                const float* __restrict__ x,  // (rows, C)
                                                float* __restrict__ out) {    // (C), zeroed
    int ch = blockIdx.y * CHANNEL_REDUCE_BLOCK_X + threadIdx.x;
    float acc = 0.0f;
    if (ch < c) {
        for (i64 r = (i64)blockIdx.x * CHANNEL_REDUCE_BLOCK_Y + threadIdx.y; r < rows;
             r += (i64)gridDim.x * CHANNEL_REDUCE_BLOCK_Y)
            acc += x[r * c + ch];
    }
    channel_reduce_commit(acc, ch, c, out);
}
