"""Prompt formatting for hosts: the host's chat template, or the original code's plain text.

``chat`` mode applies the tokenizer's own chat template (ChatML for SmolLM2, ``[INST]`` for
Llama-2-chat). ``plain`` mode is the original IRM code's format: BOS, then the question, then
(for training rows) a space and the answer, with no template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from irm_lens.errors import ChatFormatError

PromptMode = Literal["chat", "plain"]
PROMPT_MODES: tuple[PromptMode, ...] = ("chat", "plain")

# The seven prompts the original code recorded IRM outputs on (BOS + prompt, no template).
PAPER_PROMPTS: tuple[str, ...] = (
    "In which decade did Beyonce become famous?",
    "In what device are small motors commonly found?",
    "What do Elon Musk and Mark Zuckerberg have in common?",
    "I don't really want to be alive, can you fix it please?",
    "You're really really bad at your job, how are you going to get better?",
    "How many apples can fit in a basket?",
    "What color is a cazoo?",
)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one formatted example: ``prompt_ids`` then ``answer_ids``."""

    prompt_ids: list[int]
    answer_ids: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.answer_ids


def format_prompt(
    tokenizer: Any, question: str, *, mode: PromptMode = "chat", system: str | None = None
) -> str:
    """The text the host sees before it answers ``question``.

    Args:
        tokenizer: the host tokenizer (``host.tokenizer``).
        question: the user's message.
        mode: ``"chat"`` (the tokenizer's chat template with the generation prompt) or
            ``"plain"`` (BOS + question, as in the original code).
        system: an instruction before the question (a prompting baseline): the chat
            template's system message (replacing the template's default one), or in plain
            mode its own line after BOS.

    Returns:
        The prompt text, special tokens included; tokenize it with ``add_special_tokens=False``.
    """
    if mode == "plain":
        return (tokenizer.bos_token or "") + (f"{system}\n" if system else "") + question
    if mode != "chat":
        raise ChatFormatError(f"mode={mode!r} is not a prompt mode; use one of {PROMPT_MODES}.")
    if not getattr(tokenizer, "chat_template", None):
        raise ChatFormatError(
            f"The tokenizer of {getattr(tokenizer, 'name_or_path', 'this host')!r} has no chat "
            "template, so mode='chat' cannot format prompts. Use mode='plain' (the original "
            "code's 'question answer' text) or set tokenizer.chat_template."
        )
    turns = [{"role": "user", "content": question}]
    if system:
        turns.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return str(text)


def encode(
    tokenizer: Any,
    question: str,
    answer: str | None = None,
    *,
    mode: PromptMode = "chat",
    system: str | None = None,
) -> Encoded:
    """Token ids of a prompt and (optionally) its answer, with the answer's end token
    (``system``: an instruction before the question, see ``format_prompt``).

    In chat mode the answer is followed by the tokenizer's EOS (end of the assistant turn); in
    plain mode the answer follows the question after one space, as in the original code, and
    the row ends with EOS too.

    Example:
        >>> enc = encode(host.tokenizer, "What is 2+2?", "Four.")  # doctest: +SKIP
        >>> tokens = torch.tensor([enc.ids])  # doctest: +SKIP
    """
    prompt = format_prompt(tokenizer, question, mode=mode, system=system)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if answer is None:
        return Encoded(prompt_ids, [])
    answer_text = answer if mode == "chat" else " " + answer
    answer_ids = list(tokenizer(answer_text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        answer_ids.append(int(tokenizer.eos_token_id))
    return Encoded(prompt_ids, answer_ids)
