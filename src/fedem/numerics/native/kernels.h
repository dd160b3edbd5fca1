// Shared pieces of the native CPU kernels: Adam, the sigmoid BCE, a dot product.
//
// The float arithmetic mirrors the torch path op for op (fedem.training.optim, fedem.numerics.bce)
// so the two agree to float rounding. The sigmoid and the logs use the same Sleef functions
// torch's own vectorised CPU kernels use (exported by libtorch_cpu): log1p(-p) near saturation
// magnifies any other rounding of p into the loss, and the loss drives the early stop.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FEDEM_X86 1
extern "C" {
__m512 Sleef_expf16_u10(__m512);
__m512 Sleef_logf16_u10(__m512);
__m512 Sleef_log1pf16_u10(__m512);
__m256 Sleef_expf8_u10(__m256);
__m256 Sleef_logf8_u10(__m256);
__m256 Sleef_log1pf8_u10(__m256);
}
#endif

#if defined(FEDEM_X86) && !defined(__clang__)
#define FEDEM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FEDEM_CLONES
#endif

namespace fedem {

struct AdamScalars {
  // as the torch kernels receive them: python floats (1 - beta computed in double) cast to float32
  float step_size, bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps;
};

// Per step t = 1..max_steps: the scalars StackedAdam.step computes.
inline std::vector<AdamScalars> adam_schedule(int64_t max_steps, double lr, double beta1, double beta2,
                                              double eps) {
  std::vector<AdamScalars> out(std::max<int64_t>(max_steps, 0));
  for (int64_t s = 0; s < max_steps; ++s) {
    const double t = static_cast<double>(s + 1);
    out[s] = {static_cast<float>(lr / (1 - std::pow(beta1, t))), static_cast<float>(std::sqrt(1 - std::pow(beta2, t))),
              static_cast<float>(1 - beta1), static_cast<float>(beta2), static_cast<float>(1 - beta2),
              static_cast<float>(eps)};
  }
  return out;
}

// m.lerp_(g, 1 - beta1); v.mul_(beta2).addcmul_(g, g, 1 - beta2);
// p -= step_size * m / (sqrt(v) / bc2 + eps); g = 0.
// Rows whose moments and gradient are zero (not touched yet this round) do not move, exactly.
FEDEM_CLONES
inline void adam(float* __restrict p, float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                 const AdamScalars& s) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = m[i] + s.one_minus_beta1 * (gi - m[i]);
    const float vi = v[i] * s.beta2 + s.one_minus_beta2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - s.step_size * (mi / (std::sqrt(vi) / s.bias_correction2_sqrt + s.eps));
    g[i] = 0.0f;
  }
}

inline float dot(const float* a, const float* b, int64_t d) {
  float acc = 0.0f;
  for (int64_t i = 0; i < d; ++i) acc += a[i] * b[i];
  return acc;
}

#ifdef FEDEM_X86
__attribute__((target("avx512f"))) inline void sigmoid_logs_avx512(const float* x, float* prob, float* log_p,
                                                                    float* log_1mp, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __m512 e = Sleef_expf16_u10(_mm512_sub_ps(zero, _mm512_loadu_ps(x + j)));
    const __m512 p = _mm512_div_ps(one, _mm512_add_ps(e, one));
    _mm512_storeu_ps(prob + j, p);
    _mm512_storeu_ps(log_p + j, Sleef_logf16_u10(p));
    _mm512_storeu_ps(log_1mp + j, Sleef_log1pf16_u10(_mm512_sub_ps(zero, p)));
  }
}

__attribute__((target("avx2"))) inline void sigmoid_logs_avx2(const float* x, float* prob, float* log_p,
                                                               float* log_1mp, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 e = Sleef_expf8_u10(_mm256_sub_ps(zero, _mm256_loadu_ps(x + j)));
    const __m256 p = _mm256_div_ps(one, _mm256_add_ps(e, one));
    _mm256_storeu_ps(prob + j, p);
    _mm256_storeu_ps(log_p + j, Sleef_logf8_u10(p));
    _mm256_storeu_ps(log_1mp + j, Sleef_log1pf8_u10(_mm256_sub_ps(zero, p)));
  }
}
#endif

