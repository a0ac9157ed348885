// The explorer's panels offscreen: budget sliders, the activation map, the frontier chart and its
// exports, and the real window driving the real Engine on its worker thread.
#include <gtest/gtest.h>

#include <QChart>
#include <QCheckBox>
#include <QFile>
#include <QImage>
#include <QScatterSeries>
#include <QSignalSpy>
#include <QSlider>
#include <QSpinBox>
#include <QTemporaryDir>
#include <QTest>

#include "tests/widgets/wait.h"

#include "app/main_window.h"
#include "core/io/default_model.h"
#include "core/model/budget_json.h"
#include "widgets/activation_map.h"
#include "widgets/budget_panel.h"
#include "widgets/frontier_chart.h"
#include "widgets/generation_panel.h"
#include "widgets/teaching_view.h"
#include "widgets/compare_view.h"
#include "app/session.h"
#include <QFile>
#include <cmath>

using namespace nestscope;

TEST(BudgetPanel, SlidersComposeABudgetAndTakeKeyboardSteps) {
  qRegisterMetaType<Budget>("nestscope::Budget");
  BudgetPanel p;
  p.setLimits({128, 64, 4, 512, LinearKind::Dense, LinearKind::Dense});
  EXPECT_EQ(p.budget(), Budget{});          // full budget: nothing set
  EXPECT_TRUE(p.rankSlider()->isEnabled());  // a dense model's rank works: it picks the SVD variant
  // χ spans exactly the bonds the chains have, in steps of 1, 2, 3, 4, 6, 8, …, 48, 64.
  EXPECT_EQ(p.bondSlider()->maximum() - p.bondSlider()->minimum() + 1, 12);
  p.bondSlider()->setFocus();
  QTest::keyClick(p.bondSlider(), Qt::Key_PageDown);  // an eighth of the 12 steps: one step, to χ = 48
  EXPECT_EQ(p.budget().bond, 48);
  EXPECT_EQ(p.budget().kind.at("attn"), LinearKind::Mpo);  // the family followed the slider
  EXPECT_EQ(p.budget().kind.at("mlp"), LinearKind::Mpo);
  p.setBudget(Budget{});
  QSignalSpy spy(&p, &BudgetPanel::budgetChanged);
  Budget want;
  want.kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Mpo}};
  want.rank = 32;
  want.bond = 8;
  p.setBudget(want);
  ASSERT_GE(spy.count(), 1);
  const Budget got = qvariant_cast<Budget>(spy.last().at(0));
  EXPECT_EQ(got.kind, want.kind);
  EXPECT_EQ(got.rank, 32);
  EXPECT_EQ(got.bond, 8);
  EXPECT_TRUE(p.rankSlider()->isEnabled());
  p.rankSlider()->setFocus();
  QTest::keyClick(p.rankSlider(), Qt::Key_Left);
  EXPECT_EQ(p.budget().rank, 31);
  QTest::keyClick(p.rankSlider(), Qt::Key_PageDown);
  EXPECT_EQ(p.budget().rank, 31 - 16);  // a jump of R/8
  p.gateSlider()->setValue(25);
  EXPECT_EQ(p.budget().gate.policy, GatePolicy::Sensing);  // dragging blocks kept turns the gate on
  p.keepSlider()->setValue(40);
  EXPECT_DOUBLE_EQ(p.budget().prompt_keep, 0.4);
  BudgetReadout r;
  r.macs = 400e3;
  r.dense_macs = 1e6;
  r.params = 300e3;
  r.accuracy = 0.52;
  r.ms_per_token = 0.21;
  p.setReadout(r);
  EXPECT_TRUE(p.readoutText().contains("400k</b> MACs/token, estimate at full context (40.0% of dense)"))
      << p.readoutText().toStdString();
  EXPECT_TRUE(p.readoutText().contains("≈ 52.0%, estimate from the frontier"));
  EXPECT_TRUE(p.readoutText().contains("0.21 ms/token measured"));
  r.measured_macs = 350e3;  // after a generation: what the tokens spent, said to be measured
  r.measured_dense_macs = 700e3;  // the dense model on the same (shorter than full) contexts
  r.accuracy_measured = true;
  p.setReadout(r);
  EXPECT_TRUE(p.readoutText().contains("350k</b> MACs/token measured on the last generation (50.0% of dense on the same tokens)"))
      << p.readoutText().toStdString();
  EXPECT_TRUE(p.readoutText().contains("52.0%, measured by the sweep"));
}

