#!/usr/bin/env python3
# Evidence without a GPU: a port of dice_ce_bwd_input_f32 (kernels/loss.cu) vs finite differences of
# the loss, for probabilities and logits, Dice, CE and Dice + CE with class weights.
import numpy as np
rng = np.random.default_rng(2); ok = True
V, C = 30, 3
t = rng.integers(0, C, V); w = np.array([0.5, 1.5, 2.5])
def probs(x, logits):
    if not logits: return x
    e = np.exp(x - x.max(1, keepdims=True)); return e/e.sum(1, keepdims=True)
def loss(x, dw, cw, logits, wt):
    p = probs(x, logits); W = wt[t].sum(); nll = -(wt[t]*np.log(p[np.arange(V), t])).sum()/W
    fg = (t == 1); den = p[:, 1].sum() + fg.sum() + 1e-6
    return dw*(1 - 2*(p[:, 1]*fg).sum()/den) + cw*nll
def kernel_grad(x, dw, cw, logits, wt):
    p = probs(x, logits); sums = [wt[t].sum(), 0, (p[:, 1]*(t == 1)).sum(), p[:, 1].sum(), (t == 1).sum()]
    sum_w, den, inter = sums[0], sums[3]+sums[4]+1e-6, sums[2]
    gx = np.zeros_like(x)
    for v in range(V):
        tv = t[v]; wv = wt[tv]; pv = p[v]
        gp1 = dw*(2*inter/(den*den) - (2/den if tv == 1 else 0)) if dw != 0 else 0
        for ch in range(C):
            if not logits:
                gv = gp1 if ch == 1 else 0
                if ch == tv and cw != 0: gv -= cw*wv/(sum_w*x[v, tv])
            else:
                gv = pv[ch]*((gp1 if ch == 1 else 0) - gp1*pv[1])
                if cw != 0: gv += cw*wv/sum_w*(pv[ch] - (1 if ch == tv else 0))
            gx[v, ch] = gv
    return gx
for logits in (False, True):
    for dw, cw in ((1, 0), (0, 1), (1, 0.7)):
        x = rng.standard_normal((V, C))
        if not logits: x = probs(x, True)
        h = 1e-6; fd = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            a = x.copy(); a[i] += h; b = x.copy(); b[i] -= h
            fd[i] = (loss(a, dw, cw, logits, w) - loss(b, dw, cw, logits, w))/(2*h)
        e = np.abs(kernel_grad(x, dw, cw, logits, w) - fd).max()/np.abs(fd).max()
        print("ok  " if e < 1e-5 else "FAIL", f"logits={logits} dice_w={dw} ce_w={cw}: {e:.1e}"); ok &= e < 1e-5
print("ALL OK" if ok else "SOME FAILED")
