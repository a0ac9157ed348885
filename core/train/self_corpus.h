// A distillation corpus sampled from a model itself, for a pretrained model whose data is absent.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/progress.h"

namespace nestscope {

class GptImpl;
class Tokenizer;

// The recipe, written beside the corpus so it can be made again bit for bit.
struct SelfCorpusOptions {
  int64_t samples = 4000;     // sequences
  int64_t max_tokens = 256;   // per sequence after its start; a sequence also ends at an end token
  double temperature = 1.0;   // 1 = the model's own distribution
  uint64_t seed = 1;          // sequence i samples with seed·1,000,003 + i
  int64_t batch = 64;         // sequences decoded together (does not change the text)
  std::string prompt;         // each sequence starts from it; empty = the tokenizer's BOS alone
  void validate() const;      // throws Error naming the bad field
};

struct SelfCorpus {
  std::string text;            // the sequences, each after the tokenizer's BOS text (or "\n\n")
  std::vector<std::vector<int64_t>> sequences;  // the sampled ids of each (start excluded)
  int64_t tokens = 0;          // sampled tokens in all
  int64_t ended = 0;           // sequences that ended with an end token before max_tokens
};

// Samples `options.samples` continuations of the start from `model` (KV-cached, batched; each
// sequence its own seeded sampler, so the text does not depend on the batch). A sequence ends
// when the model writes an end token or the BOS that begins the next text (llama2.c's stories
// end so). Joined with the BOS text, encode() reads the corpus back as BOS story BOS story …, the
// pretraining layout. Reports progress per batch; a cancel throws Cancelled.
SelfCorpus sample_self_corpus(GptImpl& model, const Tokenizer& tokenizer, const SelfCorpusOptions& options,
                              const ProgressFn& progress = {});

}  // namespace nestscope
