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
#include <limits>
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

// Attention building blocks, register-blocked like a GEMM micro-kernel. `vf` is one machine vector
// (GCC/Clang vector extensions): 16 fp32 lanes with AVX-512 (32 registers: a micro-kernel keeps 6 rows x
// 4 accumulators), 8 with AVX2 (16 registers: 6 rows x 2). Twelve or more independent accumulators keep
// both FMA pipes busy through their 4-cycle latency.
#if defined(__AVX512F__)
constexpr int kLanes = 16, kChunk = 4;
#else
constexpr int kLanes = 8, kChunk = 2;
#endif
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));
constexpr int64_t kTile = 64, kMicro = 6, kBlock = 20 * kMicro;  // keys per tile, rows per micro-kernel, per task
constexpr float kMasked = std::numeric_limits<float>::lowest();  // ops/attention.py's MASKED

inline vf load(const float *p) {
  vf x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
inline void store(float *p, vf x) { std::memcpy(p, &x, sizeof x); }
inline vf splat(float x) { return x - vf{}; }  // a broadcast (x - 0 folds to x; x + 0 would not, for x = -0)

// The sum of a vector's lanes.
inline float hsum(vf x) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += x[i];
  return s;
}

// y[m + r][n0 + c] = x[m + r] . w[n0 + c] (+ b[n0 + c]) for kM rows of x against kW rows of w: kM x kW
// accumulators in registers, each loaded vector of w used kM times and each vector of x kW times.
template <int kM, int kW>
void linear_micro(const float *x, const float *w, const float *b, float *y, int64_t n, int64_t k, int64_t m,
                  int64_t n0) {
  const int64_t kv = k / kLanes * kLanes;
  vf acc[kM][kW] = {};
  for (int64_t j = 0; j < kv; j += kLanes) {
    vf wv[kW];
    for (int c = 0; c < kW; ++c) wv[c] = load(w + (n0 + c) * k + j);
    for (int r = 0; r < kM; ++r) {
      const vf xv = load(x + (m + r) * k + j);
      for (int c = 0; c < kW; ++c) acc[r][c] += xv * wv[c];
    }
  }
  for (int r = 0; r < kM; ++r)
    for (int c = 0; c < kW; ++c) {
      float s = hsum(acc[r][c]);
      for (int64_t j = kv; j < k; ++j) s += x[(m + r) * k + j] * w[(n0 + c) * k + j];
      y[(m + r) * n + n0 + c] = b ? s + b[n0 + c] : s;
    }
}

// Every row of x against kW rows of w from n0: kRowBlock rows of x at a time, then the rest one by one.
// The kW weight rows (kW * k floats) stay in L1/L2 while the x rows pass over them.
template <int kW>
void linear_block(const float *x, const float *w, const float *b, float *y, int64_t m_rows, int64_t n,
                  int64_t k, int64_t n0) {
  constexpr int kRowBlock = kLanes == 16 ? 4 : 2;  // 16 or 8 accumulators: half the vector registers
  int64_t m = 0;
  for (; m + kRowBlock <= m_rows; m += kRowBlock) linear_micro<kRowBlock, kW>(x, w, b, y, n, k, m, n0);
  for (; m < m_rows; ++m) linear_micro<1, kW>(x, w, b, y, n, k, m, n0);
}

