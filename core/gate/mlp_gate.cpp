#include "core/gate/mlp_gate.h"

#include "core/cuda/dispatch.h"
#include "core/layers/low_rank_kernel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/gate/block_recovery.h"
#include "core/layers/cpu_gemm.h"
#include "core/layers/activation.h"

namespace nestscope {

namespace {

torch::Tensor cpu_f32(const torch::Tensor& t) {
  return t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
}

}  // namespace

MlpGate::MlpGate(const torch::Tensor& up, const torch::Tensor& up_bias, const torch::Tensor& down,
                 const torch::Tensor& down_bias, Activation activation, const GateOptions& options, int64_t layer,
                 const std::vector<int64_t>& order, const GatePrior* prior, const torch::Tensor& mul,
                 const torch::Tensor& mul_bias)
    : options_(options), activation_(activation) {
  check(up.dim() == 2 && down.dim() == 2 && down.size(0) == up.size(1) && down.size(1) == up.size(0),
        "gate: the MLP weights must be up [N, C] and down [C, N]");
  C_ = up.size(1);
  N_ = up.size(0);
  B_ = gate_block(options.block, N_);
  check(options.active > 0 && options.active <= 1,
        "gate: active fraction must be in (0, 1], got " + std::to_string(options.active));
  check(B_ >= 1 && N_ % B_ == 0, "gate: block size " + std::to_string(B_) + " does not divide the MLP width " +
                                     std::to_string(N_) + " into aligned blocks");
  n_ = N_ / B_;
  k_ = std::clamp<int64_t>(std::llround(options.active * double(n_)), 1, n_);
  m_base_ = options.measurements > 0 ? options.measurements : default_measurements(N_);
  check_gate_sizes(N_, B_, k_, m_base_);
  check(options.gamma >= 0 && std::isfinite(options.gamma), "gate: γ must be ≥ 0");
  check(options.hysteresis >= 0 && options.hysteresis < 1, "gate: hysteresis must be in [0, 1)");
  m_ = m_t_ = m_lo_ = m_base_;
  k_t_ = k_;
  if (options.gamma > 0) {
    m_lo_ = options.m_min > 0 ? options.m_min : std::max<int64_t>(1, m_base_ / 2);
    m_ = options.m_max > 0 ? options.m_max : std::min<int64_t>(4 * m_base_, N_);
    check(m_lo_ <= m_base_ && m_base_ <= m_ && m_ <= N_, "gate: need 1 ≤ m_min ≤ m ≤ m_max ≤ N, got " +
                                                               std::to_string(m_lo_) + ", " + std::to_string(m_base_) +
                                                               ", " + std::to_string(m_) + ", " + std::to_string(N_));
  }
  check(options.iters >= 1 && options.iters <= 50, "gate: IHT iterations must be in [1, 50], got " +
                                                       std::to_string(options.iters));
  if (order.empty()) {
    order_ = torch::arange(N_, torch::kInt64);
  } else {
    check(int64_t(order.size()) == N_, "gate: the neuron order has " + std::to_string(order.size()) +
                                           " entries for " + std::to_string(N_) + " neurons");
    order_ = torch::tensor(order, torch::kInt64);
    check(std::get<0>(order_.sort()).equal(torch::arange(N_, torch::kInt64)), "gate: the neuron order is not a permutation");
  }
  // Rows in gate order: a permutation of the hidden neurons leaves the MLP's function unchanged.
  up_ = cpu_f32(up).index_select(0, order_).contiguous();
  down_t_ = cpu_f32(down.t()).index_select(0, order_).contiguous();  // [N, C]
  up_bias_ = up_bias.defined() ? cpu_f32(up_bias).index_select(0, order_).contiguous() : torch::zeros({N_});
  down_bias_ = down_bias.defined() ? cpu_f32(down_bias) : torch::zeros({C_});
  if (mul.defined()) {
    check(mul.dim() == 2 && mul.size(0) == N_ && mul.size(1) == C_, "gate: the multiplied projection must be [N, C]");
    mul_ = cpu_f32(mul).index_select(0, order_).contiguous();
    mul_bias_ = mul_bias.defined() ? cpu_f32(mul_bias).index_select(0, order_).contiguous() : torch::zeros({N_});
    check(torch::isfinite(mul_).all().item<bool>(), "gate: the MLP weights contain NaN or infinite values");
  }
  check(torch::isfinite(up_).all().item<bool>() && torch::isfinite(down_t_).all().item<bool>(),
        "gate: the MLP weights contain NaN or infinite values");
  const uint64_t seed = options.seed + uint64_t(layer);
  rng_.seed(seed ^ 0xD1B54A32D192ED03ull);
  if (options.policy == GatePolicy::Sensing) {
    const bool needs_prior = options.recovery == Recovery::Mmse || options.measurement == MeasurementKind::Pca;
    check(!needs_prior || (prior && prior->mean.defined() && prior->cov.defined()),
          std::string("gate: ") + (options.recovery == Recovery::Mmse ? "MMSE recovery" : "PCA measurement") +
              " needs a calibration text first");
    torch::Tensor mean_x, cov_x;
    if (needs_prior) {
      mean_x = cpu_f32(prior->mean).to(torch::kFloat64).reshape({C_});  // [C]
      cov_x = cpu_f32(prior->cov).to(torch::kFloat64).reshape({C_, C_});  // [C, C]
    }
    if (options.measurement == MeasurementKind::Pca) {
      // The top-m eigenvectors of Σ_u = W Σ_x Wᵀ [N, N], for m ≤ C from a C×C problem
      // (principal_directions; an N×N eigh cost 4× more at N = 512 and dominated a budget move).
      auto w = up_.to(torch::kFloat64);                                   // [N, C]
      bool done = false;
      if (m_ <= C_) {
        // Only where all m directions carry variance; a rank-deficient Σ_u takes the N×N path.
        auto dirs = principal_directions(w, cov_x, m_);                  // [N, r]
        if (dirs.size(1) == m_) {
          phi_ = dirs.t().contiguous().to(torch::kFloat32);               // [m, N] orthonormal rows
          done = true;
        }
      }
      if (!done) {
        auto [evals, evecs] = torch::linalg::eigh(w.mm(cov_x).mm(w.t()), "L");  // ascending
        phi_ = evecs.narrow(1, N_ - m_, m_).flip({1}).t().contiguous().to(torch::kFloat32);  // [m, N] top-m
      }
    } else {
      phi_ = measurement_operator(m_, N_, seed, options.measurement);
    }
    folded_ = phi_.mm(up_).contiguous();  // [m, C]: measuring costs m·C, not N·C
    if (options.recovery == Recovery::Mmse) {
      // û = μ_u + K (y − P μ_x), K = Σ_u Φᵀ (Φ Σ_u Φᵀ + λI)⁻¹ with Φ Σ_u Φᵀ = P Σ_x Pᵀ.
      auto P = folded_.to(torch::kFloat64);                               // [m, C]
      s_ = P.mm(cov_x).mm(P.t());                                         // [m, m]
      const double ridge = 1e-6 * std::max(1e-12, s_.trace().item<double>() / double(m_));
      s_ += ridge * torch::eye(m_, torch::kFloat64);
      cross_ = up_.to(torch::kFloat64).mm(cov_x).mm(P.t());               // Σ_u Φᵀ [N, m]
      mean_u_ = up_.to(torch::kFloat64).mv(mean_x).to(torch::kFloat32).contiguous();  // [N]
      y_mean_ = P.mv(mean_x).to(torch::kFloat32).contiguous();           // [m]
      mmse_gain(m_t_);
    }
  }
  energy_.resize(size_t(n_));
  rank_.resize(size_t(n_));
  y_.resize(size_t(m_));
  g_.resize(size_t(N_));
  u_.resize(size_t(N_));
  z_.resize(size_t(N_));
}

float MlpGate::act(float v) const { return activate(v, activation_); }

const float* MlpGate::mmse_gain(int64_t m) {
  auto it = gains_.find(m);
  if (it == gains_.end()) {
    // K_m = Σ_u Φ_mᵀ (S_mm)⁻¹ from the leading block of S; for PCA rows S is diagonal, so K_m is
    // exactly the first m columns of the full K.
    auto K = torch::linalg::solve(s_.narrow(0, 0, m).narrow(1, 0, m), cross_.narrow(1, 0, m).t(), true);  // Kᵀ [m, N]
    it = gains_.emplace(m, K.to(torch::kFloat32).contiguous()).first;
  }
  return it->second.data_ptr<float>();
}

const float* MlpGate::mmse_offset(int64_t m) {
  auto it = offsets_.find(m);
  if (it == offsets_.end()) {
    auto K = torch::from_blob(const_cast<float*>(mmse_gain(m)), {m, N_});  // [m, N]
    auto c = mean_u_ + up_bias_ - torch::matmul(y_mean_.narrow(0, 0, m).unsqueeze(0), K).squeeze(0);
    it = offsets_.emplace(m, c.to(torch::kFloat32).contiguous()).first;
  }
  return it->second.data_ptr<float>();
}

void MlpGate::set_uncertainty(double h) {
  if (options_.gamma <= 0 || !std::isfinite(h)) return;
  h = std::clamp(h, 0.0, 1.0);
  const double scale = 1.0 + options_.gamma * h;
  const int64_t m = std::clamp<int64_t>(std::llround(double(m_base_) * scale), m_lo_, m_);
  const int64_t k = std::clamp<int64_t>(std::llround(double(k_) * scale), 1, n_);
  // Hysteresis: move only on a clear change.
  if (std::abs(double(m - m_t_)) > options_.hysteresis * double(m_t_)) m_t_ = m;
  if (std::abs(double(k - k_t_)) > options_.hysteresis * double(k_t_)) k_t_ = k;
}

void MlpGate::set_static_energy(const torch::Tensor& neuron_energy) {
  check(neuron_energy.numel() == N_, "gate: static energies must have one entry per neuron (" + std::to_string(N_) + ")");
  auto e = neuron_energy.detach().to(torch::kCPU, torch::kFloat64).reshape({N_}).index_select(0, order_);
  static_energy_ = e.view({n_, B_}).sum(1).to(torch::kFloat32).contiguous();  // [n], gate order
}

torch::Tensor MlpGate::block_energies(const torch::Tensor& x) const {
  auto xr = cpu_f32(x).view({-1, C_});
  auto z = activate(torch::addmm(up_bias_, xr, up_.t()), activation_);  // [rows, N]
  if (mul_.defined()) z = z * torch::addmm(mul_bias_, xr, mul_.t());
  return block_energy(z.to(torch::kFloat64), B_);  // [rows, n]
}

void MlpGate::block_activation_energy(const float* z) {
  for (int64_t b = 0; b < n_; ++b) {
    const float* zb = z + b * B_;
    float e = 0;
    if (activation_ == Activation::Relu) {
      for (int64_t j = 0; j < B_; ++j) {
        const float a = std::max(zb[j], 0.f);
        e += a * a;
      }
    } else {
      for (int64_t j = 0; j < B_; ++j) {
        const float a = act(zb[j]);
        e += a * a;
      }
    }
    energy_[size_t(b)] = e;
  }
}

void MlpGate::keep_top_k() {
  std::iota(rank_.begin(), rank_.end(), 0);
  auto stronger = [&](int64_t a, int64_t b) {
    return energy_[size_t(a)] > energy_[size_t(b)] || (energy_[size_t(a)] == energy_[size_t(b)] && a < b);
  };
  if (k_t_ < n_) std::nth_element(rank_.begin(), rank_.begin() + k_t_, rank_.end(), stronger);
  chosen_.assign(rank_.begin(), rank_.begin() + k_t_);
  std::sort(chosen_.begin(), chosen_.end());
}

int64_t MlpGate::macs_estimate() const {
  const int64_t run = projections() * k_t_ * B_ * C_;
  switch (options_.policy) {
    case GatePolicy::Off:
      return dense_macs();
    case GatePolicy::Sensing:
      return m_t_ * C_ + (options_.recovery == Recovery::Mmse ? m_t_ * N_ : options_.iters * m_t_ * N_) + run;
    case GatePolicy::Oracle:
      return (projections() - 1) * N_ * C_ + run;
    case GatePolicy::Static:
    case GatePolicy::Random:
      break;
  }
  return run;
}

std::vector<int64_t> MlpGate::choose(const float* x, int64_t* macs) { return select(x, macs); }

const std::vector<int64_t>& MlpGate::select(const float* x, int64_t* macs) {
  const float* bias = up_bias_.data_ptr<float>();
  int64_t spent = 0;
  switch (options_.policy) {
    case GatePolicy::Off:
      chosen_.resize(size_t(n_));
      std::iota(chosen_.begin(), chosen_.end(), 0);
      break;
    case GatePolicy::Sensing: {
      // The first m_t rows of Φ: a prefix of the folded operator, like an NSN rank.
      const int64_t m = m_t_;
      if (options_.recovery == Recovery::Mmse && low_rank_kernel_applies(1, C_, N_, m)) {
        // Measurement and MMSE recovery as one fused low-rank product: ẑ = c_m + (P_m·x)·K_m.
        low_rank_kernel(1, C_, N_, m, x, folded_.data_ptr<float>(), mmse_gain(m), N_, mmse_offset(m), z_.data());
        spent += m * C_ + m * N_;
        block_activation_energy(z_.data());
        keep_top_k();
        break;
      }
      cpu_gemm_nt_raw(1, m, C_, x, folded_.data_ptr<float>(), C_, 0.f, y_.data());  // y = P_m·x [m]
      spent += m * C_;
      if (options_.recovery == Recovery::Mmse) {  // û = μ_u + K_m (y − ȳ), one axpy-shaped gemv
        const float* ym = y_mean_.data_ptr<float>();
        for (int64_t i = 0; i < m; ++i) y_[size_t(i)] -= ym[i];
        std::copy_n(mean_u_.data_ptr<float>(), N_, g_.data());
        cpu_gemm_nn_raw(1, N_, m, y_.data(), mmse_gain(m), N_, 1.f, g_.data());
        spent += m * N_;
      } else {  // block IHT; one iteration = Φᵀy
        spent += block_iht_raw(m, N_, phi_.data_ptr<float>(), y_.data(), B_, k_t_, options_.iters, u_.data(), g_.data());
        if (m < m_) {  // Φ's rows are scaled for m_ measurements: E[Φ_mᵀΦ_m] = (m / m_)·I
          const float s = float(m_) / float(m);
          for (auto& v : g_) v *= s;
        }
      }
      // ẑ = û + b: the bias is known exactly.
      for (int64_t j = 0; j < N_; ++j) z_[size_t(j)] = g_[size_t(j)] + bias[j];
      block_activation_energy(z_.data());
      keep_top_k();
      break;
    }
    case GatePolicy::Oracle:
      spent += select_oracle(x);
      break;
    case GatePolicy::Static:
      check(static_energy_.defined(), "gate: the static policy needs a calibration text first");
      std::copy_n(static_energy_.data_ptr<float>(), n_, energy_.data());
      keep_top_k();
      break;
    case GatePolicy::Random: {
      std::iota(rank_.begin(), rank_.end(), 0);
      for (int64_t i = 0; i < k_t_; ++i)  // partial Fisher–Yates with our own generator
        std::swap(rank_[size_t(i)], rank_[size_t(i + int64_t(rng_() % uint64_t(n_ - i)))]);
      chosen_.assign(rank_.begin(), rank_.begin() + k_t_);
      std::sort(chosen_.begin(), chosen_.end());
      break;
    }
  }
  for (int64_t b : forced_)  // forced on: added to whatever was chosen, order kept
    if (!std::binary_search(chosen_.begin(), chosen_.end(), b)) chosen_.insert(std::lower_bound(chosen_.begin(), chosen_.end(), b), b);
  if (!forced_off_.empty())
    chosen_.erase(std::remove_if(chosen_.begin(), chosen_.end(),
                                 [&](int64_t b) { return std::binary_search(forced_off_.begin(), forced_off_.end(), b); }),
                  chosen_.end());
  if (macs) *macs = spent;
  return chosen_;
}

std::vector<int64_t> MlpGate::checked_blocks(std::vector<int64_t> blocks, const char* what) const {
  for (int64_t b : blocks)
    check(b >= 0 && b < n_, std::string("gate: ") + what + " block " + std::to_string(b) + " is outside [0, " +
                                std::to_string(n_) + ")");
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  return blocks;
}

void MlpGate::set_forced_on(std::vector<int64_t> blocks) { forced_ = checked_blocks(std::move(blocks), "forced"); }

void MlpGate::set_forced_off(std::vector<int64_t> blocks) {
  forced_off_ = checked_blocks(std::move(blocks), "forced-off");
}

void MlpGate::run_blocks(const float* x, const std::vector<int64_t>& blocks, float* y) {
  std::copy_n(down_bias_.data_ptr<float>(), C_, y);
  const float* up = up_.data_ptr<float>();
  const float* down_t = down_t_.data_ptr<float>();
  const float* bias = up_bias_.data_ptr<float>();
  // The fused kernel: a run's up rows, bias, activation and down columns in one pass, in chunks of
  // at most kLowRankKernelMaxRank neurons (no per-run library calls, the middle in registers/L1).
  // Measured faster while the MLP's weights fit in a core's L2 (PicoGPT: 512 KiB, a 50% gate's
  // blocks 3.5 → 2.4 µs); beyond, the gemv streams from memory and BLAS's prefetching wins
  // (GPT-2 small: 19 MiB, 100 → 125–150 µs fused), so large MLPs keep the BLAS calls.
  const bool fits_l2 = 2 * N_ * C_ * int64_t(sizeof(float)) <= (int64_t(1) << 20);
  const bool fused = fits_l2 && !mul_.defined() &&
                     (activation_ == Activation::Relu || activation_ == Activation::Gelu) &&
                     low_rank_kernel_applies(1, C_, C_, std::min<int64_t>(B_, kLowRankKernelMaxRank));
  const LowRankAct fused_act = activation_ == Activation::Relu ? LowRankAct::Relu : LowRankAct::Gelu;
  // (first neuron, neurons) of each run of adjacent blocks; a reference to this thread's scratch, so
  // the worker threads below read the caller's runs (a thread_local named in a lambda is their own).
  thread_local std::vector<std::pair<int64_t, int64_t>> scratch;
  std::vector<std::pair<int64_t, int64_t>>& runs = scratch;
  runs.clear();
  for (size_t i = 0; i < blocks.size();) {
    size_t j = i + 1;  // a run of adjacent blocks is one pair of products
    while (j < blocks.size() && blocks[j] == blocks[j - 1] + 1) ++j;
    runs.emplace_back(blocks[i] * B_, int64_t(j - i) * B_);
    i = j;
  }
  if (fused) {
    for (const auto& [r0, len] : runs)
      for (int64_t c = 0; c < len; c += kLowRankKernelMaxRank) {
        const int64_t w = std::min(kLowRankKernelMaxRank, len - c);
        low_rank_kernel_ex(1, C_, C_, w, x, up + (r0 + c) * C_, bias + r0 + c, fused_act, down_t + (r0 + c) * C_, C_,
                           nullptr, true, y);
      }
    return;
  }
  auto up_run = [&](int64_t r0, int64_t len) {  // z_run = act(W_up[run]·x + b_up[run]) (⊙ the multiplier)
    float* z = z_.data() + r0;
    std::copy_n(bias + r0, len, z);
    cpu_gemm_nt_raw(1, len, C_, x, up + r0 * C_, C_, 1.f, z);
    if (activation_ == Activation::Relu) {
      for (int64_t t = 0; t < len; ++t) z[t] = std::max(z[t], 0.f);
    } else {
      for (int64_t t = 0; t < len; ++t) z[t] = act(z[t]);
    }
    if (mul_.defined()) {  // gated: ⊙ (W_mul[run]·x + b_mul[run])
      float* u = u_.data() + r0;
      std::copy_n(mul_bias_.data_ptr<float>() + r0, len, u);
      cpu_gemm_nt_raw(1, len, C_, x, mul_.data_ptr<float>() + r0 * C_, C_, 1.f, u);
      for (int64_t t = 0; t < len; ++t) z[t] *= u[t];
    }
  };
  auto down_cols = [&](int64_t c0, int64_t cn) {  // y[c0, c0+cn) += W_down[c0.., run]·z_run, every run
    for (const auto& [r0, len] : runs) cpu_gemm_nn_raw(1, cn, len, z_.data() + r0, down_t + r0 * C_ + c0, C_, 1.f, y + c0);
  };
  // A large MLP's chosen blocks are megabytes of weights: the up products go over the threads by
  // run, the down products by output columns (each thread its own slice of y), as a dense
  // projection's gemv does (cpu_gemm.cpp), so a gated step reads its weights at the same speed.
  int64_t active = 0;
  for (const auto& r : runs) active += r.second;
  const int64_t threads = at::get_num_threads();
  if (threads > 1 && active * C_ * projections() >= (int64_t(1) << 18) && !at::in_parallel_region()) {
    at::parallel_for(0, int64_t(runs.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) up_run(runs[size_t(i)].first, runs[size_t(i)].second);
    });
    const int64_t per = (C_ / threads + 15) / 16 * 16;
    at::parallel_for(0, (C_ + per - 1) / per, 1, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; ++s) down_cols(s * per, std::min(per, C_ - s * per));
    });
    return;
  }
  for (const auto& [r0, len] : runs) up_run(r0, len);
  down_cols(0, C_);
}

