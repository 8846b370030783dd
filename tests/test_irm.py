"""The IRM module: architecture, output layout, initialisation, purity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from irm_lens import IRM, IRMConfig, LayerRangeError


def test_architecture_is_the_papers_mlp():
    irm = IRM(IRMConfig(d_model=8, layers=(0, 1, 2), width_mult=3, depth=5))
    linears = [m for m in irm.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (8, 24),
        (24, 24),
        (24, 24),
        (24, 24),
        (24, 24),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in irm.net) == 4
    assert isinstance(irm.net[-1], nn.Linear)  # no output activation
    assert all(m.bias is not None for m in linears)


def test_layout_matches_original_view():
    """Flat unit u is residual index u // L of layer slot u % L, as view(b, s, d, L)."""
    d, n_inject = 6, 3
    irm = IRM(IRMConfig(d_model=d, layers=(0, 2, 3), init="torch"))
    x = torch.randn(2, 5, d)
    flat = irm.net(x)
    original = flat.view(2, 5, d, n_inject)  # the original code's layout
    ours = irm(x)
    assert ours.shape == (n_inject, 2, 5, d)
    for slot in range(n_inject):
        torch.testing.assert_close(ours[slot], original[..., slot], rtol=0, atol=0)
    # One unit by hand: u = 7 -> residual index 2, layer slot 1.
    assert ours[1, 0, 0, 2] == flat[0, 0, 7]


def test_paper_init_statistics():
    irm = IRM(IRMConfig(d_model=64, layers=tuple(range(4)), init="paper"))
    for m in irm.net:
        if isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
            assert abs(m.weight.std().item() - 0.02) < 0.002
            assert abs(m.weight.mean().item()) < 0.002


def test_depth_and_width_configurable():
    irm = IRM(IRMConfig(d_model=4, layers=(1,), width_mult=2, depth=3))
    linears = [m for m in irm.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 8), (8, 8), (8, 4)]


def test_for_host_defaults_to_all_layers_and_is_seeded(tiny_host):
    state = torch.random.get_rng_state()
    a = IRM.for_host(tiny_host, seed=3)
    b = IRM.for_host(tiny_host, seed=3)
    c = IRM.for_host(tiny_host, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert a.layers == tuple(range(tiny_host.cfg.n_layers))
    assert a.config.d_model == tiny_host.cfg.d_model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


def test_shapes_are_checked_at_runtime_in_tests():
    """The jaxtyping import hook (pyproject addopts) checks the annotated shapes."""
    from jaxtyping import TypeCheckError

    irm = IRM(IRMConfig(d_model=4, layers=(0,)))
    with pytest.raises(TypeCheckError):
        irm(torch.zeros(3, 4))  # missing the batch axis


def test_forward_is_pure():
    irm = IRM(IRMConfig(d_model=4, layers=(0, 1), init="torch"))
    before = dict(vars(irm))
    buffers = list(irm.buffers())
    irm(torch.randn(1, 2, 4))
    assert dict(vars(irm)).keys() == before.keys()
    assert list(irm.buffers()) == buffers == []


@pytest.mark.parametrize(
    ("layers", "match"),
    [((), "empty"), ((0, 0), "duplicates"), ((0, 4), r"0\.\.3"), ((-1,), r"0\.\.3")],
)
def test_bad_layers_name_the_valid_range(layers, match):
    with pytest.raises(LayerRangeError, match=match):
        IRMConfig(d_model=8, layers=layers, n_host_layers=4)


def test_for_host_rejects_out_of_range_layer(tiny_host):
    with pytest.raises(LayerRangeError, match=r"layers 0\.\.3"):
        IRM.for_host(tiny_host, layers=[1, 9])


def test_masked_indices_are_zero_in_every_layer_and_survive_save_and_load(tiny_host, tmp_path):
    irm = IRM.for_host(tiny_host, seed=1, init="torch", masked=(3, 60))
    out = irm(torch.randn(2, 5, tiny_host.cfg.d_model))
    assert torch.equal(out[..., [3, 60]], torch.zeros_like(out[..., [3, 60]]))
    assert bool((out[..., 4] != 0).all())
    assert "keep" not in irm.state_dict()  # rebuilt from the config, not stored
    back = IRM.load(irm.save(tmp_path / "irm.safetensors"), tiny_host)
    assert back.config.masked == (3, 60)
    x = torch.randn(1, 3, tiny_host.cfg.d_model)
    assert torch.equal(back(x), irm(x))
    with pytest.raises(ValueError, match=r"masked \[64\]"):
        IRM.for_host(tiny_host, masked=(64,))
    with pytest.raises(ValueError, match="distinct"):
        IRM.for_host(tiny_host, masked=(2, 2))


def test_training_with_a_mask_keeps_the_index_at_zero(tiny_host, tmp_path):
    from irm_lens.training.config import preset
    from irm_lens.training.train import train

    cfg = preset("smoke", masked=(7,))
    assert type(cfg).from_json(cfg.to_json()) == cfg  # JSON's list reads back as the tuple
    train(cfg, tmp_path / "run", host=tiny_host, progress=False)
    irm = IRM.load(tmp_path / "run" / "irm.safetensors", tiny_host)
    with torch.no_grad():
        out = irm(torch.randn(1, 4, tiny_host.cfg.d_model))
    assert irm.config.masked == (7,) and float(out[..., 7].abs().max()) == 0.0
    assert float(out.abs().max()) > 0
