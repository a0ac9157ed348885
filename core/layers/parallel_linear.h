// A linear layer's training product split across the intra-op threads by rows (CPU, autograd).
#pragma once
#include <torch/types.h>

namespace nestscope {

// True when row_parallel_linear pays: autograd on, CPU float32 x and weight, at least 512 rows
// and 4M multiply-adds, and more than one intra-op thread. OpenBLAS runs single-threaded here (init_threads: its pool
// and LibTorch's fight over the cores), so a plain torch::linear in training used one core while
// the other spun; fine-tuning stories260K (batch 32 × 256) spent half its GEMM time that way.
bool row_parallel_applies(const torch::Tensor& x, const torch::Tensor& weight);

// y = x·Wᵀ + bias for x [..., k], W [n, k], bias [n] or undefined, differentiable in all three,
// each thread taking a block of rows in forward and backward (∂W is summed over the blocks).
// Equal to torch::linear up to float summation order (tested).
torch::Tensor row_parallel_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// row_parallel_linear where it applies, else torch::linear.
torch::Tensor training_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

}  // namespace nestscope
