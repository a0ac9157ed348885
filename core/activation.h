// Activation: the MLP nonlinearities, as an enum every layer of the core shares and their scalar
// form (the raw decode paths and the CUDA dispatch use it; torch-free).
#pragma once
#include <cmath>

namespace nestscope {

enum class Activation { Relu, Gelu, GeluTanh, Silu };  // Gelu exact erf; GeluTanh GPT-2's "gelu_new"

// act(v) for one value, as torch's functions compute it.
inline float activate(float v, Activation activation) {
  switch (activation) {
    case Activation::Relu: return v > 0 ? v : 0.f;
    case Activation::Gelu: return 0.5f * v * (1.f + std::erf(v * 0.70710678f));  // exact GELU, as torch::gelu
    case Activation::GeluTanh: return 0.5f * v * (1.f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
    case Activation::Silu: return v / (1.f + std::exp(-v));
  }
  return v;
}

}  // namespace nestscope