int64_t MlpGate::select_oracle(const float* x) {
  std::copy_n(up_bias_.data_ptr<float>(), N_, z_.data());
  cpu_gemm_nt_raw(1, N_, C_, x, up_.data_ptr<float>(), C_, 1.f, z_.data());  // z = W_up·x + b
  if (mul_.defined()) {  // the true hidden act(z) ⊙ (W_mul·x + b): energies of the product
    std::copy_n(mul_bias_.data_ptr<float>(), N_, u_.data());
    cpu_gemm_nt_raw(1, N_, C_, x, mul_.data_ptr<float>(), C_, 1.f, u_.data());
    for (int64_t j = 0; j < N_; ++j) z_[size_t(j)] = act(z_[size_t(j)]) * u_[size_t(j)];
    for (int64_t b = 0; b < n_; ++b) {
      float e = 0;
      for (int64_t j = 0; j < B_; ++j) e += z_[size_t(b * B_ + j)] * z_[size_t(b * B_ + j)];
      energy_[size_t(b)] = e;
    }
  } else {
    block_activation_energy(z_.data());
  }
  keep_top_k();
  return (projections() - 1) * N_ * C_;
}

std::vector<int64_t> MlpGate::oracle_blocks(const float* x) {
  select_oracle(x);
  return chosen_;
}

