// The torch side of the CUDA kernels (core/cuda/kernels.h): tensor checks, launches on LibTorch's
// device pointers, errors as nestscope::Error. Layers call these for CUDA tensors when
// cuda_kernels_ready(); otherwise (no CUDA compiler at build time, no device, a driver older than
// the kernels' CUDA) they keep LibTorch's ops, so a CUDA model always runs.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "core/activation.h"

namespace nestscope {

// Built with the kernels and a CUDA device usable by them (checked once).
bool cuda_kernels_ready();
// "compiled, N device(s)", "compiled, no usable device" or "not compiled (no CUDA compiler)".
std::string cuda_kernels_status();

// y [rows, C] = the MLP over only the given neuron blocks of each row: blocks int32 [rows, k] on
// x's device; up / mul / down_t [N, C] and biases (may be undefined) on x's device, float32.
torch::Tensor gathered_mlp_cuda(const torch::Tensor& x, const torch::Tensor& blocks, int64_t block,
                                const torch::Tensor& up, const torch::Tensor& up_bias, const torch::Tensor& mul,
                                const torch::Tensor& mul_bias, const torch::Tensor& down_t,
                                const torch::Tensor& down_bias, Activation activation);

// x [N, Π in] through cores [D, o, i, D'] (views allowed: read through their strides) left to right
// → [N, Π out], plus bias (may be undefined).
torch::Tensor mpo_chain_cuda(const torch::Tensor& x, const std::vector<torch::Tensor>& cores, const torch::Tensor& bias);

}  // namespace nestscope
