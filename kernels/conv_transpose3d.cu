// conv_transpose3d.cu: transposed 3-D convolution (the V-Net / U-Net up path), forward,
// backward-input and backward-weight, bf16 tensor-core and fp32. out[oz] = sum over iz, tap with
// oz = iz * stride - pad + tap of x[iz] w[tap]: the same implicit GEMM as conv3d (implicit_gemm.cuh)
// with the tap direction reversed in the forward and the backward-input passes swapping roles
// with conv3d's. The backward weight puts the kernel tap on grid z, since for a fixed tap
// gw[:, tap, :] is a plain (K x C) GEMM over the input voxels. When kernel == stride (the 2x2x2
// up-convolutions of V-Net) the forward does the same per tap (conv_transpose3d_fwd_tap_*): each
// output voxel then has exactly one source, and the generic reversed gather would spend 7 of 8
// reduction steps multiplying zeros.
#include "implicit_gemm.cuh"

// ---- entry points: conv_transpose3d --------------------------------------------------------------
// Same grid; for the backward weight grid z is taps * split_k (tap-major).

// a = x (N, D, H, W, C); b = w (K, kd, kh, kw, C); out (N, OD, OH, OW, K)
CONV_ENTRY(conv_transpose3d_fwd_bf16, TCONV_FWD, true)
CONV_ENTRY(conv_transpose3d_fwd_f32, TCONV_FWD, false)
// kernel == stride (the 2x2x2 up-convolutions): one dense GEMM per tap (grid z = taps * split);
// a = x, b = w, out (N, OD, OH, OW, K) every voxel written once
CONV_ENTRY(conv_transpose3d_fwd_tap_bf16, TCONV_FWD_TAP, true)
CONV_ENTRY(conv_transpose3d_fwd_tap_f32, TCONV_FWD_TAP, false)
// a = gout (N, OD, OH, OW, K); b = w; out = gx (N, D, H, W, C)
CONV_ENTRY(conv_transpose3d_bwd_input_bf16, TCONV_BWD_INPUT, true)
CONV_ENTRY(conv_transpose3d_bwd_input_f32, TCONV_BWD_INPUT, false)
// a = gout (N, OD, OH, OW, K); b = x (N, D, H, W, C); out = gw (K, kd, kh, kw, C)
CONV_ENTRY(conv_transpose3d_bwd_weight_bf16, TCONV_BWD_WEIGHT, true)
CONV_ENTRY(conv_transpose3d_bwd_weight_f32, TCONV_BWD_WEIGHT, false)