void MlpGate::forward_raw(int64_t rows, const float* x, float* y, std::vector<MlpGateTrace>* trace, GateStats* stats) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t overhead = 0;
    const auto& chosen = select(x + r * C_, &overhead);
    run_blocks(x + r * C_, chosen, y + r * C_);
    if (!stats && !trace) continue;
    const int64_t macs = overhead + projections() * int64_t(chosen.size()) * B_ * C_;
    std::vector<int64_t> blocks = chosen;  // a copy: oracle_blocks below reuses the scratch
    if (stats) {
      ++stats->rows;
      stats->macs += double(macs);
      stats->dense_macs += double(dense_macs());
      stats->overhead_macs += double(overhead);
      if (options_.policy != GatePolicy::Oracle && options_.policy != GatePolicy::Off) {
        stats->f1 += support_f1(blocks, oracle_blocks(x + r * C_));
        ++stats->f1_rows;
      }
    }
    if (trace)
      trace->push_back({std::move(blocks), options_.policy == GatePolicy::Sensing ? m_t_ : 0, macs,
                        trace_oracle ? oracle_blocks(x + r * C_) : std::vector<int64_t>{}});
  }
}

bool MlpGate::device_path_applies(const torch::Tensor& x, bool stats) const {
  return x.is_cuda() && !stats && forced_.empty() && forced_off_.empty() &&
         (options_.policy == GatePolicy::Oracle ||
          (options_.policy == GatePolicy::Sensing && options_.recovery == Recovery::Mmse)) &&
         cuda_kernels_ready();
}