TEST(ActivationMap, ShowsTheSelectedTokensBlocksAndHeads) {
  ActivationMap m;
  m.resize(600, 320);
  m.setShape(2, 4, 8);
  TokenActivity a;
  a.text = "e";
  a.blocks = {{0, 2}, {1, 2, 3, 4}};
  a.measurements = {16, 24};
  a.heads = {{1, 3}, {0, 1, 2, 3}};
  m.appendToken(a);
  TokenActivity b;  // ungated: everything ran
  b.text = "x";
  m.appendToken(b);
  EXPECT_EQ(m.tokenCount(), 2);
  EXPECT_DOUBLE_EQ(m.selectedActiveFraction(), 1.0);  // follows the stream: the newest token
  QSignalSpy spy(&m, &ActivationMap::tokenSelected);
  m.selectToken(0);
  EXPECT_EQ(spy.count(), 1);
  EXPECT_DOUBLE_EQ(m.selectedActiveFraction(), 6.0 / 16.0);
  // Hover texts of real cells: scan the widget for a skipped block, a ran head and the timeline.
  bool skipped_block = false, skipped_head = false, timeline = false;
  for (int y = 0; y < m.height(); y += 3)
    for (int x = 0; x < m.width(); x += 3) {
      const QString s = m.describeAt({x, y});
      skipped_block |= s.startsWith("layer 0, block 1: skipped") && s.contains("16 measurements");
      skipped_head |= s == "layer 0, head 0: skipped";
      timeline |= s.startsWith("token 0 'e': 37.5% of blocks");
    }
  EXPECT_TRUE(skipped_block);
  EXPECT_TRUE(skipped_head);
  EXPECT_TRUE(timeline);
  EXPECT_FALSE(m.grab().toImage().isNull());
}

namespace {
SweepRow row(const std::string& method, int64_t macs, double acc, const std::string& budget = "{}") {
  SweepRow r;
  r.method = method;
  r.label = method + std::to_string(macs);
  r.model_hash = "h";
  r.dense_macs = 1000000;
  r.mac_fraction = double(macs) / 1e6;
  r.budget_json = budget_to_json(budget_from_json(budget));
  r.macs = macs;
  r.parameters = macs / 2;
  r.ms_per_token = 0.1 + double(macs) * 1e-7;
  r.eval.token_accuracy = acc;
  r.eval.perplexity = 1 / acc;
  r.eval.top1_agreement = acc + 0.1;
  return r;
}
}  // namespace

TEST(FrontierChart, FollowsTheSystemPaletteWhileOpen) {
  FrontierChart c;
  c.resize(600, 400);
  c.setRows({row("dense", 1000000, 0.55), row("svd", 300000, 0.10)});
  QPalette dark = c.palette();
  dark.setColor(QPalette::Window, QColor(30, 30, 30));
  c.setPalette(dark);  // a switch to a dark desktop theme while the window is open
  EXPECT_EQ(c.chart()->theme(), QChart::ChartThemeDark);
  // The first method's colour (black on light) is light on dark, so it stays visible.
  QColor dense_colour;
  for (auto* s : c.chart()->series())
    if (s->name() == "dense") dense_colour = static_cast<QScatterSeries*>(s)->color();
  ASSERT_TRUE(dense_colour.isValid());
  EXPECT_GT(dense_colour.lightness(), 128);
  QPalette light = c.palette();
  light.setColor(QPalette::Window, QColor(240, 240, 240));
  c.setPalette(light);
  EXPECT_EQ(c.chart()->theme(), QChart::ChartThemeLight);
  for (auto* s : c.chart()->series())
    if (s->name() == "dense") EXPECT_LT(static_cast<QScatterSeries*>(s)->color().lightness(), 40);
}

