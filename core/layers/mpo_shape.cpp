#include "core/layers/mpo_shape.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace nestscope {

std::vector<int64_t> balanced_factors(int64_t n, int64_t sites) {
  check(n >= 1 && sites >= 1, "cannot split " + std::to_string(n) + " into " + std::to_string(sites) + " factors");
  std::vector<int64_t> primes;
  for (int64_t p = 2, m = n; m > 1; ++p) {
    if (p * p > m) p = m;
    while (m % p == 0) primes.push_back(p), m /= p;
  }
  std::vector<int64_t> f(size_t(sites), 1);
  for (auto it = primes.rbegin(); it != primes.rend(); ++it) *std::min_element(f.begin(), f.end()) *= *it;
  std::sort(f.begin(), f.end());
  return f;
}

int64_t default_mpo_sites(int64_t in_features, int64_t out_features) {
  return std::max(in_features, out_features) >= 512 ? 3 : 2;
}

std::vector<int64_t> mpo_bond_dims(const std::vector<int64_t>& out_factors, const std::vector<int64_t>& in_factors,
                                   int64_t bond) {
  const size_t L = out_factors.size();
  std::vector<int64_t> d(L + 1, 1);
  for (size_t l = 1; l < L; ++l) {
    int64_t right = 1;
    for (size_t k = l; k < L; ++k) right *= out_factors[k] * in_factors[k];
    d[l] = std::min({bond, d[l - 1] * out_factors[l - 1] * in_factors[l - 1], right});
  }
  return d;
}

int64_t mpo_core_params(const std::vector<int64_t>& out_factors, const std::vector<int64_t>& in_factors,
                        int64_t bond) {
  const auto d = mpo_bond_dims(out_factors, in_factors, bond);
  int64_t n = 0;
  for (size_t l = 0; l < out_factors.size(); ++l) n += d[l] * out_factors[l] * in_factors[l] * d[l + 1];
  return n;
}

int64_t mpo_bond_within(const std::vector<int64_t>& out_factors, const std::vector<int64_t>& in_factors, int64_t bond,
                        int64_t max_params) {
  int64_t lo = 1, hi = std::max<int64_t>(1, bond);  // core params grow with χ: bisect
  if (mpo_core_params(out_factors, in_factors, hi) <= max_params) return hi;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (mpo_core_params(out_factors, in_factors, mid) <= max_params ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace nestscope
