#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/error.h"
#include "core/model/sampler.h"

using namespace nestscope;

TEST(Sampler, GreedyPicksTheArgmaxAndReportsEntropy) {
  Sampler s({0.0, 0, 1});
  auto r = s.next({0.f, 2.f, 1.f});
  EXPECT_EQ(r.id, 1);
  const double z = 1 + std::exp(2.0) + std::exp(1.0);
  EXPECT_NEAR(r.prob, std::exp(2.0) / z, 1e-9);
  double h = 0;
  for (double l : {0.0, 2.0, 1.0}) h -= std::exp(l) / z * std::log(std::exp(l) / z);
  EXPECT_NEAR(r.entropy, h, 1e-9);
}

TEST(Sampler, SeedsMakeRunsReproducibleAndTopKRestricts) {
  std::vector<float> logits = {1.f, 1.2f, 0.9f, 1.1f, 0.5f};
  auto draw = [&](uint64_t seed, int64_t k) {
    Sampler s({1.0, k, seed});
    std::vector<int64_t> ids;
    for (int i = 0; i < 200; ++i) ids.push_back(s.next(logits).id);
    return ids;
  };
  EXPECT_EQ(draw(5, 0), draw(5, 0));
  EXPECT_NE(draw(5, 0), draw(6, 0));
  for (auto id : draw(9, 2)) EXPECT_TRUE(id == 1 || id == 3) << id;
  auto all = draw(9, 0);
  EXPECT_GT(std::set<int64_t>(all.begin(), all.end()).size(), 3u);
}

TEST(Sampler, BadSettingsAndLogitsAreClearErrors) {
  EXPECT_THROW(Sampler({-1.0, 0, 0}), Error);
  EXPECT_THROW(Sampler({1.0, -3, 0}), Error);
  Sampler s({1.0, 0, 0});
  EXPECT_THROW(s.next({1.f, NAN}), Error);
  EXPECT_THROW(s.next({}), Error);
}