TEST(FrontierChart, PlotsSeriesMovesTheMarkerAndExports) {
  FrontierChart c;
  c.resize(800, 500);
  const std::string nsn = R"({"rank": 8, "kind": {"attn": "nsn", "mlp": "nsn"}})";
  c.setRows({row("dense", 1000000, 0.55), row("svd", 300000, 0.10, nsn), row("svd", 600000, 0.30, nsn),
             row("svd", 900000, 0.50, nsn)});
  EXPECT_GE(c.seriesCount(), 5);  // 2 scatter + 1 line + the front + the marker
  EXPECT_EQ(c.xAxis(), FrontierX::MacShare);  // x as a share of dense by default
  c.setOperatingPoint(c.rows()[2], true);
  EXPECT_EQ(c.operatingPoint(), QPointF(60.0, 0.30));
  EXPECT_TRUE(c.operatingPointMeasured());
  c.setAxes(FrontierX::Latency, FrontierY::Agreement);
  EXPECT_EQ(c.xAxis(), FrontierX::Latency);
  EXPECT_DOUBLE_EQ(FrontierChart::xValue(c.rows()[1], FrontierX::Latency), 0.13);
  QTemporaryDir dir;
  QString error;
  ASSERT_TRUE(c.exportPng(dir.filePath("f.png"), 2.0, &error)) << error.toStdString();
  QImage img(dir.filePath("f.png"));
  EXPECT_EQ(img.width(), 1600);  // 2× for slides
  ASSERT_TRUE(c.exportSvg(dir.filePath("f.svg"), &error)) << error.toStdString();
  QFile svg(dir.filePath("f.svg"));
  ASSERT_TRUE(svg.open(QIODevice::ReadOnly));
  EXPECT_TRUE(svg.readAll().contains("<svg"));
  ASSERT_TRUE(c.exportCsv(dir.filePath("f.csv"), &error));
  QFile csv(dir.filePath("f.csv"));
  ASSERT_TRUE(csv.open(QIODevice::ReadOnly));
  EXPECT_EQ(csv.readAll().count('\n'), 5);  // header + 4 rows
  EXPECT_FALSE(c.exportPng("/nonexistent-dir/x.png", 2.0, &error));
  EXPECT_FALSE(error.isEmpty());
  // The estimate the marker sits on: interpolated along the matching series in log MACs.
  const double est = estimate_accuracy(c.rows(), "h", budget_to_json(budget_from_json(R"({"rank": 20, "kind": {"attn": "nsn", "mlp": "nsn"}})")), 600000);
  EXPECT_NEAR(est, 0.30, 1e-9);
  // A budget of a kind no series has: the front's accuracy at its MACs, halfway (in log MACs)
  // between the 300k and 600k points.
  EXPECT_NEAR(pareto_accuracy(c.rows(), "h", std::sqrt(300000.0 * 600000.0)), 0.20, 1e-9);
  EXPECT_NEAR(pareto_accuracy(c.rows(), "h", 2e6), 0.55, 1e-9);
  EXPECT_EQ(pareto_accuracy(c.rows(), "another model", 600000), -1);
}

