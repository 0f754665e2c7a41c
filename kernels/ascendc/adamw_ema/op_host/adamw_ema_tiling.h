#pragma once
#include "register/tilingdata_base.h"

namespace optiling {
BEGIN_TILING_DATA_DEF(AdamWEmaTilingData)
TILING_DATA_FIELD_DEF(uint64_t, elemsPerCore);
TILING_DATA_FIELD_DEF(uint64_t, lastCoreElems);
TILING_DATA_FIELD_DEF(uint32_t, tileElems);
TILING_DATA_FIELD_DEF(float, beta1);
TILING_DATA_FIELD_DEF(float, beta2);
TILING_DATA_FIELD_DEF(float, epsilon);
TILING_DATA_FIELD_DEF(float, weightDecay);
TILING_DATA_FIELD_DEF(float, emaDecay);
END_TILING_DATA_DEF;

REGISTER_TILING_DATA_CLASS(AdamWEma, AdamWEmaTilingData)
}  // namespace optiling
