"""The maths of the cells against the reference (nnRNN §4, §5, §12; IndRNN §1.3-1.4)."""

from __future__ import annotations

import math

import pytest
import torch

from raylab.cells import EURNN, NNRNN, ExpRNN, IndRNN, RNNOrth
from raylab.cells.eurnn import tunable_layer
from raylab.cells.orthogonal import SkewExp, cayley_skew, henaff_skew, orthogonal_from_upper, random_orth_skew, skew_from_upper, upper_mask
from raylab.cells.recurrence import IndRecurrence, ModReluRecurrence
from raylab.spec.config import OptimizerSpec
from raylab.networks.optim import build_optimizer


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def orthogonality_error(matrix: torch.Tensor) -> float:
    """max |B^T B - I|, the product taken in float64 so that only B's own error counts."""
    matrix = matrix.double()
    return (matrix.t() @ matrix - torch.eye(matrix.shape[0], dtype=matrix.dtype)).abs().max().item()


def train(cell: torch.nn.Module, steps: int, lr: float, lr_orth: float) -> None:
    """Steps of RMSprop on a loss that pushes the recurrence hard, through the cell's hooks."""
    optimizer = build_optimizer(cell, OptimizerSpec(lr=lr, lr_orth=lr_orth))
    inputs = torch.randn(4, 10, cell.input_size)
    for _ in range(steps):
        outputs, _ = cell(inputs)
        loss = (outputs - 1).pow(2).mean()
        penalty = getattr(cell, "penalty", None)
        loss = loss + penalty() if penalty is not None else loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        getattr(cell, "after_optimizer_step", lambda: None)()


def test_exprnn_and_nnrnn_stay_orthogonal_after_many_steps():
    torch.manual_seed(0)
    exprnn, nnrnn = ExpRNN(3, 32), NNRNN(3, 32)
    start = exprnn.log_weight.detach().clone()
    train(exprnn, 150, lr=1e-2, lr_orth=1e-2)
    train(nnrnn, 150, lr=1e-2, lr_orth=1e-2)
    assert (exprnn.log_weight - start).abs().max() > 0.1  # the log parameter really moved
    assert orthogonality_error(exprnn.orthogonal().detach()) < 1e-5
    assert orthogonality_error(nnrnn.schur_basis().detach()) < 1e-5


def test_matrix_exp_orthogonal_in_float32_at_n_1024():
    """A Cayley-initialised log parameter after a dense perturbation, as training makes it.

    float32 matrix_exp's own error grows with ||S||: about 1e-5 at ||S||_2 = 0.6, 3e-5 at 3 (N = 1024).
    """
    torch.manual_seed(0)
    mask = upper_mask(1024)
    values = cayley_skew(1024)[mask].float() + 1e-3 * torch.randn(int(mask.sum()))
    assert orthogonality_error(torch.linalg.matrix_exp(skew_from_upper(values, mask))) < 1e-5