TEST(FrontierEstimate, AComposedBudgetIsBoundedByItsPartsSweptAlone) {
  const std::string mpo = R"("kind": {"attn": "mpo", "mlp": "mpo"})";
  auto gate = [](double active, double heads = 1.0) {
    return R"("gate": {"policy": "sensing", "active": )" + std::to_string(active) + R"(, "head_active": )" +
           std::to_string(heads) + "}";
  };
  const std::vector<SweepRow> rows = {
      row("dense", 1000000, 0.55),
      row("mpo", 300000, 0.05, "{" + mpo + R"(, "bond": 4})"),
      row("mpo", 600000, 0.30, "{" + mpo + R"(, "bond": 8})"),
      row("mpo", 900000, 0.50, "{" + mpo + R"(, "bond": 16})"),
      row("gate", 500000, 0.20, "{" + gate(0.25) + "}"),
      row("gate", 700000, 0.40, "{" + gate(0.5) + "}"),
      row("gate", 850000, 0.50, "{" + gate(0.75) + "}"),
      row("prompt", 800000, 0.45, R"({"prompt_keep": 0.5})"),
  };
  auto bound = [&](const std::string& body, double macs) {
    return accuracy_bound(rows, "h", budget_to_json(budget_from_json("{" + body + "}")), macs);
  };
  // The front alone would say ≈ 0.35 at 650k MACs (between the 600k and 700k points); χ = 4 by
  // itself reaches 0.05, so χ = 4 with the gate at 50% can do no better.
  EXPECT_NEAR(pareto_accuracy(rows, "h", 650000), 0.30 + 0.10 * std::log(650.0 / 600) / std::log(700.0 / 600), 1e-9);
  auto b = bound(mpo + R"(, "bond": 4, )" + gate(0.5), 650000);
  EXPECT_NEAR(b.accuracy, 0.05, 1e-9);
  EXPECT_EQ(b.from, "χ = 4 alone");
  // Between swept χ: interpolated in log χ.
  b = bound(mpo + R"(, "bond": 6, )" + gate(0.5), 650000);
  EXPECT_NEAR(b.accuracy, 0.05 + 0.25 * std::log(6.0 / 4) / std::log(8.0 / 4), 1e-9);
  // Above every swept χ the parameterization bounds nothing; the gate at 25% does.
  b = bound(mpo + R"(, "bond": 32, )" + gate(0.25), 650000);
  EXPECT_NEAR(b.accuracy, 0.20, 1e-9);
  EXPECT_EQ(b.from, "the gate at 25% of the blocks alone");
  // No series gates half the heads, and keeping half the prompt allows more than the front: the
  // front's value stays.
  b = bound(gate(0.5, 0.5) + R"(, "prompt_keep": 0.5)", 650000);
  EXPECT_NEAR(b.accuracy, pareto_accuracy(rows, "h", 650000), 1e-9);
  EXPECT_EQ(b.from, "the best swept budget at these MACs");
  EXPECT_EQ(accuracy_bound(rows, "another model", budget_to_json(Budget{}), 650000).accuracy, -1);
}

TEST(Explorer, SlidersReachTheEngineAndAGenerationFillsTheMap) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  StartupOptions o;
  o.tokens = 12;
  o.persist = false;  // the user's saved window state stays out of (and untouched by) the test
  MainWindow w(o);
  w.show();
  auto* map = w.activationMap();
  WAIT_UNTIL(map->tokenCount() == 12, 60000);  // the first generation, full budget
  const QString full = w.budgetPanel()->readoutText();
  WAIT_UNTIL(w.budgetPanel()->readoutText().contains("measured on the last generation"), 30000);
  EXPECT_TRUE(w.budgetPanel()->readoutText().contains("ms/token measured"));
  // SVD attention at rank 16 and the sensing gate at 50%: fewer MACs, and the map shows the gate.
  Budget b;
  b.kind = {{"attn", LinearKind::Nsn}};
  b.rank = 16;
  b.gate.policy = GatePolicy::Sensing;
  b.gate.active = 0.5;
  b.gate.block = 16;
  b.gate.measurement = MeasurementKind::Pca;
  b.gate.recovery = Recovery::Mmse;
  b.gate.clustered = true;
  w.budgetPanel()->setBudget(b);
  WAIT_UNTIL(w.budgetPanel()->readoutText() != full, 60000);
  EXPECT_FALSE(w.budgetPanel()->readoutText().contains("100.0% of dense"));
  WAIT_UNTIL(map->tokenCount() == 12 && map->selectedActiveFraction() < 0.99, 60000);
  EXPECT_NEAR(map->selectedActiveFraction(), 0.5, 0.2);  // token-adaptive k stays near 50%
  w.close();
}

