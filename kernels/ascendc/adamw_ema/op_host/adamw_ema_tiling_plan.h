// Tiling arithmetic of AdamWEma, free of CANN headers (compiled and tested with g++ here).
// The flat parameter is split into equal 32-byte-aligned blocks per core, each streamed through the
// Unified Buffer in tiles; one tile holds 5 input and 4 output fp32 vectors plus 2 work vectors.
#pragma once
#include <algorithm>
#include <cstdint>

struct AdamWEmaPlan {
  uint32_t block_dim;
  uint64_t elems_per_core;  // multiple of 8 (32 bytes of fp32) except for a single-core plan
  uint64_t last_core_elems;
  uint32_t tile_elems;      // multiple of 8
};

inline AdamWEmaPlan plan_adamw_ema(uint64_t n, uint32_t core_num, uint64_t ub_bytes) {
  constexpr uint64_t kAlign = 8, kVectors = 11;
  AdamWEmaPlan p{};
  uint64_t per_core = (n + core_num - 1) / std::max<uint32_t>(core_num, 1);
  per_core = std::max<uint64_t>(kAlign, (per_core + kAlign - 1) / kAlign * kAlign);
  p.block_dim = static_cast<uint32_t>(std::max<uint64_t>(1, (n + per_core - 1) / per_core));
  p.elems_per_core = per_core;
  p.last_core_elems = n - per_core * (p.block_dim - 1);
  const uint64_t fit = ub_bytes / (kVectors * sizeof(float)) / kAlign * kAlign;
  p.tile_elems = static_cast<uint32_t>(std::max<uint64_t>(kAlign, std::min<uint64_t>(fit, per_core)));
  return p;
}