#ifdef FEDEM_X86
__attribute__((target("avx512f"))) inline void sigmoid_avx512(const float* x, float* prob, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __m512 e = Sleef_expf16_u10(_mm512_sub_ps(zero, _mm512_loadu_ps(x + j)));
    _mm512_storeu_ps(prob + j, _mm512_div_ps(one, _mm512_add_ps(e, one)));
  }
}

__attribute__((target("avx2"))) inline void sigmoid_avx2(const float* x, float* prob, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 e = Sleef_expf8_u10(_mm256_sub_ps(zero, _mm256_loadu_ps(x + j)));
    _mm256_storeu_ps(prob + j, _mm256_div_ps(one, _mm256_add_ps(e, one)));
  }
}
#endif

// 0 scalar, 1 AVX2, 2 AVX-512: the widest Sleef variant this CPU runs
inline int vector_level() {
#ifdef FEDEM_X86
  static const int level = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
  return level;
#else
  return 0;
#endif
}

// prob = sigmoid(x) for x[0..n); both buffers must hold n rounded up to a multiple of 16.
inline void sigmoid(const float* x, float* prob, int64_t n) {
#ifdef FEDEM_X86
  if (vector_level() == 2) return sigmoid_avx512(x, prob, n);
  if (vector_level() == 1) return sigmoid_avx2(x, prob, n);
#endif
  for (int64_t j = 0; j < n; ++j) prob[j] = 1.0f / (1.0f + std::exp(-x[j]));
}

// prob = sigmoid(x) = 1 / (1 + exp(-x)), log(prob), log1p(-prob) for x[0..n); every buffer must
// hold n rounded up to a multiple of 16.
inline void sigmoid_logs(const float* x, float* prob, float* log_p, float* log_1mp, int64_t n) {
#ifdef FEDEM_X86
  if (vector_level() == 2) return sigmoid_logs_avx512(x, prob, log_p, log_1mp, n);
  if (vector_level() == 1) return sigmoid_logs_avx2(x, prob, log_p, log_1mp, n);
#endif
  for (int64_t j = 0; j < n; ++j) {
    prob[j] = 1.0f / (1.0f + std::exp(-x[j]));
    log_p[j] = std::log(prob[j]);
    log_1mp[j] = std::log1p(-prob[j]);
  }
}

// torch's BCELoss(sigmoid) pieces for one sample (fedem.numerics.bce): the loss term, and
// d(loss)/d(logit) given 1 / batch count.
inline float bce_term(float prob, float log_p, float log_1mp, float y) {
  return -(y * std::max(log_p, -100.0f) + (1.0f - y) * std::max(log_1mp, -100.0f));
}

inline float bce_grad_logit(float prob, float y, float inv_count) {
  const float sig_grad = prob * (1.0f - prob);
  return (prob - y) / std::max(sig_grad, 1e-12f) * sig_grad * inv_count;
}

// The authors' per-client early stop (fedem.training.local_loop): after an epoch's last step, stop when
// the running loss changed by less than `threshold` (relative) since the previous epoch's end.
struct EarlyStop {
  double loss_sum = 0.0, sample_sum = 0.0, prev_avg = 0.0;
  // returns true when the client stops after step s
  bool after_step(int64_t s, float loss, float count, int64_t bpe, double threshold) {
    loss_sum += static_cast<double>(loss) * static_cast<double>(count);
    sample_sum += static_cast<double>(count);
    if ((s + 1) % bpe != 0) return false;
    const double avg = loss_sum / sample_sum;
    const int64_t epoch = (s + 1) / bpe - 1;
    const double rel = std::abs(avg - prev_avg) / std::abs(prev_avg + 1e-5);
    prev_avg = avg;
    return epoch > 0 && rel < threshold;
  }
  double running_loss() const { return loss_sum / sample_sum; }
};

