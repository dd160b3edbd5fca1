// Plain FCF local training of a group of clients, one client after another (the authors' loop
// order), each client's working set (its pool rows and their Adam moments) hot in cache. Same
// arithmetic as fedem.training.fcf_fast.train_fcf_group (see kernels.h).
#include <ATen/Parallel.h>

#include <vector>

#include "kernels.h"

namespace {

using fedem::AdamScalars;
using fedem::Schedule;

// Per-thread buffers, reused from client to client.
struct Scratch {
  fedem::EmbeddingAdam adam;
  std::vector<int64_t> rows;
  std::vector<float> x, prob, log_p, log_1mp, grad_logit;
  explicit Scratch(int64_t B) : rows(B) {
    const int64_t padded = (B + 15) / 16 * 16;  // the vectorised sigmoid works in 16s
    for (auto* buf : {&x, &prob, &log_p, &log_1mp, &grad_logit}) buf->assign(padded, 0.0f);
  }
};

// One client's round: returns its final running loss, or NaN as soon as a batch loss is not
// finite (the caller raises).
double train_client(int64_t c, float* rows_c, float* user, int64_t num_rows, int64_t d, const Schedule& sched,
                    const AdamScalars* adam_at, double threshold, Scratch& w) {
  const int64_t B = sched.batch_size;
  w.adam.reset(num_rows, d);
  fedem::EarlyStop stop;
  for (int64_t s = 0; s < sched.num_steps[c]; ++s) {
    const auto batch = sched.batch(c, s, w.rows);
    for (int64_t j = 0; j < B; ++j) w.x[j] = batch.valid[j] ? fedem::dot(rows_c + batch.rows[j] * d, user, d) : 0.0f;
    fedem::sigmoid_logs(w.x.data(), w.prob.data(), w.log_p.data(), w.log_1mp.data(), B);
    const float countf = static_cast<float>(batch.count), inv_count = 1.0f / countf;
    float loss_sum = 0.0f;
    for (int64_t j = 0; j < B; ++j) {
      if (!batch.valid[j]) continue;
      loss_sum += fedem::bce_term(w.prob[j], w.log_p[j], w.log_1mp[j], batch.labels[j]);
      w.grad_logit[j] = fedem::bce_grad_logit(w.prob[j], batch.labels[j], inv_count);
    }
    const float loss = loss_sum / countf;
    if (!std::isfinite(loss)) return std::nan("");
    // gradients at the pre-step parameters: user <- sum_j g_j q_j, row_j <- g_j user
    for (int64_t j = 0; j < B; ++j) {
      if (!batch.valid[j]) continue;
      const float g = w.grad_logit[j];
      const float* q = rows_c + batch.rows[j] * d;
      float* gq = w.adam.grad_rows.data() + batch.rows[j] * d;
      for (int64_t i = 0; i < d; ++i) {
        w.adam.grad_user[i] += g * q[i];
        gq[i] += g * user[i];
      }
    }
    w.adam.step(user, rows_c, adam_at[s]);
    if (stop.after_step(s, loss, countf, sched.batches_per_epoch[c], threshold)) break;
  }
  return stop.running_loss();
}

}  // namespace

// pool [R, d] (rows grouped by client rank) and users [C, d] are trained in place. Returns each
// client's final running loss [C] (float64).
torch::Tensor train_fcf_clients(torch::Tensor pool, torch::Tensor users, torch::Tensor flat_rows,
                                torch::Tensor flat_labels, torch::Tensor flat_valid, torch::Tensor step_base,
                                torch::Tensor num_steps, torch::Tensor batches_per_epoch,
                                torch::Tensor pool_offsets, int64_t batch_size, double lr, double beta1,
                                double beta2, double eps, double threshold) {
  const char* fn = "train_fcf_clients";
  fedem::check_tensors(fn, {{pool, torch::kFloat32}, {users, torch::kFloat32}});
  const Schedule sched(fn, flat_rows, flat_labels, flat_valid, step_base, num_steps, batches_per_epoch, pool_offsets,
                       batch_size);
  const int64_t C = users.size(0), d = users.size(1);
  float* pool_p = pool.data_ptr<float>();
  float* users_p = users.data_ptr<float>();
  const auto adam_at = fedem::adam_schedule(sched.max_steps, lr, beta1, beta2, eps);
  auto out = torch::empty({C}, torch::kFloat64);
  double* out_p = out.data_ptr<double>();
  // clients are independent within a round: any split over threads gives the same numbers
  at::parallel_for(0, C, 1, [&](int64_t first, int64_t last) {
    Scratch scratch(batch_size);
    for (int64_t c = first; c < last; ++c) {
      const int64_t lo = sched.pool_offsets[c];
      out_p[c] = train_client(c, pool_p + lo * d, users_p + c * d, sched.pool_offsets[c + 1] - lo, d, sched,
                              adam_at.data(), threshold, scratch);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // the GIL is released: the next round is prepared on a Python thread meanwhile
  m.def("train_fcf_clients", &train_fcf_clients, "plain FCF local training, client by client",
        py::call_guard<py::gil_scoped_release>());
}