// exp per lane (Cephes expf: 2^n * p(r), |r| <= ln2/2, about 1 ulp); below -87.3 it gives ~1e-38
// instead of 0 (callers zero what must weigh exactly 0).
inline vf exp_v(vf x) {
  x = x < splat(-87.3f) ? splat(-87.3f) : x;
  x = x > splat(88.3f) ? splat(88.3f) : x;
  const vf fx = x * 1.44269504088896341f + 0.5f;
  vf n = __builtin_convertvector(__builtin_convertvector(fx, vi), vf);
  n = n > fx ? n - 1.f : n;  // floor
  const vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// One row's online-softmax step over a key tile: scores += bias (n valid keys), p = exp(scores - m_new)
// (exactly 0 past n), running max m and sum l updated; returns the factor that rescales the row's output.
inline float softmax_tile(float *sc, const float *bias, int64_t n, float &m, float &l, float *p) {
  vf top = splat(-INFINITY);
  if (n == kTile) {
    for (int64_t t = 0; t < kTile; t += kLanes) {
      const vf x = load(sc + t) + load(bias + t);
      store(sc + t, x);
      top = x > top ? x : top;
    }
  } else {
    for (int64_t t = 0; t < kTile; ++t) sc[t] = t < n ? sc[t] + bias[t] : -INFINITY;
    for (int64_t t = 0; t < kTile; t += kLanes) top = load(sc + t) > top ? load(sc + t) : top;
  }
  float m_new = m;
  for (int i = 0; i < kLanes; ++i) m_new = std::max(m_new, top[i]);
  const float correction = m == -INFINITY ? 0.f : std::exp(m - m_new);
  for (int64_t t = 0; t < kTile; t += kLanes) store(p + t, exp_v(load(sc + t) - m_new));
  std::fill(p + n, p + kTile, 0.f);  // keys past the end weigh exactly 0 (exp_v gives ~1e-38 there)
  vf sum = vf{};
  for (int64_t t = 0; t < kTile; t += kLanes) sum += load(p + t);
  float total = 0.f;
  for (int i = 0; i < kLanes; ++i) total += sum[i];
  l = l * correction + total;
  m = m_new;
  return correction;
}

// scores[r][t] = sum_j q[r][j] * kt[j][t]: kMicro rows of q (stride dp) against a dp x kTile tile.
inline void scores_micro(const float *q, const float *kt, int64_t dp, float *scores) {
  for (int64_t t0 = 0; t0 < kTile; t0 += kChunk * kLanes) {
    vf acc[kMicro][kChunk] = {};
#pragma GCC unroll 4
    for (int64_t j = 0; j < dp; ++j) {
      vf kv[kChunk];
      for (int c = 0; c < kChunk; ++c) kv[c] = load(kt + j * kTile + t0 + c * kLanes);
      for (int r = 0; r < kMicro; ++r)
        for (int c = 0; c < kChunk; ++c) acc[r][c] += q[r * dp + j] * kv[c];  // scalar x vector: a broadcast
    }
    for (int r = 0; r < kMicro; ++r)
      for (int c = 0; c < kChunk; ++c) store(scores + r * kTile + t0 + c * kLanes, acc[r][c]);
  }
}

// The same scores for a block of at most kMicro rows (a decode step's grouped heads), straight from K's
// rows (dp == d; consecutive keys ks apart): dot products over the head dim, so no tile is transposed.
inline void scores_dot(const float *q, int64_t rows, const float *k, int64_t ks, int64_t n, int64_t dp,
                       float *scores) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      vf acc = vf{};
      for (int64_t j = 0; j < dp; j += kLanes) acc += load(q + r * dp + j) * load(k + t * ks + j);
      float dot = 0.f;
      for (int i = 0; i < kLanes; ++i) dot += acc[i];
      scores[r * kTile + t] = dot;
    }
}

// o[r][c0 .. c0 + kVecs * kLanes) += sum_t p[r][t] * v[t][same columns], kMicro rows (stride dp) and n keys
// (consecutive values vs apart).
template <int kVecs>
inline void output_cols(const float *p, const float *v, int64_t vs, int64_t n, int64_t dp, float *o) {
  vf acc[kMicro][kVecs];
  for (int r = 0; r < kMicro; ++r)
    for (int c = 0; c < kVecs; ++c) acc[r][c] = load(o + r * dp + c * kLanes);
#pragma GCC unroll 4
  for (int64_t t = 0; t < n; ++t) {
    vf vv[kVecs];
    for (int c = 0; c < kVecs; ++c) vv[c] = load(v + t * vs + c * kLanes);
    for (int r = 0; r < kMicro; ++r)
      for (int c = 0; c < kVecs; ++c) acc[r][c] += p[r * kTile + t] * vv[c];
  }
  for (int r = 0; r < kMicro; ++r)
    for (int c = 0; c < kVecs; ++c) store(o + r * dp + c * kLanes, acc[r][c]);
}

