#include "core/gate/mlp_gate.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/gate/block_recovery.h"
#include "core/layers/cpu_gemm.h"

namespace nestscope {

const char* gate_policy_name(GatePolicy p) {
  switch (p) {
    case GatePolicy::Off: return "off";
    case GatePolicy::Sensing: return "sensing";
    case GatePolicy::Oracle: return "oracle";
    case GatePolicy::Static: return "static";
    case GatePolicy::Random: return "random";
  }
  return "?";
}

GatePolicy parse_gate_policy(const char* name) {
  for (GatePolicy p : {GatePolicy::Off, GatePolicy::Sensing, GatePolicy::Oracle, GatePolicy::Static, GatePolicy::Random})
    if (std::string(name) == gate_policy_name(p)) return p;
  throw Error(std::string("unknown gate policy '") + name + "' (off, sensing, oracle, static, random)");
}

namespace {

torch::Tensor cpu_f32(const torch::Tensor& t) {
  return t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
}

}  // namespace

MlpGate::MlpGate(const torch::Tensor& up, const torch::Tensor& up_bias, const torch::Tensor& down,
                 const torch::Tensor& down_bias, Activation activation, const GateOptions& options, int64_t layer)
    : options_(options), activation_(activation) {
  check(up.dim() == 2 && down.dim() == 2 && down.size(0) == up.size(1) && down.size(1) == up.size(0),
        "gate: the MLP weights must be up [N, C] and down [C, N]");
  C_ = up.size(1);
  N_ = up.size(0);
  B_ = options.block;
  check(options.active > 0 && options.active <= 1,
        "gate: active fraction must be in (0, 1], got " + std::to_string(options.active));
  check(B_ >= 1 && N_ % B_ == 0, "gate: block size " + std::to_string(B_) + " does not divide the MLP width " +
                                     std::to_string(N_) + " into aligned blocks");
  n_ = N_ / B_;
  k_ = std::clamp<int64_t>(std::llround(options.active * double(n_)), 1, n_);
  m_ = options.measurements > 0 ? options.measurements : std::max<int64_t>(1, N_ / 4);
  check_gate_sizes(N_, B_, k_, m_);
  check(options.iters >= 1 && options.iters <= 50, "gate: IHT iterations must be in [1, 50], got " +
                                                       std::to_string(options.iters));
  up_ = cpu_f32(up);
  down_t_ = cpu_f32(down.t());  // [N, C]
  up_bias_ = up_bias.defined() ? cpu_f32(up_bias) : torch::zeros({N_});
  down_bias_ = down_bias.defined() ? cpu_f32(down_bias) : torch::zeros({C_});
  check(torch::isfinite(up_).all().item<bool>() && torch::isfinite(down_t_).all().item<bool>(),
        "gate: the MLP weights contain NaN or infinite values");
  const uint64_t seed = options.seed + uint64_t(layer);
  rng_.seed(seed ^ 0xD1B54A32D192ED03ull);
  if (options.policy == GatePolicy::Sensing) {
    phi_ = measurement_operator(m_, N_, seed, options.gaussian ? MeasurementKind::Gaussian : MeasurementKind::Rademacher);
    folded_ = phi_.mm(up_).contiguous();  // [m, C]: measuring costs m·C, not N·C
  }
  y_.resize(size_t(m_));
  g_.resize(size_t(N_));
  u_.resize(size_t(N_));
  z_.resize(size_t(N_));
}

float MlpGate::act(float v) const {
  if (activation_ == Activation::Relu) return v > 0 ? v : 0.f;
  return 0.5f * v * (1.f + std::erf(v * 0.70710678f));  // exact GELU, as torch::gelu
}

void MlpGate::set_static_energy(const torch::Tensor& energy) {
  check(energy.numel() == n_, "gate: static energies must have one entry per block (" + std::to_string(n_) + ")");
  static_blocks_ = top_blocks(energy, k_);
}

torch::Tensor MlpGate::block_energies(const torch::Tensor& x) const {
  auto z = torch::addmm(up_bias_, cpu_f32(x).view({-1, C_}), up_.t());  // [rows, N]
  z = activation_ == Activation::Relu ? torch::relu(z) : torch::gelu(z);
  return block_energy(z.to(torch::kFloat64), B_);  // [rows, n]
}

std::vector<int64_t> MlpGate::choose(const float* x, int64_t* macs) {
  const float* bias = up_bias_.data_ptr<float>();
  int64_t spent = 0;
  std::vector<double> energy(static_cast<size_t>(n_), 0.0);
  auto energies_of = [&](const float* z) {
    for (int64_t b = 0; b < n_; ++b) {
      double e = 0;
      for (int64_t j = b * B_; j < (b + 1) * B_; ++j) e += double(act(z[j])) * double(act(z[j]));
      energy[size_t(b)] = e;
    }
  };
  auto top_k = [&] {
    std::vector<int64_t> idx(static_cast<size_t>(n_));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k_, idx.end(), [&](int64_t a, int64_t b) {
      return energy[size_t(a)] > energy[size_t(b)] || (energy[size_t(a)] == energy[size_t(b)] && a < b);
    });
    idx.resize(size_t(k_));
    std::sort(idx.begin(), idx.end());
    return idx;
  };
  std::vector<int64_t> chosen;
  switch (options_.policy) {
    case GatePolicy::Off:
      chosen.resize(size_t(n_));
      std::iota(chosen.begin(), chosen.end(), 0);
      break;
    case GatePolicy::Sensing: {
      cpu_gemm_nt_raw(1, m_, C_, x, folded_.data_ptr<float>(), C_, 0.f, y_.data());  // y = P·x [m]
      spent += m_ * C_;
      // û from y (block IHT; one iteration = Φᵀy), then ẑ = û + b: the bias is known exactly.
      spent += block_iht_raw(m_, N_, phi_.data_ptr<float>(), y_.data(), B_, k_, options_.iters, u_.data(), g_.data());
      for (int64_t j = 0; j < N_; ++j) z_[size_t(j)] = g_[size_t(j)] + bias[j];
      energies_of(z_.data());
      chosen = top_k();
      break;
    }
    case GatePolicy::Oracle:
      cpu_gemm_nt_raw(1, N_, C_, x, up_.data_ptr<float>(), C_, 0.f, z_.data());
      for (int64_t j = 0; j < N_; ++j) z_[size_t(j)] += bias[j];
      spent += N_ * C_;
      energies_of(z_.data());
      chosen = top_k();
      break;
    case GatePolicy::Static:
      check(!static_blocks_.empty(), "gate: the static policy needs a calibration text first");
      chosen = static_blocks_;
      break;
    case GatePolicy::Random: {
      std::vector<int64_t> idx(static_cast<size_t>(n_));
      std::iota(idx.begin(), idx.end(), 0);
      for (int64_t i = 0; i < k_; ++i)  // partial Fisher–Yates with our own generator
        std::swap(idx[size_t(i)], idx[size_t(i + int64_t(rng_() % uint64_t(n_ - i)))]);
      chosen.assign(idx.begin(), idx.begin() + k_);
      std::sort(chosen.begin(), chosen.end());
      break;
    }
  }
  if (macs) *macs = spent;
  return chosen;
}

