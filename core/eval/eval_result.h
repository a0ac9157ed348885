// EvalResult: language-model metrics on a token sequence (torch-free).
#pragma once
#include <cstdint>

namespace nestscope {

struct EvalResult {
  double loss = 0;            // mean next-token cross-entropy (nats)
  double perplexity = 0;      // exp(loss)
  double token_accuracy = 0;  // top-1 next-token accuracy over every scored position
  int64_t tokens = 0;         // scored positions
  int64_t windows = 0;        // non-overlapping context windows
  double accuracy_ci95 = 0;   // half-width of the 95% confidence interval of token_accuracy across
                              // windows (1.96·sd/√windows; 0 with a single window)
  double seconds = 0;
  // Against a reference budget of the same model (the full model), when asked; -1 otherwise.
  double top1_agreement = -1;  // fraction of positions whose argmax matches the reference's
  double kl = -1;              // mean KL(reference || this) in nats per position
};

}  // namespace nestscope
