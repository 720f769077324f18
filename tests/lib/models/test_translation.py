"""Translator: lab's tiny tokenizers get the target language token; 'stopped' means an EOS before the limit."""

import pytest
import torch

from labcli.data.newari.denoising import SPECIAL_TOKENS
from labcli.errors import UserError
from labcli.models.translation import Translator


@pytest.fixture
def tiny(lab_home):
    from transformers import MBartConfig, MBartForConditionalGeneration

    from labcli.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["hello world", "how are you", "ज्वजलपा छ गथे च्वं"], 120, SPECIAL_TOKENS)
    torch.manual_seed(0)
    model = MBartForConditionalGeneration(MBartConfig(
        vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, decoder_start_token_id=tok.eos_token_id))
    return tok, model


def test_target_language_token_leads_the_labels(tiny):
    tok, _ = tiny
    t = Translator(tok, "seq2seq", "", 16, 16, tgt_lang="<new>")
    ex = t.encode("hello world", "ज्वजलपा")
    new_id = tok.convert_tokens_to_ids("<new>")
    assert ex["labels"][0] == new_id and ex["labels"][-1] == tok.eos_token_id and new_id not in ex["input_ids"]
    assert t.generation_kwargs(1)["forced_bos_token_id"] == new_id
    with pytest.raises(UserError, match="no language token '<xx>'"):
        Translator(tok, "seq2seq", "", 16, 16, tgt_lang="<xx>")


def test_stopped_counts_only_an_eos_before_the_length_limit(tiny):
    """mBART forces EOS at the last position: an output cut there did not stop on its own."""
    tok, model = tiny
    t = Translator(tok, "seq2seq", "", 16, 6, tgt_lang="<new>")
    with torch.no_grad():
        model.final_logits_bias.fill_(-1e4)
        model.final_logits_bias[0, tok.convert_tokens_to_ids("ज")] = 1e4  # never ends: runs to the limit
    looping = t.decode(model, ["hello", "how are you"])
    assert looping.stopped == [False, False] and all(len(h) > 0 for h in looping.hyps)
    with torch.no_grad():
        model.final_logits_bias[0, tok.eos_token_id] = 2e4  # ends right after the language token
    assert t.decode(model, ["hello", "how are you"]).stopped == [True, True]
