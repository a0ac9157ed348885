// make_linear: the one place that maps a LinearSpec to an ElasticLinear implementation.
#pragma once
#include <memory>
#include <string>

#include "core/layers/elastic_linear.h"
#include "core/model/config.h"

namespace nestscope {

// A fresh projection of `family` ("attn.q", ..., "head") as the config asks.
std::shared_ptr<ElasticLinear> make_linear(const ModelConfig& cfg, const std::string& family);

}  // namespace nestscope
