// AdaLayerNorm kernel (AscendC, vector cores): one pass per row through the Unified Buffer.
// Each core owns a contiguous block of rows (tokens); a tile of rows is copied in, normalised in fp32
// (mean, centred variance, rsqrt), modulated with its sample's (1 + scale) and shift, cast and copied out.
#include "kernel_operator.h"

using namespace AscendC;

template <typename T>
class AdaLayerNormKernel {
 public:
  __aicore__ inline void Init(GM_ADDR x, GM_ADDR shift, GM_ADDR scale, GM_ADDR eps, GM_ADDR y,
                              const AdaLayerNormTilingData &t) {
    rowLen_ = t.rowLen;
    seqLen_ = t.seqLen;
    rowsPerTile_ = t.rowsPerTile;
    epsGm_.SetGlobalBuffer((__gm__ float *)eps, 1);
    eps_ = epsGm_.GetValue(0);
    firstRow_ = GetBlockIdx() * t.rowsPerCore;
    rows_ = GetBlockIdx() == GetBlockNum() - 1 ? t.lastCoreRows : t.rowsPerCore;
    xGm_.SetGlobalBuffer((__gm__ T *)x + firstRow_ * rowLen_, rows_ * rowLen_);
    yGm_.SetGlobalBuffer((__gm__ T *)y + firstRow_ * rowLen_, rows_ * rowLen_);
    shiftGm_.SetGlobalBuffer((__gm__ T *)shift);
    scaleGm_.SetGlobalBuffer((__gm__ T *)scale);
    pipe_.InitBuffer(inQueue_, 1, rowsPerTile_ * rowLen_ * sizeof(T));
    pipe_.InitBuffer(outQueue_, 1, rowsPerTile_ * rowLen_ * sizeof(T));
    pipe_.InitBuffer(work_, rowLen_ * sizeof(float));
    pipe_.InitBuffer(square_, rowLen_ * sizeof(float));
    pipe_.InitBuffer(modBuf_, 2 * rowLen_ * sizeof(float));
    pipe_.InitBuffer(modIn_, rowLen_ * sizeof(T));
    pipe_.InitBuffer(reduceBuf_, 64 * sizeof(float));
  }

  __aicore__ inline void Process() {
    for (uint32_t done = 0; done < rows_; done += rowsPerTile_) {
      const uint32_t n = rows_ - done < rowsPerTile_ ? rows_ - done : rowsPerTile_;
      CopyIn(done, n);
      Compute(done, n);
      CopyOut(done, n);
    }
  }

 private:
  __aicore__ inline void CopyIn(uint32_t done, uint32_t n) {
    LocalTensor<T> x = inQueue_.AllocTensor<T>();
    DataCopy(x, xGm_[done * rowLen_], n * rowLen_);
    inQueue_.EnQue(x);
  }

  // shift/scale rows of sample b into fp32 (modBuf: [1 + scale | shift])
  __aicore__ inline void LoadModulation(uint32_t b) {
    LocalTensor<float> mod = modBuf_.Get<float>();
    LocalTensor<T> raw = modIn_.Get<T>();
    for (uint32_t which = 0; which < 2; ++which) {
      DataCopy(raw, which == 0 ? scaleGm_[b * rowLen_] : shiftGm_[b * rowLen_], rowLen_);
      PipeBarrier<PIPE_ALL>();
      LocalTensor<float> dst = mod[which * rowLen_];
      if constexpr (IsSameType<T, float>::value) {
        DataCopy(dst, raw, rowLen_);
      } else {
        Cast(dst, raw, RoundMode::CAST_NONE, rowLen_);
      }
    }
    Adds(mod, mod, 1.0f, rowLen_);
    currentSample_ = b;
  }

  __aicore__ inline void Compute(uint32_t done, uint32_t n) {
    LocalTensor<T> x = inQueue_.DeQue<T>();
    LocalTensor<T> y = outQueue_.AllocTensor<T>();
    LocalTensor<float> h = work_.Get<float>();
    LocalTensor<float> sq = square_.Get<float>();
    LocalTensor<float> red = reduceBuf_.Get<float>();
    LocalTensor<float> mod = modBuf_.Get<float>();
    const float invD = 1.0f / static_cast<float>(rowLen_);
    for (uint32_t r = 0; r < n; ++r) {
      const uint32_t b = (firstRow_ + done + r) / seqLen_;
      if (b != currentSample_) LoadModulation(b);
      if constexpr (IsSameType<T, float>::value) {
        DataCopy(h, x[r * rowLen_], rowLen_);
      } else {
        Cast(h, x[r * rowLen_], RoundMode::CAST_NONE, rowLen_);
      }
      ReduceSum(red, h, red, rowLen_);
      const float mean = red.GetValue(0) * invD;
      Adds(h, h, -mean, rowLen_);
      // centred variance: sum(h * h) / D
      Mul(sq, h, h, rowLen_);
      ReduceSum(red, sq, red, rowLen_);
      const float rstd = 1.0f / sqrt(red.GetValue(0) * invD + eps_);
      Muls(h, h, rstd, rowLen_);
      Mul(h, h, mod, rowLen_);                 // * (1 + scale)
      Add(h, h, mod[rowLen_], rowLen_);        // + shift
      if constexpr (IsSameType<T, float>::value) {
        DataCopy(y[r * rowLen_], h, rowLen_);
      } else {
        Cast(y[r * rowLen_], h, RoundMode::CAST_RINT, rowLen_);
      }
    }
    outQueue_.EnQue(y);
    inQueue_.FreeTensor(x);
  }

  __aicore__ inline void CopyOut(uint32_t done, uint32_t n) {
    LocalTensor<T> y = outQueue_.DeQue<T>();
    DataCopy(yGm_[done * rowLen_], y, n * rowLen_);
    outQueue_.FreeTensor(y);
  }

  TPipe pipe_;
  TQue<QuePosition::VECIN, 1> inQueue_;
  TQue<QuePosition::VECOUT, 1> outQueue_;
  TBuf<QuePosition::VECCALC> work_, square_, modBuf_, modIn_, reduceBuf_;
  GlobalTensor<T> xGm_, yGm_, shiftGm_, scaleGm_;
  GlobalTensor<float> epsGm_;
  uint32_t rowLen_, seqLen_, rowsPerTile_, firstRow_, rows_;
  uint32_t currentSample_ = 0xFFFFFFFFu;
  float eps_;
};

extern "C" __global__ __aicore__ void ada_layer_norm(GM_ADDR x, GM_ADDR shift, GM_ADDR scale, GM_ADDR eps, GM_ADDR y,
                                                     GM_ADDR workspace, GM_ADDR tiling) {
  GET_TILING_DATA(t, tiling);
  if (TILING_KEY_IS(0)) {
    AdaLayerNormKernel<DTYPE_X> op;
    op.Init(x, shift, scale, eps, y, t);
    op.Process();
  }
}
