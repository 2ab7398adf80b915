#!/usr/bin/env python3
"""PyTorch peer for `runner bench`: trains the same Darknet cfg (conv/BN/leaky, route with groups,
maxpool, upsample) with SGD at the same size and batch, and prints images/s and peak GPU bytes
as one JSON line, so the GPU backend's throughput can be quoted as a ratio measured in one run.

The head loss here is a plain sum of squares on the [yolo] inputs: the YOLO loss is a negligible
share of a step's work, and the peer's purpose is the convolution/BN/backward/update cost.

usage: torch_peer.py CFG --width 416 --height 416 --batch 64 --iters 50 [--classes 80] [--device cuda]
                     [--precision fp32|tf32|bf16|fp16]
       torch_peer.py CFG --width 224 --height 224 --batch 16 --iters 10 --device cpu --threads 2
--precision: fp32 (default; TF32 off), tf32 (TF32 matmuls and convolutions), bf16 (autocast to
bfloat16), fp16 (autocast to float16 with a GradScaler: the peer of `runner bench --precision mixed`).
(on the CPU, pin the process to as many cores as --threads, e.g. `taskset -c 0,1`, and run
`runner bench --backend cpu` the same way: ci/bench/cpu.sh does both)
"""
import argparse, json, resource, time
import torch
import torch.nn as nn


def parse_cfg(path):
    sections, cur = [], None
    for raw in open(path):
        line = raw.split('#')[0].split(';')[0].strip()
        if not line:
            continue
        if line.startswith('['):
            cur = {'type': line.strip('[]').strip()}
            sections.append(cur)
        elif '=' in line:
            k, v = line.split('=', 1)
            cur[k.strip()] = v.strip()
    return sections


class Net(nn.Module):
    def __init__(self, sections, channels, classes):
        super().__init__()
        self.defs = [s for s in sections if s['type'] not in ('net', 'network')]
        self.mods = nn.ModuleList()
        out_c = []
        c = channels
        for i, s in enumerate(self.defs):
            t = s['type']
            m = nn.Identity()
            if t == 'convolutional':
                f = int(s['filters']); k = int(s.get('size', 1)); st = int(s.get('stride', 1))
                pad = k // 2 if int(s.get('pad', 0)) else int(s.get('padding', 0))
                nxt = self.defs[i + 1]['type'] if i + 1 < len(self.defs) else ''
                if nxt == 'yolo':
                    mask = s_mask = len(self.defs[i + 1].get('mask', '0,1,2').split(','))
                    f = (classes + 5) * mask
                bn = int(s.get('batch_normalize', 0))
                layers = [nn.Conv2d(c, f, k, st, pad, bias=not bn)]
                if bn:
                    layers.append(nn.BatchNorm2d(f, eps=1e-5, momentum=0.01))
                if s.get('activation', 'logistic') == 'leaky':
                    layers.append(nn.LeakyReLU(0.1))
                m = nn.Sequential(*layers)
                c = f
            elif t == 'route':
                idx = [int(x) for x in s['layers'].split(',')]
                idx = [j if j >= 0 else i + j for j in idx]
                g = int(s.get('groups', 1))
                c = sum(out_c[j] // g for j in idx)
                s['_idx'] = idx
            elif t == 'maxpool':
                size = int(s.get('size', 1)); st = int(s.get('stride', 1))
                m = nn.Sequential(nn.ZeroPad2d((0, size - 1, 0, size - 1)) if st == 1 else nn.Identity(),
                                  nn.MaxPool2d(size, st))
            elif t == 'upsample':
                m = nn.Upsample(scale_factor=int(s.get('stride', 2)), mode='nearest')
            self.mods.append(m)
            out_c.append(c)

    def forward(self, x):
        outs, heads = [], []
        for s, m in zip(self.defs, self.mods):
            t = s['type']
            if t == 'route':
                g = int(s.get('groups', 1)); gid = int(s.get('group_id', 0))
                parts = []
                for j in s['_idx']:
                    y = outs[j]
                    n = y.shape[1] // g
                    parts.append(y[:, gid * n:(gid + 1) * n])
                x = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
            elif t == 'yolo':
                heads.append(x)
            else:
                x = m(x)
            outs.append(x)
        return heads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('cfg')
    ap.add_argument('--width', type=int, default=416)
    ap.add_argument('--height', type=int, default=416)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--iters', type=int, default=50)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--classes', type=int, default=80)
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--threads', type=int, default=0, help='CPU threads for intra-op work (0: torch default)')
    ap.add_argument('--precision', default='fp32', choices=['fp32', 'tf32', 'bf16', 'fp16'])
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = True
    tf32 = a.precision == 'tf32'
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    autocast = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(a.precision)
    scaler = torch.amp.GradScaler(a.device) if a.precision == 'fp16' else None
    dev = torch.device(a.device)
    net = Net(parse_cfg(a.cfg), 3, a.classes).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(a.batch, 3, a.height, a.width, device=dev)

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast(device_type=dev.type, dtype=autocast, enabled=autocast is not None):
            loss = sum((h.float() * h.float()).sum() for h in net(x)) * 1e-6
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    for _ in range(a.warmup):
        step()
    if dev.type == 'cuda':
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    if dev.type == 'cuda':
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if dev.type == 'cuda' else 0
    print(json.dumps({'peer': 'pytorch-' + a.precision, 'torch': torch.__version__, 'device': str(dev),
                      'threads': torch.get_num_threads(),
                      'images_per_s': a.batch * a.iters / dt, 'iters': a.iters, 'batch': a.batch,
                      'width': a.width, 'height': a.height, 'peak_gpu_bytes': peak,
                      'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == '__main__':
    main()