// Every tensor an entry point receives: contiguous, on the CPU, of its documented dtype.
inline void check_tensors(const char* function, std::vector<std::pair<torch::Tensor, c10::ScalarType>> expected) {
  for (const auto& [t, type] : expected) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == type, function,
                ": every tensor must be contiguous, on the CPU, of the documented dtype");
  }
}

// A round's schedule as the flat buffers of fedem.training.schedule.RoundPlan: client c's step s uses
// slots step_base[s] + c * B .. + B; pool rows are grouped by client (pool_offsets [C+1]).
struct Schedule {
  const int64_t *rows, *step_base, *num_steps, *batches_per_epoch, *pool_offsets;
  const float* labels;
  const bool* valid;
  int64_t batch_size, max_steps;

  Schedule(const char* function, const torch::Tensor& flat_rows, const torch::Tensor& flat_labels,
           const torch::Tensor& flat_valid, const torch::Tensor& step_base_, const torch::Tensor& num_steps_,
           const torch::Tensor& batches_per_epoch_, const torch::Tensor& pool_offsets_, int64_t batch_size_)
      : batch_size(batch_size_) {
    check_tensors(function, {{flat_rows, torch::kInt64}, {flat_labels, torch::kFloat32}, {flat_valid, torch::kBool},
                             {step_base_, torch::kInt64}, {num_steps_, torch::kInt64},
                             {batches_per_epoch_, torch::kInt64}, {pool_offsets_, torch::kInt64}});
    rows = flat_rows.data_ptr<int64_t>();
    labels = flat_labels.data_ptr<float>();
    valid = flat_valid.data_ptr<bool>();
    step_base = step_base_.data_ptr<int64_t>();
    num_steps = num_steps_.data_ptr<int64_t>();
    batches_per_epoch = batches_per_epoch_.data_ptr<int64_t>();
    pool_offsets = pool_offsets_.data_ptr<int64_t>();
    max_steps = num_steps_.numel() ? num_steps_.max().item<int64_t>() : 0;
  }

  struct Batch {
    const int64_t* rows;  // pool rows, relative to the client's first
    const float* labels;
    const bool* valid;
    int64_t count;  // real samples (the rest is padding)
  };

  // Client c's step s; `local_rows` receives its pool rows relative to the client's first row.
  Batch batch(int64_t c, int64_t s, std::vector<int64_t>& local_rows) const {
    const int64_t at = step_base[s] + c * batch_size;
    int64_t count = 0;
    for (int64_t j = 0; j < batch_size; ++j) {
      count += valid[at + j];
      local_rows[j] = valid[at + j] ? rows[at + j] - pool_offsets[c] : 0;
    }
    return {local_rows.data(), labels + at, valid + at, count};
  }
};

// One client's user embedding and pool rows under a fresh Adam (re-created every round).
struct EmbeddingAdam {
  std::vector<float> grad_rows, m_rows, v_rows, grad_user, m_user, v_user;

  void reset(int64_t num_rows, int64_t d) {
    for (auto* buf : {&grad_rows, &m_rows, &v_rows}) buf->assign(num_rows * d, 0.0f);
    for (auto* buf : {&grad_user, &m_user, &v_user}) buf->assign(d, 0.0f);
  }

  // Every pool row moves, as torch.optim.Adam on the whole table: a row's moments keep moving it
  // after its last gradient (rows not touched yet have zero moments and stay put).
  void step(float* user, float* rows, const AdamScalars& s) {
    adam(user, grad_user.data(), m_user.data(), v_user.data(), static_cast<int64_t>(grad_user.size()), s);
    adam(rows, grad_rows.data(), m_rows.data(), v_rows.data(), static_cast<int64_t>(grad_rows.size()), s);
  }
};

}  // namespace fedem