// o[r][:] += p[r][:n] x v[:n][:] over all dp columns, kChunk vectors at a time (then the remainder).
inline void output_micro(const float *p, const float *v, int64_t vs, int64_t n, int64_t dp, float *o) {
  int64_t c0 = 0;
  for (; c0 + kChunk * kLanes <= dp; c0 += kChunk * kLanes) output_cols<kChunk>(p, v + c0, vs, n, dp, o + c0);
  for (; c0 < dp; c0 += kLanes) output_cols<1>(p, v + c0, vs, n, dp, o + c0);
}

// Attention over q, k, v in either layout: BNSD (q (B, Hq, S, d), k/v (B, Hkv, K, d)) or BSND (q (B, S, Hq, d),
// k/v (B, K, Hkv, d), the projections' own layout: no head transpose before or after); out has q's shape.
// bias (Bb, Hb, Sb, K) in both, each of Bb, Hb, Sb equal to its full size (B, Hq, S) or 1; scale (1).
// Flash-style: the (S, K) score matrix is never materialised. The query heads that share a KV head are
// folded into its rows (row i = group i / S, position i % S), so a decode step's grouped heads make one
// block. A task is a block of kBlock rows of one KV head; each 64-key tile of K is transposed once per
// block (dp x 64, the head dim zero-padded to whole vectors; V is copied only when d needs that padding
// or, in BSND, to make its rows contiguous);
// then the register-blocked kernels above compute kMicro rows at a time: scores, online softmax (exp_v),
// and the rescaled output update. A block of at most kMicro rows (decode) skips the transpose.
int attention(int nparam, void **params, int *ndims, int64_t **shapes, bool bsnd) {
  if (nparam != 6 || ndims[0] != 4 || ndims[1] != 4 || ndims[3] != 4) return 1;
  const float *q = static_cast<const float *>(params[0]);
  const float *k = static_cast<const float *>(params[1]);
  const float *v = static_cast<const float *>(params[2]);
  const float *bias = static_cast<const float *>(params[3]);
  const float scale = *static_cast<const float *>(params[4]);
  float *out = static_cast<float *>(params[5]);
  const int64_t B = shapes[0][0], D = shapes[0][3];
  const int64_t S = shapes[0][bsnd ? 1 : 2], H = shapes[0][bsnd ? 2 : 1];
  const int64_t K = shapes[1][bsnd ? 1 : 2], HKV = shapes[1][bsnd ? 2 : 1];
  const int64_t bb = shapes[3][0], bh = shapes[3][1], bs = shapes[3][2];
  if (shapes[3][3] != K || H % HKV) return 2;
  // element strides of a batch, a head and a position (query/output; key/value)
  const int64_t qb_stride = S * H * D, qh = bsnd ? D : S * D, qs = bsnd ? H * D : D;
  const int64_t kb_stride = K * HKV * D, kh = bsnd ? D : K * D, ks = bsnd ? HKV * D : D;
  const int64_t groups = H / HKV, rows_per_kv = groups * S;
  const int64_t dp = (D + kLanes - 1) / kLanes * kLanes;  // head dim padded to whole vectors
  const int64_t row_blocks = (rows_per_kv + kBlock - 1) / kBlock, n_tiles = (K + kTile - 1) / kTile;
#pragma omp parallel if (B * H * S * K * D > (1 << 18))  // a small decode step: no thread wake-up
  {
    std::vector<float> kt(dp * kTile), vt(kTile * dp), kr(bsnd ? kTile * D : 0),  // zeroed: padding stays 0
        qb(kBlock * dp), ob(kBlock * dp), probs(kMicro * kTile),
        scores(kMicro * kTile);
    std::vector<float> m(kBlock), l(kBlock);
    std::vector<const float *> brow(kBlock);
    std::vector<char> skip(n_tiles);
#pragma omp for schedule(dynamic) collapse(3)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t kvh = 0; kvh < HKV; ++kvh)
        for (int64_t blk = 0; blk < row_blocks; ++blk) {
          const int64_t i0 = blk * kBlock, rows = std::min(kBlock, rows_per_kv - i0);
          const float *kb = k + b * kb_stride + kvh * kh;
          const float *vb = v + b * kb_stride + kvh * kh;
          // 1. the block's query rows, scaled and zero-padded (rows past the end stay zero), and bias rows
          std::fill(qb.begin(), qb.end(), 0.f);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t h = kvh * groups + (i0 + r) / S, s = (i0 + r) % S;
            const float *qr = q + b * qb_stride + h * qh + s * qs;
            for (int64_t j = 0; j < D; ++j) qb[r * dp + j] = qr[j] * scale;
            brow[r] = bias + (((bb == 1 ? 0 : b) * bh + (bh == 1 ? 0 : h)) * bs + (bs == 1 ? 0 : s)) * K;
          }
          const bool few_rows = rows <= kMicro && dp == D;
          std::fill(ob.begin(), ob.end(), 0.f);
          std::fill(m.begin(), m.end(), -INFINITY);
          std::fill(l.begin(), l.end(), 0.f);
          // key tiles every row of the block masks (bias = MASKED: a static cache's empty slots, left padding)
          // weigh exactly 0 once any visible key is seen, so they are skipped; a block that sees no key at all
          // keeps them (the composite's uniform softmax over masked keys)
          bool any_visible = false;
          for (int64_t t = 0; t < n_tiles; ++t) {
            const int64_t k0 = t * kTile, n = std::min(kTile, K - k0);
            bool masked = true;
            for (int64_t r = rows - 1; r >= 0 && masked; --r)  // the last row sees the most keys (causal)
              for (int64_t j = 0; j < n && masked; ++j) masked = brow[r][k0 + j] == kMasked;
            skip[t] = masked;
            any_visible = any_visible || !masked;
          }
          for (int64_t k0 = 0; k0 < K; k0 += kTile) {
            if (any_visible && skip[k0 / kTile]) continue;
            // 2. the tile: K transposed (dp x 64; rows past the head dim stay 0, columns past the last key
            // keep finite stale values that the softmax masks), V read in place unless d needs padding
            const int64_t n = std::min(kTile, K - k0);
            if (!few_rows) {
              const float *ktile = kb + k0 * ks;
              int64_t kstride = ks;
              if (ks != D) {  // BSND: rows a page apart share L1 sets, so gather them contiguously first
                for (int64_t t = 0; t < n; ++t) std::copy(ktile + t * ks, ktile + t * ks + D, kr.data() + t * D);
                ktile = kr.data();
                kstride = D;
              }
              for (int64_t j = 0; j < D; ++j)
                for (int64_t t = 0; t < n; ++t) kt[j * kTile + t] = ktile[t * kstride + j];
            }
            const float *vtile = vb + k0 * ks;
            int64_t vs = ks;
            if (dp != D || (ks != D && !few_rows)) {  // padded, or BSND rows a page apart: one contiguous copy
              for (int64_t t = 0; t < n; ++t) std::copy(vtile + t * ks, vtile + t * ks + D, vt.data() + t * dp);
              vtile = vt.data();
              vs = dp;
            }
            for (int64_t r0 = 0; r0 < rows; r0 += kMicro) {
              // 3. scores of kMicro rows x 64 keys, then each row's online-softmax update
              if (few_rows)
                scores_dot(qb.data(), rows, kb + k0 * ks, ks, n, dp, scores.data());
              else
                scores_micro(qb.data() + r0 * dp, kt.data(), dp, scores.data());
              for (int64_t r = 0; r < kMicro; ++r) {
                float *p = probs.data() + r * kTile;
                if (r0 + r >= rows) {
                  std::fill(p, p + kTile, 0.f);
                  continue;
                }
                const float correction = softmax_tile(scores.data() + r * kTile, brow[r0 + r] + k0, n, m[r0 + r],
                                                      l[r0 + r], p);
                float *orow = ob.data() + (r0 + r) * dp;
                for (int64_t j = 0; j < dp; ++j) orow[j] *= correction;
              }
              // 4. output rows += probabilities x V tile
              output_micro(probs.data(), vtile, vs, n, dp, ob.data() + r0 * dp);
            }
          }
          // 5. normalise and scatter the rows back to their heads
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t h = kvh * groups + (i0 + r) / S, s = (i0 + r) % S;
            float *o = out + b * qb_stride + h * qh + s * qs;
            const float inv = 1.f / l[r];
            for (int64_t j = 0; j < D; ++j) o[j] = ob[r * dp + j] * inv;
          }
        }
  }
  return 0;
}

