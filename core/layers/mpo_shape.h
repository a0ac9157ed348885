// MPO shapes without LibTorch: factorizations of a weight's sides and the bond dimensions they
// allow, shared by ModelConfig (parameter counts) and MpoLinear.
#pragma once
#include <cstdint>
#include <vector>

namespace nestscope {

// Splits n into `sites` factors whose product is n, as equal as possible, ascending
// (128 → 8·16, 512 → 8·8·8, 128 into 3 → 4·4·8, 65 → 5·13). Factors of 1 are allowed.
std::vector<int64_t> balanced_factors(int64_t n, int64_t sites);
// The default number of sites for a d_out×d_in weight: 3 when a side reaches 512, else 2.
int64_t default_mpo_sites(int64_t in_features, int64_t out_features);

// D_0 … D_L for a chain at bond dimension χ: D_0 = D_L = 1 and
// D_l = min(χ, D_{l-1}·o_l·i_l, Π_{k>l} o_k·i_k), all TT-SVD can produce.
std::vector<int64_t> mpo_bond_dims(const std::vector<int64_t>& out_factors, const std::vector<int64_t>& in_factors,
                                   int64_t bond);
// Σ_l D_{l-1}·o_l·i_l·D_l: the cores' parameters (no bias).
int64_t mpo_core_params(const std::vector<int64_t>& out_factors, const std::vector<int64_t>& in_factors,
                        int64_t bond);

// The largest χ ≤ `bond` whose cores hold at most `max_params` parameters (at least 1).
int64_t mpo_bond_within(const std::vector<int64_t>& out_factors, const std::vector<int64_t>& in_factors, int64_t bond,
                        int64_t max_params);

}  // namespace nestscope
