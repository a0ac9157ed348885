// ForwardHook: the model's named intermediates (llama.cpp's cb(cur, name, il) habit). When a hook
// is set (Gpt::set_hook), the general forward passes it each layer's intermediates by name; it
// returns them unchanged (to read them) or replaced with the same shape (to mask them). The model
// knows nothing of who listens: calibration reads the MLP's input and activations, knockout probes
// and head-aware training mask heads, gate-aware training masks neuron blocks. The raw decode step
// runs only without a hook.
//
//   "attn.heads"  [B, H, T, hd]  each running head's output before the output projection
//   "mlp.in"      [B, T, C]      the MLP's input (the ln2 output)
//   "mlp.hidden"  [B, T, N]      act(up·x), or act(gate·x) ⊙ up·x, before the down projection
//                                (ungated MLPs only: the sensing gate computes its own blocks)
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string_view>

namespace nestscope {

using ForwardHook = std::function<torch::Tensor(std::string_view name, int64_t layer, const torch::Tensor& t)>;

// Knockout masks [B, L, H] (1 keep, 0 knock out) multiplied into each sequence's head outputs:
// probes and model-wide head-aware training. Every head must run (no head budget).
ForwardHook head_mask_hook(const torch::Tensor& masks);
// Head-aware training: under autograd each sequence keeps a random `active` fraction of the heads
// per layer (at least one); the others' outputs are zeroed. Throws Error outside (0, 1].
ForwardHook random_heads_hook(double active);

}  // namespace nestscope