TEST(Session, RoundTripsAndNamesBadFiles) {
  Session s;
  s.model = "/models/m.safetensors";
  s.model_hash = "0123456789abcdef";
  s.budget.rank = 24;
  s.budget.kind = {{"mlp", LinearKind::Nsn}};
  s.budget.gate.policy = GatePolicy::Sensing;
  s.budget.prompt_keep = 0.5;
  s.prompt = "ROMEO:\nO, speak again";
  s.settings = {77, 0.6, 5, 42};
  s.colouring = 1;
  const Session t = session_from_json(session_to_json(s), "x");
  EXPECT_EQ(t.model, s.model);
  EXPECT_EQ(t.model_hash, s.model_hash);
  EXPECT_EQ(t.budget, s.budget);
  EXPECT_EQ(t.prompt, s.prompt);
  EXPECT_EQ(t.settings.max_new_tokens, 77);
  EXPECT_EQ(t.settings.seed, 42u);
  EXPECT_EQ(t.colouring, 1);
  auto err = [](const QString& text) {
    try {
      session_from_json(text, "f.nestscope.json");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err("{").find("f.nestscope.json: not a NestScope session"), std::string::npos);
  EXPECT_NE(err(R"({"format": "other"})").find("format"), std::string::npos);
  QString bad = session_to_json(s);
  bad.replace("\"rank\": 24", "\"rank\": \"x\"");
  EXPECT_NE(err(bad).find("'rank'"), std::string::npos) << err(bad);
}

TEST(TeachingView, DrawsTheLayerItIsGiven) {
  TeachingView t;
  t.resize(700, 520);
  QSignalSpy spy(&t, &TeachingView::viewRequested);
  t.setProjections({"blk.0.attn.q", "blk.0.mlp.up"}, 128, 32);
  t.request();
  ASSERT_EQ(spy.count(), 1);
  EXPECT_EQ(spy.last().at(0).toString(), "blk.0.attn.q");
  EXPECT_EQ(spy.last().at(1).toInt(), 32);  // a quarter of the rank range to start
  LayerView v;
  v.name = "blk.0.attn.q";
  v.rows = v.cols = 2;
  v.singular_values = {2.0, 1.0};
  v.rank = 1;
  v.energy_retained = 0.8;
  v.rank_error = std::sqrt(0.2);
  v.weight = {1, 0, 0, 2};
  v.reconstruction = {0, 0, 0, 2};
  v.bond = 1;
  v.out_factors = {2, 1};
  v.in_factors = {1, 2};
  v.bond_dims = {1, 1, 1};
  v.mpo_params = 4;
  t.setView(v);
  EXPECT_TRUE(t.summary().contains("keeps 80.0% of the spectral energy")) << t.summary().toStdString();
  EXPECT_FALSE(t.grab().toImage().isNull());
}

TEST(Explorer, BadCheckpointShowsAnErrorAndThePreviousModelStays) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  QTemporaryDir dir;
  const QString junk = dir.filePath("junk.safetensors");
  {
    QFile f(junk);
    ASSERT_TRUE(f.open(QIODevice::WriteOnly));
    f.write("this is not a checkpoint");
  }
  StartupOptions o;
  o.tokens = 8;
  o.persist = false;
  MainWindow w(o);
  w.show();
  WAIT_UNTIL(w.activationMap()->tokenCount() == 8, 60000);
  const QString before = w.modelSource();
  w.openModelPath(junk);
  WAIT_UNTIL(!w.lastError().isEmpty(), 30000);
  EXPECT_TRUE(w.lastError().contains("junk.safetensors")) << w.lastError().toStdString();
  EXPECT_EQ(w.modelSource(), before);
  // Still usable: the next generation runs on the model that stayed.
  w.generationPanel()->requestGenerate();
  WAIT_UNTIL(w.activationMap()->tokenCount() == 8 && w.generationPanel()->tokenCount() == 8, 60000);
  // A session reopens prompt and budget exactly.
  Session s = w.session();
  s.prompt = "JULIET:\n";
  s.budget.rank = 40;
  s.budget.kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}};
  w.openSession(s);
  EXPECT_EQ(w.generationPanel()->prompt(), "JULIET:\n");
  EXPECT_EQ(w.session().budget, s.budget);
  w.close();
}

