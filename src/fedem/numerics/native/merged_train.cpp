// FedEM's merged-group local training (FEDEM.md; fedem.methods.fedem._train_merged), client by
// client: every mini-batch scores merge(L, G) = L + rho (G - L), rho = adapter MLP of
// concat(L, G - L); (a) one Adam step on the adapter, then (b) a fresh forward with the updated
// adapter and one Adam step on the user embedding and the local rows L. The gradients are those
// of fedem.methods.adapter.merged_forward_backward (checked against autograd in the tests).
#include <ATen/Parallel.h>

#include <vector>

#include "kernels.h"

namespace {

using fedem::AdamScalars;
using fedem::Schedule;

constexpr int64_t kLanes = 16;  // samples per register
// registers per block: independent accumulators hide the latency of the adds (Bp is a multiple
// of kLanes * kBlock)
constexpr int64_t kBlock = 4;
constexpr int64_t kBlockSamples = kLanes * kBlock;
// 16 floats as one value (GCC/clang vector extension: one AVX-512 register, two AVX2 ones, ...);
// aligned(4) and may_alias: any float address may be loaded or stored as one
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float)), aligned(4), may_alias));
inline Lanes load_lanes(const float* p) { return *reinterpret_cast<const Lanes*>(p); }
inline void store_lanes(float* p, Lanes v) { *reinterpret_cast<Lanes*>(p) = v; }

// A batch's values with the samples along the fast axis ([feature][sample]), so every loop runs
// over the (padded) batch and vectorises whatever the adapter's widths.
using Matrix = std::vector<float>;

// Sums over the batch (d(loss)/d(W) entries): kBlock x kLanes partial sums, then added in order.
inline float lanes_total(const Lanes (&acc)[kBlock]) {
  Lanes sum = acc[0];
  for (int64_t r = 1; r < kBlock; ++r) sum += acc[r];
  float total = 0.0f;
  for (int64_t k = 0; k < kLanes; ++k) total += sum[k];
  return total;
}

inline float batch_dot(const float* a, const float* b, int64_t n) {
  Lanes acc[kBlock] = {};
  for (int64_t j = 0; j < n; j += kBlockSamples)
    for (int64_t r = 0; r < kBlock; ++r) acc[r] += load_lanes(a + j + r * kLanes) * load_lanes(b + j + r * kLanes);
  return lanes_total(acc);
}

inline float batch_sum(const float* a, int64_t n) {
  Lanes acc[kBlock] = {};
  for (int64_t j = 0; j < n; j += kBlockSamples)
    for (int64_t r = 0; r < kBlock; ++r) acc[r] += load_lanes(a + j + r * kLanes);
  return lanes_total(acc);
}

