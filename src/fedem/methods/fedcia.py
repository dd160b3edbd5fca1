"""`fedcia`: FedCIA (Han et al., SIGIR 2025) on FCF, one user per client (docs/methods/fedcia.md).

Item tables stay private and are never replaced. Every round each client trains its FCF model (as
`local`), uploads its item-item similarity Q_u Q_u^T plus Laplace noise, the server averages the uploads
into S, and each client takes `align_steps` SGD steps (lr `align_lr`, weight decay `align_wd`) on the
unsquared Frobenius loss ||Q_u Q_u^T - S||_F, on Q_u only; it is evaluated after that alignment.

Done naively the alignment is O(m^2 d) per step per client. With S_s = (S + S^T)/2 = V diag(l) V^T (one
eigendecomposition per round) and Q~ = V^T Q_u: Q_u^T Q_u = Q~^T Q~, tr(Q^T S Q) = sum_i l_i |Q~_i|^2, and
the gradient 2 (Q Q^T Q - S_s Q) / f rotates to 2 (Q~ Q~^T Q~ - diag(l) Q~) / f, so every step is O(m d^2)
in the eigenbasis, with one rotation in and one out per round.

f, the step's scale, is not taken as ||Q~^T Q~||^2 - 2 sum_i l_i |Q~_i|^2 + ||S||^2: once a table is
aligned, f^2 is far below float32's resolution of those terms (on an ml-100k-shaped test f^2 came out
negative, f was clamped to 1e-12 and the tables blew up; an ml-100k run diverged at round 70), where the
released code's direct float32 ||Q Q^T - S|| is fine. Instead the residual R = Q~ Q~^T - diag(l) is split
at the k = 2d largest eigenvalues (rows T) and the rest (rows R):
    f^2 = ||R_TT||^2 + 2 <G_T, G_R> + (||G_R||^2 - 2 sum_R l_i |Q~_i|^2 + sum_R l_i^2) + ||(S - S^T) / 2||^2,
G_T, G_R the Gram matrices of the rows T and R. R_TT (k x k) is formed directly in float64; every other term
is O(f^2) (Eckart-Young: Q~ Q~^T has rank d <= k, so sum_R l_i^2 <= f^2, and ||G_R|| <= 2 f), so their
float32 rounding is relative to f^2, not to ||S||^2 (tests/test_baseline_parts.py)."""

from __future__ import annotations

import numpy as np
import torch

from fedem.methods.local import PerClientTables
from fedem.rng import numpy_rng
from fedem.training.schedule import RoundSamples

_CHUNK = 128  # clients per chunk of the Gram and the rotations (bounds memory)
_STEP_BLOCK = 16  # clients per block of the alignment steps: a block's q stays in cache through its steps


def uploaded_mean(tables: torch.Tensor, noise_scale: float, seed: int, round_index: int) -> torch.Tensor:
    """S = (1/N) sum_u (Q_u Q_u^T + E_u), E_u i.i.d. Laplace(0, b) entries. The sum of N such draws is
    b (G1 - G2) with G1, G2 ~ Gamma(N, 1), so the noise costs 2 m^2 draws, not N m^2."""
    n, m, _ = tables.shape
    signal = torch.zeros((m, m), dtype=torch.float64, device=tables.device)
    for lo in range(0, n, _CHUNK):
        z = tables[lo : lo + _CHUNK].permute(1, 0, 2).reshape(m, -1)
        signal += (z @ z.T).double()
    if noise_scale > 0:
        rng = numpy_rng(seed, "fedcia-upload-noise", round_index)
        noise = noise_scale * (rng.gamma(n, 1.0, size=(m, m)) - rng.gamma(n, 1.0, size=(m, m)))
        signal += torch.from_numpy(noise).to(signal.device)
    return (signal / n).float()


def align(tables: torch.Tensor, target: torch.Tensor, steps: int, lr: float, wd: float) -> None:
    """`steps` SGD steps of ||Q_u Q_u^T - target||_F (plus coupled weight decay) on every table [N, m, d], in place."""
    target64 = target.double()
    eigvals, eigvecs = torch.linalg.eigh((target64 + target64.T) / 2)  # ascending
    eigvecs = eigvecs.float()
    antisymmetric_sq = ((target64 - target64.T) / 2).square().sum()
    n, m, d = tables.shape
    for lo in range(0, n, _CHUNK):
        chunk = tables[lo : lo + _CHUNK]
        c = chunk.shape[0]
        # one GEMM per rotation: [m, m] @ [m, c * d]
        q = (eigvecs.T @ chunk.permute(1, 0, 2).reshape(m, c * d)).view(m, c, d).permute(1, 0, 2).contiguous()
        for b in range(0, c, _STEP_BLOCK):
            q[b : b + _STEP_BLOCK] = _align_steps(q[b : b + _STEP_BLOCK], eigvals, antisymmetric_sq, steps, lr, wd)
        back = eigvecs @ q.permute(1, 0, 2).reshape(m, c * d)
        tables[lo : lo + _CHUNK] = back.view(m, c, d).permute(1, 0, 2)


def _align_steps(q, eigvals, antisymmetric_sq, steps: int, lr: float, wd: float) -> torch.Tensor:
    """`steps` alignment steps of q [c, m, d] (tables in the eigenbasis; eigvals [m] float64, ascending)."""
    m, d = q.shape[1], q.shape[2]
    k = min(m, 2 * d)  # rows T: the last k (largest eigenvalues)
    top = eigvals[m - k :]
    rest = eigvals[: m - k]
    outside_top = rest.square().sum() + antisymmetric_sq
    eig32 = eigvals.float()
    for _ in range(steps):
        q_top, q_rest = q[:, m - k :].double(), q[:, : m - k]
        gram_top = q_top.transpose(1, 2) @ q_top  # [c, d, d] float64
        gram_rest = (q_rest.transpose(1, 2) @ q_rest).double()
        residual_tt = torch.baddbmm(torch.diag(-top), q_top, q_top.transpose(1, 2))  # [c, k, k]
        rest_sq = torch.linalg.vector_norm(q_rest, dim=2).square().double()  # [c, m - k]
        f_sq = (
            residual_tt.square().sum(dim=(1, 2))
            + 2 * (gram_top * gram_rest).sum(dim=(1, 2))
            + gram_rest.square().sum(dim=(1, 2))
            - 2 * (rest_sq @ rest)
            + outside_top
        )
        step = (2 * lr / f_sq.clamp(min=0).sqrt().clamp(min=1e-12)).float()  # 2 lr / f per client
        gram = (gram_top + gram_rest).float()  # [c, d, d] = Q^T Q
        # q - lr (2 (q gram - l q) / f + wd q) = q (1 - lr wd + step l) - q (step gram): two passes over q
        keep = (1 - lr * wd) + step[:, None] * eig32[None, :]
        q = torch.baddbmm(q * keep.unsqueeze(2), q, gram * step[:, None, None], alpha=-1)
    return q


class FedCIA(PerClientTables):
    name = "fedcia"

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        losses = self.train_plain(samples)
        hp = self.ctx.hparams
        target = uploaded_mean(self.tables, hp["noise_scale"], self.ctx.seed, round_index)
        align(self.tables, target, hp["align_steps"], hp["align_lr"], hp["align_wd"])
        if not bool(torch.isfinite(self.tables).all()):
            raise FloatingPointError("non-finite item tables after the alignment steps")
        return losses
