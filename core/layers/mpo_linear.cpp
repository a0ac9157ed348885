#include "core/layers/mpo_linear.h"
#include "core/layers/parallel_linear.h"

#include <algorithm>
#include <numeric>

#include <ATen/core/grad_mode.h>

#include "core/cuda/dispatch.h"
#include "core/error.h"
#include "core/layers/cpu_gemm.h"
#include "core/layers/weight_init.h"

namespace nestscope {

namespace {

int64_t product(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t(1), std::multiplies<>());
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "·" : "") + std::to_string(v[i]);
  return s;
}

}  // namespace

MpoLinear::MpoLinear(int64_t in_features, int64_t out_features, std::vector<int64_t> out_factors,
                     std::vector<int64_t> in_factors, int64_t max_bond, bool with_bias, double init_std)
    : ElasticLinear(in_features, out_features),
      out_factors_(std::move(out_factors)),
      in_factors_(std::move(in_factors)),
      max_bond_(max_bond),
      bond_(max_bond) {
  const std::string shape = std::to_string(out_features) + "×" + std::to_string(in_features);
  check(!out_factors_.empty() && out_factors_.size() == in_factors_.size(),
        "MPO " + shape + ": out factors (" + join(out_factors_) + ") and in factors (" + join(in_factors_) +
            ") must have the same number of sites");
  for (size_t l = 0; l < out_factors_.size(); ++l)
    check(out_factors_[l] >= 1 && in_factors_[l] >= 1, "MPO " + shape + ": factors must be positive");
  check(product(out_factors_) == out_features,
        "MPO " + shape + ": out factors " + join(out_factors_) + " multiply to " +
            std::to_string(product(out_factors_)) + ", not " + std::to_string(out_features));
  check(product(in_factors_) == in_features,
        "MPO " + shape + ": in factors " + join(in_factors_) + " multiply to " +
            std::to_string(product(in_factors_)) + ", not " + std::to_string(in_features));
  check(max_bond >= 1, "MPO bond dimension must be at least 1, got " + std::to_string(max_bond));

  full_bonds_ = mpo_bond_dims(out_factors_, in_factors_, max_bond);
  const size_t L = out_factors_.size();
  // Var(W_ij) = (Π interior D_l) · Π σ_l² = init_std²: every core gets the same σ.
  double paths = 1;
  for (size_t l = 1; l < L; ++l) paths *= double(full_bonds_[l]);
  const double sigma = std::pow(init_std * init_std / paths, 0.5 / double(L));
  for (size_t l = 0; l < L; ++l)
    cores_.push_back(register_parameter(
        "core" + std::to_string(l),
        random_weight({full_bonds_[l], out_factors_[l], in_factors_[l], full_bonds_[l + 1]}, sigma)));
  if (with_bias) bias_ = register_parameter("bias", torch::zeros({out_features}));
}

int64_t MpoLinear::bond_dim(size_t l) const { return std::min(bond_, full_bonds_[l]); }

torch::Tensor MpoLinear::core(size_t l) const {
  auto c = cores_[l];
  if (bond_ >= max_bond_) return c;
  return c.narrow(0, 0, bond_dim(l)).narrow(3, 0, bond_dim(l + 1));
}

void MpoLinear::set_bond(int64_t bond) {
  check(bond >= 1 && bond <= max_bond_,
        "bond dimension " + std::to_string(bond) + " is outside [1, " + std::to_string(max_bond_) + "]");
  bond_ = bond;
}

void MpoLinear::load_from_dense(const torch::Tensor& weight, const torch::Tensor& bias) {
  check(weight.dim() == 2 && weight.size(0) == out_features() && weight.size(1) == in_features(),
        "MPO conversion: weight shape does not match the layer");
  const int64_t L = sites();
  // W[o_1…o_L, i_1…i_L] → interleaved [(o_1,i_1), …, (o_L,i_L)].
  std::vector<int64_t> dims(out_factors_.begin(), out_factors_.end());
  dims.insert(dims.end(), in_factors_.begin(), in_factors_.end());
  std::vector<int64_t> order;
  for (int64_t l = 0; l < L; ++l) order.push_back(l), order.push_back(L + l);
  auto rest = weight.detach().to(torch::kFloat64).reshape(dims).permute(order).contiguous();

  std::vector<torch::Tensor> cores;
  int64_t left = 1;
  for (int64_t l = 0; l + 1 < L; ++l) {
    const int64_t n = out_factors_[l] * in_factors_[l];
    auto m = rest.reshape({left * n, -1});
    auto [U, S, Vh] = torch::linalg::svd(m, /*full_matrices=*/false, c10::nullopt);
    const int64_t D = full_bonds_[l + 1];
    cores.push_back(U.narrow(1, 0, D).reshape({left, out_factors_[l], in_factors_[l], D}));
    rest = S.narrow(0, 0, D).unsqueeze(1) * Vh.narrow(0, 0, D);  // [D, rest]
    left = D;
  }
  cores.push_back(rest.reshape({left, out_factors_[L - 1], in_factors_[L - 1], 1}));

  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < L; ++l) cores_[l].copy_(cores[l]);
  if (bias_.defined()) {
    check(bias.defined(), "MPO conversion: the dense layer has no bias to copy");
    bias_.copy_(bias);
  }
}

