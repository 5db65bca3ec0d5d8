"""The same decoder-layer math as bench/cuda_bench.cc, in PyTorch eager on the same GPU: bf16
weights and activations, RMSNorm, Q/K/V/O projections, rotary, attention over a KV cache
(scaled_dot_product_attention), SiLU-gated MLP. Decode = 1 token at KV length 128, prefill = 128
and 512 tokens; 4 layers timed together with CUDA events and divided by 4, median of the runs.

    python3 torch_layer_bench.py [--quick] [--csv FILE]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

SHAPES = [
    ("TinyLlama-1.1B", 2048, 5632, 32, 4, 64),
    ("Llama-2-7B", 4096, 11008, 32, 32, 128),
    ("Llama-2-70B", 8192, 28672, 64, 8, 128),
]


def rms_norm(x, weight, eps=1e-5):
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(variance + eps)).to(x.dtype) * weight


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class Layer:
    def __init__(self, hidden, inter, heads, kv_heads, head_dim, device):
        def w(rows, cols):
            return (torch.randn(rows, cols, device=device, dtype=torch.bfloat16) * 0.02)
        self.shape = (heads, kv_heads, head_dim)
        self.q, self.k, self.v = w(heads * head_dim, hidden), w(kv_heads * head_dim, hidden), w(kv_heads * head_dim, hidden)
        self.o, self.gate, self.up, self.down = w(hidden, heads * head_dim), w(inter, hidden), w(inter, hidden), w(hidden, inter)
        self.norm1 = torch.ones(hidden, device=device, dtype=torch.bfloat16)
        self.norm2 = torch.ones(hidden, device=device, dtype=torch.bfloat16)

    def __call__(self, x, start, cache_k, cache_v, cos, sin):
        heads, kv_heads, head_dim = self.shape
        n = x.shape[0]
        h = rms_norm(x, self.norm1)
        q = (h @ self.q.T).view(n, heads, head_dim).transpose(0, 1)
        k = (h @ self.k.T).view(n, kv_heads, head_dim).transpose(0, 1)
        v = (h @ self.v.T).view(n, kv_heads, head_dim).transpose(0, 1)
        q, k = rotate(q, cos[start:start + n], sin[start:start + n]), rotate(k, cos[start:start + n], sin[start:start + n])
        cache_k[:, start:start + n] = k
        cache_v[:, start:start + n] = v
        keys = cache_k[:, :start + n].repeat_interleave(heads // kv_heads, dim=0)
        values = cache_v[:, :start + n].repeat_interleave(heads // kv_heads, dim=0)
        mask = torch.ones(n, start + n, device=x.device, dtype=torch.bool).tril(start)
        attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + attn.transpose(0, 1).reshape(n, heads * head_dim) @ self.o.T
        h = rms_norm(x, self.norm2)
        return x + (F.silu(h @ self.gate.T) * (h @ self.up.T)) @ self.down.T


def time_layers(layers, caches, tokens, start, cos, sin, runs):
    """Median seconds per layer of `runs` timed passes after two warm-ups."""
    hidden = layers[0].norm1.shape[0]
    x0 = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    times = []
    for r in range(runs + 2):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        x = x0
        with torch.no_grad():
            for layer, (ck, cv) in zip(layers, caches):
                x = layer(x, start, ck, cv, cos, sin)
        end.record()
        torch.cuda.synchronize()
        if r >= 2:
            times.append(begin.elapsed_time(end) / 1000)
    return statistics.median(times) / len(layers)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--csv")
    args = parser.parse_args()
    runs = 5 if args.quick else 20
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    print(f"{'layer (bf16)':16} {'decode ms':>12} {'prefill-128 ms':>16} {'prefill-512 ms':>16}")
    rows = []
    for name, hidden, inter, heads, kv_heads, head_dim in SHAPES:
        layers = [Layer(hidden, inter, heads, kv_heads, head_dim, "cuda") for _ in range(4)]
        caches = [(torch.zeros(kv_heads, 640, head_dim, device="cuda", dtype=torch.bfloat16),
                   torch.zeros(kv_heads, 640, head_dim, device="cuda", dtype=torch.bfloat16)) for _ in layers]
        inv = 10000.0 ** (-torch.arange(0, head_dim, 2, device="cuda", dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(640, device="cuda", dtype=torch.float32), inv)
        cos = torch.cat((angles.cos(), angles.cos()), -1).to(torch.bfloat16)
        sin = torch.cat((angles.sin(), angles.sin()), -1).to(torch.bfloat16)
        time_layers(layers, caches, 128, 0, cos, sin, 1)  # fills the cache's first 128 rows
        decode = time_layers(layers, caches, 1, 128, cos, sin, runs)
        prefill = time_layers(layers, caches, 128, 0, cos, sin, runs)
        prefill512 = time_layers(layers, caches, 512, 0, cos, sin, max(3, runs // 2))
        print(f"{name:16} {decode * 1e3:12.3f} {prefill * 1e3:16.3f} {prefill512 * 1e3:16.3f}")
        rows.append((name, decode, prefill, prefill512))
        del layers, caches
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("layer,decode_ms,prefill128_ms,prefill512_ms\n")
            for name, decode, prefill, prefill512 in rows:
                f.write(f"{name},{decode * 1e3:.4f},{prefill * 1e3:.4f},{prefill512 * 1e3:.4f}\n")


if __name__ == "__main__":
    main()
