"""PyTorch's side of the training bench: the same ONNX model, converted to a torch module
by onnx2torch, trained with the same batch, loss (MSE against zeros), optimizer (AdamW)
and threads. Prints one JSON object: the median step and its parts, and the peak RSS.

Usage: train_pytorch.py MODEL.onnx INPUT_NAME OUTPUT_INDEX N,C,H,W THREADS STEPS
"""
import json
import resource
import statistics
import sys
import time

import torch
import onnx
from onnx2torch import convert


def main():
    path, _input, _output, dims, threads, steps = sys.argv[1:7]
    dims = [int(d) for d in dims.split(",")]
    torch.set_num_threads(int(threads))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = convert(onnx.load(path))
    model.train()
    # The engine keeps BatchNormalization's statistics frozen: so does this side.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    count = 1
    for d in dims:
        count *= d
    # The Rust bench's batch: ((i * 7919) % 251) / 251.
    index = torch.arange(count, dtype=torch.int64)
    images = ((index * 7919) % 251).to(torch.float32).div(251.0).reshape(dims)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    times, parts = [], []
    for step in range(int(steps) + 1):
        start = time.perf_counter()
        out = model(images)
        if isinstance(out, (list, tuple)):
            out = out[0]
        forwarded = time.perf_counter()
        loss = torch.nn.functional.mse_loss(out, torch.zeros_like(out))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backwarded = time.perf_counter()
        optimizer.step()
        done = time.perf_counter()
        if step > 0:
            times.append(done - start)
            parts.append((forwarded - start, backwarded - forwarded, done - backwarded))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "torch": torch.__version__,
        "trainable": trainable,
        "step_s": statistics.median(times),
        "forward_s": statistics.median(p[0] for p in parts),
        "backward_s": statistics.median(p[1] for p in parts),
        "optimizer_s": statistics.median(p[2] for p in parts),
        "peak_rss_mib": peak / 1024.0,
        "rss_before_model_mib": before / 1024.0,
    }))


if __name__ == "__main__":
    main()