void MpoLinear::canonicalize() {
  const int64_t keep = bond_;
  bond_ = max_bond_;
  torch::Tensor w;
  {
    torch::NoGradGuard no_grad;
    w = to_dense();
  }
  load_from_dense(w, bias_);
  bond_ = keep;
}

torch::Tensor MpoLinear::to_dense() const {
  // Contract the chain into [o_1…o_l, i_1…i_l, D_l], then unfold to [out, in].
  const size_t L = cores_.size();
  auto t = core(0).reshape({out_factors_[0], in_factors_[0], -1});  // [P, Q, D]
  int64_t P = out_factors_[0], Q = in_factors_[0];
  for (size_t l = 1; l < L; ++l) {
    auto g = core(l);                                        // [D, o, i, D']
    auto m = torch::matmul(t.reshape({P * Q, -1}), g.reshape({g.size(0), -1}));  // [PQ, o·i·D']
    const int64_t o = out_factors_[l], i = in_factors_[l];
    t = m.reshape({P, Q, o, i, -1}).permute({0, 2, 1, 3, 4}).reshape({P * o, Q * i, -1});
    P *= o, Q *= i;
  }
  return t.reshape({P, Q});
}

namespace {

// MACs of contracting one input row left to right through cores with these factors and bonds.
int64_t chain_macs(const std::vector<int64_t>& of, const std::vector<int64_t>& inf, const std::vector<int64_t>& d) {
  int64_t macs = 0, done_out = 1, rest_in = 1;
  for (int64_t i : inf) rest_in *= i;
  for (size_t l = 0; l < of.size(); ++l) {
    rest_in /= inf[l];
    macs += done_out * rest_in * d[l] * inf[l] * of[l] * d[l + 1];
    done_out *= of[l];
  }
  return macs;
}

// x [N, Π in] through cores [D, o, i, D'] left to right → [N, Π out] (out index o_1 major).
torch::Tensor contract(const torch::Tensor& x, const std::vector<torch::Tensor>& cores) {
  const int64_t N = x.size(0);
  auto s = x.reshape({N, 1, x.size(1)});  // [M, D, inputs to come]; M = N · outputs done
  int64_t M = N;
  for (const auto& g : cores) {
    const int64_t D = g.size(0), o = g.size(1), i = g.size(2), D2 = g.size(3);
    const int64_t rest = s.size(2) / i;
    // [M, D, i, rest] → [M·rest, D·i] · [D·i, o·D'] → [M, rest, o, D'] → [M·o, D', rest]
    auto a = s.reshape({M, D, i, rest}).permute({0, 3, 1, 2}).reshape({M * rest, D * i});
    auto b = g.permute({0, 2, 1, 3}).reshape({D * i, o * D2});
    s = torch::matmul(a, b).reshape({M, rest, o, D2}).permute({0, 2, 3, 1}).reshape({M * o, D2, rest});
    M *= o;
  }
  return s.reshape({N, -1});
}

template <class T>
std::vector<T> reversed(std::vector<T> v) {
  std::reverse(v.begin(), v.end());
  return v;
}

}  // namespace

std::vector<int64_t> MpoLinear::bond_dims() const {
  std::vector<int64_t> d(cores_.size() + 1);
  for (size_t l = 0; l < d.size(); ++l) d[l] = bond_dim(l);
  return d;
}

bool MpoLinear::right_to_left() const {
  const auto d = bond_dims();
  return chain_macs(reversed(out_factors_), reversed(in_factors_), reversed(d)) <
         chain_macs(out_factors_, in_factors_, d);
}

bool MpoLinear::packed_current() const {
  if (packed_bond_ != bond_ || packed_from_.size() != cores_.size()) return false;
  for (size_t l = 0; l < cores_.size(); ++l)
    if (packed_from_[l].first != cores_[l].data_ptr() || packed_from_[l].second != int64_t(cores_[l]._version())) return false;
  return true;
}

