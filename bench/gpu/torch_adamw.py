# Times torch's AdamW(fused=True) on the GPU machine: the anchor ZeroShard's AdamW is compared with.
# Usage: python3 bench/gpu/torch_adamw.py [params]   -> prints "torch_adamw_ms <ms> copy_GBps <GB/s>"
import sys

import torch

n = int(float(sys.argv[1])) if len(sys.argv) > 1 else int(1e9)
p = torch.nn.Parameter(torch.randn(n, device="cuda"))
p.grad = torch.randn(n, device="cuda") * 1e-2
opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.1, fused=True)
for _ in range(3):
    opt.step()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(10):
    start.record()
    opt.step()
    end.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(end))
src = torch.empty(n * 7, dtype=torch.float32, device="cuda")  # 28 B/param, as a copy of the same bytes
dst = torch.empty_like(src)
copies = []
for _ in range(5):
    start.record()
    dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    copies.append(start.elapsed_time(end))
times.sort()
copies.sort()
print(f"torch_adamw_ms {times[len(times) // 2]:.3f} copy_GBps {2 * src.numel() * 4 / (copies[len(copies) // 2] / 1e3) / 1e9:.1f}")
