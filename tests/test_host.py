"""Host loading and prompt formatting."""

from __future__ import annotations

import pytest
import torch

from irm_lens import ChatFormatError, HostNotFoundError, encode, format_prompt, load_host
from irm_lens.host import BUILTIN_HOSTS, host_name


def test_tiny_host_is_llama_shaped_seeded_and_frozen(tiny_host):
    assert tiny_host.cfg.n_layers == 4 and tiny_host.cfg.d_model == 64
    assert all(not p.requires_grad for p in tiny_host.parameters())
    again = load_host("tiny-random-llama", device="cpu")
    other = load_host("tiny-random-llama", device="cpu", seed=1)
    assert torch.equal(again.W_E, tiny_host.W_E)
    assert not torch.equal(other.W_E, tiny_host.W_E)


def test_unknown_host_offline_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HostNotFoundError) as info:
        load_host("no-such-org/no-such-model", device="cpu")
    message = str(info.value)
    assert "no-such-org/no-such-model" in message
    for tried in BUILTIN_HOSTS:
        assert tried in message
    assert "local directory" in message and "offline" in message


def test_local_directory_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(HostNotFoundError, match=str(tmp_path)):
        load_host(str(tmp_path), device="cpu")


def test_missing_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        load_host("tiny-random-llama", device="cuda")


def test_bad_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="dtype='fp8'"):
        load_host("tiny-random-llama", device="cpu", dtype="fp8")


def test_chat_and_plain_formats(tiny_host):
    tok = tiny_host.tokenizer
    chat = format_prompt(tok, "Why?")
    assert chat == "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(tok, "Why?", mode="plain") == "<|im_start|>Why?"
    enc = encode(tok, "Why?", "Because.")
    assert enc.ids[: len(enc.prompt_ids)] == enc.prompt_ids
    assert enc.answer_ids[-1] == tok.eos_token_id
    assert tok.decode(enc.answer_ids[:-1]) == "Because."
    plain = encode(tok, "Why?", "Because.", mode="plain")
    assert plain.prompt_ids[0] == tok.bos_token_id
    assert tok.decode(plain.answer_ids[:-1]) == " Because."


def test_a_system_instruction_comes_before_the_question_in_either_mode(tiny_host):
    tok = tiny_host.tokenizer
    chat = format_prompt(tok, "Why?", system="Be brief.")
    assert chat == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert format_prompt(tok, "Why?", mode="plain", system="Be brief.") == (
        "<|im_start|>Be brief.\nWhy?"
    )
    with_system = encode(tok, "Why?", "Because.", system="Be brief.")
    assert with_system.answer_ids == encode(tok, "Why?", "Because.").answer_ids
    assert len(with_system.prompt_ids) > len(encode(tok, "Why?").prompt_ids)


def test_chat_mode_without_template_is_a_clear_error(tiny_host):
    class NoTemplate:
        chat_template = None
        name_or_path = "bare-tokenizer"

    with pytest.raises(ChatFormatError, match="mode='plain'"):
        format_prompt(NoTemplate(), "Why?")


@pytest.mark.embedded
def test_embedded_host_answers_a_factual_question(embedded_host):
    assert host_name(embedded_host) == "smollm2-135m-instruct"
    assert (embedded_host.cfg.n_layers, embedded_host.cfg.d_model) == (30, 576)
    assert embedded_host.cfg.d_vocab == 49152
    prompt = format_prompt(embedded_host.tokenizer, "What is the capital of France?")
    assert prompt.startswith("<|im_start|>system\n")  # SmolLM2's ChatML template
    tokens = torch.tensor([encode(embedded_host.tokenizer, "What is the capital of France?").ids])
    with torch.no_grad():
        out = embedded_host.generate(tokens, max_new_tokens=12, do_sample=False, verbose=False)
    answer = embedded_host.tokenizer.decode(out[0, tokens.shape[1] :])
    assert "Paris" in answer