torch::Tensor MlpGate::forward_device(const torch::Tensor& x, std::vector<MlpGateTrace>* trace) {
  if (device_.device != x.device()) {
    DeviceCopy d;
    d.device = x.device();
    auto on = [&](const torch::Tensor& t) { return t.defined() ? t.to(x.device()).contiguous() : t; };
    d.up = on(up_), d.up_bias = on(up_bias_), d.mul = on(mul_), d.mul_bias = on(mul_bias_);
    d.down_t = on(down_t_), d.down_bias = on(down_bias_), d.folded = on(folded_);
    device_ = std::move(d);
  }
  const auto& d = device_;
  auto xin = x.reshape({-1, C_}).to(torch::kFloat32).contiguous();
  const int64_t rows = xin.size(0);
  auto act_t = [&](const torch::Tensor& z) { return activate(z, activation_); };
  auto true_hidden = [&] {
    auto h = act_t(torch::addmm(d.up_bias, xin, d.up.t()));
    return d.mul.defined() ? h * torch::addmm(d.mul_bias, xin, d.mul.t()) : h;
  };
  auto top_blocks = [&](const torch::Tensor& h) {  // ascending block ids of the k_t largest ‖h_b‖²
    auto energy = h.view({rows, n_, B_}).square().sum(-1);  // [rows, n]
    return std::get<0>(std::get<1>(energy.topk(k_t_, -1)).sort(-1));
  };
  torch::Tensor h;  // [rows, N]: what the block energies are taken of
  int64_t overhead = 0;
  if (options_.policy == GatePolicy::Sensing) {
    const int64_t m = m_t_;
    auto it = device_.mmse.find(m);
    if (it == device_.mmse.end()) {
      const auto* K = mmse_gain(m);
      const auto* c = mmse_offset(m);
      it = device_.mmse
               .emplace(m, std::pair{torch::from_blob(const_cast<float*>(K), {m, N_}).to(x.device()),
                                     torch::from_blob(const_cast<float*>(c), {N_}).to(x.device())})
               .first;
    }
    // ẑ = c_m + (P_m·x)·K_m, the fused measurement + MMSE recovery of the host path.
    h = act_t(torch::addmm(it->second.second, torch::matmul(xin, d.folded.narrow(0, 0, m).t()), it->second.first));
    overhead = m * C_ + m * N_;
  } else {  // Oracle: the true hidden activations
    h = true_hidden();
    overhead = (projections() - 1) * N_ * C_;
  }
  auto blocks = top_blocks(h);
  auto y = gathered_mlp_cuda(xin, blocks.to(torch::kInt32), B_, d.up, d.up_bias, d.mul, d.mul_bias, d.down_t,
                             d.down_bias, activation_);
  if (trace) {
    auto chosen = blocks.cpu();
    torch::Tensor oracle;
    if (trace_oracle) oracle = options_.policy == GatePolicy::Oracle ? chosen : top_blocks(true_hidden()).cpu();
    const int64_t macs = overhead + projections() * k_t_ * B_ * C_;
    auto row = [](const torch::Tensor& t, int64_t r) {
      const int64_t* p = t.data_ptr<int64_t>() + r * t.size(1);
      return std::vector<int64_t>(p, p + t.size(1));
    };
    for (int64_t r = 0; r < rows; ++r)
      trace->push_back({row(chosen, r), options_.policy == GatePolicy::Sensing ? m_t_ : 0, macs,
                        oracle.defined() ? row(oracle, r) : std::vector<int64_t>{}});
  }
  return y.view(x.sizes()).to(x.scalar_type());
}

torch::Tensor MlpGate::forward(const torch::Tensor& x, std::vector<MlpGateTrace>* trace, GateStats* stats) {
  check(x.size(-1) == C_, "gate: input width " + std::to_string(x.size(-1)) + " is not the model's " +
                              std::to_string(C_));
  if (device_path_applies(x, stats != nullptr)) return forward_device(x, trace);
  auto xin = cpu_f32(x);
  const int64_t rows = xin.numel() / C_;
  auto y = torch::empty({rows, C_});
  forward_raw(rows, xin.data_ptr<float>(), y.data_ptr<float>(), trace, stats);
  return y.view(x.sizes()).to(x.device(), x.scalar_type());
}

}  // namespace nestscope
