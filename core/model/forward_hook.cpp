#include "core/model/forward_hook.h"

#include <torch/torch.h>

#include "core/error.h"

namespace nestscope {

ForwardHook head_mask_hook(const torch::Tensor& masks) {
  check(masks.dim() == 3, "head probe masks must be [batch, layers, heads]");
  return [masks](std::string_view name, int64_t layer, const torch::Tensor& t) {
    if (name != "attn.heads") return t;
    check(layer < masks.size(1) && t.size(1) == masks.size(2) && t.size(0) == masks.size(0),
          "head probe masks [batch, layers, heads] must match the model and the batch, with every head running "
          "(clear the head budget first)");
    return t * masks.select(1, layer).to(t.options()).view({t.size(0), t.size(1), 1, 1});
  };
}

ForwardHook random_heads_hook(double active) {
  check(active > 0 && active <= 1, "head active fraction must be in (0, 1]");
  return [active](std::string_view name, int64_t, const torch::Tensor& t) {
    if (name != "attn.heads" || active >= 1 || !at::GradMode::is_enabled()) return t;
    const int64_t B = t.size(0), H = t.size(1);
    const int64_t k = std::clamp<int64_t>(std::llround(active * double(H)), 1, H);
    auto chosen = torch::rand({B, H}).argsort(int64_t(1), false).narrow(1, 0, k);  // [B, k]
    auto keep = torch::zeros({B, H}).scatter_(1, chosen, 1.0).to(t.options());
    return t * keep.view({B, H, 1, 1});
  };
}

}  // namespace nestscope
