# Times torch's fused CPU AdamW on the GPU machine's host cores: the anchor for the offloaded CPU step
# (issue: >= 1.5x faster). Usage: python3 bench/gpu/torch_cpu_adamw.py [params] [threads]
#   -> prints "torch_cpu_adamw_ms <ms> threads <n>"
import sys
import time

import torch

n = int(float(sys.argv[1])) if len(sys.argv) > 1 else int(1e8)
if len(sys.argv) > 2:
    torch.set_num_threads(int(sys.argv[2]))
p = torch.nn.Parameter(torch.randn(n))
p.grad = torch.randn(n) * 1e-2
try:
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.1, fused=True)
    kind = "fused"
except (RuntimeError, ValueError):  # an older torch without the fused CPU kernel
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.1, foreach=True)
    kind = "foreach"
for _ in range(2):
    opt.step()
times = []
for _ in range(7):
    t0 = time.perf_counter()
    opt.step()
    times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print(f"torch_cpu_adamw_ms {times[len(times) // 2]:.3f} threads {torch.get_num_threads()} kind {kind}")
