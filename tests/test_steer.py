"""Steering vectors from an IRM's recordings: saved by hook point, added back by plain hooks."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from irm_lens import IRM, encode
from irm_lens.cli import main
from irm_lens.errors import IrmLensError
from irm_lens.inject import write_hook
from irm_lens.record import GenerationSettings, load_recordings, record
from irm_lens.steer import SteeringVectors


@pytest.fixture(scope="module")
def recorded(tiny_host):
    irm = IRM.for_host(tiny_host, layers=(0, 2), seed=1, init="torch")
    settings = GenerationSettings(max_new_tokens=3)
    return record(tiny_host, irm, ["Why?", "What is rain?"], settings=settings, progress=False)


def test_vectors_are_the_mean_output_per_layer_and_round_trip(recorded, tmp_path):
    vectors = SteeringVectors.from_recordings(recorded, source="test")
    pooled = torch.cat([r.outputs.double() for r in recorded])
    assert list(vectors.vectors) == [write_hook(0), write_hook(2)]
    torch.testing.assert_close(vectors.vectors[write_hook(2)], pooled[:, 1].mean(0).float())
    back = SteeringVectors.load(vectors.save(tmp_path / "v.safetensors"))
    assert back.meta["source"] == "test" and back.meta["layers"] == "[0, 2]"
    for name, vector in vectors.vectors.items():
        assert torch.equal(back.vectors[name], vector)


def test_plain_hooks_add_each_vector_where_the_irm_writes(tiny_host, recorded):
    vectors = SteeringVectors.from_recordings(recorded)
    tokens = torch.tensor([encode(tiny_host.tokenizer, "Where do rivers go?").ids])
    names = [write_hook(0), write_hook(2), write_hook(1)]
    with torch.no_grad():
        _, plain = tiny_host.run_with_cache(tokens, names_filter=names)
        with vectors.applied(tiny_host, scale=2.0):
            _, steered = tiny_host.run_with_cache(tokens, names_filter=names)
    # at layer 0 the added vector is all the difference; later layers see its effect too
    torch.testing.assert_close(
        steered[write_hook(0)] - plain[write_hook(0)],
        2.0 * vectors.vectors[write_hook(0)].expand_as(plain[write_hook(0)]),
        atol=1e-5,
        rtol=1e-5,
    )
    assert not torch.allclose(steered[write_hook(1)], plain[write_hook(1)])
    after = tiny_host.run_with_cache(tokens, names_filter=names)[1]  # hooks removed on exit
    torch.testing.assert_close(after[write_hook(2)], plain[write_hook(2)])


def test_a_file_that_is_not_steering_vectors_is_named(tmp_path):
    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(IrmLensError, match=r"other\.safetensors: not irm_lens steering vectors"):
        SteeringVectors.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file format")
    with pytest.raises(IrmLensError, match=r"junk\.safetensors: not a readable safetensors"):
        SteeringVectors.load(tmp_path / "junk.safetensors")


def test_export_from_the_command_line(run_dir, capsys):
    assert main(["record", str(run_dir), "--max-rows", "2", "--max-new-tokens", "2"]) == 0
    assert main(["export", str(run_dir)]) == 0
    said = capsys.readouterr().out
    assert "steering.safetensors: " in said and "run_with_hooks" in said
    vectors = SteeringVectors.load(run_dir / "steering.safetensors")
    recs = load_recordings(run_dir / "recordings" / "paper")
    assert len(vectors.vectors) == len(recs[0].layers)
    assert main(["export", str(run_dir)]) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--recording", "heldout"]) == 2


def test_export_measures_the_vectors_specificity_beside_the_irms(run_dir, tiny_host, capsys):
    from irm_lens.evaluate import intervention_specificity
    from irm_lens.inject import attach
    from irm_lens.irm import IRM
    from irm_lens.training.config import TrainConfig

    assert main(["record", str(run_dir), "--max-new-tokens", "2", "--max-rows", "1"]) == 0
    capsys.readouterr()
    argv = ["export", str(run_dir), "--evaluate", "--max-rows", "6"]
    assert main(argv) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("specificity of")]
    assert [x.split()[2] for x in lines] == ["the", "its"], lines
    # the IRM's line is the measure itself, applied to the IRM attached
    config = TrainConfig.load(run_dir / "config.json")
    irm = IRM.load(run_dir / "irm.safetensors", tiny_host)
    irm.eval()
    s = intervention_specificity(tiny_host, config, lambda: attach(tiny_host, irm), max_rows=6)
    assert f"{100 * s.specificity:.1f} % [95 % CI {100 * s.low:.1f}" in lines[0], lines[0]
    assert "over 6 test questions" in lines[1]


def test_contrastive_vectors_are_the_answer_mean_difference_of_the_residual(tiny_host):
    from irm_lens.data.datasets import load_dataset

    anger = load_dataset("anger", split="train").iloc[:3]
    neutral = load_dataset("neutral", split="train").iloc[:2]
    layers = [1, 3]
    v = SteeringVectors.contrastive(tiny_host, anger, neutral, layers, max_len=64, batch_size=2)
    assert list(v.vectors) == [write_hook(1), write_hook(3)]
    back = SteeringVectors.contrastive(tiny_host, neutral, anger, layers, max_len=64)
    for name in v.vectors:  # antisymmetric, and batching does not change it
        torch.testing.assert_close(back.vectors[name], -v.vectors[name], atol=1e-5, rtol=1e-5)
    same = SteeringVectors.contrastive(tiny_host, anger, anger, layers, max_len=64)
    assert all(float(x.abs().max()) < 1e-5 for x in same.vectors.values())

    # by hand: each row's mean resid_mid over its answer tokens, then the mean over rows
    def means(rows):
        per_row = []
        for q, a in zip(rows["question"], rows["answer"], strict=True):
            enc = encode(tiny_host.tokenizer, q, a)
            ids = enc.ids[:64]
            _, cache = tiny_host.run_with_cache(torch.tensor([ids]))
            resid = cache["blocks.3.hook_resid_mid"][0, len(enc.prompt_ids) : len(ids)]
            per_row.append(resid.mean(0))
        return torch.stack(per_row).mean(0)

    with torch.no_grad():
        expected = means(anger) - means(neutral)
    torch.testing.assert_close(v.vectors[write_hook(3)], expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(IrmLensError, match="rows of both voices"):
        SteeringVectors.contrastive(tiny_host, anger.iloc[:0], neutral, layers)