def naive_recurrent_matrix(cell: NNRNN) -> torch.Tensor:
    """P (Lambda + T) P^T built the way the original code does, block by block in Python."""
    n = cell.hidden_size
    p = cell.schur_basis()
    theta = torch.zeros(n, n, dtype=p.dtype)
    pattern = torch.zeros(n * n, dtype=p.dtype).index_put((cell.theta_index[: cell.t.numel()],), cell.t).view(n, n)
    for i in range(n // 2):
        g, c, s = cell.gamma[i], torch.cos(cell.theta[i]), torch.sin(cell.theta[i])
        theta[2 * i, 2 * i], theta[2 * i, 2 * i + 1] = g * c, -g * s
        theta[2 * i + 1, 2 * i], theta[2 * i + 1, 2 * i + 1] = g * s, g * c
    return p @ (theta + pattern) @ p.t()


@pytest.mark.parametrize("mask", ["code", "paper"])
def test_nnrnn_matrix_equals_per_block_construction(mask):
    torch.manual_seed(1)
    cell = NNRNN(3, 10, t_mask=mask).double()
    with torch.no_grad():
        cell.t.normal_()
        cell.gamma.uniform_(0.5, 1.5)
    torch.testing.assert_close(cell.recurrent_matrix(), naive_recurrent_matrix(cell))


def eigenvalue_moduli(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvals(matrix).abs().sort().values


def test_nnrnn_eigenvalue_moduli_are_gamma():
    torch.manual_seed(2)
    n = 12
    gammas = torch.linspace(0.6, 1.4, n // 2, dtype=torch.float64)
    expected = gammas.repeat_interleave(2).sort().values
    for mask in ("code", "paper"):
        cell = NNRNN(3, n, t_mask=mask).double()
        with torch.no_grad():
            cell.gamma.copy_(gammas)
        torch.testing.assert_close(eigenvalue_moduli(cell.recurrent_matrix().detach()), expected)  # T = 0
    with torch.no_grad():
        cell.t.normal_()  # the paper mask keeps the moduli for any T ...
    torch.testing.assert_close(eigenvalue_moduli(cell.recurrent_matrix().detach()), expected)
    code = NNRNN(3, n, t_mask="code").double()
    with torch.no_grad():
        code.gamma.copy_(gammas)
        code.t.normal_()  # ... the code mask does not (nnRNN §3.4)
    assert (eigenvalue_moduli(code.recurrent_matrix().detach()) - expected).abs().max() > 1e-3


def test_nnrnn_penalty_and_free_parameter_storage():
    cell = NNRNN(3, 8, delta=0.5)
    with torch.no_grad():
        cell.gamma.copy_(torch.tensor([1.0, 2.0, 0.0, 1.0]))
    assert cell.penalty().item() == pytest.approx(0.5 * 2)
    assert cell.theta.numel() == 4 and cell.log_p.numel() == 28 and cell.t.numel() == 28
    assert NNRNN(3, 8, t_mask="paper").t.numel() == 24


def frechet_log_gradient(x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The original code's orthogonal step (nnRNN §5.2), with the 2N x 2N block exponential."""
    s = skew_from_upper(x, mask)
    b = torch.linalg.matrix_exp(s)
    k = 0.5 * (b.t() @ g - g.t() @ b)
    n = s.shape[0]
    block = torch.zeros(2 * n, 2 * n, dtype=s.dtype)
    block[:n, :n], block[:n, n:], block[n:, n:] = -s, k, -s
    f = b @ torch.linalg.matrix_exp(block)[:n, n:]
    return (f - f.t())[mask]


def test_log_parameter_gradient_against_finite_differences_and_frechet():
    torch.manual_seed(3)
    n = 10
    mask = upper_mask(n)
    x = torch.randn(int(mask.sum()), dtype=torch.float64, requires_grad=True)
    g = torch.randn(n, n, dtype=torch.float64)

    def loss(values: torch.Tensor) -> torch.Tensor:
        return (g * orthogonal_from_upper(values, mask)).sum()  # the cells' spectral backward

    (autograd,) = torch.autograd.grad(loss(x), x)
    (generic,) = torch.autograd.grad((g * torch.linalg.matrix_exp(skew_from_upper(x, mask))).sum(), x)
    torch.testing.assert_close(autograd, generic, rtol=1e-10, atol=1e-10)  # matrix_exp's own backward
    eps = 1e-6
    finite = torch.stack([(loss(x.detach() + eps * e) - loss(x.detach() - eps * e)) / (2 * eps) for e in torch.eye(x.numel(), dtype=torch.float64)])
    torch.testing.assert_close(autograd, finite, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(autograd, frechet_log_gradient(x.detach(), mask, g), rtol=1e-10, atol=1e-10)


def test_skew_exp_gradient_with_repeated_eigenvalues():
    """Block-diagonal (henaff) and zero log parameters have repeated eigenvalues: the sinc form copes."""
    g = torch.randn(8, 8, dtype=torch.float64)
    for skew in (henaff_skew(8), torch.zeros(8, 8, dtype=torch.float64), henaff_skew(9)[:8, :8]):
        s = skew.clone().requires_grad_()
        (spectral,) = torch.autograd.grad(SkewExp.apply(s), s, g)
        (generic,) = torch.autograd.grad(torch.linalg.matrix_exp(s), s, g)
        torch.testing.assert_close(spectral, generic, rtol=1e-9, atol=1e-9)


def rotation_angles(skew: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvals(torch.linalg.matrix_exp(skew)).angle()


def test_henaff_spectrum():
    torch.manual_seed(4)
    a0 = henaff_skew(64)
    assert torch.equal(a0, -a0.t()) and torch.count_nonzero(a0) == 64  # block diagonal, N/2 blocks
    s = torch.diagonal(a0, 1)[::2]
    assert ((s >= -math.pi) & (s <= 0)).all()
    torch.testing.assert_close(rotation_angles(a0).abs().sort().values, s.abs().repeat_interleave(2).sort().values)


def test_cayley_spectrum_is_tan_half_angle():
    torch.manual_seed(5)
    a0 = cayley_skew(64)
    s = torch.diagonal(a0, 1)[::2]
    assert ((s > -1) & (s <= 0)).all()  # -tan(u/2), u in (0, pi/2): rotations by less than 1 rad
    assert rotation_angles(a0).abs().max() < 1


def test_random_orth_inverts_the_qr_draw():
    torch.manual_seed(6)
    a0 = random_orth_skew(16)
    torch.manual_seed(6)
    while True:  # the same draw, by hand
        q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(q))
        if torch.linalg.det(q) > 0:
            break
    torch.testing.assert_close(a0, -a0.t())
    torch.testing.assert_close(torch.linalg.matrix_exp(a0), q)
    assert torch.linalg.det(torch.linalg.matrix_exp(a0)).item() == pytest.approx(1.0)


def test_rnn_orth_weight_is_orthogonal_and_odd_sizes_keep_an_eigenvalue_one():
    for scheme in ("henaff", "cayley", "random_orth"):
        assert orthogonality_error(RNNOrth(2, 9, recurrent_init=scheme).weight_hh.detach()) < 1e-5
    assert torch.all(henaff_skew(9)[-1] == 0)


@pytest.mark.parametrize("function", ["modrelu", "ind"])
def test_recurrence_gradcheck(function):
    torch.manual_seed(7)
    t, b, n = 5, 3, 4
    projected = torch.randn(t, b, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(b, n, dtype=torch.float64, requires_grad=True)
    if function == "modrelu":
        weight = torch.randn(n, n, dtype=torch.float64, requires_grad=True)
        bias = (0.3 * torch.randn(n, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(ModReluRecurrence.apply, (projected, h0, weight, bias))
    else:
        u = torch.rand(n, dtype=torch.float64).mul(2).sub(1).requires_grad_()
        assert torch.autograd.gradcheck(IndRecurrence.apply, (projected, h0, u))


def test_modrelu_recurrence_zero_preactivation_gives_zero():
    """sign(0) = 0: a zero input from a zero state stays zero whatever the bias (nnRNN §3.1)."""
    out = ModReluRecurrence.apply(torch.zeros(3, 2, 4), torch.zeros(2, 4), torch.eye(4), torch.full((4,), 0.5))
    assert torch.count_nonzero(out) == 0


def test_indrnn_bound_holds_after_steps():
    torch.manual_seed(8)
    cell = IndRNN(3, 8, num_layers=2, timesteps=10, magnitude=2.0)
    bound = 2.0 ** (1 / 10)
    assert cell.bound == pytest.approx(bound)
    assert all((r.weight_hh >= 0).all() and (r.weight_hh <= bound).all() for r in cell.recurrences)  # U(0, bound)
    train(cell, 20, lr=0.5, lr_orth=0.5)
    weights = torch.cat([r.weight_hh.detach() for r in cell.recurrences])
    assert weights.abs().max() <= bound + 1e-7
    assert (weights.abs() > bound - 1e-6).any()  # the loss pushed u to the bound: the clamp did the work


def test_indrnn_bound_options_and_last_layer_init():
    assert IndRNN(1, 4).bound == 1.0
    assert IndRNN(1, 4, u_bound=0.99, timesteps=50).bound == 0.99
    torch.manual_seed(9)
    cell = IndRNN(1, 512, num_layers=2, timesteps=784, magnitude=5.0, last_layer_init=True)
    last = cell.recurrences[-1].weight_hh
    assert last.min() >= (1 / 5) ** (1 / 784) and last.max() <= 5 ** (1 / 784)
    assert cell.recurrences[0].weight_hh.min() < 0.5  # only the last layer, chosen by index


def test_indrnn_dropout_mask_is_shared_over_time():
    torch.manual_seed(10)
    cell = IndRNN(3, 16, num_layers=1, dropout=0.5).train()
    with torch.no_grad():
        cell.recurrences[0].weight_hh.zero_()  # h_t = relu(W x_t + b): zeros come only from relu or the mask
        cell.linears[0].bias.fill_(10.0)
    outputs, _ = cell(torch.zeros(2, 5, 3))
    dropped = outputs == 0
    assert dropped.any() and (dropped == dropped[:, :1]).all()


def test_eurnn_tunable_layer_is_the_stated_givens_rotations():
    """Layer A rotates (0,1), (2,3); layer B rotates (1,2) and passes 0 and N-1 through (nnRNN §3.5)."""
    n = 6
    for index, pairs in ((0, [(0, 1), (2, 3), (4, 5)]), (1, [(1, 2), (3, 4)])):
        theta = torch.randn(len(pairs), dtype=torch.float64)
        phi = torch.randn(len(pairs), dtype=torch.float64)
        expected = torch.eye(n, dtype=torch.complex128)
        for (a, b), th, ph in zip(pairs, theta, phi):
            expected[a, a], expected[a, b] = math.cos(th), -complex(math.cos(ph), math.sin(ph)) * math.sin(th)
            expected[b, a], expected[b, b] = math.sin(th), complex(math.cos(ph), math.sin(ph)) * math.cos(th)
        got = tunable_layer(torch.eye(n, dtype=torch.complex128), index, torch.cos(theta), torch.sin(theta), torch.polar(torch.ones_like(phi), phi))
        torch.testing.assert_close(got, expected.t())  # rows are the images of the basis vectors


@pytest.mark.parametrize("options", [{}, {"mode": "real"}, {"style": "fft"}])
def test_eurnn_is_unitary(options):
    cell = EURNN(2, 8, **options)
    eye = torch.eye(8, dtype=torch.complex64 if cell.is_complex else torch.float32)
    matrix = cell.unitary(eye).detach()
    torch.testing.assert_close(matrix.conj().t() @ matrix, eye, atol=1e-6, rtol=0)
