// loss.cu: the training losses as one fused pass over the voxels plus a one-thread finish.
//
// Every loss the engine trains with (cross entropy on logits, NLL on probabilities, soft Dice,
// Dice + CE) is a function of five sums over the voxels, so one kernel reads the network output
// and the target once and produces all of them (softmax included when it gets logits):
//   sums[0] = sum w_t                 (class weight of the target, 1 without weights)
//   sums[1] = sum -w_t log p_t        (log-softmax when the input is logits)
//   sums[2] = sum p_1 [t == 1]        (Dice intersection, foreground class 1)
//   sums[3] = sum p_1
//   sums[4] = sum [t == 1]
// loss = dice_w * (1 - 2 sums[2] / (sums[3] + sums[4] + 1e-6)) + ce_w * sums[1] / sums[0].
// The backward needs the same sums, so it is a single elementwise pass too. Targets are class ids
// stored as f32; an id outside [0, C) contributes nothing (an ignore label).
#include "common.cuh"

#define LOSS_SUMS 5
#define DICE_EPS 1e-6f

// Probabilities of voxel v into p[0..c) (c <= 16) and log p_t; logits == 0 means x holds
// probabilities already.
__device__ __forceinline__ float voxel_probs(const float* __restrict__ xr, int c, int logits,
                                             int t, float* p) {
    if (!logits) {
        for (int ch = 0; ch < c; ++ch) p[ch] = xr[ch];
        return t >= 0 ? logf(xr[t]) : 0.0f;
    }
    float mx = xr[0];
    for (int ch = 1; ch < c; ++ch) mx = fmaxf(mx, xr[ch]);
    float s = 0.0f;
    for (int ch = 0; ch < c; ++ch) s += expf(xr[ch] - mx);
    float inv = 1.0f / s;
    for (int ch = 0; ch < c; ++ch) p[ch] = expf(xr[ch] - mx) * inv;
    return t >= 0 ? xr[t] - mx - logf(s) : 0.0f;
}

__device__ __forceinline__ int target_class(float t, int c) {
    int k = (int)t;
    return (t >= 0.0f && k < c && (float)k == t) ? k : -1;
}

// sums[5] += the five sums above. Grid-stride over voxels, block 256; c <= 16.
extern "C" __global__ void dice_ce_fwd_f32(i64 voxels, int c, int logits,
                                           const float* __restrict__ x,       // (V, C)
                                           const float* __restrict__ target,  // (V)
                                           const float* __restrict__ weight,  // (C) or null
                                           float* __restrict__ sums) {        // (5), zeroed
    __shared__ float scratch[32];
    float acc[LOSS_SUMS] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float p[16];
    GRID_STRIDE(v, voxels) {
        int t = target_class(target[v], c);
        float logp = voxel_probs(x + v * c, c, logits, t, p);
        if (t >= 0) {
            float wt = weight ? weight[t] : 1.0f;
            acc[0] += wt;
            acc[1] -= wt * logp;
        }
        if (c > 1) {
            float fg = t == 1 ? 1.0f : 0.0f;
            acc[2] += p[1] * fg;
            acc[3] += p[1];
            acc[4] += fg;
        }
    }
    for (int k = 0; k < LOSS_SUMS; ++k) {
        float s = block_sum(acc[k], scratch);
        if (threadIdx.x == 0) atomicAdd(sums + k, s);
    }
}

// out[0] = loss, out[1] = Dice loss, out[2] = (weighted) cross entropy. One thread.
extern "C" __global__ void dice_ce_fwd_finish_f32(float dice_w, float ce_w,
                                                  const float* __restrict__ sums,  // (5)
                                                  float* __restrict__ out) {       // (3)
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float ce = sums[1] / sums[0];
    float dice = 1.0f - 2.0f * sums[2] / (sums[3] + sums[4] + DICE_EPS);
    out[0] = (dice_w != 0.0f ? dice_w * dice : 0.0f) + (ce_w != 0.0f ? ce_w * ce : 0.0f);
    out[1] = dice;
    out[2] = ce;
}

