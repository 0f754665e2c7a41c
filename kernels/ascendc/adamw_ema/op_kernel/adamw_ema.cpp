// AdamWEma kernel (AscendC, vector cores): each core streams its block of the flat parameter through
// the Unified Buffer in tiles; all four states are read once and written once per step.
#include "kernel_operator.h"

using namespace AscendC;

class AdamWEmaKernel {
 public:
  __aicore__ inline void Init(GM_ADDR p, GM_ADDR g, GM_ADDR m, GM_ADDR v, GM_ADDR ema, GM_ADDR scalars,
                              GM_ADDR pOut, GM_ADDR mOut, GM_ADDR vOut, GM_ADDR emaOut, const AdamWEmaTilingData &t) {
    const uint64_t first = GetBlockIdx() * t.elemsPerCore;
    count_ = GetBlockIdx() == GetBlockNum() - 1 ? t.lastCoreElems : t.elemsPerCore;
    tile_ = t.tileElems;
    t_ = t;
    GM_ADDR ins[5] = {p, g, m, v, ema};
    GM_ADDR outs[4] = {pOut, mOut, vOut, emaOut};
    for (int i = 0; i < 5; ++i) inGm_[i].SetGlobalBuffer((__gm__ float *)ins[i] + first, count_);
    for (int i = 0; i < 4; ++i) outGm_[i].SetGlobalBuffer((__gm__ float *)outs[i] + first, count_);
    scalarGm_.SetGlobalBuffer((__gm__ float *)scalars, 3);
    pipe_.InitBuffer(inQueue_, 1, 5 * tile_ * sizeof(float));
    pipe_.InitBuffer(outQueue_, 1, 4 * tile_ * sizeof(float));
    pipe_.InitBuffer(work_, 2 * tile_ * sizeof(float));
  }

  __aicore__ inline void Process() {
    const float lr = scalarGm_.GetValue(0), stepSize = scalarGm_.GetValue(1), bias2Sqrt = scalarGm_.GetValue(2);
    for (uint64_t done = 0; done < count_; done += tile_) {
      const uint32_t n = count_ - done < tile_ ? static_cast<uint32_t>(count_ - done) : tile_;
      LocalTensor<float> in = inQueue_.AllocTensor<float>();
      for (int i = 0; i < 5; ++i) DataCopy(in[i * tile_], inGm_[i][done], n);
      inQueue_.EnQue(in);
      Compute(n, lr, stepSize, bias2Sqrt);
      LocalTensor<float> out = outQueue_.DeQue<float>();
      for (int i = 0; i < 4; ++i) DataCopy(outGm_[i][done], out[i * tile_], n);
      outQueue_.FreeTensor(out);
    }
  }

 private:
  // torch.optim.AdamW's CPU arithmetic, as ops/adamw_ema.AdamWEma writes it (the composite is the oracle)
  __aicore__ inline void Compute(uint32_t n, float lr, float stepSize, float bias2Sqrt) {
    LocalTensor<float> in = inQueue_.DeQue<float>();
    LocalTensor<float> out = outQueue_.AllocTensor<float>();
    LocalTensor<float> p = in, g = in[tile_], m = in[2 * tile_], v = in[3 * tile_], ema = in[4 * tile_];
    LocalTensor<float> pO = out, mO = out[tile_], vO = out[2 * tile_], emaO = out[3 * tile_];
    LocalTensor<float> a = work_.Get<float>(), b = a[tile_];
    // m = m + (g - m) (1 - b1)
    Sub(a, g, m, n);
    Muls(a, a, 1.0f - t_.beta1, n);
    Add(mO, m, a, n);
    // v = b2 v + (1 - b2) g^2
    Mul(a, g, g, n);
    Muls(a, a, 1.0f - t_.beta2, n);
    Muls(vO, v, t_.beta2, n);
    Add(vO, vO, a, n);
    // denom = sqrt(v) / bias2_sqrt + eps (a multiply by the reciprocal: Muls is the vector unit's scalar form)
    Sqrt(b, vO, n);
    Muls(b, b, 1.0f / bias2Sqrt, n);
    Adds(b, b, t_.epsilon, n);
    // p = p (1 - lr wd) - step_size m / denom
    Div(a, mO, b, n);
    Muls(a, a, -stepSize, n);
    Muls(pO, p, 1.0f - lr * t_.weightDecay, n);
    Add(pO, pO, a, n);
    // ema = ema + (p - ema) (1 - d)
    Sub(a, pO, ema, n);
    Muls(a, a, 1.0f - t_.emaDecay, n);
    Add(emaO, ema, a, n);
    outQueue_.EnQue(out);
    inQueue_.FreeTensor(in);
  }

  TPipe pipe_;
  TQue<QuePosition::VECIN, 1> inQueue_;
  TQue<QuePosition::VECOUT, 1> outQueue_;
  TBuf<QuePosition::VECCALC> work_;
  GlobalTensor<float> inGm_[5], outGm_[4], scalarGm_;
  AdamWEmaTilingData t_;
  uint64_t count_;
  uint32_t tile_;
};

extern "C" __global__ __aicore__ void adamw_ema(GM_ADDR p, GM_ADDR g, GM_ADDR m, GM_ADDR v, GM_ADDR ema,
                                                GM_ADDR scalars, GM_ADDR pOut, GM_ADDR mOut, GM_ADDR vOut,
                                                GM_ADDR emaOut, GM_ADDR workspace, GM_ADDR tiling) {
  GET_TILING_DATA(t, tiling);
  AdamWEmaKernel op;
  op.Init(p, g, m, v, ema, scalars, pOut, mOut, vOut, emaOut, t);
  op.Process();
}
