// The shipped fine-tuned variants of the demo model (resources/variants/, made by
// scripts/stories260k-experiment.sh and `nestscope-cli variants pack`) re-scored on held-out
// samples of its self-distilled corpus (resources/corpus/stories260K-heldout.txt).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "core/engine/engine.h"
#include "core/io/atomic_file.h"
#include "core/io/cache.h"
#include "core/variants/variants.h"

using namespace nestscope;
namespace fs = std::filesystem;

namespace {

const std::string kStories = NESTSCOPE_MODELS "/stories260K";
const std::string kResources = NESTSCOPE_RESOURCES;

// This test's own cache folder for the duration of a scope (other tests share the build's).
struct PrivateCache {
  std::string old, dir;
  PrivateCache() {
    if (const char* e = std::getenv("NESTSCOPE_CACHE_DIR")) old = e;
    dir = (fs::temp_directory_path() / ("nestscope-variants-test-" + std::to_string(::getpid()))).string();
    fs::create_directories(dir);
    setenv("NESTSCOPE_CACHE_DIR", dir.c_str(), 1);
  }
  ~PrivateCache() {
    if (old.empty()) unsetenv("NESTSCOPE_CACHE_DIR"); else setenv("NESTSCOPE_CACHE_DIR", old.c_str(), 1);
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

SweepRow score(Engine& e, const std::string& method, const Budget& b, const std::string& text) {
  SweepOptions o;
  o.text = text;
  o.validation_split = false;  // the file is held out already
  o.max_windows = 16;          // 16 × 512 tokens: a bounded test
  o.measure_latency = false;
  auto rows = e.sweep({{method, "r=16", b}}, o);
  EXPECT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].error, "");
  return rows[0];
}

}  // namespace

TEST(StoriesVariants, TheShippedNsnVariantAgreesWithTheDenseModelOnHeldOutSamples) {
  if (!fs::exists(kStories + "/model.safetensors"))
    GTEST_SKIP() << "stories260K is absent at " << kStories << " (../shared/models/stories260K); skipping";
  const std::string held = kResources + "/corpus/stories260K-heldout.txt";
  ASSERT_TRUE(fs::exists(held)) << held;
  const std::string text = read_text_file(held);
  PrivateCache cache;
  Engine e;
  e.load(kStories);
  const std::string pack = kResources + "/variants/" + e.info().hash + ".safetensors";
  ASSERT_TRUE(fs::exists(pack)) << "no shipped variants for stories260K (hash " << e.info().hash << ")";
  EXPECT_NE(variant_file_origin(pack).find("nsn"), std::string::npos) << variant_file_origin(pack);
  // 50% of the linear MACs: rank 16 in attention and MLP (the head stays dense).
  const Budget half{.rank = 16, .kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}};
  e.set_variant_cache(false);  // plain SVD truncation first: converted in memory
  const auto svd = score(e, "svd", half, text);
  Engine tuned;
  tuned.load(kStories);
  const std::string installed = variant_cache_path(tuned.info().hash);
  fs::create_directories(fs::path(installed).parent_path());
  fs::copy_file(pack, installed, fs::copy_options::overwrite_existing);
  const auto nsn = score(tuned, "nsn-ft", half, text);
  EXPECT_NEAR(double(nsn.linear_macs) / double(svd.linear_macs), 1.0, 1e-9) << "the same budget, the same MACs";
  EXPECT_LE(double(nsn.linear_macs), 0.5 * 259328) << "at most half the dense linear MACs";
  // docs/results/stories260K.md: 31.9% agreement at rank 16 on 64 held-out windows, SVD alone 1.5%
  // (the 90% target is missed on this model; the page says why).
  EXPECT_GE(nsn.eval.top1_agreement, 0.25) << "fine-tuned NSN at 48% of the linear MACs";
  EXPECT_LE(svd.eval.top1_agreement, 0.05);
  EXPECT_GT(nsn.eval.top1_agreement, svd.eval.top1_agreement + 0.2) << "SVD alone: " << svd.eval.top1_agreement;
  // The dense model itself is untouched by the variants: full budget, agreement 1.
  const auto dense = score(tuned, "dense", Budget{}, text);
  EXPECT_DOUBLE_EQ(dense.eval.top1_agreement, 1.0);
}
