#!/usr/bin/env bash
# Everything the CUDA path must show, in one run on a GPU machine (about 5 minutes on an H100):
# builds the CUDA parts with CMake, runs the kernel test and the CUDA-vs-CPU span test, the
# per-layer bench against the measured bandwidth with the 40-block Llama-2-70B span, and the same
# layer math in PyTorch; then prints the comparison. Results also go to $OUT (or ./cuda-results).
#   bash addon/bench/cuda-device-check.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-cuda-results}"
mkdir -p "$out"
quick="${1:-}"
exec > >(tee "$out/device-check.log") 2>&1

nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
nvcc --version | tail -1

# cuBLAS: the CUDA toolkit's, else the nvidia-cublas wheel that PyTorch brought.
cublas_args=()
if ! ls /usr/local/cuda/lib64/libcublas.so* >/dev/null 2>&1; then
  wheel=$(python3 -c 'import nvidia.cu13 as m; print(list(m.__path__)[0])' 2>/dev/null ||
          python3 -c 'import nvidia.cublas as m; print(list(m.__path__)[0])')
  echo "cuBLAS from the wheel at $wheel"
  cublas_args=(-DBMRT_CUBLAS_DIR="$wheel")
fi
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
started=$SECONDS
cmake -S addon -B /tmp/bmrt-cuda -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" "${cublas_args[@]}" >/dev/null
cmake --build /tmp/bmrt-cuda --parallel "$(nproc)" --target cuda_kernels_test cuda_span_test cuda_bench span_test >/dev/null
echo "built for sm_$arch in $((SECONDS - started)) s"

status=0
/tmp/bmrt-cuda/cuda_kernels_test | tee "$out/kernels-test.txt" || status=1
/tmp/bmrt-cuda/cuda_span_test | tee "$out/span-test.txt" || status=1
/tmp/bmrt-cuda/cuda_bench --span70b ${quick:+--quick} --csv "$out/cuda-bench.csv" | tee "$out/cuda-bench.txt" || status=1
python3 addon/bench/torch_layer_bench.py ${quick:+--quick} --csv "$out/torch-bench.csv" | tee "$out/torch-bench.txt" || status=1

# bmrt against PyTorch eager, same GPU, same run.
python3 - "$out/cuda-bench.csv" "$out/torch-bench.csv" <<'EOF' || status=1
import csv, sys
ours = {r["layer"]: r for r in csv.DictReader(open(sys.argv[1]))}
torch = {r["layer"]: r for r in csv.DictReader(open(sys.argv[2]))}
print(f"\n{'layer (bf16)':16} {'decode: bmrt / torch ms':>26} {'speed-up':>9} {'% bw':>6} {'prefill-128: bmrt / torch ms':>30} {'torch / bmrt':>13}")
for name, r in ours.items():
    t = torch[name]
    d, td = float(r["decode_ms"]), float(t["decode_ms"])
    p, tp = float(r["prefill128_ms"]), float(t["prefill128_ms"])
    print(f"{name:16} {d:12.3f} / {td:11.3f} {td / d:8.2f}x {100 * float(r['decode_share_of_bandwidth']):5.0f}% {p:14.3f} / {tp:13.3f} {tp / p:12.2f}x")
EOF
exit $status