TEST(CompareView, FindsTheFirstDivergenceAndTheLogProbChange) {
  CompareView v;
  std::vector<ComparedToken> a = {{"T", 0.5}, {"h", 0.8}, {"e", 0.9}, {" ", 0.7}, {"c", 0.2}};
  std::vector<ComparedToken> b = {{"T", 0.25}, {"h", 0.8}, {"e", 0.9}, {"y", 0.3}};
  v.setPair("A", a, "B", b);
  EXPECT_EQ(v.divergence(), 3);
  EXPECT_NEAR(v.meanAbsDeltaLogProb(), std::log(2.0) / 3, 1e-9);
  EXPECT_TRUE(v.summary().contains("token 3"));
  v.setPair("A", a, "B", a);
  EXPECT_EQ(v.divergence(), -1);
}

TEST(Explorer, ClickingAHeadRunsAnAbComparison) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  StartupOptions o;
  o.tokens = 30;
  o.persist = false;
  MainWindow w(o);
  w.show();
  WAIT_UNTIL(w.activationMap()->tokenCount() == 30, 60000);
  const QString before = w.compareView()->summary();
  for (int h = 0; h < 4; ++h) w.toggleAblation(true, 0, h);  // every head of the first layer off
  WAIT_UNTIL(w.compareView()->summary() != before, 60000);
  EXPECT_GE(w.compareView()->divergence(), 0);  // without layer 0's attention the text changes
  EXPECT_EQ(w.session().budget.heads_off.size(), 4u);
  w.close();
}

TEST(Explorer, ClickingABlockTheGateRanForcesItOffInTheGatesOrder) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  StartupOptions o;
  o.tokens = 20;
  o.persist = false;
  o.budget = R"({"gate": {"policy": "sensing", "active": 0.5, "measurement": "pca", "recovery": "mmse", "clustered": true}})";
  MainWindow w(o);
  w.show();
  WAIT_UNTIL(w.activationMap()->tokenCount() == 20, 60000);
  int ran = -1;
  for (int b = 0; b < 32 && ran < 0; ++b)
    if (w.activationMap()->cellRan(false, 0, b)) ran = b;
  ASSERT_GE(ran, 0);
  const QString before = w.compareView()->summary();
  w.toggleAblation(false, 0, ran);
  WAIT_UNTIL(w.compareView()->summary() != before, 60000);
  const Budget b = w.session().budget;
  EXPECT_EQ(b.gate_blocks_off.count({0, ran}), 1u);  // in the gate's order, not the checkpoint's
  EXPECT_TRUE(b.blocks_off.empty());
  w.toggleAblation(false, 0, ran);  // a second click releases it
  EXPECT_TRUE(w.session().budget.gate_blocks_off.empty());
  w.close();
}

TEST(Explorer, EveryPanelExportsPngSvgAndItsData) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  StartupOptions o;
  o.tokens = 10;
  o.persist = false;
  MainWindow w(o);
  w.show();
  WAIT_UNTIL(w.activationMap()->tokenCount() == 10, 60000);
  WAIT_UNTIL(!w.teachingView()->view().singular_values.empty(), 60000);
  QTemporaryDir dir;
  QString error;
  for (const char* name : {"activations", "teaching", "budget", "compare", "window"}) {
    const QString png = dir.filePath(QString(name) + ".png"), svg = dir.filePath(QString(name) + ".svg");
    ASSERT_TRUE(w.exportPanel(name, png, &error)) << name << ": " << error.toStdString();
    QImage img(png);
    ASSERT_FALSE(img.isNull()) << name;
    EXPECT_EQ(img.width(), 2 * w.panel(name)->width()) << name;  // 2× for slides
    ASSERT_TRUE(w.exportPanel(name, svg, &error)) << name << ": " << error.toStdString();
    QFile f(svg);
    ASSERT_TRUE(f.open(QIODevice::ReadOnly));
    EXPECT_TRUE(f.readAll().contains("<svg")) << name;
  }
  ASSERT_TRUE(w.exportPanel("activations", dir.filePath("a.csv"), &error)) << error.toStdString();
  QFile a(dir.filePath("a.csv"));
  ASSERT_TRUE(a.open(QIODevice::ReadOnly));
  EXPECT_EQ(a.readAll().count('\n'), 11);  // header + 10 tokens
  ASSERT_TRUE(w.exportPanel("teaching", dir.filePath("t.csv"), &error));
  QFile t(dir.filePath("t.csv"));
  ASSERT_TRUE(t.open(QIODevice::ReadOnly));
  EXPECT_TRUE(t.readAll().contains("index,singular_value,cumulative_energy"));
  EXPECT_FALSE(w.exportPanel("budget", dir.filePath("b.csv"), &error));
  EXPECT_TRUE(error.contains("no table"));
  EXPECT_FALSE(w.exportPanel("nope", dir.filePath("x.png"), &error));
  w.close();
}

