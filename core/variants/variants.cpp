#include "core/defaults.h"
#include "core/variants/variants.h"

#include <set>
#include <tuple>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <cstdio>
#include <algorithm>

#include "core/error.h"
#include "core/io/cache.h"
#include "core/io/safetensors.h"
#include "core/model/linear_factory.h"
#include "core/model/convert.h"
#include "core/layers/mpo_shape.h"
#include "core/layers/weight_init.h"

namespace nestscope {

namespace {

constexpr const char* kFormat = "nestscope.variants.v1";

// `config` as if its head were untied: the shape a tied head's variant is built with.
ModelConfig untied(const ModelConfig& config) {
  ModelConfig c = config;
  c.tied_head = false;
  return c;
}

// A config whose `family` is `kind` at full size (NSN full rank, MPO χ capped by the shapes).
ModelConfig config_for(const ModelConfig& model_config, const std::string& family, LinearKind kind) {
  const ModelConfig own = family == "head" ? untied(model_config) : model_config;
  switch (kind) {
    case LinearKind::Nsn:
      return nsn_config(own, {family}, 0);
    case LinearKind::Mpo:
      return mpo_config(own, {family}, variant_bond(own, family));
    case LinearKind::Dense:
      break;
  }
  ModelConfig c = own;
  c.linear.erase(family);
  return c;
}

// A tied head's weights as a projection to build variants from: the embedding [V, C], no bias.
class EmbeddingAsHead : public ElasticLinear {
 public:
  explicit EmbeddingAsHead(const torch::Tensor& embedding)
      : ElasticLinear(embedding.size(1), embedding.size(0)), w_(embedding) {}
  torch::Tensor forward(const torch::Tensor& x) override { return torch::linear(x, to_dense()); }
  int64_t macs() const override { return in_features() * out_features(); }
  int64_t params() const override { return 0; }  // the embedding's, counted there
  torch::Tensor to_dense() const override { return w_.detach().to(torch::kFloat32); }
  torch::Tensor bias() const override { return {}; }
  void load_from_dense(const torch::Tensor&, const torch::Tensor&) override {
    throw Error("the tied head is the embedding: it is not loaded on its own");
  }

 private:
  torch::Tensor w_;
};

std::string tensor_name(const std::string& layer, LinearKind kind, const std::string& param) {
  return "variant." + layer + "." + linear_kind_name(kind) + "." + param;
}

}  // namespace

int64_t variant_bond(const ModelConfig& config, const std::string& family) {
  const auto [in, out] = config.family_shape(family);
  if (in * out < kLargeMatrix) return kUncappedBond;
  const ModelConfig own = family == "head" ? untied(config) : config;
  const auto [of, inf] = mpo_config(own, {family}, kUncappedBond).mpo_factors(family);
  return mpo_bond_within(of, inf, kUncappedBond, in * out);
}

VariantNeeds variant_needs(const GptImpl& model, const Budget& budget) {
  VariantNeeds out;
  for (const auto& [name, own] : model.own_projections()) {
    const std::string family = projection_family(name);
    const LinearKind mine = model.own_kind(family), want = budget.kind_for(family, mine);
    if (want != mine) out.emplace_back(name, want);
  }
  // A tied head only when a budget asks for it by name (an SVD of the whole vocabulary's table).
  if (const LinearKind want = budget.kind_for("head", LinearKind::Dense); model.config().tied_head && want != LinearKind::Dense)
    out.emplace_back("head", want);
  return out;
}

VariantNeeds variant_needs(const GptImpl& model, const std::vector<LinearKind>& kinds) {
  VariantNeeds out;
  for (const auto& [name, own] : model.own_projections())
    for (LinearKind k : kinds)
      if (k != model.own_kind(projection_family(name))) out.emplace_back(name, k);
  return out;
}

int64_t variant_bytes(const GptImpl& model, const VariantNeeds& needs) {
  const ModelConfig& cfg = model.config();
  int64_t params = 0, largest = 0;
  for (const auto& [name, kind] : needs) {
    if (model.variants().has(name, kind)) continue;
    const std::string family = projection_family(name);
    const auto [in, out] = cfg.family_shape(family);
    largest = std::max(largest, in * out);
    if (kind == LinearKind::Dense) {
      params += in * out;
    } else if (kind == LinearKind::Nsn) {
      const int64_t r = std::min(in, out);
      params += r * (in + out);
    } else {
      const ModelConfig own = family == "head" ? untied(cfg) : cfg;  // a tied head's chain is built untied
      const auto c = mpo_config(own, {family}, variant_bond(cfg, family));
      const auto [of, inf] = c.mpo_factors(family);
      params += mpo_core_params(of, inf, c.linear_spec(family).bond);
    }
    params += out;  // a bias
  }
  // Float32 parameters, and the conversion's float64 copies of the largest matrix (the matrix,
  // its factors, the SVD's workspace: about four of it).
  return 4 * params + (largest > 0 ? 4 * 8 * largest : 0);
}

int64_t available_memory_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  long long kb = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
  std::fclose(f);
  return kb < 0 ? -1 : int64_t(kb) * 1024;
}