// y[0..n) += a * x[0..n)
inline void axpy(float* __restrict y, float a, const float* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// One client's adapter: per layer W [out, in] and b [out], their gradients and Adam moments.
struct Adapter {
  std::vector<int64_t> sizes;  // layer widths, sizes[0] = 2 d, sizes.back() = 1
  std::vector<std::vector<float>> w, b, gw, gb, mw, vw, mb, vb;
  explicit Adapter(const std::vector<int64_t>& s) : sizes(s) {
    for (auto* v : {&w, &b, &gw, &gb, &mw, &vw, &mb, &vb}) v->resize(s.size() - 1);
  }
  int64_t layers() const { return static_cast<int64_t>(sizes.size()) - 1; }
  void load(const std::vector<float*>& src_w, const std::vector<float*>& src_b) {
    for (int64_t l = 0; l < layers(); ++l) {
      const int64_t in = sizes[l], out = sizes[l + 1];
      w[l].assign(src_w[l], src_w[l] + out * in);
      b[l].assign(src_b[l], src_b[l] + out);
      for (auto* v : {&gw, &mw, &vw}) (*v)[l].assign(out * in, 0.0f);
      for (auto* v : {&gb, &mb, &vb}) (*v)[l].assign(out, 0.0f);
    }
  }
  void store(const std::vector<float*>& dst_w, const std::vector<float*>& dst_b) const {
    for (int64_t l = 0; l < layers(); ++l) {
      std::copy(w[l].begin(), w[l].end(), dst_w[l]);
      std::copy(b[l].begin(), b[l].end(), dst_b[l]);
    }
  }
  void adam_step(const AdamScalars& s) {
    for (int64_t l = 0; l < layers(); ++l) {
      fedem::adam(w[l].data(), gw[l].data(), mw[l].data(), vw[l].data(), static_cast<int64_t>(w[l].size()), s);
      fedem::adam(b[l].data(), gb[l].data(), mb[l].data(), vb[l].data(), static_cast<int64_t>(b[l].size()), s);
    }
  }
};

struct Scratch {
  int64_t d, Bp;  // latent dim, batch size padded to a multiple of kBlockSamples
  Adapter adapter;
  std::vector<Matrix> h;   // h[0] = x = (L, G - L) [2d][Bp]; h[l + 1] = ReLU(z[l]) for hidden layers
  std::vector<Matrix> z;   // pre-activations [out_l][Bp]
  std::vector<Matrix> dz;  // d(loss)/d(z[l])
  Matrix dx;               // d(loss)/d(x) [2d][Bp]
  Matrix merged;           // [d][Bp]
  std::vector<float> rho, logit, prob, log_p, log_1mp, grad_logit;
  fedem::EmbeddingAdam adam;
  std::vector<int64_t> rows;
  Scratch(const std::vector<int64_t>& sizes, int64_t d_, int64_t B)
      : d(d_), Bp((B + kBlockSamples - 1) / kBlockSamples * kBlockSamples), adapter(sizes), rows(B) {
    const int64_t n = adapter.layers();
    h.resize(n);
    z.resize(n);
    dz.resize(n);
    for (int64_t l = 0; l < n; ++l) {
      h[l].assign(sizes[l] * Bp, 0.0f);
      z[l].assign(sizes[l + 1] * Bp, 0.0f);
      dz[l].assign(sizes[l + 1] * Bp, 0.0f);
    }
    dx.assign(sizes[0] * Bp, 0.0f);
    merged.assign(d * Bp, 0.0f);
    for (auto* buf : {&rho, &logit, &prob, &log_p, &log_1mp, &grad_logit}) buf->assign(Bp, 0.0f);
  }
};

// Forward of a whole batch through the merge and the BCE: fills the activations, merged rows,
// grad_logit (0 for padding), and returns the batch's mean loss. x must hold the batch's inputs.
float batch_forward(Scratch& w, const float* user, const bool* valid, const float* labels, int64_t B,
                    float inv_count, float countf) {
  const int64_t Bp = w.Bp, d = w.d, n = w.adapter.layers();
  for (int64_t l = 0; l < n; ++l) {
    const int64_t in = w.adapter.sizes[l], out = w.adapter.sizes[l + 1];
    const float* W = w.adapter.w[l].data();
    const float* x = w.h[l].data();
    for (int64_t jc = 0; jc < Bp; jc += kBlockSamples) {
      for (int64_t o = 0; o < out; ++o) {
        // accumulated in registers, over the inputs in order
        Lanes acc[kBlock];
        for (int64_t r = 0; r < kBlock; ++r) acc[r] = Lanes{} + w.adapter.b[l][o];
        for (int64_t i = 0; i < in; ++i) {
          const float wi = W[o * in + i];
          for (int64_t r = 0; r < kBlock; ++r) acc[r] += wi * load_lanes(x + i * Bp + jc + r * kLanes);
        }
        for (int64_t r = 0; r < kBlock; ++r) store_lanes(w.z[l].data() + o * Bp + jc + r * kLanes, acc[r]);
      }
    }
    if (l < n - 1) {
      float* __restrict next = w.h[l + 1].data();
      const float* __restrict z = w.z[l].data();
      for (int64_t k = 0; k < out * Bp; ++k) next[k] = z[k] > 0.0f ? z[k] : 0.0f;
    }
  }
  fedem::sigmoid(w.z[n - 1].data(), w.rho.data(), Bp);
  std::fill(w.logit.begin(), w.logit.end(), 0.0f);
  for (int64_t i = 0; i < d; ++i) {
    float* __restrict m = w.merged.data() + i * Bp;
    const float* __restrict L = w.h[0].data() + i * Bp;
    const float* __restrict delta = w.h[0].data() + (d + i) * Bp;
    const float* __restrict rho = w.rho.data();
    for (int64_t j = 0; j < Bp; ++j) m[j] = L[j] + rho[j] * delta[j];
    axpy(w.logit.data(), user[i], m, Bp);
  }
  fedem::sigmoid_logs(w.logit.data(), w.prob.data(), w.log_p.data(), w.log_1mp.data(), Bp);
  float loss_sum = 0.0f;
  for (int64_t j = 0; j < B; ++j) {
    if (!valid[j]) {
      w.grad_logit[j] = 0.0f;
      continue;
    }
    loss_sum += fedem::bce_term(w.prob[j], w.log_p[j], w.log_1mp[j], labels[j]);
    w.grad_logit[j] = fedem::bce_grad_logit(w.prob[j], labels[j], inv_count);
  }
  return loss_sum / countf;
}

// Backward through the merge and the adapter, from grad_logit: accumulates the adapter's
// parameter gradients when want_params, and leaves d(loss)/d(x) in dx.
void batch_backward(Scratch& w, const float* user, bool want_params) {
  const int64_t Bp = w.Bp, d = w.d, n = w.adapter.layers();
  Adapter& a = w.adapter;
  // d(loss)/d(z_last) = (d_merged . delta) rho (1 - rho), d_merged = grad_logit user
  float* __restrict dz_last = w.dz[n - 1].data();
  std::fill(dz_last, dz_last + Bp, 0.0f);
  const float* __restrict g = w.grad_logit.data();
  for (int64_t i = 0; i < d; ++i) {
    const float* __restrict delta = w.h[0].data() + (d + i) * Bp;
    const float u = user[i];
    for (int64_t j = 0; j < Bp; ++j) dz_last[j] += g[j] * u * delta[j];
  }
  const float* __restrict rho = w.rho.data();
  for (int64_t j = 0; j < Bp; ++j) dz_last[j] = dz_last[j] * rho[j] * (1.0f - rho[j]);
  for (int64_t l = n - 1; l >= 0; --l) {
    const int64_t in = a.sizes[l], out = a.sizes[l + 1];
    const float* dz = w.dz[l].data();
    const float* x = w.h[l].data();
    if (want_params) {
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t i = 0; i < in; ++i) a.gw[l][o * in + i] += batch_dot(dz + o * Bp, x + i * Bp, Bp);
        a.gb[l][o] += batch_sum(dz + o * Bp, Bp);
      }
    }
    // d(loss)/d(input) = W^T dz, then through the ReLU of the layer below
    float* dh = l > 0 ? w.dz[l - 1].data() : w.dx.data();
    const float* W = a.w[l].data();
    for (int64_t jc = 0; jc < Bp; jc += kBlockSamples) {
      for (int64_t i = 0; i < in; ++i) {
        Lanes acc[kBlock] = {};
        for (int64_t o = 0; o < out; ++o) {
          const float wo = W[o * in + i];
          for (int64_t r = 0; r < kBlock; ++r) acc[r] += wo * load_lanes(dz + o * Bp + jc + r * kLanes);
        }
        for (int64_t r = 0; r < kBlock; ++r) store_lanes(dh + i * Bp + jc + r * kLanes, acc[r]);
      }
    }
    if (l > 0) {
      const float* __restrict zb = w.z[l - 1].data();
      for (int64_t k = 0; k < in * Bp; ++k) dh[k] = zb[k] > 0.0f ? dh[k] : 0.0f;
    }
  }
}

