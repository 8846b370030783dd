"""The controls of the residual and LM-head rules: IRMs writing through per-layer rotations,
the NLL with the final norm's scale frozen, and the entropy lever of every index."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from irm_lens import IRM
from irm_lens.evaluate import answer_nll_table, frozen_scale_nll_table
from irm_lens.inject import FINAL_SCALE_HOOK, attach, layer_of, patch, resid_post_hook
from irm_lens.interventions.causal import entropy_lever, final_logits
from irm_lens.irm import IRMConfig
from irm_lens.prompts import encode


def test_rotated_output_writes_r_v_and_unrotates(tiny_host):
    plain = IRM.for_host(tiny_host, seed=3, init="torch")
    rotated = IRM.for_host(tiny_host, seed=3, init="torch", rotated_output=7)
    assert all(
        torch.equal(a, b) for a, b in zip(plain.parameters(), rotated.parameters(), strict=True)
    )
    resid = torch.randn(2, 5, tiny_host.cfg.d_model)
    v, written = plain(resid), rotated(resid)
    rot = rotated.rotations
    assert rot is not None and rot.shape == (rotated.n_inject, *(2 * [tiny_host.cfg.d_model]))
    eye = torch.eye(tiny_host.cfg.d_model)
    assert torch.allclose(rot[0] @ rot[0].T, eye, atol=1e-5)
    assert not torch.allclose(rot[0], rot[1])  # one rotation per layer
    assert torch.allclose(written[1], v[1] @ rot[1].T, atol=1e-5)  # delta_l = R_l v_l
    assert torch.allclose(written.norm(dim=-1), v.norm(dim=-1), atol=1e-4)
    recorded = written[:, 0].transpose(0, 1)  # as recordings hold it: [token, inject, d]
    assert torch.allclose(rotated.unrotate(recorded), v[:, 0].transpose(0, 1), atol=1e-5)
    assert torch.equal(plain.unrotate(recorded), recorded)


def test_rotated_output_survives_save_and_load(tiny_host, tmp_path):
    irm = IRM.for_host(tiny_host, seed=3, rotated_output=7)
    irm.save(tmp_path / "irm.safetensors")
    loaded = IRM.load(tmp_path / "irm.safetensors", tiny_host)
    assert loaded.config.rotated_output == 7
    assert loaded.rotations is not None and irm.rotations is not None
    assert torch.equal(loaded.rotations, irm.rotations)
    assert IRMConfig.from_json(IRM.for_host(tiny_host).config.to_json()).rotated_output is None


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "question_id": [1, 2, 3],
            "question": ["Why?", "How so?", "When?"],
            "answer": ["Because.", "Like that.", "Soon enough."],
        }
    )


def test_frozen_scale_with_a_silent_irm_is_the_host(tiny_host):
    silent = IRM.for_host(tiny_host, seed=1, init="torch")
    for p in silent.net[-1].parameters():
        torch.nn.init.zeros_(p)
    host = answer_nll_table(tiny_host, _rows(), mode="plain")
    frozen = frozen_scale_nll_table(tiny_host, _rows(), silent, mode="plain")
    assert frozen["nll_sum"].tolist() == pytest.approx(host["nll_sum"].tolist(), abs=1e-4)
    assert frozen["n_tokens"].tolist() == host["n_tokens"].tolist()


def test_frozen_scale_removes_the_irms_effect_on_the_rms(tiny_host, irm):
    free = answer_nll_table(tiny_host, _rows(), irm=irm, mode="plain")
    frozen = frozen_scale_nll_table(tiny_host, _rows(), irm, mode="plain")
    host = answer_nll_table(tiny_host, _rows(), mode="plain")
    assert not free["nll_sum"].equals(frozen["nll_sum"])
    assert not host["nll_sum"].equals(frozen["nll_sum"])  # the IRM still acts on the direction
    # by hand for row 0: the IRM's final residual, divided by the host-alone RMS scale
    enc = encode(tiny_host.tokenizer, "Why?", "Because.", mode="plain")
    tokens = torch.tensor([enc.ids])
    last = resid_post_hook(tiny_host.cfg.n_layers - 1)
    with torch.no_grad():
        _, alone = tiny_host.run_with_cache(tokens, names_filter=[last])
        with attach(tiny_host, irm):
            _, moved = tiny_host.run_with_cache(tokens, names_filter=[last])
    x_host, x_irm = alone[last][0].float(), moved[last][0].float()
    scale = (x_host.pow(2).mean(-1, keepdim=True) + tiny_host.cfg.eps).sqrt()
    gain = tiny_host.ln_final.weight.detach().float()
    logits = (x_irm / scale * gain) @ tiny_host.W_U.float() + tiny_host.b_U.float()
    logp = logits[:-1].log_softmax(-1).gather(-1, tokens[0, 1:, None])[:, 0]
    answer = -logp[len(enc.prompt_ids) - 1 :].sum()
    assert float(frozen["nll_sum"].iloc[0]) == pytest.approx(float(answer), abs=1e-3)
    assert layer_of(FINAL_SCALE_HOOK) == -1


def test_final_logits_are_the_hosts(tiny_host):
    tokens = torch.tensor([[1, 5, 9, 12, 3]])
    last = resid_post_hook(tiny_host.cfg.n_layers - 1)
    with torch.no_grad():
        logits, cache = tiny_host.run_with_cache(tokens, names_filter=[last])
    assert torch.allclose(final_logits(tiny_host, cache[last]), logits.float(), atol=1e-4)


def test_entropy_lever_ranks_every_index_and_matches_a_direct_patch(tiny_host):
    tokens = torch.tensor([[1, 5, 9, 12, 3]])
    last = resid_post_hook(tiny_host.cfg.n_layers - 1)
    with torch.no_grad():
        _, cache = tiny_host.run_with_cache(tokens, names_filter=[last])
    final = cache[last][0]
    lever = entropy_lever(tiny_host, final, chunk=5)
    assert lever.shape == (tiny_host.cfg.d_model,) and (lever >= 0).all()
    assert entropy_lever(tiny_host, final, scale=1.0).max() == pytest.approx(0.0, abs=1e-5)

    def entropy(logits):
        logp = logits.float().log_softmax(-1)
        return -(logp.exp() * logp).sum(-1)

    def times8(x, layer):
        x[..., 3] *= 8
        return x

    with torch.no_grad():
        base = entropy(tiny_host(tokens))[0]
        with patch(tiny_host, [last], times8):
            moved = entropy(tiny_host(tokens))[0]
    assert lever[3] == pytest.approx(float((moved - base).abs().mean()), abs=1e-4)