void MlpGate::run_blocks(const float* x, const std::vector<int64_t>& blocks, float* y) {
  std::copy_n(down_bias_.data_ptr<float>(), C_, y);
  const float* up = up_.data_ptr<float>();
  const float* down_t = down_t_.data_ptr<float>();
  const float* bias = up_bias_.data_ptr<float>();
  for (size_t i = 0; i < blocks.size();) {
    size_t j = i + 1;  // a run of adjacent blocks is one pair of products
    while (j < blocks.size() && blocks[j] == blocks[j - 1] + 1) ++j;
    const int64_t r0 = blocks[i] * B_, len = int64_t(j - i) * B_;
    float* z = z_.data() + r0;
    cpu_gemm_nt_raw(1, len, C_, x, up + r0 * C_, C_, 0.f, z);  // z_run = W_up[run]·x
    for (int64_t t = 0; t < len; ++t) z[t] = act(z[t] + bias[r0 + t]);
    cpu_gemm_nn_raw(1, C_, len, z, down_t + r0 * C_, C_, 1.f, y);  // y += W_down[:, run]·act(z_run)
    i = j;
  }
}

void MlpGate::forward_raw(int64_t rows, const float* x, float* y, std::vector<MlpGateTrace>* trace) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t macs = 0;
    auto blocks = choose(x + r * C_, &macs);
    run_blocks(x + r * C_, blocks, y + r * C_);
    if (trace) {
      macs += 2 * int64_t(blocks.size()) * B_ * C_;
      trace->push_back({std::move(blocks), options_.policy == GatePolicy::Sensing ? m_ : 0, macs});
    }
  }
}

torch::Tensor MlpGate::forward(const torch::Tensor& x, std::vector<MlpGateTrace>* trace) {
  check(x.size(-1) == C_, "gate: input width " + std::to_string(x.size(-1)) + " is not the model's " +
                              std::to_string(C_));
  auto xin = cpu_f32(x);
  const int64_t rows = xin.numel() / C_;
  auto y = torch::empty({rows, C_});
  forward_raw(rows, xin.data_ptr<float>(), y.data_ptr<float>(), trace);
  return y.view(x.sizes()).to(x.device(), x.scalar_type());
}

}  // namespace nestscope
