// Byte sizes in text: every unit the parser knows, a bare number in the caller's unit, and what it refuses.
#include <gtest/gtest.h>

#include "core/byte_size.h"

namespace {

TEST(ByteSize, ParsesBinaryAndDecimalUnits) {
  const std::pair<const char*, double> cases[] = {{"512", 512},
                                                  {"512B", 512},
                                                  {"1K", 1024},
                                                  {"1kib", 1024},
                                                  {"2KB", 2000},
                                                  {"1.5M", 1.5 * 1048576},
                                                  {"3MiB", 3 * 1048576.0},
                                                  {"7mb", 7e6},
                                                  {"80GiB", 80 * 1073741824.0},
                                                  {"85.9 GB", 85.9e9},
                                                  {" 2g ", 2 * 1073741824.0},
                                                  {"1T", 1099511627776.0},
                                                  {"1TiB", 1099511627776.0},
                                                  {"1.2TB", 1.2e12},
                                                  {"0", 0},
                                                  {"1e3", 1000}};
  for (const auto& [text, bytes] : cases) {
    const std::optional<double> got = zs::parse_byte_size(text);
    ASSERT_TRUE(got.has_value()) << text;
    EXPECT_DOUBLE_EQ(*got, bytes) << text;
  }
}

TEST(ByteSize, ABareNumberCountsInTheCallersUnit) {
  EXPECT_DOUBLE_EQ(*zs::parse_byte_size("80", 1073741824.0), 80 * 1073741824.0);
  EXPECT_DOUBLE_EQ(*zs::parse_byte_size("0.5", 1073741824.0), 536870912.0);
  EXPECT_DOUBLE_EQ(*zs::parse_byte_size("80GB", 1073741824.0), 80e9);  // a unit overrides it
}

TEST(ByteSize, RefusesWhatIsNotASize) {
  for (const char* text :
       {"", "GiB", "-1", "-1GiB", "80x", "80 GiB GiB", "80Gb2", "nan", "inf", "1e999", "0x10", "80 G iB"})
    EXPECT_FALSE(zs::parse_byte_size(text).has_value()) << "'" << text << "'";
}

TEST(ByteSize, FormatsInBinaryUnitsWithTwoDecimals) {
  EXPECT_EQ(zs::format_bytes(0), "0 B");
  EXPECT_EQ(zs::format_bytes(1023), "1023 B");
  EXPECT_EQ(zs::format_bytes(1024), "1.00 KiB");
  EXPECT_EQ(zs::format_bytes(3870.72), "3.78 KiB");
  EXPECT_EQ(zs::format_bytes(28.62 * 1073741824.0), "28.62 GiB");
  EXPECT_EQ(zs::format_bytes(3.0 * 1099511627776.0 * 1024), "3072.00 TiB");
  EXPECT_EQ(zs::format_bytes(-2048), "-2.00 KiB");
  // What zsmem prints parses back to the same bytes, to the printed precision.
  EXPECT_DOUBLE_EQ(*zs::parse_byte_size(zs::format_bytes(80 * 1073741824.0)), 80 * 1073741824.0);
}

}  // namespace