void MpoLinear::pack() const {
  torch::NoGradGuard no_grad;
  const int64_t L = sites();
  packed_rtl_ = right_to_left();
  packed_.clear();
  for (int64_t k = 0; k < L; ++k) {
    // Left to right: G_l [D, o, i, D']; right to left: the chain read from its end, every core's
    // bonds swapped ([D', o, i, D]).
    const int64_t l = packed_rtl_ ? L - 1 - k : k;
    auto g = core(size_t(l));
    if (packed_rtl_) g = g.permute({3, 1, 2, 0});
    PackedSite site{g.size(0), g.size(1), g.size(2), g.size(3), {}};
    auto b = g.permute({0, 2, 1, 3}).reshape({site.D * site.i, site.o * site.D2}).to(torch::kFloat32).contiguous();
    site.b.assign(b.data_ptr<float>(), b.data_ptr<float>() + b.numel());
    packed_.push_back(std::move(site));
  }
  packed_from_.clear();
  for (const auto& c : cores_) packed_from_.emplace_back(c.data_ptr(), int64_t(c._version()));
  packed_bond_ = bond_;
}

namespace {

// Row-wise reversal of a row's factor axes: src rows are [f_1, …, f_L] (row-major), dst rows
// [f_L, …, f_1]. Its own inverse when called with the factors reversed.
void reverse_axes(const float* src, int64_t N, const std::vector<int64_t>& f, float* dst) {
  const int64_t L = int64_t(f.size());
  int64_t row = 1;
  for (int64_t v : f) row *= v;
  // Stride in dst of each src axis: axis a of src is axis L-1-a of dst.
  std::vector<int64_t> stride(size_t(L), 1);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = 0; b < a; ++b) stride[size_t(a)] *= f[size_t(b)];
  std::vector<int64_t> idx(size_t(L), 0);
  for (int64_t n = 0; n < N; ++n) {
    const float* s = src + n * row;
    float* d = dst + n * row;
    std::fill(idx.begin(), idx.end(), 0);
    int64_t at = 0;  // dst offset of the current src index
    for (int64_t e = 0; e < row; ++e) {
      d[at] = s[e];
      for (int64_t a = L - 1; a >= 0; --a) {  // odometer over src axes, last fastest
        if (++idx[size_t(a)] < f[size_t(a)]) {
          at += stride[size_t(a)];
          break;
        }
        at -= (f[size_t(a)] - 1) * stride[size_t(a)];
        idx[size_t(a)] = 0;
      }
    }
  }
}

}  // namespace

void MpoLinear::contract_raw(const float* x, int64_t N, float* y) const {
  if (!packed_current()) pack();
  thread_local std::vector<float> s_buf, a_buf, c_buf;
  const int64_t in = in_features(), out = out_features();
  if (packed_rtl_) {
    s_buf.resize(size_t(N * in));
    reverse_axes(x, N, in_factors_, s_buf.data());
  } else {
    s_buf.assign(x, x + N * in);
  }
  // State s: [M, D, i·rest] with M = N · outputs done and rest the inputs after this site.
  int64_t M = N, rest_total = in;
  for (const auto& g : packed_) {
    const int64_t D = g.D, o = g.o, i = g.i, D2 = g.D2, rest = rest_total / i;
    // a[(m, r), (d, j)] = s[m, d, j, r]
    a_buf.resize(size_t(M * rest * D * i));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t j = 0; j < i; ++j) {
          const float* src = s_buf.data() + ((m * D + d) * i + j) * rest;
          float* dst = a_buf.data() + m * rest * D * i + d * i + j;
          for (int64_t r = 0; r < rest; ++r) dst[r * D * i] = src[r];
        }
    // c[(m, r), (oo, d2)] = a · b
    c_buf.resize(size_t(M * rest * o * D2));
    cpu_gemm_nn_raw(M * rest, o * D2, D * i, a_buf.data(), g.b.data(), o * D2, 0.0f, c_buf.data());
    // s'[(m, oo), d2, r] = c[(m, r), (oo, d2)]
    s_buf.resize(size_t(M * o * D2 * rest));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t r = 0; r < rest; ++r) {
        const float* src = c_buf.data() + (m * rest + r) * o * D2;
        for (int64_t oo = 0; oo < o; ++oo)
          for (int64_t d2 = 0; d2 < D2; ++d2) s_buf[size_t(((m * o + oo) * D2 + d2) * rest + r)] = src[oo * D2 + d2];
      }
    M *= o;
    rest_total = rest;
  }
  if (packed_rtl_) reverse_axes(s_buf.data(), N, std::vector<int64_t>(out_factors_.rbegin(), out_factors_.rend()), y);
  else std::copy(s_buf.begin(), s_buf.begin() + N * out, y);
  if (bias_.defined()) {
    const float* b = bias_.data_ptr<float>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < out; ++k) y[n * out + k] += b[k];
  }
}

int64_t MpoLinear::rebuild_macs() const {
  const auto d = bond_dims();
  int64_t macs = 0, P = out_factors_[0], Q = in_factors_[0];
  for (size_t l = 1; l < cores_.size(); ++l) {  // [P·Q, D_l] · [D_l, o·i·D_{l+1}], as to_dense
    macs += P * Q * d[l] * out_factors_[l] * in_factors_[l] * d[l + 1];
    P *= out_factors_[l], Q *= in_factors_[l];
  }
  return macs;
}