double train_client(int64_t c, float* rows_l, const float* rows_g, float* user, int64_t num_rows,
                    const Schedule& sched, const AdamScalars* adam_emb, const AdamScalars* adam_adapter,
                    double threshold, Scratch& w) {
  const int64_t B = sched.batch_size, Bp = w.Bp, d = w.d;
  w.adam.reset(num_rows, d);
  fedem::EarlyStop stop;
  for (int64_t s = 0; s < sched.num_steps[c]; ++s) {
    const auto batch = sched.batch(c, s, w.rows);
    float* x = w.h[0].data();
    for (int64_t j = 0; j < B; ++j) {
      const float* L = rows_l + batch.rows[j] * d;
      const float* G = rows_g + batch.rows[j] * d;
      for (int64_t i = 0; i < d; ++i) {
        x[i * Bp + j] = batch.valid[j] ? L[i] : 0.0f;
        x[(d + i) * Bp + j] = batch.valid[j] ? G[i] - L[i] : 0.0f;
      }
    }
    const float countf = static_cast<float>(batch.count), inv_count = 1.0f / countf;
    // (a) one Adam step on the adapter only
    batch_forward(w, user, batch.valid, batch.labels, B, inv_count, countf);
    batch_backward(w, user, true);
    w.adapter.adam_step(adam_adapter[s]);
    // (b) a fresh forward with the updated adapter; one Adam step on (user, L)
    const float loss = batch_forward(w, user, batch.valid, batch.labels, B, inv_count, countf);
    if (!std::isfinite(loss)) return std::nan("");
    batch_backward(w, user, false);
    for (int64_t i = 0; i < d; ++i) w.adam.grad_user[i] += batch_dot(w.grad_logit.data(), w.merged.data() + i * Bp, Bp);
    for (int64_t j = 0; j < B; ++j) {
      if (!batch.valid[j]) continue;
      const float g = w.grad_logit[j], keep = 1.0f - w.rho[j];
      float* gl = w.adam.grad_rows.data() + batch.rows[j] * d;
      // through (1 - rho) of the merge, and the adapter's input x = (L, G - L)
      for (int64_t i = 0; i < d; ++i) gl[i] += g * user[i] * keep + w.dx[i * Bp + j] - w.dx[(d + i) * Bp + j];
    }
    w.adam.step(user, rows_l, adam_emb[s]);
    if (stop.after_step(s, loss, countf, sched.batches_per_epoch[c], threshold)) break;
  }
  return stop.running_loss();
}

}  // namespace