void release_variants(Gpt& model, const VariantNeeds& keep) {
  model->variants().release_unless([&](const std::string& name, LinearKind kind) {
    return std::find(keep.begin(), keep.end(), std::make_pair(name, kind)) != keep.end();
  });
}

VariantReport build_variants(Gpt& model, const std::vector<LinearKind>& kinds, const std::string& cache_path,
                             const std::string& checkpoint_hash, const ProgressFn& progress) {
  return build_variants(model, variant_needs(*model, kinds), cache_path, checkpoint_hash, progress);
}

VariantReport build_variants(Gpt& model, const VariantNeeds& needs, const std::string& cache_path,
                             const std::string& checkpoint_hash, const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  VariantReport rep;
  rep.cache_path = cache_path;
  torch::NoGradGuard no_grad;
  const ModelConfig& cfg = model->config();
  const auto device = model->tok_emb->weight.device();

  struct Todo {
    std::string name;
    LinearKind kind;
    std::shared_ptr<ElasticLinear> own, layer;
  };
  std::vector<Todo> todo;
  auto sources = model->own_projections();
  if (cfg.tied_head) sources.emplace_back("head", std::make_shared<EmbeddingAsHead>(model->tok_emb->weight));
  for (const auto& [name, own] : sources)
    for (const auto& [want, k] : needs)
      if (want == name && k != model->own_kind(projection_family(name)) && !model->variants().has(name, k))
        todo.push_back({name, k, own, {}});
  if (todo.empty()) return rep;
  if (const int64_t free = available_memory_bytes(); free >= 0) {
    const int64_t need = variant_bytes(*model, needs);
    const auto gb = [](int64_t b) {
      char s[32];
      std::snprintf(s, sizeof s, "%.2f GB", double(b) / 1e9);
      return std::string(s);
    };
    check(need <= free - free / 10,
          "building " + std::to_string(todo.size()) + " variant projections needs about " + gb(need) + " but only " +
              gb(free) + " of memory is free: ask for fewer families (e.g. attention or the MLP alone) or free memory");
  }
  // Allocating the layers takes a while on a large model too: Cancel is checked after each.
  SkipWeightInit filled_next;  // the cache or the conversion fills every weight below
  for (auto& t : todo) {
    t.layer = make_linear(config_for(cfg, projection_family(t.name), t.kind), projection_family(t.name));
    report(progress, {"variants", 0, int64_t(todo.size())});
  }

  // The cache: every tensor present with the right shape, for this checkpoint and this config. A
  // packed file of fine-tuned variants (pack_variants) may hold only some projections: those are
  // read, the rest converted, and the file is never overwritten.
  std::vector<bool> filled(todo.size(), false);
  bool packed = false;
  if (!cache_path.empty() && std::filesystem::exists(cache_path)) {
    try {
      const auto file = SafetensorsFile::read(cache_path);
      const auto& meta = file.metadata();
      auto get = [&](const char* k) {
        auto it = meta.find(k);
        return it == meta.end() ? std::string() : it->second;
      };
      check(get("format") == kFormat && get("checkpoint_hash") == checkpoint_hash && get("config") == cfg.to_json(),
            "written for another checkpoint");
      packed = !get("origin").empty();
      std::vector<std::tuple<size_t, torch::Tensor, torch::Tensor>> fills;  // (todo, destination, source)
      for (size_t i = 0; i < todo.size(); ++i) {
        const auto& t = todo[i];
        std::vector<std::tuple<size_t, torch::Tensor, torch::Tensor>> mine;
        bool all = true;
        for (auto& p : t.layer->named_parameters()) {
          const auto* r = file.find(tensor_name(t.name, t.kind, p.key()));
          if (!r && packed) {
            all = false;
            break;
          }
          check(r && r->dtype == DType::F32 && c10::IntArrayRef(r->shape) == p.value().sizes(),
                "tensor '" + tensor_name(t.name, t.kind, p.key()) + "' missing or of another shape");
          auto src = torch::empty(r->shape, torch::kFloat32);
          std::memcpy(src.data_ptr(), file.data(*r), r->end - r->begin);
          check(torch::isfinite(src).all().item<bool>(), "non-finite values");
          mine.emplace_back(i, p.value(), src);
        }
        if (all) fills.insert(fills.end(), mine.begin(), mine.end());
      }
      for (auto& [i, dst, src] : fills) {
        dst.copy_(src);
        filled[i] = true;
      }
      rep.from_cache = int64_t(std::count(filled.begin(), filled.end(), true));
      touch_cache_file(cache_path);  // recently used: trimming keeps it
    } catch (const Error& e) {
      std::fill(filled.begin(), filled.end(), false);
      packed = false;
      rep.cache_note = cache_path + ": not used (" + e.what() + "); rebuilding";
    }
  }
  std::vector<size_t> convert;
  for (size_t i = 0; i < todo.size(); ++i)
    if (!filled[i]) convert.push_back(i);
  if (!convert.empty()) {
    // One SVD (or TT-SVD) per projection, the projections shared out over the threads (LAPACK runs
    // each on one core: OpenBLAS is held to one thread), taken from a common counter so that a
    // cancel stops every thread after its current projection. Progress is reported under a lock.
    const int64_t n = int64_t(convert.size());
    std::atomic<int64_t> next{0}, done{0};
    std::atomic<bool> stop{false};
    std::mutex lock;
    std::exception_ptr failure;
    const int64_t workers = std::min<int64_t>(n, std::max<int64_t>(1, at::get_num_threads()));
    at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
      for (int64_t i; !stop && (i = next++) < n;) {
        try {
          auto& t = todo[convert[size_t(i)]];
          t.layer->load_from_dense(t.own->to_dense().to(torch::kCPU),
                                   t.own->bias().defined() ? t.own->bias().to(torch::kCPU) : torch::Tensor());
          std::lock_guard<std::mutex> g(lock);
          if (!stop) report(progress, {"variants", ++done, n});
        } catch (...) {
          std::lock_guard<std::mutex> g(lock);
          if (!failure) failure = std::current_exception();
          stop = true;
        }
      }
    });
    if (failure) std::rethrow_exception(failure);
    rep.built = n;
  }
  const bool cached = convert.empty();
  for (auto& t : todo) {
    t.layer->to(device);
    t.layer->eval();
    model->variants().set(t.name, t.kind, t.layer);
  }
  if (!cached && !packed && !cache_path.empty()) {
    try {
      std::filesystem::create_directories(std::filesystem::path(cache_path).parent_path());
      std::vector<torch::Tensor> keep;
      std::vector<TensorToWrite> out;
      for (const auto& t : todo)
        for (const auto& p : t.layer->named_parameters()) {
          auto v = p.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
          keep.push_back(v);
          out.push_back({tensor_name(t.name, t.kind, p.key()), DType::F32, v.sizes().vec(), v.data_ptr()});
        }
      write_safetensors(cache_path, out,
                        {{"format", kFormat}, {"checkpoint_hash", checkpoint_hash}, {"config", cfg.to_json()}});
      trim_cache(cache_cap_bytes(), cache_path);
    } catch (const std::exception& e) {
      rep.cache_note = cache_path + ": not written (" + e.what() + ")";
    }
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

void pack_variants(const GptImpl& base, const std::string& base_hash, const std::vector<const GptImpl*>& tuned,
                   const std::string& path, const std::string& origin) {
  const ModelConfig& cfg = base.config();
  auto base_params = base.named_parameters();
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> out;
  std::set<std::string> written;
  for (const GptImpl* m : tuned) {
    std::set<std::string> in_projection;
    for (const auto& [name, layer] : m->own_projections())
      for (const auto& p : layer->named_parameters()) in_projection.insert(name + "." + p.key());
    for (const auto& p : m->named_parameters()) {
      if (in_projection.count(p.key())) continue;
      const auto* b = base_params.find(p.key());
      check(b && b->sizes() == p.value().sizes() && torch::equal(b->to(torch::kCPU), p.value().to(torch::kCPU)),
            "variant pack: '" + p.key() + "' differs from the base model: fine-tune with --projections-only");
    }
    for (const auto& [name, layer] : m->own_projections()) {
      const LinearKind kind = m->own_kind(projection_family(name));
      if (kind == base.own_kind(projection_family(name))) {  // not a variant: must be base's own
        for (const auto& p : layer->named_parameters()) {
          const auto* b = base_params.find(name + "." + p.key());
          check(b && torch::equal(b->to(torch::kCPU), p.value().to(torch::kCPU)),
                "variant pack: '" + name + "." + p.key() + "' differs from the base model: fine-tune with --projections-only");
        }
        continue;
      }
      const auto family = projection_family(name);
      SkipWeightInit no_init;
      auto shape = make_linear(config_for(cfg, family, kind), family);
      auto want = shape->named_parameters();
      for (const auto& p : layer->named_parameters()) {
        const auto* w = want.find(p.key());
        check(w && w->sizes() == p.value().sizes(), "variant pack: " + name + "." + p.key() +
                                                        " is not the shape of its variant of the base model");
        const std::string t = tensor_name(name, kind, p.key());
        check(written.insert(t).second, "variant pack: two models give " + t);
        auto v = p.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
        check(torch::isfinite(v).all().item<bool>(), "variant pack: " + t + " has non-finite values");
        keep.push_back(v);
        out.push_back({t, DType::F32, v.sizes().vec(), v.data_ptr()});
      }
    }
  }
  check(!out.empty(), "variant pack: the models have no projections of another kind than the base model's");
  std::filesystem::create_directories(std::filesystem::absolute(path).parent_path());
  write_safetensors(path, out,
                    {{"format", kFormat}, {"checkpoint_hash", base_hash}, {"config", cfg.to_json()}, {"origin", origin}});
}

std::string variant_file_origin(const std::string& path) {
  try {
    if (!std::filesystem::exists(path)) return {};
    const auto meta = SafetensorsFile::map(path).metadata();  // the header only is read
    auto it = meta.find("origin");
    return it == meta.end() ? std::string() : it->second;
  } catch (const std::exception&) {
    return {};
  }
}

}  // namespace nestscope
