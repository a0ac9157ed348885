// Waiting in widget tests. QTest's QTRY_* macros report to QTest, not to GoogleTest: on a timeout
// they return from the test silently, so a test that never saw its condition would pass.
#pragma once
#include <gtest/gtest.h>

#include <QTest>

#define WAIT_UNTIL(cond, ms)                                                     \
  ASSERT_TRUE(QTest::qWaitFor([&]() -> bool { return bool(cond); }, (ms)))       \
      << "timed out after " #ms " ms waiting for: " #cond
