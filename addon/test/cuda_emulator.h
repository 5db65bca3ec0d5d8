// A CPU emulator for bmrt's CUDA code, so that machines without a GPU (CI, most developers) run the
// CUDA kernel and span tests: the same sources, compiled by the C++ compiler with this header
// force-included (-include) and BMRT_CUDA_EMULATOR defined, linked with cuda_emulator.cc, which
// implements the CUDA runtime and cuBLAS calls bmrt makes on host memory.
//
// A kernel launch runs its blocks one after another on the calling thread; each CUDA thread of a
// block is a fiber (a stack of its own, switched by a few instructions of x86-64 assembly: Linux
// on x86-64 only) that runs until it finishes or waits at __syncthreads() or a warp shuffle, and
// a barrier opens once every live thread of the block (or warp) waits at it. Shared
// memory is a function-static array (one block runs at a time). Streams run their work at once,
// in order; stream capture records launches and cuBLAS calls into a graph that replays them.
//
// What it checks: indexing, fused layouts, barriers and warp reductions that give the right
// numbers, graph capture and replay, every host-side path. What it cannot: speed, races between
// threads (fibers switch only at barriers), the memory model, and hardware limits (registers,
// shared memory, grid sizes). Those need a GPU: addon/bench/gpu-e2e.sh.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <functional>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace bmrt::cuda::emulator {

extern uint3 thread_index, block_index;
extern dim3 block_dim, grid_dim;

// Runs `kernel` (a call of the kernel with its arguments bound) over `grid` blocks of `block`
// threads; under stream capture, records it instead.
void launch(dim3 grid, dim3 block, cudaStream_t stream, std::function<void()> kernel);

void sync_block();
float shuffle_xor(float value, int lane_mask);

template <class T>
T load(const T* p) { return *p; }

}  // namespace bmrt::cuda::emulator

#define threadIdx (::bmrt::cuda::emulator::thread_index)
#define blockIdx (::bmrt::cuda::emulator::block_index)
#define blockDim (::bmrt::cuda::emulator::block_dim)
#define gridDim (::bmrt::cuda::emulator::grid_dim)
#define __syncthreads() ::bmrt::cuda::emulator::sync_block()
#define __shfl_xor_sync(mask, value, lane_mask) ::bmrt::cuda::emulator::shuffle_xor((value), (lane_mask))
#define __ldg(p) ::bmrt::cuda::emulator::load(p)
#define __ldcs(p) ::bmrt::cuda::emulator::load(p)
