// CUDA kernels for the batch-1 paths where LibTorch's ops leave speed on the table (issue 10):
// the gate's gathered MLP (only the chosen neuron blocks' rows of W_up and columns of W_down are
// read) and one site of an MPO chain contraction (the core is read in place, strided, so a lower χ
// is a view, not a copy, and no permute runs between sites).
//
// Plain C++: no CUDA or torch headers, raw device pointers, the stream as void* (cudaStream_t;
// nullptr = the legacy default stream, which is LibTorch's current stream unless the caller set
// another). Each launcher returns nullptr on success or the CUDA error's text. Compiled by nvcc
// into nestscope_cuda (core/cuda/kernels.cu) whenever a CUDA compiler is found, so the sources
// are checked in every build; called by the core only for CUDA tensors.
#pragma once
#include <cstdint>

namespace nestscope::cuda {

// CUDA devices the runtime sees: 0 when there is no driver or no device (never throws).
int device_count();

enum class Act : int { Identity = 0, Relu = 1, Gelu = 2, GeluTanh = 3, Silu = 4 };

// The gathered MLP for `rows` token rows, each with its own k active blocks of B neurons:
//   hidden[r, t] = act(up[n_t]·x_r + up_bias[n_t]) (⊙ (mul[n_t]·x_r + mul_bias[n_t]) when mul)
//   y[r]         = down_bias + Σ_t hidden[r, t] · down_t[n_t]
// with n_t = blocks[r·k + t/B]·B + t%B. up, mul, down_t are [N, C] row-major (down_t = W_downᵀ,
// so a neuron's output weights are contiguous); biases may be null; blocks is int32 [rows, k] in
// [0, N/B) (device memory, so a support chosen on the GPU needs no copy to the host);
// hidden is scratch [rows, k·B]; x and y are [rows, C].
const char* gathered_mlp(int rows, int C, int N, int B, int k, const int32_t* blocks, const float* x,
                         const float* up, const float* up_bias, const float* mul, const float* mul_bias,
                         const float* down_t, const float* down_bias, Act act, float* hidden, float* y,
                         void* stream);

// One site of an MPO contraction: s [M, D, i, rest] (contiguous) and a core G [D, o, i, D2] read
// through its strides → out [M, o, D2, rest]:
//   out[m, a, e, r] = Σ_{d, j} s[m, d, j, r] · G[d, a, j, e]   (+ bias[(flat index) % out_features]
// when bias is non-null: pass it on the last site, where out is [rows, out_features]).
const char* mpo_site(int M, int D, int o, int i, int D2, int rest, const float* s, const float* g,
                     const int64_t g_strides[4], const float* bias, int out_features, float* out, void* stream);

}  // namespace nestscope::cuda
