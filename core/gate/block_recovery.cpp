#include "core/gate/block_recovery.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "core/layers/cpu_gemm.h"

namespace nestscope {

void check_gate_sizes(int64_t n, int64_t block, int64_t k, int64_t m) {
  check(block >= 1 && n % block == 0, "block size " + std::to_string(block) + " does not divide the " +
                                          std::to_string(n) + " units into aligned blocks");
  const int64_t blocks = n / block;
  check(k >= 1 && k <= blocks,
        "active blocks k = " + std::to_string(k) + " is outside [1, " + std::to_string(blocks) + "]");
  check(m >= 1 && m <= n, "measurements m = " + std::to_string(m) + " is outside [1, " + std::to_string(n) + "]");
}

torch::Tensor measurement_operator(int64_t m, int64_t n, uint64_t seed, MeasurementKind kind) {
  check(kind != MeasurementKind::Pca, "a PCA measurement operator comes from a calibration prior, not a seed");
  check(m >= 1 && n >= 1, "a measurement operator needs m ≥ 1 and n ≥ 1, got " + std::to_string(m) + "×" +
                              std::to_string(n));
  // Our own generator and transform (not torch's, not std::normal_distribution, whose output
  // differs between standard libraries) so a seed means the same Φ everywhere.
  std::mt19937_64 rng(seed);
  auto phi = torch::empty({m, n}, torch::kFloat32);  // [m, N]
  float* p = phi.data_ptr<float>();
  const double scale = 1.0 / std::sqrt(double(m));
  const int64_t count = m * n;
  if (kind == MeasurementKind::Rademacher) {
    for (int64_t i = 0; i < count; ++i) p[i] = float((rng() >> 63) ? scale : -scale);
  } else {
    constexpr double two_pi = 6.283185307179586;
    auto uniform = [&] { return (double(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0); };  // (0, 1)
    for (int64_t i = 0; i < count; i += 2) {  // Box–Muller: two normals per pair of uniforms
      const double r = std::sqrt(-2.0 * std::log(uniform())), a = two_pi * uniform();
      p[i] = float(scale * r * std::cos(a));
      if (i + 1 < count) p[i + 1] = float(scale * r * std::sin(a));
    }
  }
  return phi;
}

torch::Tensor principal_directions(const torch::Tensor& w, const torch::Tensor& cov_x, int64_t m) {
  const int64_t C = w.size(1);
  auto [ex, vx] = torch::linalg::eigh(cov_x, "L");   // Σ_x = Vx diag(ex) Vxᵀ
  auto M = w.mm(vx * ex.clamp_min(0).sqrt());         // [N, C], Σ_u = M Mᵀ
  auto [e, v] = torch::linalg::eigh(M.t().mm(M), "L");  // ascending [C], [C, C]
  const double floor = 1e-10 * std::max(1e-300, e[C - 1].item<double>());
  const int64_t r = std::min<int64_t>(m, (e > floor).sum().item<int64_t>());
  return (M.mm(v.narrow(1, C - r, r)) / e.narrow(0, C - r, r).sqrt()).flip({1});  // [N, r], descending
}

torch::Tensor block_energy(const torch::Tensor& z, int64_t block) {
  const int64_t N = z.size(-1);
  check(block >= 1 && N % block == 0, "block size " + std::to_string(block) + " does not divide " + std::to_string(N));
  std::vector<int64_t> shape(z.sizes().begin(), z.sizes().end());
  shape.back() = N / block;
  shape.push_back(block);
  return z.reshape(shape).square().sum(-1);  // [..., N/B]
}

namespace {
// Indices of `energy` [n] by decreasing value, the first k of them (k = n: all). Ties: lower first.
std::vector<int64_t> ranked(const torch::Tensor& energy, int64_t k) {
  auto e = energy.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t n = e.numel();
  check(k >= 1 && k <= n, "top-k: k = " + std::to_string(k) + " is outside [1, " + std::to_string(n) + "]");
  const double* v = e.data_ptr<double>();
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  idx.resize(size_t(k));
  return idx;
}
}  // namespace

std::vector<int64_t> top_blocks(const torch::Tensor& energy, int64_t k) {
  auto idx = ranked(energy, k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::vector<std::vector<int64_t>> head_support(const torch::Tensor& importance, double active, bool global) {
  check(importance.dim() == 2 && importance.numel() > 0, "head support: importance must be [layers, heads]");
  check(active > 0 && active <= 1, "head support: the kept fraction must be in (0, 1], got " + std::to_string(active));
  const int64_t L = importance.size(0), H = importance.size(1);
  std::vector<std::vector<int64_t>> keep(static_cast<size_t>(L));
  if (!global) {
    const int64_t k = std::clamp<int64_t>(std::llround(active * double(H)), 1, H);
    for (int64_t l = 0; l < L; ++l) keep[size_t(l)] = top_blocks(importance[l], k);
    return keep;
  }
  const int64_t total = std::clamp<int64_t>(std::llround(active * double(L * H)), L, L * H);
  const auto order = ranked(importance.reshape({-1}), L * H);
  int64_t taken = 0;
  for (int64_t i : order)  // every layer's best head first
    if (keep[size_t(i / H)].empty()) keep[size_t(i / H)].push_back(i % H), ++taken;
  for (size_t j = 0; j < order.size() && taken < total; ++j) {
    auto& k = keep[size_t(order[j] / H)];
    if (std::find(k.begin(), k.end(), order[j] % H) == k.end()) k.push_back(order[j] % H), ++taken;
  }
  for (auto& k : keep) std::sort(k.begin(), k.end());
  return keep;
}

namespace {

void check_problem(const torch::Tensor& phi, const torch::Tensor& y, int64_t block, int64_t k) {
  check(phi.dim() == 2 && y.dim() == 1 && phi.size(0) == y.size(0) && phi.size(0) >= 1,
        "recovery: Φ must be [m, N] and y [m] with the same m ≥ 1");
  check_gate_sizes(phi.size(1), block, k, 1);  // any m: an overdetermined system is fine here
}

// Column indices of the chosen blocks, in block order.
torch::Tensor block_columns(const std::vector<int64_t>& blocks, int64_t block) {
  std::vector<int64_t> cols;
  for (int64_t b : blocks)
    for (int64_t j = 0; j < block; ++j) cols.push_back(b * block + j);
  return torch::tensor(cols, torch::kInt64);
}

}  // namespace

torch::Tensor block_omp(const torch::Tensor& phi, const torch::Tensor& y, int64_t block, int64_t k) {
  check_problem(phi, y, block, k);
  check(k * block <= phi.size(0), "block OMP needs m ≥ k·B for its least-squares fit: m = " +
                                      std::to_string(phi.size(0)) + ", k·B = " + std::to_string(k * block));
  auto A = phi.to(torch::kFloat64);  // [m, N]
  auto yy = y.to(torch::kFloat64);   // [m]
  const int64_t N = A.size(1);
  std::vector<int64_t> chosen;
  auto r = yy.clone();
  torch::Tensor cols, coef;
  const double tol = 1e-10 * std::max(1e-30, yy.norm().item<double>());
  for (int64_t it = 0; it < k; ++it) {
    auto e = block_energy(A.t().mv(r), block);  // [n] correlation energy of each block
    for (int64_t b : chosen) e[b] = -1.0;
    chosen.push_back(e.argmax().item<int64_t>());
    std::sort(chosen.begin(), chosen.end());
    cols = block_columns(chosen, block);
    auto As = A.index_select(1, cols);  // [m, |S|]
    // Least squares by the normal equations in float64; |S| ≤ m, Φ's columns are incoherent.
    coef = torch::linalg::solve(As.t().mm(As), As.t().mv(yy), true);  // [|S|]
    r = yy - As.mv(coef);
    if (r.norm().item<double>() <= tol) break;
  }
  auto z = torch::zeros({N}, torch::kFloat64);
  z.index_put_({cols}, coef);
  return z.to(y.scalar_type());
}

namespace {

// The k blocks of largest energy of v [N] (blocks of B), ascending; the gate's and IHT's H_k.
std::vector<int64_t> strongest_blocks(const float* v, int64_t N, int64_t B, int64_t k) {
  const int64_t n = N / B;
  std::vector<double> e(static_cast<size_t>(n), 0.0);
  for (int64_t j = 0; j < N; ++j) e[size_t(j / B)] += double(v[j]) * double(v[j]);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
    return e[size_t(a)] > e[size_t(b)] || (e[size_t(a)] == e[size_t(b)] && a < b);
  });
  idx.resize(size_t(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

double squared_norm(const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(v[i]) * double(v[i]);
  return s;
}

}  // namespace

int64_t block_iht_raw(int64_t m, int64_t N, const float* phi, const float* y, int64_t block, int64_t k, int64_t iters,
                      float* z, float* g) {
  int64_t macs = 0;
  std::vector<float> r(y, y + m), grad(static_cast<size_t>(N)), gs(static_cast<size_t>(N)), phig(static_cast<size_t>(m));
  std::fill_n(z, N, 0.f);
  double res = squared_norm(y, m);
  std::vector<int64_t> support;
  for (int64_t t = 0; t < iters; ++t) {
    cpu_gemm_nn_raw(1, N, m, r.data(), phi, N, 0.f, grad.data());  // Φᵀr [N]
    macs += m * N;
    double mu = 1.0;
    if (t > 0 || iters > 1) {
      // μ = ‖g_S‖² / ‖Φ g_S‖² on the current support (the strongest blocks of the gradient at first).
      if (support.empty()) support = strongest_blocks(grad.data(), N, block, k);
      std::fill(gs.begin(), gs.end(), 0.f);
      for (int64_t b : support) std::copy_n(grad.begin() + b * block, block, gs.begin() + b * block);
      cpu_gemm_nt_raw(1, m, N, gs.data(), phi, N, 0.f, phig.data());
      macs += m * N;
      const double den = squared_norm(phig.data(), m);
      mu = den > 0 ? squared_norm(gs.data(), N) / den : 1.0;
    }
    for (int attempt = 0;; ++attempt) {
      for (int64_t j = 0; j < N; ++j) g[j] = z[j] + float(mu) * grad[size_t(j)];
      auto next = strongest_blocks(g, N, block, k);
      std::fill(gs.begin(), gs.end(), 0.f);
      for (int64_t b : next) std::copy_n(g + b * block, block, gs.begin() + b * block);
      if (iters == 1) {  // one-step thresholding: no residual needed
        std::copy(gs.begin(), gs.end(), z);
        return macs;
      }
      cpu_gemm_nt_raw(1, m, N, gs.data(), phi, N, 0.f, phig.data());  // Φz_next
      macs += m * N;
      double next_res = 0;
      for (int64_t i = 0; i < m; ++i) next_res += double(y[i] - phig[size_t(i)]) * double(y[i] - phig[size_t(i)]);
      if (next_res <= res * (1 + 1e-9) || attempt >= 8) {  // accept; otherwise halve μ
        std::copy(gs.begin(), gs.end(), z);
        for (int64_t i = 0; i < m; ++i) r[size_t(i)] = y[i] - phig[size_t(i)];
        res = next_res;
        support = std::move(next);
        break;
      }
      mu *= 0.5;
    }
  }
  return macs;
}

torch::Tensor block_iht(const torch::Tensor& phi, const torch::Tensor& y, int64_t block, int64_t k, int64_t iters) {
  check_problem(phi, y, block, k);
  check(iters >= 1, "block IHT needs at least one iteration, got " + std::to_string(iters));
  auto p = phi.detach().to(torch::kCPU, torch::kFloat32).contiguous();  // [m, N]
  auto yy = y.detach().to(torch::kCPU, torch::kFloat32).contiguous();  // [m]
  const int64_t N = p.size(1);
  auto z = torch::zeros({N}), g = torch::zeros({N});
  block_iht_raw(p.size(0), N, p.data_ptr<float>(), yy.data_ptr<float>(), block, k, iters, z.data_ptr<float>(),
                g.data_ptr<float>());
  return z.to(y.scalar_type());
}

double support_f1(const std::vector<int64_t>& chosen, const std::vector<int64_t>& reference) {
  if (chosen.empty() && reference.empty()) return 1.0;
  const std::set<int64_t> ref(reference.begin(), reference.end());
  int64_t hit = 0;
  for (int64_t b : std::set<int64_t>(chosen.begin(), chosen.end())) hit += ref.count(b);
  const double p = chosen.empty() ? 0 : double(hit) / double(std::set<int64_t>(chosen.begin(), chosen.end()).size());
  const double r = ref.empty() ? 0 : double(hit) / double(ref.size());
  return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}

}  // namespace nestscope
