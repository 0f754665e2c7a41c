// Host side of AdaLayerNorm: op definition, shape inference and tiling.
// y = LayerNorm(x) * (1 + scale[b]) + shift[b] for x (B, S, D), shift/scale (B, D); statistics in fp32.
// epsilon is a (1,) fp32 input read by the kernel (one compiled op for every epsilon, as the CPU twin).
#include "ada_layer_norm_tiling.h"
#include "ada_layer_norm_tiling_plan.h"
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"

namespace optiling {
static ge::graphStatus TilingFunc(gert::TilingContext *context) {
  const gert::Shape &x = context->GetInputShape(0)->GetStorageShape();
  if (x.GetDimNum() != 3) return ge::GRAPH_FAILED;
  const uint64_t batch = x.GetDim(0), seq = x.GetDim(1), d = x.GetDim(2);
  auto platform = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
  uint64_t ub = 0;
  platform.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
  const uint32_t elem = context->GetInputDesc(0)->GetDataType() == ge::DT_FLOAT ? 4 : 2;
  const AdaLayerNormPlan plan = plan_ada_layer_norm(batch * seq, static_cast<uint32_t>(d),
                                                    static_cast<uint32_t>(seq), platform.GetCoreNumAiv(), ub, elem);
  AdaLayerNormTilingData tiling;
  tiling.set_rowsPerCore(plan.rows_per_core);
  tiling.set_lastCoreRows(plan.last_core_rows);
  tiling.set_rowLen(plan.row_len);
  tiling.set_seqLen(plan.seq_len);
  tiling.set_rowsPerTile(plan.rows_per_tile);
  context->SetBlockDim(plan.block_dim);
  tiling.SaveToBuffer(context->GetRawTilingData()->GetData(), context->GetRawTilingData()->GetCapacity());
  context->GetRawTilingData()->SetDataSize(tiling.GetDataSize());
  return ge::GRAPH_SUCCESS;
}
}  // namespace optiling

namespace ge {
static graphStatus InferShape(gert::InferShapeContext *context) {
  *context->GetOutputShape(0) = *context->GetInputShape(0);
  return GRAPH_SUCCESS;
}
static graphStatus InferDataType(gert::InferDataTypeContext *context) {
  context->SetOutputDataType(0, context->GetInputDataType(0));
  return GRAPH_SUCCESS;
}
}  // namespace ge

namespace ops {
class AdaLayerNorm : public OpDef {
 public:
  explicit AdaLayerNorm(const char *name) : OpDef(name) {
    for (const char *input : {"x", "shift", "scale"}) {
      this->Input(input).ParamType(REQUIRED).DataType({ge::DT_FLOAT, ge::DT_BF16}).Format({ge::FORMAT_ND, ge::FORMAT_ND});
    }
    this->Input("epsilon").ParamType(REQUIRED).DataType({ge::DT_FLOAT, ge::DT_FLOAT}).Format({ge::FORMAT_ND, ge::FORMAT_ND});
    this->Output("y").ParamType(REQUIRED).DataType({ge::DT_FLOAT, ge::DT_BF16}).Format({ge::FORMAT_ND, ge::FORMAT_ND});
    this->SetInferShape(ge::InferShape).SetInferDataType(ge::InferDataType);
    this->AICore().SetTiling(optiling::TilingFunc).AddConfig("ascend910b");
  }
};
OP_ADD(AdaLayerNorm);
}  // namespace ops
