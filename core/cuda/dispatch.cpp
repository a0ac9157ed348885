#include "core/cuda/dispatch.h"

#include "core/error.h"
#ifdef NESTSCOPE_HAVE_CUDA_KERNELS
#include "core/cuda/kernels.h"
#endif

namespace nestscope {

#ifdef NESTSCOPE_HAVE_CUDA_KERNELS

namespace {

int usable_devices() {
  static const int n = cuda::device_count();
  return n;
}

void launched(const char* error, const char* what) {
  if (error) throw Error(std::string("CUDA ") + what + " kernel failed: " + error);
}

cuda::Act kernel_act(Activation a) {
  switch (a) {
    case Activation::Relu: return cuda::Act::Relu;
    case Activation::Gelu: return cuda::Act::Gelu;
    case Activation::GeluTanh: return cuda::Act::GeluTanh;
    case Activation::Silu: return cuda::Act::Silu;
  }
  return cuda::Act::Identity;
}

const float* ptr_or_null(const torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

void check_weight(const torch::Tensor& w, const torch::Tensor& x, const char* what) {
  if (!w.defined()) return;
  check(w.device() == x.device() && w.scalar_type() == torch::kFloat32 && w.is_contiguous(),
        std::string("CUDA gathered MLP: ") + what + " must be contiguous float32 on the input's device");
}

}  // namespace

bool cuda_kernels_ready() { return usable_devices() > 0; }

std::string cuda_kernels_status() {
  const int n = usable_devices();
  return n > 0 ? "compiled, " + std::to_string(n) + " device(s)" : "compiled, no usable device";
}

torch::Tensor gathered_mlp_cuda(const torch::Tensor& x, const torch::Tensor& blocks, int64_t block,
                                const torch::Tensor& up, const torch::Tensor& up_bias, const torch::Tensor& mul,
                                const torch::Tensor& mul_bias, const torch::Tensor& down_t,
                                const torch::Tensor& down_bias, Activation activation) {
  check(x.is_cuda() && x.dim() == 2 && x.scalar_type() == torch::kFloat32, "CUDA gathered MLP: x must be [rows, C] float32 on a GPU");
  check(blocks.dim() == 2 && blocks.size(0) == x.size(0) && blocks.scalar_type() == torch::kInt32 &&
            blocks.device() == x.device(), "CUDA gathered MLP: blocks must be int32 [rows, k] on the input's device");
  const int64_t rows = x.size(0), C = x.size(1), N = up.size(0), k = blocks.size(1);
  check(up.dim() == 2 && up.size(1) == C && down_t.sizes() == up.sizes(), "CUDA gathered MLP: weights must be [N, C]");
  for (auto [w, what] : {std::pair{up, "up"}, {up_bias, "up bias"}, {mul, "mul"}, {mul_bias, "mul bias"},
                         {down_t, "down"}, {down_bias, "down bias"}})
    check_weight(w, x, what);
  auto xc = x.contiguous();
  auto bc = blocks.contiguous();
  auto hidden = torch::empty({rows, k * block}, x.options());
  auto y = torch::empty({rows, C}, x.options());
  launched(cuda::gathered_mlp(int(rows), int(C), int(N), int(block), int(k), bc.data_ptr<int32_t>(), xc.data_ptr<float>(),
                              up.data_ptr<float>(), ptr_or_null(up_bias), ptr_or_null(mul), ptr_or_null(mul_bias),
                              down_t.data_ptr<float>(), ptr_or_null(down_bias), kernel_act(activation),
                              hidden.data_ptr<float>(), y.data_ptr<float>(), nullptr),
           "gathered MLP");
  return y;
}

torch::Tensor mpo_chain_cuda(const torch::Tensor& x, const std::vector<torch::Tensor>& cores, const torch::Tensor& bias) {
  check(x.is_cuda() && x.dim() == 2 && x.scalar_type() == torch::kFloat32, "CUDA MPO: x must be [N, in] float32 on a GPU");
  const int64_t N = x.size(0);
  auto s = x.contiguous();
  int64_t M = N, rest_total = x.size(1);
  for (size_t l = 0; l < cores.size(); ++l) {
    const auto& g = cores[l];
    check(g.dim() == 4 && g.device() == x.device() && g.scalar_type() == torch::kFloat32,
          "CUDA MPO: cores must be float32 [D, o, i, D'] on the input's device");
    const int64_t D = g.size(0), o = g.size(1), i = g.size(2), D2 = g.size(3), rest = rest_total / i;
    check(rest * i == rest_total && s.numel() == M * D * rest_total, "CUDA MPO: the cores do not match the input");
    auto out = torch::empty({M * o * D2 * rest}, x.options());
    const bool last = l + 1 == cores.size();
    const torch::Tensor b = last && bias.defined() ? bias.contiguous() : torch::Tensor();
    const int64_t strides[4] = {g.stride(0), g.stride(1), g.stride(2), g.stride(3)};
    launched(cuda::mpo_site(int(M), int(D), int(o), int(i), int(D2), int(rest), s.data_ptr<float>(), g.data_ptr<float>(),
                            strides, ptr_or_null(b), b.defined() ? int(b.numel()) : 0, out.data_ptr<float>(), nullptr),
             "MPO site");
    s = out;
    M *= o;
    rest_total = rest;
  }
  return s.reshape({N, -1});
}

#else  // built without a CUDA compiler: the layers keep LibTorch's ops on every device

bool cuda_kernels_ready() { return false; }
std::string cuda_kernels_status() { return "not compiled (no CUDA compiler at build time)"; }

torch::Tensor gathered_mlp_cuda(const torch::Tensor&, const torch::Tensor&, int64_t, const torch::Tensor&,
                                const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                const torch::Tensor&, Activation) {
  throw Error("this build has no CUDA kernels (no CUDA compiler was found when it was configured)");
}

torch::Tensor mpo_chain_cuda(const torch::Tensor&, const std::vector<torch::Tensor>&, const torch::Tensor&) {
  throw Error("this build has no CUDA kernels (no CUDA compiler was found when it was configured)");
}

#endif

}  // namespace nestscope
