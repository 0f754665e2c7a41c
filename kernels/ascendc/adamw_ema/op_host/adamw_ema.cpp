// Host side of AdamWEma: one fused optimizer step plus the EMA of the weights, in place of ~15 launches.
//   m = m + (g - m) (1 - b1);  v = b2 v + (1 - b2) g^2   (torch.optim.AdamW's CPU arithmetic)
//   p = p (1 - lr wd) - step_size m / (sqrt(v) / bias2_sqrt + eps);   ema = ema + (p - ema) (1 - d)
// step_scalars (3,) fp32 = [lr, step_size = lr / (1 - b1^t), bias2_sqrt = sqrt(1 - b2^t)]: a tensor, so a changing learning rate or
// step count does not recompile; the constant hyper-parameters are attributes.
#include "adamw_ema_tiling.h"
#include "adamw_ema_tiling_plan.h"
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"

namespace optiling {
static ge::graphStatus TilingFunc(gert::TilingContext *context) {
  const uint64_t n = context->GetInputShape(0)->GetStorageShape().GetShapeSize();
  auto platform = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
  uint64_t ub = 0;
  platform.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
  const AdamWEmaPlan plan = plan_adamw_ema(n, platform.GetCoreNumAiv(), ub);
  const gert::RuntimeAttrs *attrs = context->GetAttrs();
  AdamWEmaTilingData tiling;
  tiling.set_elemsPerCore(plan.elems_per_core);
  tiling.set_lastCoreElems(plan.last_core_elems);
  tiling.set_tileElems(plan.tile_elems);
  tiling.set_beta1(*attrs->GetAttrPointer<float>(0));
  tiling.set_beta2(*attrs->GetAttrPointer<float>(1));
  tiling.set_epsilon(*attrs->GetAttrPointer<float>(2));
  tiling.set_weightDecay(*attrs->GetAttrPointer<float>(3));
  tiling.set_emaDecay(*attrs->GetAttrPointer<float>(4));
  context->SetBlockDim(plan.block_dim);
  tiling.SaveToBuffer(context->GetRawTilingData()->GetData(), context->GetRawTilingData()->GetCapacity());
  context->GetRawTilingData()->SetDataSize(tiling.GetDataSize());
  return ge::GRAPH_SUCCESS;
}
}  // namespace optiling

namespace ge {
static graphStatus InferShape(gert::InferShapeContext *context) {
  for (size_t i = 0; i < 4; ++i) *context->GetOutputShape(i) = *context->GetInputShape(i == 0 ? 0 : i + 1);
  return GRAPH_SUCCESS;
}
static graphStatus InferDataType(gert::InferDataTypeContext *context) {
  for (size_t i = 0; i < 4; ++i) context->SetOutputDataType(i, DT_FLOAT);
  return GRAPH_SUCCESS;
}
}  // namespace ge

namespace ops {
class AdamWEma : public OpDef {
 public:
  explicit AdamWEma(const char *name) : OpDef(name) {
    for (const char *input : {"param", "grad", "exp_avg", "exp_avg_sq", "ema", "step_scalars"}) {
      this->Input(input).ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
    }
    for (const char *output : {"param_out", "exp_avg_out", "exp_avg_sq_out", "ema_out"}) {
      this->Output(output).ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
    }
    this->Attr("beta1").AttrType(OPTIONAL).Float(0.9f);
    this->Attr("beta2").AttrType(OPTIONAL).Float(0.999f);
    this->Attr("epsilon").AttrType(OPTIONAL).Float(1e-8f);
    this->Attr("weight_decay").AttrType(OPTIONAL).Float(0.01f);
    this->Attr("ema_decay").AttrType(OPTIONAL).Float(0.9999f);
    this->SetInferShape(ge::InferShape).SetInferDataType(ge::InferDataType);
    this->AICore().SetTiling(optiling::TilingFunc).AddConfig("ascend910b");
  }
};
OP_ADD(AdamWEma);
}  // namespace ops
