#!/usr/bin/env python3
"""bmrt's PyTorch worker: runs decoder blocks [start, end) of a Llama-family checkpoint for a bmrt
node (src/inference/torch-backend.ts), which talks to it over stdin/stdout.

Framing, both ways: a message is
    u32 LE header length | u32 LE payload length | header (UTF-8 JSON) | payload (raw bytes)
and tensors travel only in payloads, as float32 little-endian [tokens, hidden_size] rows.

Node -> worker requests, answered one by one in the order they came, each by exactly one
{"type": "reply", "ok": true} or {"type": "reply", "ok": false, "error": "..."}:
    {"op": "open", "id": 7, "max_length": 128, "first": 2, "count": 3}  (absolute first block)
    {"op": "close", "id": 7}
    {"op": "forward", "steps": [{"id": 7, "position": 0, "tokens": 5}, ...]}  payload: the steps'
        hidden states one after another; the reply's payload: the outputs the same way.
Worker -> node, besides replies: {"type": "block", "index": i} after each block is loaded,
{"type": "ready", ...versions, "impl": "transformers" | "plain"} once, before any reply, or
{"type": "fatal", "code": ..., "error": ...} when it cannot start (then it exits).

The blocks run with transformers' own LlamaDecoderLayer / MistralDecoderLayer when transformers
is importable, else with the small plain-PyTorch block below (also forced by --plain or
BMRT_TORCH_PLAIN=1, which also ignores the safetensors package, to test a torch-only install).
The worker exits when stdin closes; a bad request gets an error reply, never an exit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import traceback

# Our protocol owns the real stdout; anything a library prints goes to stderr instead.
_PROTOCOL_OUT = os.fdopen(os.dup(1), 'wb', buffering=0)
os.dup2(2, 1)
sys.stdout = sys.stderr
_IN = sys.stdin.buffer


def send(header: dict, payload: bytes = b'') -> None:
    data = json.dumps(header).encode()
    _PROTOCOL_OUT.write(struct.pack('<II', len(data), len(payload)) + data)
    if payload:
        _PROTOCOL_OUT.write(payload)


def read_exact(n: int) -> bytes | None:
    chunks = []
    while n > 0:
        chunk = _IN.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b''.join(chunks)


def receive() -> tuple[dict, bytes] | None:
    prefix = read_exact(8)
    if prefix is None:
        return None
    header_length, payload_length = struct.unpack('<II', prefix)
    header = read_exact(header_length)
    payload = read_exact(payload_length) if payload_length > 0 else b''
    if header is None or payload is None:
        return None
    return json.loads(header), payload


def fatal(code: str, message: str) -> None:
    send({'type': 'fatal', 'code': code, 'error': message})
    sys.exit(3)


if sys.version_info < (3, 9):
    fatal('PYTHON_TOO_OLD', f'Python {sys.version.split()[0]} is too old; bmrt needs Python 3.9+')

try:
    import torch
except ImportError as err:
    fatal('NO_TORCH', f'cannot import torch ({err})')

try:
    _TORCH_MAJOR = int(str(torch.__version__).split('.')[0])
except (AttributeError, ValueError):
    _TORCH_MAJOR = 0
if _TORCH_MAJOR < 2:
    fatal('TORCH_TOO_OLD', f"torch {getattr(torch, '__version__', '?')} is too old; bmrt needs torch 2.0+")

DTYPES = {'f32': torch.float32, 'bf16': torch.bfloat16, 'f16': torch.float16}
SAFETENSORS_DTYPES = {
    'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16, 'F64': torch.float64,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8,
}


# ---------------------------------------------------------------------------------------------
# Checkpoint: only the span's tensors are read.

class Checkpoint:
    def __init__(self, directory: str, use_package: bool):
        self.dir = directory
        index = os.path.join(directory, 'model.safetensors.index.json')
        if os.path.exists(index):
            with open(index) as f:
                self.weight_map = json.load(f)['weight_map']
        else:
            self.weight_map = None
        self.safe_open = None
        if use_package:
            try:
                from safetensors import safe_open
                self.safe_open = safe_open
            except ImportError:
                pass
        self.headers: dict[str, tuple[int, dict]] = {}

    def file_of(self, name: str) -> str:
        if self.weight_map is None:
            return os.path.join(self.dir, 'model.safetensors')
        if name not in self.weight_map:
            raise KeyError(f'tensor {name} is not in model.safetensors.index.json')
        return os.path.join(self.dir, self.weight_map[name])

    def names(self) -> list[str]:
        if self.weight_map is not None:
            return list(self.weight_map)
        return [n for n in self._header(self.file_of(''))[1] if n != '__metadata__']

    def _header(self, path: str) -> tuple[int, dict]:
        # safetensors: u64 LE header size, JSON header, then the tensors' bytes.
        if path not in self.headers:
            with open(path, 'rb') as f:
                (size,) = struct.unpack('<Q', f.read(8))
                self.headers[path] = (8 + size, json.loads(f.read(size)))
        return self.headers[path]

    def read(self, name: str) -> torch.Tensor:
        path = self.file_of(name)
        if self.safe_open is not None:
            with self.safe_open(path, framework='pt') as f:
                return f.get_tensor(name)
        data_start, header = self._header(path)
        if name not in header:
            raise KeyError(f'tensor {name} is not in {path}')
        info = header[name]
        begin, end = info['data_offsets']
        with open(path, 'rb') as f:
            f.seek(data_start + begin)
            raw = bytearray(f.read(end - begin))
        dtype = SAFETENSORS_DTYPES[info['dtype']]
        if len(raw) == 0:
            return torch.empty(info['shape'], dtype=dtype)
        # Files are little-endian, as is every machine torch runs on in practice.
        return torch.frombuffer(raw, dtype=dtype).reshape(info['shape'])


# ---------------------------------------------------------------------------------------------
# Model config: the few numbers the blocks need.

class Spec:
    def __init__(self, raw: dict):
        self.raw = raw
        self.model_type = raw.get('model_type')
        if self.model_type not in ('llama', 'mistral'):
            raise ValueError(f"unsupported model_type {self.model_type!r}; the torch backend runs llama and mistral")
        self.hidden = raw['hidden_size']
        self.heads = raw['num_attention_heads']
        self.kv_heads = raw.get('num_key_value_heads') or self.heads
        self.head_dim = raw.get('head_dim') or self.hidden // self.heads
        self.eps = raw.get('rms_norm_eps', 1e-6)
        self.theta = raw.get('rope_theta', 10000.0)
        self.rope_scaling = raw.get('rope_scaling')
        self.attention_bias = raw.get('attention_bias') is True
        self.mlp_bias = raw.get('mlp_bias') is True
        window = raw.get('sliding_window')
        self.window = window if self.model_type == 'mistral' and window is not None and raw.get('use_sliding_window') is not False else None
        self.checkpoint_dtype = {'float32': 'f32', 'bfloat16': 'bf16', 'float16': 'f16'}.get(raw.get('torch_dtype') or raw.get('dtype'), 'f32')


def inverse_frequencies(spec: Spec) -> torch.Tensor:
    """RoPE inverse frequencies, with linear or llama3 scaling (for the plain implementation)."""
    dim = spec.head_dim
    inv = 1.0 / (spec.theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = spec.rope_scaling
    kind = (scaling or {}).get('rope_type') or (scaling or {}).get('type')
    if kind is None or kind == 'default':
        return inv
    if kind == 'linear':
        return inv / scaling['factor']
    if kind == 'llama3':
        factor, low, high = scaling['factor'], scaling['low_freq_factor'], scaling['high_freq_factor']
        original = scaling['original_max_position_embeddings']
        low_wavelen, high_wavelen = original / low, original / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (original / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f'rope_scaling type {kind!r} is not supported')


# ---------------------------------------------------------------------------------------------
# The KV cache of one session: preallocated [1, kv_heads, max_length, head_dim] per block. It has
# the `update` method transformers' attention calls, so the same object serves both implementations.

class SessionCache:
    def __init__(self, spec: Spec, max_length: int, first: int, count: int, device, dtype):
        shape = (1, spec.kv_heads, max_length, spec.head_dim)
        self.max_length = max_length
        self.first = first
        self.count = count
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(count)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(count)]
        self.length = 0
        self.position = 0  # where the running step's tokens go

    def update(self, key, value, layer_idx, *args, **kwargs):
        slot = layer_idx - self.first
        end = self.position + key.shape[2]
        self.keys[slot][:, :, self.position:end] = key
        self.values[slot][:, :, self.position:end] = value
        return self.keys[slot][:, :, :end], self.values[slot][:, :, :end]


# ---------------------------------------------------------------------------------------------
# The plain-PyTorch block, written to compute what transformers' eager Llama block computes.

class PlainBlock:
    def __init__(self, spec: Spec, index: int, tensors: dict[str, torch.Tensor]):
        self.spec = spec
        self.index = index
        self.t = tensors

    def _linear(self, x, name):
        return torch.nn.functional.linear(x, self.t[name + '.weight'], self.t.get(name + '.bias'))

    def _norm(self, x, name):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.spec.eps)
        return self.t[name + '.weight'] * x.to(dtype)

    @staticmethod
    def _rotate(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def __call__(self, x, mask, cos, sin, cache: SessionCache):
        s = self.spec
        n = x.shape[1]
        h = self._norm(x, 'input_layernorm')
        q = self._linear(h, 'self_attn.q_proj').view(1, n, s.heads, s.head_dim).transpose(1, 2)
        k = self._linear(h, 'self_attn.k_proj').view(1, n, s.kv_heads, s.head_dim).transpose(1, 2)
        v = self._linear(h, 'self_attn.v_proj').view(1, n, s.kv_heads, s.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]  # [1, n, d] -> [1, 1, n, d], over the heads
        q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
        k, v = cache.update(k, v, self.index)
        groups = s.heads // s.kv_heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * (s.head_dim ** -0.5) + mask
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        attention = torch.matmul(weights, v).transpose(1, 2).reshape(1, n, -1)
        x = x + self._linear(attention, 'self_attn.o_proj')
        h = self._norm(x, 'post_attention_layernorm')
        gate = torch.nn.functional.silu(self._linear(h, 'mlp.gate_proj'))
        return x + self._linear(gate * self._linear(h, 'mlp.up_proj'), 'mlp.down_proj')


class PlainRotary:
    def __init__(self, spec: Spec, device):
        self.inv = inverse_frequencies(spec).to(device)

    def __call__(self, x, positions):
        freqs = positions[0].float()[:, None] * self.inv[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)[None]
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


# ---------------------------------------------------------------------------------------------
# transformers' own classes, when they are there and new enough (position_embeddings argument).

def transformers_classes(spec: Spec):
    """(config, layer class, rotary class, version), or a string saying why not."""
    try:
        import inspect
        import transformers
        from transformers import LlamaConfig, MistralConfig
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
        from transformers.models.mistral.modeling_mistral import MistralDecoderLayer, MistralRotaryEmbedding
    except Exception as err:  # ImportError, or a broken install
        return f'transformers is not importable ({err})'
    if 'position_embeddings' not in inspect.signature(LlamaDecoderLayer.forward).parameters:
        return f'transformers {transformers.__version__} is too old (need 4.45+)'
    raw = {k: v for k, v in spec.raw.items() if k not in ('architectures', 'auto_map')}
    # Mistral's layer has no biases: a mistral checkpoint with biases runs on the Llama layer, which
    # computes the same thing (the sliding window is in our masks, not in the layer).
    mistral = spec.model_type == 'mistral' and not spec.attention_bias and not spec.mlp_bias
    config = (MistralConfig if mistral else LlamaConfig)(**raw)
    config._attn_implementation = 'eager'  # the reference math: matches fp32 transformers exactly
    if mistral:
        return config, MistralDecoderLayer, MistralRotaryEmbedding, transformers.__version__
    return config, LlamaDecoderLayer, LlamaRotaryEmbedding, transformers.__version__


class TransformersBlock:
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, mask, cos, sin, cache: SessionCache):
        # past_key_value (singular) too, for transformers before 4.56; it lands in **kwargs otherwise.
        out = self.layer(x, attention_mask=mask, past_key_values=cache, past_key_value=cache,
                         use_cache=True, position_embeddings=(cos, sin))
        return out[0] if isinstance(out, tuple) else out


# ---------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, args):
        with open(os.path.join(args.model, 'config.json')) as f:
            self.spec = Spec(json.load(f))
        self.device = self._device(args.device)
        # Default compute dtype: the checkpoint's on accelerators; fp32 on CPU, where bf16/f16
        # matmuls are slow or missing and fp32 is what the JS and native references compute.
        dtype_name = args.dtype or ('f32' if self.device.type == 'cpu' else self.spec.checkpoint_dtype)
        self.dtype = DTYPES[dtype_name]
        self.start, self.end = args.start, args.end
        plain = args.plain or os.environ.get('BMRT_TORCH_PLAIN') == '1'
        checkpoint = Checkpoint(args.model, use_package=not plain)
        found = 'plain implementation forced' if plain else transformers_classes(self.spec)
        self.impl = 'plain' if isinstance(found, str) else 'transformers'
        self.plain_reason = found if isinstance(found, str) else None
        self.transformers_version = None if isinstance(found, str) else found[3]
        self.blocks = {}
        weight_bytes = 0
        for i in range(self.start, self.end):
            prefix = f'model.layers.{i}.'
            names = [n for n in checkpoint.names() if n.startswith(prefix)]
            if not names:
                raise ValueError(f'the checkpoint has no tensors for block {i}')
            tensors = {n[len(prefix):]: checkpoint.read(n).to(device=self.device, dtype=self.dtype) for n in names}
            weight_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
            if self.impl == 'plain':
                self.blocks[i] = PlainBlock(self.spec, i, tensors)
            else:
                config, layer_class = found[0], found[1]
                with torch.device('meta'):
                    layer = layer_class(config, i)
                layer.load_state_dict(tensors, strict=True, assign=True)
                self.blocks[i] = TransformersBlock(layer.eval())
            send({'type': 'block', 'index': i})
        if self.impl == 'plain':
            self.rotary = PlainRotary(self.spec, self.device)
        else:
            self.rotary = found[2](found[0]).to(self.device)
        self.weight_bytes = weight_bytes
        self.sessions: dict[int, SessionCache] = {}

    @staticmethod
    def _device(name: str):
        if name.startswith('cuda') and not torch.cuda.is_available():
            fatal('NO_DEVICE', f'--device {name} was asked for, but this torch ({torch.__version__}) sees no CUDA device')
        if name == 'mps' and not (hasattr(torch.backends, 'mps') and torch.backends.mps.is_available()):
            fatal('NO_DEVICE', f'--device mps was asked for, but this torch ({torch.__version__}) has no MPS device')
        try:
            device = torch.device(name)
        except RuntimeError as err:
            fatal('NO_DEVICE', f'--device {name}: {err}')
        if device.type == 'cuda' and device.index is not None and device.index >= torch.cuda.device_count():
            fatal('NO_DEVICE', f'--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)')
        return device

    def ready(self) -> dict:
        return {'type': 'ready', 'python': sys.version.split()[0], 'torch': torch.__version__,
                'transformers': self.transformers_version, 'impl': self.impl, 'plain_reason': self.plain_reason,
                'device': str(self.device), 'dtype': str(self.dtype).replace('torch.', ''),
                'weight_bytes': self.weight_bytes, 'pid': os.getpid()}

    def handle(self, header: dict, payload: bytes) -> bytes:
        op = header.get('op')
        if op == 'open':
            first, count = header['first'], header['count']
            if first < self.start or count <= 0 or first + count > self.end:
                raise ValueError(f'blocks {first}:{first + count} are not part of this span {self.start}:{self.end}')
            self.sessions[header['id']] = SessionCache(self.spec, header['max_length'], first, count, self.device, self.dtype)
            return b''
        if op == 'close':
            self.sessions.pop(header['id'], None)
            return b''
        if op == 'forward':
            return self.forward(header['steps'], payload)
        raise ValueError(f'unknown op {op!r}')

    def forward(self, steps: list, payload: bytes) -> bytes:
        hidden = self.spec.hidden
        total = sum(s['tokens'] for s in steps)
        if len(payload) != total * hidden * 4:
            raise ValueError(f'expected {total} x {hidden} float32 values, got {len(payload)} bytes')
        caches = []
        for s in steps:  # check every step before running any
            cache = self.sessions.get(s['id'])
            if cache is None:
                raise ValueError(f"unknown session {s['id']}")
            if not 0 <= s['position'] <= cache.length or s['position'] + s['tokens'] > cache.max_length:
                raise ValueError(f"session {s['id']}: position {s['position']} + {s['tokens']} tokens does not fit "
                                 f'its {cache.length} cached of {cache.max_length}')
            caches.append(cache)
        x_all = torch.frombuffer(bytearray(payload), dtype=torch.float32).view(total, hidden)
        outputs = []
        offset = 0
        with torch.inference_mode():
            for s, cache in zip(steps, caches):
                n, position = s['tokens'], s['position']
                x = x_all[offset:offset + n].to(device=self.device, dtype=self.dtype)[None]
                offset += n
                positions = torch.arange(position, position + n, device=self.device)[None]
                cos, sin = self.rotary(x, positions)
                mask = self._mask(position, n)
                cache.position = position  # a position before the end rewinds: later keys are overwritten
                for i in range(cache.first, cache.first + cache.count):
                    x = self.blocks[i](x, mask, cos, sin, cache)
                cache.length = position + n
                outputs.append(x[0].to(device='cpu', dtype=torch.float32))
        # A fresh tensor from cat: its storage is exactly its bytes (and numpy is not required).
        return bytes(torch.cat(outputs).untyped_storage())

    def _mask(self, position: int, n: int) -> torch.Tensor:
        """Additive [1, 1, n, position + n] mask: query i sees keys <= position + i (within the window)."""
        keys = torch.arange(position + n, device=self.device)[None, :]
        queries = torch.arange(position, position + n, device=self.device)[:, None]
        allowed = keys <= queries
        if self.spec.window is not None:
            allowed &= keys > queries - self.spec.window
        mask = torch.zeros(allowed.shape, device=self.device, dtype=self.dtype)
        return mask.masked_fill(~allowed, torch.finfo(self.dtype).min)[None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description="bmrt's PyTorch block worker (speaks a binary protocol on stdin/stdout)")
    parser.add_argument('--model', required=True)
    parser.add_argument('--start', type=int, required=True)
    parser.add_argument('--end', type=int, required=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=sorted(DTYPES))
    parser.add_argument('--plain', action='store_true', help='use the plain-PyTorch block even when transformers is there')
    args = parser.parse_args()
    try:
        worker = Worker(args)
    except SystemExit:
        raise
    except Exception as err:
        traceback.print_exc()
        fatal('LOAD_FAILED', f'{type(err).__name__}: {err}')
    send(worker.ready())
    while True:
        message = receive()
        if message is None:
            return  # stdin closed: the node is gone
        header, payload = message
        try:
            send({'type': 'reply', 'ok': True}, worker.handle(header, payload))
        except Exception as err:
            if isinstance(err, (KeyError, TypeError)):
                traceback.print_exc()
            send({'type': 'reply', 'ok': False, 'error': f'{type(err).__name__}: {err}' if not isinstance(err, ValueError) else str(err)})


if __name__ == '__main__':
    main()
