#!/usr/bin/env python3
"""The PyTorch side of benches/compare_pytorch.sh: the paper's V-Net (width 16), CPU or GPU.

Times one of
  step    forward in train mode, NLL of the softmax probabilities against a fixed random 0/1
          target, backward, Adam step (torch.optim.Adam defaults: lr 1e-3, betas 0.9/0.999)
  forward forward in eval mode under torch.no_grad()
  window  MONAI sliding_window_inference over a random volume, window = --patch, overlap 0.5,
          Gaussian blending, sw_batch_size 1, under torch.no_grad()
after one warm-up, and prints one JSON line: {"what", "patch", "ms" (median), "all_ms", ...}.

The network mirrors src/nn/vnet.rs (mattmacy/vnet.pytorch with PReLU, ContBatchNorm3d = batch
statistics in every mode, 2-3-3-3 down / 3-3-2-1 up convolutions, Dropout3d where the engine has
it). Layout is PyTorch's default NCDHW (oneDNN picks its own blocked layout inside).

    pip install torch monai   # plain PyPI; the CPU runs need nothing else
    python benches/compare_pytorch.py --what step --patch 32,32,32 --threads 2 --reps 5

On a GPU (`--device cuda`, cuDNN with benchmark mode on, three warm-up steps) `--precision` picks
fp32 (TF32 off), tf32 (TF32 matmuls and convolutions) or bf16 (autocast), the anchors
`dnvs-engine bench --device cuda` is compared with:

    python benches/compare_pytorch.py --what step --device cuda --patch 112,144,64 --precision bf16
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ContBatchNorm3d(nn.BatchNorm3d):
    """Batch statistics in every mode, as the original V-Net (and the engine)."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            True, self.momentum, self.eps)


class LUConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.relu1 = nn.PReLU(c)
        self.conv1 = nn.Conv3d(c, c, 5, padding=2)
        self.bn1 = ContBatchNorm3d(c)

    def forward(self, x):
        return self.relu1(self.bn1(self.conv1(x)))


class InputTransition(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w
        self.conv1 = nn.Conv3d(1, w, 5, padding=2)
        self.bn1 = ContBatchNorm3d(w)
        self.relu1 = nn.PReLU(w)

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        return self.relu1(out + x.expand(-1, self.w, -1, -1, -1))


class DownTransition(nn.Module):
    def __init__(self, cin, n, dropout):
        super().__init__()
        cout = 2 * cin
        self.down_conv = nn.Conv3d(cin, cout, 2, stride=2)
        self.bn1 = ContBatchNorm3d(cout)
        self.relu1 = nn.PReLU(cout)
        self.relu2 = nn.PReLU(cout)
        self.do1 = nn.Dropout3d() if dropout else nn.Identity()
        self.ops = nn.Sequential(*[LUConv(cout) for _ in range(n)])

    def forward(self, x):
        down = self.relu1(self.bn1(self.down_conv(x)))
        out = self.ops(self.do1(down))
        return self.relu2(out + down)


class UpTransition(nn.Module):
    def __init__(self, cin, cout, n, dropout):
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(cin, cout // 2, 2, stride=2)
        self.bn1 = ContBatchNorm3d(cout // 2)
        self.relu1 = nn.PReLU(cout // 2)
        self.relu2 = nn.PReLU(cout)
        self.do1 = nn.Dropout3d() if dropout else nn.Identity()
        self.do2 = nn.Dropout3d()
        self.ops = nn.Sequential(*[LUConv(cout) for _ in range(n)])

    def forward(self, x, skip):
        out = self.relu1(self.bn1(self.up_conv(self.do1(x))))
        cat = torch.cat((out, self.do2(skip)), 1)
        return self.relu2(self.ops(cat) + cat)


class OutputTransition(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, 2, 5, padding=2)
        self.bn1 = ContBatchNorm3d(2)
        self.conv2 = nn.Conv3d(2, 2, 1)
        self.relu1 = nn.PReLU(2)

    def forward(self, x):
        return F.softmax(self.conv2(self.relu1(self.bn1(self.conv1(x)))), dim=1)


class VNet(nn.Module):
    def __init__(self, w=16):
        super().__init__()
        self.in_tr = InputTransition(w)
        self.down = nn.ModuleList([
            DownTransition(w, 2, False), DownTransition(2 * w, 3, False),
            DownTransition(4 * w, 3, True), DownTransition(8 * w, 3, True)])
        self.up = nn.ModuleList([
            UpTransition(16 * w, 16 * w, 3, True), UpTransition(16 * w, 8 * w, 3, True),
            UpTransition(8 * w, 4 * w, 2, False), UpTransition(4 * w, 2 * w, 1, False)])
        self.out_tr = OutputTransition(2 * w)

    def forward(self, x):
        skips = [self.in_tr(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        y = skips.pop()
        for u in self.up:
            y = u(y, skips.pop())
        return self.out_tr(y)


def timed(fn, reps, warmup=1, sync=lambda: None):
    for _ in range(warmup):  # oneDNN primitive creation / cuDNN autotuning, first-touch pages
        fn()
    sync()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", choices=["step", "forward", "window"], required=True)
    ap.add_argument("--patch", default="32,32,32", help="D,H,W (window size for --what window)")
    ap.add_argument("--volume", default="120,150,70", help="D,H,W of the sliding-window volume")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32",
                    help="GPU only: fp32 (TF32 off), tf32, or bf16 autocast")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    gpu = dev.type == "cuda"
    sync, warmup = (torch.cuda.synchronize, 3) if gpu else (lambda: None, 1)
    if gpu:
        torch.backends.cudnn.benchmark = True
        tf32 = a.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    autocast = gpu and a.precision == "bf16"
    d, h, w = (int(v) for v in a.patch.split(","))
    net = VNet(a.width).to(dev)
    if a.what == "step":
        x = torch.rand(1, 1, d, h, w, device=dev) - 0.5
        target = (torch.rand(1, d, h, w, device=dev) > 0.5).long()
        opt = torch.optim.Adam(net.parameters())
        net.train()

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                probs = net(x)
            loss = F.nll_loss(torch.log(probs.float().clamp_min(1e-30)), target)
            loss.backward()
            opt.step()
            return loss.item()

        ms = timed(step, a.reps, warmup, sync)
    elif a.what == "forward":
        x = torch.rand(1, 1, d, h, w, device=dev) - 0.5
        net.eval()

        def fwd():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                net(x)

        ms = timed(fwd, a.reps, warmup, sync)
    else:
        from monai.inferers import sliding_window_inference

        vd, vh, vw = (int(v) for v in a.volume.split(","))
        vol = torch.rand(1, 1, vd, vh, vw)
        net.eval()

        def window():
            with torch.no_grad():
                sliding_window_inference(vol, (d, h, w), 1, net, overlap=0.5, mode="gaussian")

        ms = timed(window, a.reps)
    print(json.dumps({"side": "pytorch", "what": a.what, "patch": a.patch, "ms": statistics.median(ms),
                      "all_ms": [round(v, 1) for v in ms], "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "device": a.device,
                      "precision": a.precision if gpu else "fp32",
                      "card": torch.cuda.get_device_name(dev) if gpu else "cpu"}))


if __name__ == "__main__":
    main()