// ops/sample_token.py's rules for one row of V logits: returns the token, sets `bad` to the row's non-finite
// count. cfg: temperature, top_k (0: off), top_p, 1 to sample (else the argmax, first of equal maxima). Ids at
// or above limit are -inf. Sampling: scores = logits / temperature, sorted ascending; top-k keeps scores >= the
// k-th largest; top-p drops the ascending prefix whose softmax mass (cumulated in order) is <= 1 - top_p, never
// the last; the kept scores' softmax in vocabulary order is cumulated and the token is the number of entries
// below u times the total (at most V - 1), i.e. the first whose cumulative mass reaches u.
int32_t sample_row(const float *x, int64_t V, int64_t limit, const float *cfg, float u, int32_t &bad) {
  bad = 0;
  int64_t best = 0;
  for (int64_t i = 0; i < V; ++i) {
    bad += !std::isfinite(x[i]);
    const float xi = i < limit ? x[i] : -INFINITY, xb = best < limit ? x[best] : -INFINITY;
    if (xi > xb) best = i;
  }
  if (cfg[3] <= 0) return static_cast<int32_t>(best);
  const float temperature = cfg[0], top_p = cfg[2];
  const int64_t k = cfg[1] > 0 ? static_cast<int64_t>(std::min(cfg[1], static_cast<float>(V))) : V;
  std::vector<float> scores(V), ascending(V), cdf(V);
  for (int64_t i = 0; i < V; ++i) scores[i] = (i < limit ? x[i] : -INFINITY) / temperature;
  ascending = scores;
  std::sort(ascending.begin(), ascending.end());
  // 1. top-k: the k-th largest score; 2. top-p: the smallest kept score of the ascending order
  const float kth = ascending[V - k];
  for (float &a : ascending) a = a < kth ? -INFINITY : a;
  const float top = ascending[V - 1];
  double total = 0.0;
  for (int64_t i = 0; i < V; ++i) total += std::exp(ascending[i] - top);
  float cumulative = 0.f;
  int64_t dropped = 0;
  for (int64_t i = 0; i + 1 < V; ++i) {
    cumulative += static_cast<float>(std::exp(ascending[i] - top) / total);
    dropped += cumulative <= 1.f - top_p;
  }
  const float threshold = std::max(ascending[dropped], kth);
  // 3. inverse CDF over the kept scores in vocabulary order
  float running = 0.f;
  double kept_total = 0.0;
  for (int64_t i = 0; i < V; ++i) kept_total += scores[i] >= threshold ? std::exp(scores[i] - top) : 0.0;
  for (int64_t i = 0; i < V; ++i) {
    running += scores[i] >= threshold ? static_cast<float>(std::exp(scores[i] - top) / kept_total) : 0.f;
    cdf[i] = running;
  }
  const float target = u * cdf[V - 1];
  int64_t picked = 0;
  for (int64_t i = 0; i < V; ++i) picked += cdf[i] < target;
  return static_cast<int32_t>(std::min(picked, V - 1));
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
#pragma omp parallel for schedule(static) if (rows * d > 65536)
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
#pragma omp parallel for schedule(static) if (rows * d > 65536)
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
#pragma omp parallel for schedule(static) if (b * s * d > 65536)
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

// LayerNorm(x (..., D)[, weight (D), bias (D)], eps) -> y: normalize() above, then the affine if given.
int LayerNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 3 && nparam != 5) return 1;
  const bool affine = nparam == 5;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = affine ? static_cast<const float *>(params[1]) : nullptr;
  const float *b = affine ? static_cast<const float *>(params[2]) : nullptr;
  const float eps = *static_cast<const float *>(params[affine ? 3 : 1]);
  float *y = static_cast<float *>(params[nparam - 1]);
  const int64_t d = shapes[0][ndims[0] - 1];
  const int64_t rows = numel(ndims[0], shapes[0]) / d;
