// optim.cu: Adam for every parameter tensor of a model in one launch (multi-tensor apply).
//
// A V-Net has ~100 parameter tensors, many tiny (biases, norm weights): one launch per tensor
// would be ~100 launches of mostly idle blocks. Instead the launcher uploads a table of
// (param, grad, m, v, new param, length) and grid y walks the table while grid x strides over
// each tensor's elements. PyTorch's Adam (L2 weight decay added to the gradient):
//   g' = g + wd p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2
//   p' = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Bias corrections are computed on the host in f64. m and v are updated in place; the new
// parameters go to fresh buffers because tensors are immutable.
#include "common.cuh"

// Mirrored by AdamParams in src/backend/cuda/optim.rs.
struct AdamParams {
    float beta1, beta2, eps, weight_decay;
    float step_size;     // lr / (1 - beta1^t)
    float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
};

// Mirrored by AdamTensor in src/backend/cuda/optim.rs.
struct AdamTensor {
    const float* p;  // (n) current parameter
    const float* g;  // (n) gradient
    float* m;        // (n) first moment, updated in place
    float* v;        // (n) second moment, updated in place
    float* p_out;    // (n) new parameter
    i64 n;
};

// Grid (x blocks, tensors), block 256.
extern "C" __global__ void adam_fwd_f32(AdamParams hp, const AdamTensor* __restrict__ table,
                                        int tensors) {
    if ((int)blockIdx.y >= tensors) return;
    AdamTensor t = table[blockIdx.y];
    GRID_STRIDE(i, t.n) {
        float p = t.p[i];
        float g = t.g[i] + hp.weight_decay * p;
        float m = hp.beta1 * t.m[i] + (1.0f - hp.beta1) * g;
        float v = hp.beta2 * t.v[i] + (1.0f - hp.beta2) * g * g;
        t.m[i] = m;
        t.v[i] = v;
        t.p_out[i] = p - hp.step_size * m / (sqrtf(v) * hp.inv_sqrt_bc2 + hp.eps);
    }
}
