// Plain FCF local training of a group of clients, one client after another (the authors' loop
// order), each client's working set (its pool rows and their Adam moments) hot in cache. Same
// arithmetic as fedem.methods.fcf.train_fcf_group (see kernels.h).
#include <ATen/Parallel.h>

#include <vector>

#include "kernels.h"

namespace {

using fedem::AdamScalars;

struct Schedule {
  const int64_t* rows;  // pool row of each flat slot
  const float* labels;
  const bool* valid;
  const int64_t* step_base;  // client c's step s: slots step_base[s] + c * B ..
  int64_t batch_size;
};

// Per-thread buffers, reused from client to client.
struct Scratch {
  std::vector<float> grad_rows, m_rows, v_rows, grad_user, m_user, v_user;
  std::vector<float> x, prob, log_p, log_1mp, grad_logit;
  explicit Scratch(int64_t d, int64_t B) : grad_user(d), m_user(d), v_user(d) {
    const int64_t padded = (B + 15) / 16 * 16;
    for (auto* buf : {&x, &prob, &log_p, &log_1mp, &grad_logit}) buf->assign(padded, 0.0f);
  }
};

// One client's round: returns its final running loss, or NaN as soon as a batch loss is not
// finite (the caller raises).
double train_client(int64_t c, float* rows_c, float* user, int64_t first_row, int64_t num_rows, int64_t d,
                    const Schedule& sched, int64_t num_steps, int64_t bpe, const AdamScalars* adam_at,
                    double threshold, Scratch& w) {
  const int64_t B = sched.batch_size;
  w.grad_rows.assign(num_rows * d, 0.0f);
  w.m_rows.assign(num_rows * d, 0.0f);
  w.v_rows.assign(num_rows * d, 0.0f);
  for (auto* buf : {&w.grad_user, &w.m_user, &w.v_user}) std::fill(buf->begin(), buf->end(), 0.0f);
  fedem::EarlyStop stop;
  for (int64_t s = 0; s < num_steps; ++s) {
    const int64_t at = sched.step_base[s] + c * B;
    const int64_t* rows = sched.rows + at;
    const bool* valid = sched.valid + at;
    const float* labels = sched.labels + at;
    int64_t count = 0;
    for (int64_t j = 0; j < B; ++j) {
      count += valid[j];
      w.x[j] = valid[j] ? fedem::dot(rows_c + (rows[j] - first_row) * d, user, d) : 0.0f;
    }
    fedem::sigmoid_logs(w.x.data(), w.prob.data(), w.log_p.data(), w.log_1mp.data(), B);
    const float countf = static_cast<float>(count), inv_count = 1.0f / countf;
    float loss_sum = 0.0f;
    for (int64_t j = 0; j < B; ++j) {
      if (!valid[j]) continue;
      loss_sum += fedem::bce_term(w.prob[j], w.log_p[j], w.log_1mp[j], labels[j]);
      w.grad_logit[j] = fedem::bce_grad_logit(w.prob[j], labels[j], inv_count);
    }
    const float loss = loss_sum / countf;
    if (!std::isfinite(loss)) return std::nan("");
    // gradients at the pre-step parameters: user <- sum_j g_j q_j, row_j <- g_j user
    for (int64_t j = 0; j < B; ++j) {
      if (!valid[j]) continue;
      const float g = w.grad_logit[j];
      const float* q = rows_c + (rows[j] - first_row) * d;
      float* gq = w.grad_rows.data() + (rows[j] - first_row) * d;
      for (int64_t i = 0; i < d; ++i) {
        w.grad_user[i] += g * q[i];
        gq[i] += g * user[i];
      }
    }
    fedem::adam(user, w.grad_user.data(), w.m_user.data(), w.v_user.data(), d, adam_at[s]);
    // every pool row, as torch.optim.Adam on the whole table: a row's moments keep moving it
    // after its last gradient (rows not touched yet have zero moments and stay put)
    fedem::adam(rows_c, w.grad_rows.data(), w.m_rows.data(), w.v_rows.data(), num_rows * d, adam_at[s]);
    if (stop.after_step(s, loss, countf, bpe, threshold)) break;
  }
  return stop.running_loss();
}

}  // namespace

// pool [R, d] (rows grouped by client rank, pool_offsets [C+1]) and users [C, d] are trained in
// place. Returns each client's final running loss [C] (float64).
torch::Tensor train_fcf_clients(torch::Tensor pool, torch::Tensor users, torch::Tensor flat_rows,
                                torch::Tensor flat_labels, torch::Tensor flat_valid, torch::Tensor step_base,
                                torch::Tensor num_steps, torch::Tensor batches_per_epoch,
                                torch::Tensor pool_offsets, int64_t batch_size, double lr, double beta1,
                                double beta2, double eps, double threshold) {
  for (const auto& [t, type] : {std::pair{pool, torch::kFloat32}, {users, torch::kFloat32},
                                {flat_rows, torch::kInt64}, {flat_labels, torch::kFloat32}, {flat_valid, torch::kBool},
                                {step_base, torch::kInt64}, {num_steps, torch::kInt64},
                                {batches_per_epoch, torch::kInt64}, {pool_offsets, torch::kInt64}}) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == type,
                "train_fcf_clients: every tensor must be contiguous, on the CPU, of the documented dtype");
  }
  const int64_t C = users.size(0), d = users.size(1);
  float* pool_p = pool.data_ptr<float>();
  float* users_p = users.data_ptr<float>();
  const int64_t* steps = num_steps.data_ptr<int64_t>();
  const int64_t* bpe = batches_per_epoch.data_ptr<int64_t>();
  const int64_t* offsets = pool_offsets.data_ptr<int64_t>();
  const Schedule sched{flat_rows.data_ptr<int64_t>(), flat_labels.data_ptr<float>(), flat_valid.data_ptr<bool>(),
                       step_base.data_ptr<int64_t>(), batch_size};
  const auto adam_at = fedem::adam_schedule(C ? num_steps.max().item<int64_t>() : 0, lr, beta1, beta2, eps);
  auto out = torch::empty({C}, torch::kFloat64);
  double* out_p = out.data_ptr<double>();
  // clients are independent within a round: any split over threads gives the same numbers
  at::parallel_for(0, C, 1, [&](int64_t first, int64_t last) {
    Scratch scratch(d, batch_size);
    for (int64_t c = first; c < last; ++c) {
      out_p[c] = train_client(c, pool_p + offsets[c] * d, users_p + c * d, offsets[c], offsets[c + 1] - offsets[c], d,
                              sched, steps[c], bpe[c], adam_at.data(), threshold, scratch);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // the GIL is released: the next round is prepared on a Python thread meanwhile
  m.def("train_fcf_clients", &train_fcf_clients, "plain FCF local training, client by client",
        py::call_guard<py::gil_scoped_release>());
}