#pragma omp parallel for schedule(static) if (rows * d > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    float *yr = y + r * d;
    normalize(x + r * d, yr, d, eps);
    if (affine) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) yr[j] = yr[j] * w[j] + b[j];
    }
  }
  return 0;
}

// GeluTanh(x) -> y = 0.5 x (1 + tanh(u)), u = sqrt(2 / pi) (x + 0.044715 x^3), computed as the equal
// x / (1 + exp(-2u)) with the vector exp above (no cancellation near u = 0; exp_v's clamp keeps both ends finite).
int GeluTanh(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = numel(ndims[0], shapes[0]);
  constexpr float kC = 0.7978845608028654f, kCube = 0.044715f;
  const int64_t chunks = (n + 4095) / 4096;  // threads take 4096-element chunks
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * 4096);
    int64_t i = c * 4096;
    for (; i + kLanes <= end; i += kLanes) {
      const vf v = load(x + i);
      store(y + i, v / (1.f + exp_v(-2.f * kC * (v + kCube * v * v * v))));
    }
    for (; i < end; ++i) y[i] = x[i] / (1.f + std::exp(-2.f * kC * (x[i] + kCube * x[i] * x[i] * x[i])));
  }
  return 0;
}

// Attention(q, k, v, bias, scale) in BNSD and AttentionBsnd in BSND: see attention() above.
int Attention(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return attention(nparam, params, ndims, shapes, false);
}
int AttentionBsnd(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return attention(nparam, params, ndims, shapes, true);
}