torch::Tensor MpoLinear::forward(const torch::Tensor& x) {
  // Many rows: one rebuild of W shared by all of them plus the dense product costs fewer MACs
  // than contracting each row (a 64-token prefill at χ = 8: 1.8–2.4× the dense time rebuilding
  // vs 4–6× contracting; `nestscope_bench_mpo`). Training (autograd on) always rebuilds: see
  // forward_direct.
  const int64_t N = x.numel() / in_features();
  if (at::GradMode::is_enabled() || (N > 1 && N * macs() > rebuild_macs() + N * in_features() * out_features()))
    return forward_rebuilt(x);
  return forward_direct(x);
}

torch::Tensor MpoLinear::forward_direct(const torch::Tensor& x) {
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  const int64_t N = x.numel() / in_features();
  if (!at::GradMode::is_enabled() && x.is_cpu() && x.scalar_type() == torch::kFloat32 && cores_[0].is_cpu() &&
      cores_[0].scalar_type() == torch::kFloat32 && (!bias_.defined() || bias_.is_contiguous())) {
    auto xc = x.contiguous();
    auto y = torch::empty({N, out_features()}, x.options());
    contract_raw(xc.data_ptr<float>(), N, y.data_ptr<float>());
    std::vector<int64_t> shape(lead.begin(), lead.end());
    shape.push_back(out_features());
    return y.reshape(shape);
  }
  // Under autograd this contraction is differentiable too, but forward() rebuilds W for training
  // instead: even where the chain has fewer MACs per row, contracting a batch through it under
  // autograd (permutes, their backward) is slower in time — PicoGPT at χ = 4, batch 32 × 256, 2
  // threads: 6,559 tokens/s rebuilding, < 4,700 contracting.
  const int64_t L = sites();
  std::vector<torch::Tensor> cores;
  for (int64_t l = 0; l < L; ++l) cores.push_back(core(size_t(l)));
  // On a GPU, one kernel per site reads each core in place (core/cuda/kernels.h): no permutes
  // between sites, and a lower χ stays a view.
  const bool kernels = x.is_cuda() && x.scalar_type() == torch::kFloat32 && cores[0].is_cuda() &&
                       cores[0].scalar_type() == torch::kFloat32 && cuda_kernels_ready();
  auto chain = [&](const torch::Tensor& rows, const std::vector<torch::Tensor>& cs) {
    return kernels ? mpo_chain_cuda(rows, cs, torch::Tensor()) : contract(rows, cs);
  };
  torch::Tensor y;
  if (!right_to_left()) {
    y = chain(x.reshape({N, in_features()}), cores);
  } else {
    // The same chain read from its last site: reverse the sites of x, of every core (bonds
    // swapped) and of the result.
    std::vector<int64_t> xdims{N}, order{0};
    for (int64_t f : in_factors_) xdims.push_back(f);
    for (int64_t l = L; l >= 1; --l) order.push_back(l);
    std::vector<torch::Tensor> back;
    for (int64_t l = L - 1; l >= 0; --l) back.push_back(cores[size_t(l)].permute({3, 1, 2, 0}));
    auto xr = x.reshape(xdims).permute(order).reshape({N, in_features()});
    std::vector<int64_t> ydims{N};
    for (int64_t l = L - 1; l >= 0; --l) ydims.push_back(out_factors_[size_t(l)]);
    y = chain(xr, back).reshape(ydims).permute(order).reshape({N, out_features()});
  }
  if (bias_.defined()) y = y + bias_;
  std::vector<int64_t> shape(lead.begin(), lead.end());
  shape.push_back(out_features());
  return y.reshape(shape);
}

bool MpoLinear::forward_raw(int64_t rows, const float* x, float* y) {
  if (at::GradMode::is_enabled() || !cores_[0].is_cpu() || cores_[0].scalar_type() != torch::kFloat32 ||
      (bias_.defined() && !bias_.is_contiguous()))
    return false;
  contract_raw(x, rows, y);
  return true;
}

torch::Tensor MpoLinear::forward_rebuilt(const torch::Tensor& x) const {
  return training_linear(x, to_dense(), bias_);
}

int64_t MpoLinear::macs() const {
  const auto d = bond_dims();
  return std::min(chain_macs(out_factors_, in_factors_, d),
                  chain_macs(reversed(out_factors_), reversed(in_factors_), reversed(d)));
}

int64_t MpoLinear::params() const {
  int64_t n = bias_.defined() ? bias_.numel() : 0;
  for (size_t l = 0; l < cores_.size(); ++l)
    n += bond_dim(l) * out_factors_[l] * in_factors_[l] * bond_dim(l + 1);
  return n;
}

}  // namespace nestscope
