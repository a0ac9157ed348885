// Causal self-attention's core, softmax(q·kᵀ/√hd + causal mask)·v, with a fused CPU training path.
#pragma once
#include <torch/types.h>

namespace nestscope {

// q [B, H, T, hd] against k, v [B, H, L, hd] (L = past + T; query t sits at position past + t and
// sees keys 0 … past + t). Returns [B, H, T, hd]. Adds each key slot's received attention (summed
// over heads and queries) into key_mass [B, ≥ L] when that is defined.
//
// Training on the CPU (autograd on, float32, past = 0, no key_mass) runs fused_causal_attention;
// everything else runs ATen ops in batch chunks whose scores stay near 4 MB.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t past,
                               const torch::Tensor& key_mass = {});

// The fused CPU path, differentiable in q, k and v (FlashAttention's recipe, Dao et al. 2022,
// §3.1, without its tiling): each (sequence, head) pair is one task for the intra-op threads;
// the forward keeps only each row's log-sum-exp, the backward recomputes the probabilities, and
// scores above the diagonal are never computed. A [B, H, T, T] score tensor per layer (64 MB for
// stories260K at 32 × 256) is never formed, and the small per-head GEMMs (hd = 8 there) that ATen
// ran one matrix at a time on one core become vector loops over keys on all of them. Equal to the
// ATen path up to float summation order (tested).
torch::Tensor fused_causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

}  // namespace nestscope
