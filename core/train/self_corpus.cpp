#include "core/train/self_corpus.h"

#include <algorithm>

#include "core/error.h"
#include "core/model/sampler.h"
#include "core/model/transformer.h"
#include "core/text/tokenizer.h"

namespace nestscope {

void SelfCorpusOptions::validate() const {
  check(samples > 0, "samples must be positive, got " + std::to_string(samples));
  check(max_tokens > 0, "max tokens per sample must be positive, got " + std::to_string(max_tokens));
  check(temperature > 0 && std::isfinite(temperature), "sampling temperature must be positive");
  check(batch > 0, "batch must be positive, got " + std::to_string(batch));
}

SelfCorpus sample_self_corpus(GptImpl& model, const Tokenizer& tokenizer, const SelfCorpusOptions& o,
                              const ProgressFn& progress) {
  o.validate();
  std::vector<int64_t> start;
  if (o.prompt.empty()) {
    check(tokenizer.bos_id() >= 0, "the model's tokenizer has no beginning-of-text token: give a prompt to start from");
    start = {tokenizer.bos_id()};
  } else {
    start = tokenizer.encode(o.prompt);
  }
  const int64_t context = model.config().context;
  check(int64_t(start.size()) + o.max_tokens <= context,
        "start (" + std::to_string(start.size()) + " tokens) plus " + std::to_string(o.max_tokens) +
            " sampled tokens exceed the model's context of " + std::to_string(context));
  std::vector<int64_t> ends = tokenizer.stop_ids();
  if (tokenizer.bos_id() >= 0) ends.push_back(tokenizer.bos_id());
  const std::string separator = tokenizer.bos_text().empty() ? std::string("\n\n") : tokenizer.bos_text();

  torch::NoGradGuard no_grad;
  model.eval();
  const auto device = model.tok_emb->weight.device();
  SelfCorpus out;
  out.sequences.resize(size_t(o.samples));
  for (int64_t b0 = 0; b0 < o.samples; b0 += o.batch) {
    const int64_t n = std::min(o.batch, o.samples - b0);
    std::vector<Sampler> samplers;
    for (int64_t i = 0; i < n; ++i)
      samplers.emplace_back(SamplerOptions{o.temperature, 0, o.seed * 1000003ull + uint64_t(b0 + i)});
    auto cache = model.make_cache(n);
    auto x = torch::tensor(start, torch::kInt64).unsqueeze(0).expand({n, int64_t(start.size())}).contiguous().to(device);
    std::vector<bool> done(size_t(n), false);
    int64_t live = n;
    for (int64_t t = 0; t < o.max_tokens && live > 0; ++t) {
      auto logits = model.forward(x, &cache, true).reshape({n, -1}).to(torch::kCPU, torch::kFloat32).contiguous();  // [n, V]
      const int64_t V = logits.size(1);
      std::vector<int64_t> next(size_t(n), start.back());
      for (int64_t i = 0; i < n; ++i) {
        if (done[size_t(i)]) continue;
        const float* row = logits.data_ptr<float>() + i * V;
        const int64_t id = samplers[size_t(i)].next(std::vector<float>(row, row + V)).id;
        if (std::find(ends.begin(), ends.end(), id) != ends.end()) {
          done[size_t(i)] = true;
          --live;
          ++out.ended;
          continue;
        }
        out.sequences[size_t(b0 + i)].push_back(id);
        next[size_t(i)] = id;
      }
      x = torch::tensor(next, torch::kInt64).unsqueeze(1).to(device);  // [n, 1]
    }
    report(progress, {"sample", b0 + n, o.samples});
  }
  for (const auto& seq : out.sequences) {
    out.tokens += int64_t(seq.size());
    if (!o.prompt.empty()) out.text += o.prompt;
    out.text += tokenizer.decode(seq);
    out.text += separator;
  }
  return out;
}

}  // namespace nestscope
