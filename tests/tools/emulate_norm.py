#!/usr/bin/env python3
# Evidence without a GPU: literal ports of the index logic and formulas of kernels/norm.cu (group and
# batch norm, forward and backward) vs numpy references and finite differences.
import numpy as np
rng = np.random.default_rng(1)
ok = True
def chk(name, got, want, tol=1e-4):
    global ok
    e = np.abs(np.asarray(got)-np.asarray(want)).max() / max(np.abs(want).max(), 1e-9)
    print(("ok  " if e < tol else "FAIL"), name, f"{e:.1e}"); ok &= e < tol

# ---- group norm: N=2, V=5, C=6, G=3
N, V, C, G = 2, 5, 6, 3; cg = C//G; eps = 1e-5
x = (3 + 2*rng.standard_normal((N, V, C))).astype(np.float64); xf = x.ravel()
w = rng.standard_normal(C); b = rng.standard_normal(C); g = rng.standard_normal((N, V, C)); gf = g.ravel()
def group_elem(s, grp, j): return (s*V + j//cg)*C + grp*cg + j % cg
S = np.zeros(N*G); M2 = np.zeros(N*G)
for pas in (0, 1):
    for stat in range(N*G):
        s, grp = divmod(stat, G); cnt = V*cg; mean = S[stat]/cnt if pas else 0
        for j in range(cnt):
            v = xf[group_elem(s, grp, j)]
            if pas: M2[stat] += (v-mean)**2
            else: S[stat] += v
scale = np.zeros(N*C); shift = np.zeros(N*C); mean_o = np.zeros(N*G); inv_o = np.zeros(N*G)
for i in range(N*C):
    s, ch = divmod(i, C); grp = ch//cg; stat = s*G+grp; cnt = V*cg
    mean = S[stat]/cnt; inv = 1/np.sqrt(M2[stat]/cnt+eps)
    scale[i] = w[ch]*inv; shift[i] = b[ch]-mean*scale[i]
    if ch % cg == 0: mean_o[stat] = mean; inv_o[stat] = inv
out = np.zeros(N*V*C)
for i in range(N*V*C):
    ch = i % C; a = (i//C//V)*C + ch; out[i] = xf[i]*scale[a]+shift[a]
def gn_ref(x, w, b):
    xr = x.reshape(N, V, G, cg); m = xr.mean(axis=(1, 3), keepdims=True); va = xr.var(axis=(1, 3), keepdims=True)
    return (((xr-m)/np.sqrt(va+eps)).reshape(N, V, C))*w + b
chk("group_norm fwd", out.reshape(N, V, C), gn_ref(x, w, b))
# backward
s1 = np.zeros(N*G); s2 = np.zeros(N*G)
for stat in range(N*G):
    s, grp = divmod(stat, G)
    for j in range(V*cg):
        e = group_elem(s, grp, j); ch = grp*cg + j % cg; gw = gf[e]*w[ch]
        s1[stat] += gw; s2[stat] += gw*(xf[e]-mean_o[stat])*inv_o[stat]
gx = np.zeros(N*V*C); ic = 1/(V*cg)
for i in range(N*V*C):
    ch = i % C; s = i//C//V; stat = s*G + ch//cg; inv = inv_o[stat]
    xh = (xf[i]-mean_o[stat])*inv; gx[i] = inv*(gf[i]*w[ch] - s1[stat]*ic - xh*s2[stat]*ic)
gwt = np.zeros(C); gbt = np.zeros(C)
for r in range(N*V):
    for ch in range(C):
        stat = (r//V)*G + ch//cg
        gwt[ch] += gf[r*C+ch]*(xf[r*C+ch]-mean_o[stat])*inv_o[stat]; gbt[ch] += gf[r*C+ch]
h = 1e-6
def fd(f, a):
    out = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        ap = a.copy(); ap[i] += h; am = a.copy(); am[i] -= h
        out[i] = ((f(ap)*g).sum() - (f(am)*g).sum())/(2*h)
    return out
chk("group_norm bwd_input", gx.reshape(N, V, C), fd(lambda a: gn_ref(a, w, b), x), 1e-5)
chk("group_norm bwd_weight", gwt, fd(lambda a: gn_ref(x, a, b), w), 1e-5)
chk("group_norm bwd_bias", gbt, fd(lambda a: gn_ref(x, w, a), b), 1e-5)

# ---- batch norm (batch stats) rows=7, C=3
R, C = 7, 3
x = 5 + rng.standard_normal((R, C)); w = rng.standard_normal(C); b = rng.standard_normal(C); g = rng.standard_normal((R, C))
def bn_ref(x, w, b): return (x-x.mean(0))/np.sqrt(x.var(0)+eps)*w+b
sm = x.sum(0); m2 = ((x - sm/R)**2).sum(0); mean = sm/R; inv = 1/np.sqrt(m2/R+eps)
sc = w*inv; sh = b-mean*sc
chk("batch_norm fwd", x*sc+sh, bn_ref(x, w, b))
gsum = g.sum(0); gxh = (g*(x-mean)*inv).sum(0)
gx = (w*inv)*(g - gsum/R - (x-mean)*inv*gxh/R)
chk("batch_norm bwd_input", gx, fd(lambda a: bn_ref(a, w, b), x), 1e-5)
chk("batch_norm bwd_weight", gxh, fd(lambda a: bn_ref(x, a, b), w), 1e-5)
print("ALL OK" if ok else "SOME FAILED")