// gx = gout * d(loss)/d(x), x being probabilities (logits == 0) or logits (softmax folded in).
// Thread per voxel; c <= 16.
extern "C" __global__ void dice_ce_bwd_input_f32(i64 voxels, int c, int logits, float dice_w,
                                                 float ce_w,
                                                 const float* __restrict__ x,       // (V, C)
                                                 const float* __restrict__ target,  // (V)
                                                 const float* __restrict__ weight,  // (C) or null
                                                 const float* __restrict__ sums,    // (5)
                                                 const float* __restrict__ gout,    // (1)
                                                 float* __restrict__ gx) {          // (V, C)
    float sum_w = sums[0];
    float den = sums[3] + sums[4] + DICE_EPS;
    float inter = sums[2];
    float go = gout[0];
    float p[16];
    GRID_STRIDE(v, voxels) {
        const float* xr = x + v * c;
        int t = target_class(target[v], c);
        voxel_probs(xr, c, logits, t, p);
        float wt = (t >= 0) ? (weight ? weight[t] : 1.0f) : 0.0f;
        // d dice / d p_1 = 2 I / den^2 - 2 [t == 1] / den
        float gp1 = 0.0f;
        if (c > 1 && dice_w != 0.0f)
            gp1 = dice_w * (2.0f * inter / (den * den) - (t == 1 ? 2.0f / den : 0.0f));
        for (int ch = 0; ch < c; ++ch) {
            float gv;
            if (!logits) {
                // d(-w_t log p_t / W) / d p_ch = -w_t / (W p_t) on the target class
                gv = (ch == 1) ? gp1 : 0.0f;
                if (ch == t && ce_w != 0.0f) gv -= ce_w * wt / (sum_w * xr[t]);
            } else {
                // softmax chain for the Dice part: p_ch ([ch == 1] gp1 - gp1 p_1); the CE part is
                // the classic w_t / W (p_ch - [ch == t]).
                gv = p[ch] * ((ch == 1 ? gp1 : 0.0f) - (c > 1 ? gp1 * p[1] : 0.0f));
                if (ce_w != 0.0f && t >= 0)
                    gv += ce_w * wt / sum_w * (p[ch] - (ch == t ? 1.0f : 0.0f));
            }
            gx[v * c + ch] = go * gv;
        }
    }
}

// ---- the original project's hard Dice -------------------------------------------------------
// Its forward counts arg-max voxels: sums[0] = sum [argmax == 1][t == 1], sums[1] = sum
// [argmax == 1], sums[2] = sum [t == 1]; union U = sums[1] + sums[2] + 2e-6, dice = 2 I / U. Its
// gradient is the original's hand-made one on channels 0 and 1 (the others get 0):
//   dd = go (2 [t == 1] / U - 4 I p_1 / U^2),  gx[v, 0] = dd,  gx[v, 1] = -dd.
#define HARD_DICE_SUMS 3
#define HARD_DICE_EPS 2e-6f

// sums[3] += the three counts. Grid-stride over voxels, block 256; ties go to the lower class.
extern "C" __global__ void hard_dice_fwd_f32(i64 voxels, int c,
                                             const float* __restrict__ p,       // (V, C)
                                             const float* __restrict__ target,  // (V)
                                             float* __restrict__ sums) {        // (3), zeroed
    __shared__ float scratch[32];
    float acc[HARD_DICE_SUMS] = {0.0f, 0.0f, 0.0f};
    GRID_STRIDE(v, voxels) {
        const float* row = p + v * c;
        int best = 0;
        for (int ch = 1; ch < c; ++ch)
            if (row[ch] > row[best]) best = ch;
        float r = best == 1 ? 1.0f : 0.0f;
        float g = target_class(target[v], c) == 1 ? 1.0f : 0.0f;
        acc[0] += r * g;
        acc[1] += r;
        acc[2] += g;
    }
    for (int k = 0; k < HARD_DICE_SUMS; ++k) {
        float s = block_sum(acc[k], scratch);
        if (threadIdx.x == 0) atomicAdd(sums + k, s);
    }
}

// out[0] = 1 - dice (the loss), out[1] = dice, out[2] = IoU. One thread.
extern "C" __global__ void hard_dice_fwd_finish_f32(const float* __restrict__ sums,  // (3)
                                                    float* __restrict__ out) {       // (3)
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float u = sums[1] + sums[2] + HARD_DICE_EPS;
    float dice = 2.0f * sums[0] / u;
    out[0] = 1.0f - dice;
    out[1] = dice;
    out[2] = sums[0] / (u - sums[0]);
}

// gx = the hard Dice's hand-made gradient scaled by gout[0]. Thread per voxel.
extern "C" __global__ void hard_dice_bwd_input_f32(i64 voxels, int c,
                                                   const float* __restrict__ p,       // (V, C)
                                                   const float* __restrict__ target,  // (V)
                                                   const float* __restrict__ sums,    // (3)
                                                   const float* __restrict__ gout,    // (1)
                                                   float* __restrict__ gx) {          // (V, C)
    float u = sums[1] + sums[2] + HARD_DICE_EPS;
    float a = 2.0f * gout[0] / u;
    float b = -4.0f * gout[0] * sums[0] / (u * u);
    GRID_STRIDE(v, voxels) {
        float g = target_class(target[v], c) == 1 ? 1.0f : 0.0f;
        float dd = a * g + b * p[v * c + 1];
        for (int ch = 0; ch < c; ++ch) gx[v * c + ch] = ch == 0 ? dd : (ch == 1 ? -dd : 0.0f);
    }
}