// Linear(x (..., K), w (N, K)[, b (N)]) -> y (..., N) = x w^T (+ b), for a few rows of x against a large w
// (a decode step): bound by reading w, so each thread streams its own 4-row slices of w exactly once and
// reads every x row against them (a GEMM library tiles for arithmetic instead; ops/cpu_twins.py leaves
// many-row products to it). Each output is one fp32 dot product in lane-strided order.
int Linear(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if ((nparam != 3 && nparam != 4) || ndims[1] != 2) return 1;
  const bool has_bias = nparam == 4;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *b = has_bias ? static_cast<const float *>(params[2]) : nullptr;
  float *y = static_cast<float *>(params[nparam - 1]);
  const int64_t n = shapes[1][0], k = shapes[1][1];
  if (shapes[0][ndims[0] - 1] != k) return 2;
  const int64_t m_rows = numel(ndims[0], shapes[0]) / k;
  constexpr int kW = 4;
  const int64_t blocks = n / kW;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) linear_block<kW>(x, w, b, y, m_rows, n, k, blk * kW);
  for (int64_t n0 = blocks * kW; n0 < n; ++n0) linear_block<1>(x, w, b, y, m_rows, n, k, n0);
  return 0;
}

// Rotary(x (..., D), cos (..., R), sin (..., R)) -> y (..., D): rotate-half on the first R channels of each
// row, the rest copied. cos/sin have x's rank (ops/cpu_twins.py pads it) with each leading axis equal to
// x's or 1 (broadcast: one table row for all heads). y[j] = x[j] c[j] - x[j + R/2] s[j] for j < R/2,
// x[j] c[j] + x[j - R/2] s[j] for R/2 <= j < R.
int Rotary(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const int nd = ndims[0];
  if (nparam != 4 || nd < 1 || nd > 8 || ndims[1] != nd || ndims[2] != nd) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *cs = static_cast<const float *>(params[1]);
  const float *sn = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  const int64_t d = shapes[0][nd - 1], r = shapes[1][nd - 1], half = r / 2;
  if (r > d || r % 2 || shapes[2][nd - 1] != r) return 2;
  int64_t table_stride[8];  // elements of the table skipped per step of each leading axis (0: broadcast)
  int64_t stride = r;
  for (int a = nd - 2; a >= 0; --a) {
    if (shapes[1][a] != shapes[0][a] && shapes[1][a] != 1) return 3;
    table_stride[a] = shapes[1][a] == 1 ? 0 : stride;
    stride *= shapes[1][a];
  }
  const int64_t rows = numel(nd, shapes[0]) / d;
#pragma omp parallel for schedule(static) if (rows * d > 65536)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t t = 0;
    for (int64_t a = nd - 2, rest = row; a >= 0; --a) {
      t += rest % shapes[0][a] * table_stride[a];
      rest /= shapes[0][a];
    }
    const float *xr = x + row * d, *c = cs + t, *s = sn + t;
    float *yr = y + row * d;
#pragma omp simd
    for (int64_t j = 0; j < half; ++j) yr[j] = xr[j] * c[j] - xr[j + half] * s[j];
#pragma omp simd
    for (int64_t j = half; j < r; ++j) yr[j] = xr[j] * c[j] + xr[j - half] * s[j];
    std::copy(xr + r, xr + d, yr + r);
  }
  return 0;
}