TEST(ActivationMap, ComparesTheGateWithTheOracle) {
  ActivationMap m;
  m.resize(600, 320);
  m.setShape(1, 2, 4);
  TokenActivity a;
  a.text = "a";
  a.blocks = {{0, 1}};
  a.oracle = {{1, 2}};
  a.heads = {{0, 1}};
  m.appendToken(a);
  m.setShowOracle(true);
  EXPECT_TRUE(m.showOracle());
  bool missed = false, wasted = false;
  for (int y = 0; y < m.height(); y += 2)
    for (int x = 0; x < m.width(); x += 2) {
      const QString s = m.describeAt({x, y});
      missed |= s == "layer 0, block 2: skipped · among the oracle's top-k";
      wasted |= s == "layer 0, block 0: ran · not in the oracle's top-k";
    }
  EXPECT_TRUE(missed);
  EXPECT_TRUE(wasted);
  // Orange marks the block the oracle wanted and the gate skipped.
  const QImage img = m.grab().toImage();
  bool orange = false;
  for (int y = 0; y < img.height() && !orange; y += 2)
    for (int x = 0; x < img.width() && !orange; x += 2) orange |= img.pixelColor(x, y) == QColor(230, 159, 0);
  EXPECT_TRUE(orange);
}

TEST(BudgetPanel, OneMacKnobAndHeadReprobingReachTheBudget) {
  BudgetPanel p;
  p.setLimits({128, 64, 4, 512, LinearKind::Dense, LinearKind::Dense});
  EXPECT_EQ(p.budget().mac_target, 0);
  EXPECT_FALSE(p.reprobeBox()->isEnabled());  // all heads run: nothing to re-probe
  p.targetSlider()->setValue(70);
  Budget b = p.budget();
  EXPECT_DOUBLE_EQ(b.mac_target, 0.7);
  EXPECT_EQ(b.gate.policy, GatePolicy::Sensing);  // the knob trades gate blocks too
  EXPECT_FALSE(p.keepSlider()->isEnabled());      // the knob sets the prompt keep itself
  Budget h;
  h.gate.head_active = 0.5;
  h.gate.head_reprobe = 0.5;
  p.setBudget(h);
  EXPECT_TRUE(p.reprobeBox()->isEnabled());
  EXPECT_TRUE(p.reprobeBox()->isChecked());
  EXPECT_EQ(p.budget().gate.head_reprobe, 0.5);
  EXPECT_EQ(p.budget().mac_target, 0);
  p.reprobeBox()->setChecked(false);
  EXPECT_EQ(p.budget().gate.head_reprobe, 0);
  // Model-wide head allocation: a checkbox into the budget and back.
  EXPECT_TRUE(p.headGlobalBox()->isEnabled());
  EXPECT_FALSE(p.budget().gate.head_global);
  p.headGlobalBox()->setChecked(true);
  EXPECT_TRUE(p.budget().gate.head_global);
  h.gate.head_global = false;
  p.setBudget(h);
  EXPECT_FALSE(p.headGlobalBox()->isChecked());
  p.setBudget(Budget{});
  EXPECT_FALSE(p.headGlobalBox()->isEnabled());  // all heads run
}

