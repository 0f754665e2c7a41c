// Host-only check of the tiling plans (no CANN needed): every row / element is owned by exactly one core,
// tiles fit the Unified Buffer, AdamWEma blocks are 32-byte aligned. Exit status 0 when all hold.
#include <cstdio>

#include "ada_layer_norm/op_host/ada_layer_norm_tiling_plan.h"
#include "adamw_ema/op_host/adamw_ema_tiling_plan.h"

static int failures = 0;
#define CHECK(cond, ...)                                   \
  if (!(cond)) {                                           \
    std::printf("FAIL %s: ", #cond);                       \
    std::printf(__VA_ARGS__);                              \
    std::printf("\n");                                     \
    ++failures;                                            \
  }

int main() {
  const uint64_t ub = 192 * 1024;  // Ascend 910B vector core Unified Buffer
  for (uint64_t batch : {1, 2, 3}) {
    for (uint64_t seq : {1, 7, 1056, 4128}) {
      for (uint32_t d : {8, 1024, 2560, 3072}) {
        for (uint32_t cores : {1, 40, 48}) {
          for (uint32_t elem : {2, 4}) {
            const uint64_t rows = batch * seq;
            const AdaLayerNormPlan p = plan_ada_layer_norm(rows, d, seq, cores, ub, elem);
            const uint64_t covered = uint64_t(p.rows_per_core) * (p.block_dim - 1) + p.last_core_rows;
            CHECK(covered == rows, "rows=%llu cores=%u", (unsigned long long)rows, cores);
            CHECK(p.block_dim >= 1 && p.block_dim <= cores, "block_dim=%u", p.block_dim);
            CHECK(p.last_core_rows >= 1 && p.last_core_rows <= p.rows_per_core, "last=%u", p.last_core_rows);
            const uint64_t used = 2ull * elem * d * p.rows_per_tile + (16ull + elem) * d + 256;
            CHECK(used <= ub, "d=%u tile=%u uses %llu bytes", d, p.rows_per_tile, (unsigned long long)used);
          }
        }
      }
    }
  }
  for (uint64_t n : {1ull, 7ull, 8ull, 1000003ull, 7000000000ull / 4}) {
    for (uint32_t cores : {1, 40, 48}) {
      const AdamWEmaPlan p = plan_adamw_ema(n, cores, ub);
      CHECK(p.elems_per_core * (p.block_dim - 1) + p.last_core_elems == n, "n=%llu", (unsigned long long)n);
      CHECK(p.last_core_elems >= 1 && p.last_core_elems <= p.elems_per_core, "n=%llu", (unsigned long long)n);
      CHECK(p.elems_per_core % 8 == 0 && p.tile_elems % 8 == 0, "alignment n=%llu", (unsigned long long)n);
      CHECK(11ull * 4 * p.tile_elems <= ub, "tile=%u", p.tile_elems);
      CHECK(p.block_dim <= cores, "block_dim=%u", p.block_dim);
    }
  }
  std::printf("%s\n", failures ? "tiling plans: FAILED" : "tiling plans: ok");
  return failures ? 1 : 0;
}