// SwiGlu(gate_up (..., 2F)) -> y (..., F) = up * silu(gate), [gate | up] halves of each row; silu(g) =
// g / (1 + exp(-g)) with the vector exp above (for g < -88.3 a ~1e-36 instead of -0).
int SwiGlu(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t f = shapes[0][ndims[0] - 1] / 2;
  const int64_t rows = numel(ndims[0], shapes[0]) / (2 * f);
#pragma omp parallel for schedule(static) if (rows * f > 65536)
  for (int64_t row = 0; row < rows; ++row) {
    const float *gate = x + row * 2 * f, *up = gate + f;
    float *yr = y + row * f;
    int64_t j = 0;
    for (; j + kLanes <= f; j += kLanes) {
      const vf g = load(gate + j);
      store(yr + j, load(up + j) * (g / (1.f + exp_v(-g))));
    }
    for (; j < f; ++j) yr[j] = up[j] * (gate[j] / (1.f + std::exp(-gate[j])));
  }
  return 0;
}

// GatedResidual(x (B, S, D), y (B, S, D), gate (B, D)) -> x + y * gate[b] on every token of sample b.
int GatedResidual(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 4 || ndims[0] != 3 || ndims[1] != 3 || ndims[2] != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float *gate = static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[3]);
  const int64_t B = shapes[0][0], S = shapes[0][1], D = shapes[0][2];
  if (shapes[1][0] != B || shapes[1][1] != S || shapes[1][2] != D || shapes[2][0] != B || shapes[2][1] != D) return 2;
#pragma omp parallel for schedule(static) if (B * S * D > 65536)
  for (int64_t row = 0; row < B * S; ++row) {
    const float *g = gate + (row / S) * D;
    const float *xr = x + row * D, *yr = y + row * D;
    float *o = out + row * D;
#pragma omp simd
    for (int64_t j = 0; j < D; ++j) o[j] = xr[j] + yr[j] * g[j];
  }
  return 0;
}

// GuidedEulerStep(output (R, ...), latents (B, ...), dt (), index (), guidance (), record (2,) int32) ->
// (latents_out (B, ...), model_input (R, ...), record_out (2,)): ops/euler_step.py's guided_euler_step. R = 2B:
// v = u + g (c - u) from the [cond | uncond] rows, R = B: v = output; latents_out = x + dt v;
// model_input = latents_out (twice when R = 2B); record_out = (index, non-finite count) at the first step whose
// latents were not finite, else record. Each value rounded as the composite's separate operations: no a * b + c
// contracted into an FMA here (GCC contracts by default), so the result equals the composite bit for bit.
__attribute__((optimize("fp-contract=off")))
int GuidedEulerStep(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 9) return 1;
  const float *out = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float dt = *static_cast<const float *>(params[2]);
  const int32_t index = *static_cast<const int32_t *>(params[3]);
  const float guidance = *static_cast<const float *>(params[4]);
  const int32_t *record = static_cast<const int32_t *>(params[5]);
  float *y = static_cast<float *>(params[6]);
  float *model_input = static_cast<float *>(params[7]);
  int32_t *record_out = static_cast<int32_t *>(params[8]);
  const int64_t rows = shapes[0][0], batch = shapes[1][0];
  if (rows != batch && rows != 2 * batch) return 2;
  const int64_t n = numel(ndims[1], shapes[1]);
  int64_t bad = 0;
  if (rows == batch) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] + dt * out[j];
  } else {
    const float *uncond = out + n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] + dt * (uncond[j] + guidance * (out[j] - uncond[j]));
    std::memcpy(model_input + n, y, sizeof(float) * n);
  }
  constexpr float kMax = std::numeric_limits<float>::max();
