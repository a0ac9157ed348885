// The defaults that several parts of NestScope share, named once (torch-free).
#pragma once
#include <cstdint>

namespace nestscope {

// Neurons per aligned MLP block: the sensing gate's blocks, ablation blocks, gate-aware training
// blocks and the activation map's cells (a default; a model's width need not be a multiple).
inline constexpr int64_t kNeuronBlock = 16;
// The first 90% of a text trains (and calibrates gates), the last 10% validates, as the MPO
// paper's PicoGPT protocol splits Tiny Shakespeare: int(0.9 · len(data)).
inline constexpr double kTrainFraction = 0.9;
// Context windows per batched evaluation forward.
inline constexpr int64_t kEvalBatch = 16;
// A bond dimension χ larger than any chain's own limit: TT-SVD capped only by the shapes (lossless).
inline constexpr int64_t kUncappedBond = int64_t(1) << 16;

}  // namespace nestscope
