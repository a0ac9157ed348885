#include "core/layers/parallel_linear.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

namespace nestscope {

namespace {

// Below these a product stays one torch::linear: a parallel region costs a barrier, and with
// another process on the cores (ctest -j2) spinning threads made small trainings 10× slower.
constexpr int64_t kMinRows = 512;
constexpr int64_t kMinMacs = int64_t(1) << 22;

// Row blocks [begin, end) of M rows, one per thread.
std::vector<std::pair<int64_t, int64_t>> row_blocks(int64_t M) {
  const int64_t P = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), M / 64));
  std::vector<std::pair<int64_t, int64_t>> blocks;
  for (int64_t p = 0; p < P; ++p) blocks.emplace_back(M * p / P, M * (p + 1) / P);
  return blocks;
}

// out[M, n] = a[M, k] · b[k, n], the rows of a split across the threads.
void parallel_mm(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& out) {
  const auto blocks = row_blocks(a.size(0));
  at::parallel_for(0, int64_t(blocks.size()), 1, [&](int64_t p0, int64_t p1) {
    at::NoGradGuard no_grad;
    for (int64_t p = p0; p < p1; ++p) {
      const auto [r0, r1] = blocks[size_t(p)];
      auto o = out.narrow(0, r0, r1 - r0);
      at::mm_out(o, a.narrow(0, r0, r1 - r0), b);
    }
  });
}

struct RowParallelLinear : torch::autograd::Function<RowParallelLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w) {
    ctx->save_for_backward({x, w});
    auto y = torch::empty({x.size(0), w.size(0)}, x.options());  // [M, n]
    parallel_mm(x, w.t(), y);
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];  // [M, k]
    const auto& w = saved[1];  // [n, k]
    const auto g = grads[0].contiguous();  // [M, n]
    torch::Tensor gx, gw;
    if (ctx->needs_input_grad(0)) {
      gx = torch::empty_like(x);
      parallel_mm(g, w, gx);  // ∂x = g·W
    }
    if (ctx->needs_input_grad(1)) {  // ∂W = gᵀ·x, a partial sum per row block
      const auto blocks = row_blocks(x.size(0));
      auto partial = torch::empty({int64_t(blocks.size()), w.size(0), w.size(1)}, w.options());  // [P, n, k]
      at::parallel_for(0, int64_t(blocks.size()), 1, [&](int64_t p0, int64_t p1) {
        at::NoGradGuard no_grad;
        for (int64_t p = p0; p < p1; ++p) {
          const auto [r0, r1] = blocks[size_t(p)];
          auto o = partial[p];
          at::mm_out(o, g.narrow(0, r0, r1 - r0).t(), x.narrow(0, r0, r1 - r0));
        }
      });
      gw = partial.sum(0);
    }
    return {gx, gw};
  }
};

}  // namespace

bool row_parallel_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  return at::GradMode::is_enabled() && at::get_num_threads() > 1 && x.is_cpu() && weight.is_cpu() &&
         x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 && weight.dim() == 2 &&
         x.numel() / std::max<int64_t>(1, x.size(-1)) >= kMinRows && x.numel() * weight.size(0) >= kMinMacs;
}

torch::Tensor row_parallel_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const int64_t k = x.size(-1);
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  auto y = RowParallelLinear::apply(x.reshape({-1, k}).contiguous(), weight.contiguous());  // [M, n]
  return bias.defined() ? (y + bias).view(sizes) : y.view(sizes);
}

torch::Tensor training_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return row_parallel_applies(x, weight) ? row_parallel_linear(x, weight, bias) : torch::linear(x, weight, bias);
}

}  // namespace nestscope