#pragma omp simd reduction(+ : bad)
  for (int64_t j = 0; j < n; ++j) bad += !(std::fabs(y[j]) <= kMax);  // NaN and +-inf; vectorises, isfinite does not
  std::memcpy(model_input, y, sizeof(float) * n);
  const bool first = bad > 0 && record[0] < 0;
  record_out[0] = first ? index : record[0];
  record_out[1] = first ? static_cast<int32_t>(bad) : record[1];
  return 0;
}

// SampleStep(logits (B, V), index (1,), uniforms (B, N), params (4), limits (N,), finished (B,), flags (3,),
// tokens (B, N), end (1,); all int32 but logits/uniforms/params) -> (token (B, 1), finished, flags, tokens):
// ops/sample_token.py's sample_step. Token `index` of each row is sampled (sample_row) with uniform
// uniforms[:, index] among the ids below limits[index], a row already finished emits `end`, and the
// bookkeeping follows: finished |= token == end; flags = (1-based index of the first token whose logits had
// non-finite values, their count then, 1 when every row has finished); tokens[:, index] = token.
int SampleStep(int nparam, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 13) return 1;
  const float *logits = static_cast<const float *>(params[0]);
  const int64_t index = *static_cast<const int32_t *>(params[1]);
  const float *uniforms = static_cast<const float *>(params[2]);
  const float *cfg = static_cast<const float *>(params[3]);
  const int32_t *limits = static_cast<const int32_t *>(params[4]);
  const int32_t *finished = static_cast<const int32_t *>(params[5]);
  const int32_t *flags = static_cast<const int32_t *>(params[6]);
  const int32_t *tokens = static_cast<const int32_t *>(params[7]);
  const int32_t end = *static_cast<const int32_t *>(params[8]);
  int32_t *token_out = static_cast<int32_t *>(params[9]);
  int32_t *finished_out = static_cast<int32_t *>(params[10]);
  int32_t *flags_out = static_cast<int32_t *>(params[11]);
  int32_t *tokens_out = static_cast<int32_t *>(params[12]);
  const int64_t B = shapes[0][0], V = shapes[0][1], N = shapes[2][1];
  if (index < 0 || index >= N) return 1;
  const int64_t limit = std::min<int64_t>(limits[index], V);
  std::vector<int32_t> bad(B);
#pragma omp parallel for schedule(static) if (B * V > 65536)
  for (int64_t b = 0; b < B; ++b) {
    const int32_t t = sample_row(logits + b * V, V, limit, cfg, uniforms[b * N + index], bad[b]);
    token_out[b] = finished[b] ? end : t;
  }
  int32_t bad_total = 0, all_finished = 1;
  std::memcpy(tokens_out, tokens, sizeof(int32_t) * B * N);
  for (int64_t b = 0; b < B; ++b) {
    bad_total += bad[b];
    finished_out[b] = finished[b] || token_out[b] == end;
    all_finished &= finished_out[b];
    tokens_out[b * N + index] = token_out[b];
  }
  const bool first = flags[0] == 0 && bad_total > 0;
  flags_out[0] = first ? static_cast<int32_t>(index + 1) : flags[0];
  flags_out[1] = first ? bad_total : flags[1];
  flags_out[2] = all_finished;
  return 0;
}

}  // extern "C"
