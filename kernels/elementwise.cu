// elementwise.cu: pointwise ops and their gradients, plus channel concatenation, on f32 tensors.
//
// All of these are memory-bound: one read (two for binary ops) and one write per element, so each
// kernel is a grid-stride loop with no shared memory; the only reductions (PReLU slope and gate
// gradients) use the shared channel-reduction pattern of common.cuh. Per-channel indexing uses
// the channels-last layout: element i has channel i % C and voxel i / C.
#include "common.cuh"

// ---- fill and binary ops -----------------------------------------------------------------------

// out[i] = value. Used to poison buffers in tests and for `full`.
extern "C" __global__ void fill_fwd_f32(i64 n, float value, float* __restrict__ out /* (n) */) {
    GRID_STRIDE(i, n) out[i] = value;
}

extern "C" __global__ void add_fwd_f32(i64 n, const float* __restrict__ a,  // (n)
                                       const float* __restrict__ b,         // (n)
                                       float* __restrict__ out) {           // (n)
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

// Also the gradients of mul: grad_a = g * b, grad_b = g * a.
extern "C" __global__ void mul_fwd_f32(i64 n, const float* __restrict__ a,  // (n)
                                       const float* __restrict__ b,         // (n)
                                       float* __restrict__ out) {           // (n)
    GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

// Also the gradient of scale (same factor).
extern "C" __global__ void scale_fwd_f32(i64 n, float s, const float* __restrict__ x,  // (n)
                                         float* __restrict__ out) {                     // (n)
    GRID_STRIDE(i, n) out[i] = x[i] * s;
}

// ---- activations -------------------------------------------------------------------------------

extern "C" __global__ void relu_fwd_f32(i64 n, const float* __restrict__ x,  // (n)
                                        float* __restrict__ out) {           // (n)
    GRID_STRIDE(i, n) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// gx = g where x > 0 (PyTorch's choice at the kink: 0).
extern "C" __global__ void relu_bwd_input_f32(i64 n, const float* __restrict__ x,  // (n)
                                              const float* __restrict__ g,         // (n)
                                              float* __restrict__ gx) {            // (n)
    GRID_STRIDE(i, n) gx[i] = x[i] > 0.0f ? g[i] : 0.0f;
}

// out = x > 0 ? x : a * x, a = w[i % C] (nw == C) or w[0] (nw == 1).
extern "C" __global__ void prelu_fwd_f32(i64 n, int c, int nw,
                                         const float* __restrict__ x,  // (N, D, H, W, C)
                                         const float* __restrict__ w,  // (nw)
                                         float* __restrict__ out) {    // like x
    GRID_STRIDE(i, n) {
        float a = w[nw == 1 ? 0 : (int)(i % c)];
        float v = x[i];
        out[i] = v > 0.0f ? v : a * v;
    }
}

extern "C" __global__ void prelu_bwd_input_f32(i64 n, int c, int nw,
                                               const float* __restrict__ x,  // (N, D, H, W, C)
                                               const float* __restrict__ w,  // (nw)
                                               const float* __restrict__ g,  // like x
                                               float* __restrict__ gx) {     // like x
    GRID_STRIDE(i, n) {
        float a = w[nw == 1 ? 0 : (int)(i % c)];
        gx[i] = x[i] > 0.0f ? g[i] : a * g[i];
    }
}

// gw[ch] += sum over voxels of g * x where x <= 0. The tensor is viewed as (rows, nw): with one
// shared slope every element is its own row. Block (32, 8), grid (row blocks, ceil(nw / 32)).
extern "C" __global__ void prelu_bwd_weight_f32(i64 rows, int nw,
                                                const float* __restrict__ x,  // (rows, nw)
                                                const float* __restrict__ g,  // (rows, nw)
                                                float* __restrict__ gw) {     // (nw), zeroed
    int ch = blockIdx.y * CHANNEL_REDUCE_BLOCK_X + threadIdx.x;
    float acc = 0.0f;
    if (ch < nw) {
        for (i64 r = (i64)blockIdx.x * CHANNEL_REDUCE_BLOCK_Y + threadIdx.y; r < rows;
             r += (i64)gridDim.x * CHANNEL_REDUCE_BLOCK_Y) {
            float v = x[r * nw + ch];
            if (!(v > 0.0f)) acc += g[r * nw + ch] * v;
        }
    }
    channel_reduce_commit(acc, ch, nw, gw);
}

// out = x > 0 ? x : alpha (exp(x) - 1)
extern "C" __global__ void elu_fwd_f32(i64 n, float alpha, const float* __restrict__ x,  // (n)
                                       float* __restrict__ out) {                       // (n)
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = v > 0.0f ? v : alpha * expm1f(v);
    }
}

extern "C" __global__ void elu_bwd_input_f32(i64 n, float alpha,
                                             const float* __restrict__ x,  // (n)
                                             const float* __restrict__ g,  // (n)
                                             float* __restrict__ gx) {     // (n)
    GRID_STRIDE(i, n) {
        float v = x[i];
        gx[i] = v > 0.0f ? g[i] : g[i] * alpha * expf(v);
    }
}

extern "C" __global__ void sigmoid_fwd_f32(i64 n, const float* __restrict__ x,  // (n)
                                           float* __restrict__ out) {           // (n)
    GRID_STRIDE(i, n) out[i] = 1.0f / (1.0f + expf(-x[i]));
}

// From the forward output y: gx = g y (1 - y).
extern "C" __global__ void sigmoid_bwd_input_f32(i64 n, const float* __restrict__ y,  // (n)
                                                 const float* __restrict__ g,         // (n)
                                                 float* __restrict__ gx) {            // (n)
    GRID_STRIDE(i, n) gx[i] = g[i] * y[i] * (1.0f - y[i]);
}

// ---- gate multiply (attention gates) -------------------------------------------------------------

// out[v, ch] = x[v, ch] * gate[v]. Also the input gradient: gx = gate_mul(g, gate).
extern "C" __global__ void gate_mul_fwd_f32(i64 n, int c,
                                            const float* __restrict__ x,     // (N, D, H, W, C)
                                            const float* __restrict__ gate,  // (N, D, H, W, 1)
                                            float* __restrict__ out) {       // like x
    GRID_STRIDE(i, n) out[i] = x[i] * gate[i / c];
}

// ggate[v] = sum_ch g[v, ch] x[v, ch]; thread per voxel (C is small next to the voxel count).
extern "C" __global__ void gate_mul_bwd_weight_f32(i64 voxels, int c,
                                                   const float* __restrict__ x,  // (V, C)
                                                   const float* __restrict__ g,  // (V, C)
                                                   float* __restrict__ ggate) {  // (V)
    GRID_STRIDE(v, voxels) {
        float s = 0.0f;
        for (int ch = 0; ch < c; ++ch) s += g[v * c + ch] * x[v * c + ch];
        ggate[v] = s;
    }
}

// ---- channel dropout ------------------------------------------------------------------------------

// SplitMix64's output function of x + golden (crate::rng::mix64), bit for bit.
__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    unsigned long long z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// out[i] = x[i] * m(sample, channel), the multiplier drawn here exactly as the CPU's
// backend::cpu::dropout::channel_mask draws it: u = top 24 bits of mix64(base ^ (s * C + ch)) as
// a uniform in [0, 1), 0 when u < p, else keep = 1 / (1 - p). Drawing it on the device keeps a
// training step free of host copies; the same launch on the output gradient is the backward.
extern "C" __global__ void channel_dropout_fwd_f32(i64 n, i64 per, int c, float p, float keep,
                                                   unsigned long long base,
                                                   const float* __restrict__ x,  // (N, ..., C)
                                                   float* __restrict__ out) {    // like x
    GRID_STRIDE(i, n) {
        unsigned long long j = (unsigned long long)((i / per) * c + i % c);
        float u = (float)(mix64(base ^ j) >> 40) / 16777216.0f;
        out[i] = x[i] * (u < p ? 0.0f : keep);
    }
}

// ---- concatenation along channels ----------------------------------------------------------------

// out[v, off + ch] = x[v, ch] for ch < cx. One launch per concatenated input.
extern "C" __global__ void concat_fwd_f32(i64 voxels, int cx, int cout, int off,
                                          const float* __restrict__ x,  // (V, cx)
                                          float* __restrict__ out) {    // (V, cout)
    GRID_STRIDE(i, voxels * cx) {
        i64 v = i / cx;
        int ch = (int)(i % cx);
        out[v * cout + off + ch] = x[i];
    }
}

// gx[v, ch] = g[v, off + ch]: the slice of the output gradient that belongs to one input.
extern "C" __global__ void concat_bwd_input_f32(i64 voxels, int cx, int cout, int off,
                                                const float* __restrict__ g,  // (V, cout)
                                                float* __restrict__ gx) {     // (V, cx)
    GRID_STRIDE(i, voxels * cx) {
        i64 v = i / cx;
        int ch = (int)(i % cx);
        gx[i] = g[v * cout + off + ch];
    }
}
