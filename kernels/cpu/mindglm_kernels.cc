// CPU twins of mindglm_image/ops: fp32 kernels loaded by MindSpore as AOT custom operators
// (ops.Custom("mindglm_kernels.so:Name", ..., func_type="aot")). Built by mindglm_image/ops/cpu_twins.py
// with -O3 -march=native -fopenmp: the inner loops are written for the compiler's vectoriser (AVX-512
// where the CPU has it), rows are spread over OpenMP threads.
//
// AOT calling convention (MindSpore): params = inputs then outputs, shapes[i][0..ndims[i]).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

inline float inv_rms(const float *x, int64_t d, float eps) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < d; ++j) acc += x[j] * x[j];
  return 1.f / std::sqrt(acc / static_cast<float>(d) + eps);
}

// y = LayerNorm(x) over d (no affine), statistics in fp32 (mean, then mean of squared deviations).
inline void normalize(const float *x, float *y, int64_t d, float eps) {
  float mean = 0.f;
#pragma omp simd reduction(+ : mean)
  for (int64_t j = 0; j < d; ++j) mean += x[j];
  mean /= static_cast<float>(d);
  float var = 0.f;
#pragma omp simd reduction(+ : var)
  for (int64_t j = 0; j < d; ++j) var += (x[j] - mean) * (x[j] - mean);
  const float r = 1.f / std::sqrt(var / static_cast<float>(d) + eps);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) y[j] = (x[j] - mean) * r;
}

}  // namespace

extern "C" {

// RmsNorm(x (..., D), weight (D), eps (1)) -> y = weight * x / rms(x)
int RmsNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 4) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  const int64_t d = shapes[0][ndims[0] - 1];
  const int64_t rows = numel(ndims[0], shapes[0]) / d;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * d;
    float *yr = y + r * d;
    const float s = inv_rms(xr, d, eps);
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) yr[j] = w[j] * (xr[j] * s);
  }
  return 0;
}

// AddRmsNorm(x, residual, weight, eps) -> (rms_norm(x + residual), x + residual)
int AddRmsNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 6) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *res = static_cast<const float *>(params[1]);
  const float *w = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  float *total = static_cast<float *>(params[5]);
  const int64_t d = shapes[0][ndims[0] - 1];
  const int64_t rows = numel(ndims[0], shapes[0]) / d;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float *tr = total + r * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) tr[j] = x[r * d + j] + res[r * d + j];
    const float s = inv_rms(tr, d, eps);
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = w[j] * (tr[j] * s);
  }
  return 0;
}

// AdaLayerNorm(x (B, S, D), shift (B, D), scale (B, D), eps) -> LayerNorm(x) * (1 + scale) + shift
int AdaLayerNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 5 || ndims[0] != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *shift = static_cast<const float *>(params[1]);
  const float *scale = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  const int64_t b = shapes[0][0], s = shapes[0][1], d = shapes[0][2];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < b * s; ++r) {
    const int64_t bi = r / s;
    float *yr = y + r * d;
    normalize(x + r * d, yr, d, eps);
    const float *sh = shift + bi * d;
    const float *sc = scale + bi * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) yr[j] = yr[j] * (1.f + sc[j]) + sh[j];
  }
  return 0;
}

