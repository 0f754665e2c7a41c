// Tiling arithmetic of AdaLayerNorm, free of CANN headers so that it compiles and is tested with g++ on
// any machine (tests/test_ascendc_sources.py); op_host/ada_layer_norm.cpp copies it into the TilingData.
#pragma once
#include <algorithm>
#include <cstdint>

struct AdaLayerNormPlan {
  uint32_t block_dim;       // AI cores used
  uint32_t rows_per_core;   // rows (tokens) of cores 0 .. block_dim-2; the last core takes the rest
  uint32_t last_core_rows;
  uint32_t row_len;         // D, elements normalised per row
  uint32_t seq_len;         // S, rows per batch sample (the row's shift/scale row is row / S)
  uint32_t rows_per_tile;   // rows moved to the Unified Buffer at once
};

// rows = B * S tokens of width d; ub_bytes of Unified Buffer per core; elem_bytes of the input dtype.
// UB holds per tile x and y (in dtype, rows_per_tile rows each) and, once, two fp32 work rows, the
// fp32 (1 + scale) and shift rows, one raw modulation row and a reduce scratch:
// 2 * elem_bytes * d * rows_per_tile + (16 + elem_bytes) * d + 256.
inline AdaLayerNormPlan plan_ada_layer_norm(uint64_t rows, uint32_t d, uint32_t seq_len, uint32_t core_num,
                                            uint64_t ub_bytes, uint32_t elem_bytes) {
  AdaLayerNormPlan p{};
  p.row_len = d;
  p.seq_len = seq_len;
  p.block_dim = static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(core_num, rows)));
  p.rows_per_core = static_cast<uint32_t>((rows + p.block_dim - 1) / p.block_dim);
  p.block_dim = static_cast<uint32_t>((rows + p.rows_per_core - 1) / p.rows_per_core);
  p.last_core_rows = static_cast<uint32_t>(rows - static_cast<uint64_t>(p.rows_per_core) * (p.block_dim - 1));
  const uint64_t fixed = (16ull + elem_bytes) * d + 256;
  const uint64_t per_row = 2ull * elem_bytes * d;
  const uint64_t fit = ub_bytes > fixed ? (ub_bytes - fixed) / per_row : 0;
  p.rows_per_tile = static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(fit, p.rows_per_core)));
  return p;
}