// pool_l [R, d] (trained in place), pool_g [R, d], users [C, d] (in place), adapter: per layer
// W [C, out, in] and b [C, out] (in place), in plan rank order. Returns running losses [C].
torch::Tensor train_merged_clients(torch::Tensor pool_l, torch::Tensor pool_g, torch::Tensor users,
                                   std::vector<torch::Tensor> adapter, torch::Tensor flat_rows,
                                   torch::Tensor flat_labels, torch::Tensor flat_valid, torch::Tensor step_base,
                                   torch::Tensor num_steps, torch::Tensor batches_per_epoch,
                                   torch::Tensor pool_offsets, int64_t batch_size, double lr_embedding,
                                   double lr_adapter, double beta1, double beta2, double eps, double threshold) {
  const char* fn = "train_merged_clients";
  std::vector<std::pair<torch::Tensor, c10::ScalarType>> params{
      {pool_l, torch::kFloat32}, {pool_g, torch::kFloat32}, {users, torch::kFloat32}};
  for (const auto& p : adapter) params.emplace_back(p, torch::kFloat32);
  fedem::check_tensors(fn, params);
  const Schedule sched(fn, flat_rows, flat_labels, flat_valid, step_base, num_steps, batches_per_epoch, pool_offsets,
                       batch_size);
  TORCH_CHECK(adapter.size() >= 2 && adapter.size() % 2 == 0, "adapter: [W1, b1, W2, b2, ...]");
  const int64_t C = users.size(0), d = users.size(1), n_layers = static_cast<int64_t>(adapter.size()) / 2;
  std::vector<int64_t> sizes{adapter[0].size(2)};
  for (int64_t l = 0; l < n_layers; ++l) sizes.push_back(adapter[2 * l].size(1));
  TORCH_CHECK(sizes[0] == 2 * d && sizes.back() == 1, "adapter: first width 2 d, last 1");
  const auto adam_emb = fedem::adam_schedule(sched.max_steps, lr_embedding, beta1, beta2, eps);
  const auto adam_adapter = fedem::adam_schedule(sched.max_steps, lr_adapter, beta1, beta2, eps);
  float* pool_l_p = pool_l.data_ptr<float>();
  const float* pool_g_p = pool_g.data_ptr<float>();
  float* users_p = users.data_ptr<float>();
  auto out = torch::empty({C}, torch::kFloat64);
  double* out_p = out.data_ptr<double>();
  // clients are independent within a round: any split over threads gives the same numbers
  at::parallel_for(0, C, 1, [&](int64_t first, int64_t last) {
    Scratch scratch(sizes, d, batch_size);
    std::vector<float*> ws(n_layers), bs(n_layers);
    for (int64_t c = first; c < last; ++c) {
      for (int64_t l = 0; l < n_layers; ++l) {
        ws[l] = adapter[2 * l].data_ptr<float>() + c * sizes[l + 1] * sizes[l];
        bs[l] = adapter[2 * l + 1].data_ptr<float>() + c * sizes[l + 1];
      }
      scratch.adapter.load(ws, bs);
      const int64_t lo = sched.pool_offsets[c];
      out_p[c] = train_client(c, pool_l_p + lo * d, pool_g_p + lo * d, users_p + c * d, sched.pool_offsets[c + 1] - lo,
                              sched, adam_emb.data(), adam_adapter.data(), threshold, scratch);
      scratch.adapter.store(ws, bs);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("train_merged_clients", &train_merged_clients, "FedEM merged-group local training, client by client",
        py::call_guard<py::gil_scoped_release>());
}