TEST(BudgetPanel, PerLayerRanksApplyToNsnLayersOnly) {
  BudgetPanel p;
  BudgetLimits l{128, 64, 4, 512, LinearKind::Dense, LinearKind::Dense};
  l.layers = {{"blk.0.attn.q", 128}, {"blk.0.mlp.up", 128}, {"head", 65}};
  p.setLimits(l);
  ASSERT_NE(p.layerRankBox("blk.0.mlp.up"), nullptr);
  EXPECT_FALSE(p.layerRankBox("blk.0.mlp.up")->isEnabled());  // dense MLP: no rank to set
  Budget b;
  b.kind = {{"mlp", LinearKind::Nsn}};
  p.setBudget(b);
  EXPECT_TRUE(p.layerRankBox("blk.0.mlp.up")->isEnabled());
  EXPECT_FALSE(p.layerRankBox("blk.0.attn.q")->isEnabled());
  p.layerRankBox("blk.0.mlp.up")->setValue(12);
  p.layerRankBox("blk.0.attn.q")->setValue(5);  // ignored: attention is dense
  const Budget got = p.budget();
  EXPECT_EQ(got.layer_rank, (std::map<std::string, int64_t>{{"blk.0.mlp.up", 12}}));
  Budget again = got;
  p.setBudget(again);
  EXPECT_EQ(p.layerRankBox("blk.0.mlp.up")->value(), 12);
}

TEST(Explorer, TheFrontierMarkerFollowsTheSliders) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  StartupOptions o;
  o.tokens = 4;
  o.persist = false;
  MainWindow w(o);
  w.show();
  WAIT_UNTIL(w.activationMap()->tokenCount() == 4, 60000);
  // A frontier of SVD truncations for this very model (made-up accuracies: the marker is read off them).
  QTemporaryDir dir;
  const QString rows = dir.filePath("rows.jsonl");
  const std::string hash = w.session().model_hash.toStdString();
  int i = 0;
  for (auto [rank, macs, acc] : {std::tuple{16, 400000, 0.20}, {32, 600000, 0.30}, {64, 900000, 0.50}}) {
    SweepRow r = row("svd", macs, acc, "{\"rank\": " + std::to_string(rank) + ", \"kind\": {\"attn\": \"nsn\", \"mlp\": \"nsn\"}}");
    r.model_hash = hash;
    r.key = std::to_string(i++);
    append_sweep_row(rows.toStdString(), r);
  }
  Q_EMIT w.frontierFileRequested(rows);
  WAIT_UNTIL(w.frontierChart()->rows().size() == 3, 30000);
  Budget b;
  b.kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}};
  b.rank = 24;
  // The full budget has a marker already (no series of its kind: placed on the front's top).
  const QPointF full = w.frontierChart()->operatingPoint();
  w.budgetPanel()->setBudget(b);
  WAIT_UNTIL(!std::isnan(w.frontierChart()->operatingPoint().y()) && w.frontierChart()->operatingPoint() != full, 30000);
  EXPECT_FALSE(w.frontierChart()->operatingPointMeasured());  // rank 24 was not swept: placed by the fit, hollow
  const QPointF first = w.frontierChart()->operatingPoint();
  EXPECT_GT(first.y(), 0.2);
  EXPECT_LT(first.y(), 0.5);
  b.rank = 48;
  w.budgetPanel()->setBudget(b);
  WAIT_UNTIL(w.frontierChart()->operatingPoint().x() > first.x(), 30000);
  EXPECT_GT(w.frontierChart()->operatingPoint().y(), first.y());  // more MACs, higher on the curve
  w.close();
}

TEST(ActivationMap, TellsWhichCellsRanForTheSelectedToken) {
  ActivationMap m;
  m.setShape(1, 2, 4);
  EXPECT_TRUE(m.cellRan(false, 0, 3));  // nothing selected
  TokenActivity a;
  a.blocks = {{1}};
  a.heads = {{0}};
  m.appendToken(a);
  EXPECT_TRUE(m.cellRan(false, 0, 1));
  EXPECT_FALSE(m.cellRan(false, 0, 2));
  EXPECT_TRUE(m.cellRan(true, 0, 0));
  EXPECT_FALSE(m.cellRan(true, 0, 1));
}