// Attention(q (B, Hq, S, d), k (B, Hkv, K, d), v (B, Hkv, K, d), bias (Bb, Hb, Sb, K) with each of
// Bb, Hb, Sb equal to its full size or 1, scale (1)) -> out (B, Hq, S, d).
// Flash-style: the (S, K) score matrix is never materialised. A task is a block of kRows query rows of
// one head; each 64-key tile is transposed once per block (d x 64) so that the scores of a row are
// accumulated 64 keys wide (vector lanes over keys, no horizontal sums), then an online softmax
// rescales the row's running output before the tile's values are added.
int Attention(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 6 || ndims[0] != 4 || ndims[1] != 4 || ndims[3] != 4) return 1;
  const float *q = static_cast<const float *>(params[0]);
  const float *k = static_cast<const float *>(params[1]);
  const float *v = static_cast<const float *>(params[2]);
  const float *bias = static_cast<const float *>(params[3]);
  const float scale = *static_cast<const float *>(params[4]);
  float *out = static_cast<float *>(params[5]);
  const int64_t B = shapes[0][0], H = shapes[0][1], S = shapes[0][2], D = shapes[0][3];
  const int64_t HKV = shapes[1][1], K = shapes[1][2];
  const int64_t bb = shapes[3][0], bh = shapes[3][1], bs = shapes[3][2];
  if (shapes[3][3] != K || H % HKV) return 2;
  const int64_t groups = H / HKV;
  constexpr int64_t kTile = 64, kRows = 64;
  const int64_t row_blocks = (S + kRows - 1) / kRows;
#pragma omp parallel
  {
    std::vector<float> kt(D * kTile), acc(kRows * D), scores(kRows * kTile), m(kRows), l(kRows);
#pragma omp for schedule(dynamic) collapse(3)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t blk = 0; blk < row_blocks; ++blk) {
          const int64_t s0 = blk * kRows, rows = std::min(kRows, S - s0);
          const float *kb = k + (b * HKV + h / groups) * K * D;
          const float *vb = v + (b * HKV + h / groups) * K * D;
          std::fill(acc.begin(), acc.end(), 0.f);
          std::fill(m.begin(), m.end(), -INFINITY);
          std::fill(l.begin(), l.end(), 0.f);
          for (int64_t k0 = 0; k0 < K; k0 += kTile) {
            const int64_t n = std::min(kTile, K - k0);
            for (int64_t t = 0; t < n; ++t)
              for (int64_t j = 0; j < D; ++j) kt[j * kTile + t] = kb[(k0 + t) * D + j];
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t s = s0 + r;
              const float *qr = q + ((b * H + h) * S + s) * D;
              const float *br = bias + (((bb == 1 ? 0 : b) * bh + (bh == 1 ? 0 : h)) * bs + (bs == 1 ? 0 : s)) * K + k0;
              float *sc = scores.data() + r * kTile;
              std::fill(sc, sc + kTile, 0.f);
              for (int64_t j = 0; j < D; ++j) {
                const float qj = qr[j];
                const float *ktj = kt.data() + j * kTile;
#pragma omp simd
                for (int64_t t = 0; t < kTile; ++t) sc[t] += qj * ktj[t];
              }
              float tile_max = -INFINITY;
              for (int64_t t = 0; t < n; ++t) {
                sc[t] = sc[t] * scale + br[t];
                tile_max = std::max(tile_max, sc[t]);
              }
              const float m_new = std::max(m[r], tile_max);
              const float correction = std::exp(m[r] - m_new);  // exp(-inf) = 0 on the first tile
              float *ar = acc.data() + r * D;
              float sum = 0.f;
              for (int64_t t = 0; t < n; ++t) {
                sc[t] = std::exp(sc[t] - m_new);
                sum += sc[t];
              }
              l[r] = l[r] * correction + sum;
              m[r] = m_new;
#pragma omp simd
              for (int64_t j = 0; j < D; ++j) ar[j] *= correction;
              for (int64_t t = 0; t < n; ++t) {
                const float p = sc[t];
                const float *vr = vb + (k0 + t) * D;
#pragma omp simd
                for (int64_t j = 0; j < D; ++j) ar[j] += p * vr[j];
              }
            }
          }
          for (int64_t r = 0; r < rows; ++r) {
            float *o = out + ((b * H + h) * S + s0 + r) * D;
            const float inv = 1.f / l[r];
#pragma omp simd
            for (int64_t j = 0; j < D; ++j) o[j] = acc[r * D + j] * inv;
          }
        }
  }
  return 0;
}

}  // extern "C"
