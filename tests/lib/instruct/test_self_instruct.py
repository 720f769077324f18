"""Self-Instruct's filters and parsers on fixtures whose expected results follow the reference code
(yizhongw/self-instruct: bootstrap_instructions.post_process_gpt3_response, prepare_for_finetuning)."""

from __future__ import annotations

from labcli.instruct import self_instruct as si


def test_encode_prompt_numbers_instructions_and_ends_with_the_next_number():
    prompt = si.encode_prompt(["Sort  the list:", "Tell\nme a joke."])
    assert prompt == "Come up with a series of tasks:\n1. Sort the list\n2. Tell me a joke.\n3."
    assert si.encode_prompt(["A b c d"], classification=True).startswith(si.CLF_HEADER)


REPLY = (" write a poem about the sea in four lines.\n"
         "10. Sort numbers.\n"
         "11. Describe the image below in three sentences.\n"
         "12. Write a program that prints the first ten primes.\n"
         "13. \"Quote\" the first sentence of the paragraph.\n"
         "14. Éclairez the following sentence for a child.\n"
         "15. Find the mapping between these two lists of names.\n"
         "16 . Explain   why the sky is BLUE to a child.")


def test_split_instructions_applies_every_reference_filter():
    kept, rejected = si.split_instructions(REPLY, "stop")
    # capitalize() lowercases the rest, as the reference does; "mapping" is not the word "map"
    assert kept == ["Write a poem about the sea in four lines.",
                    "Find the mapping between these two lists of names.",
                    "Explain why the sky is blue to a child."]
    assert rejected == {"too short (<4 words)": 1, "blacklisted word": 1, "'Write a program'": 1,
                        "starts with punctuation": 1, "starts non-ASCII": 1}


def test_a_reply_cut_by_max_tokens_is_dropped_whole():
    kept, rejected = si.split_instructions(REPLY, "length")
    assert kept == [] and rejected == {"reply cut by max_tokens": 1}


def test_word_limits_are_4_to_150():
    assert si.rejection_reason("Name three red fruits") is None
    assert si.rejection_reason("Name red fruits") == "too short (<4 words)"
    assert si.rejection_reason("Say " + "word " * 150) == "too long (>150 words)"
    assert si.rejection_reason("Say " + "word " * 149) is None
    assert si.rejection_reason("Please go to the store and buy milk") == "blacklisted word"


def test_generation_instances_parse_and_filter_like_prepare_for_finetuning():
    raw = ("Example 1\nInput: 2 + 2\nOutput: 4\n"
           "Example 2\nInput: 3 + 3\nOutput: 6\n"
           "Example 3\nInput: 3 + 3\nOutput: 6\n"       # duplicate: removed
           "Example 4\nInput: same\nOutput: same\n"     # input == output: removed
           "Example 5\nInput: 5 + 5\nOutput:")          # empty output: removed
    assert si.parse_generation_instances(raw, " Add. ", "stop") == [("Add.", "2 + 2", "4"), ("Add.", "3 + 3", "6")]
    # a reply cut by max_tokens loses its last instance
    assert si.parse_generation_instances("Example 1\nOutput: a\nExample 2\nOutput: b", "T", "length") == [("T", "", "a")]
    # one input with two outputs: the whole task's instances are dropped
    assert si.parse_generation_instances("Example 1\nInput: x\nOutput: 1\nExample 2\nInput: x\nOutput: 2", "T", "stop") == []
    # no Example / Output markers at all: nothing
    assert si.parse_generation_instances("just text", "T", "stop") == []
    # several pairs in one example: the first output only; an input ending in ":" is incomplete
    assert si.parse_input_output("Input: a\nOutput: b\nInput: c\nOutput: d") == ("a", "b")
    assert si.parse_generation_instances("Output: fine\nExample 2\nInput: Text:\nOutput: x", "T", "stop") == [("T", "", "fine")]


def test_classification_instances_are_output_first():
    raw = "Class label: Positive\nI loved it.\nClass label: Negative\nAwful.\nClass label: Neutral"
    assert si.parse_classification_instances(raw, "Sentiment?", "stop") == [
        ("Sentiment?", "I loved it.", "Positive"), ("Sentiment?", "Awful.", "Negative"), ("Sentiment?", "", "Neutral")]
    assert si.parse_classification_instances(raw, "Sentiment?", "length")[-1][2] == "Negative"
    assert si.parse_classification_instances("Label: x", "T", "stop") == []


def test_is_classification_reply_must_be_exactly_yes():
    assert si.parse_is_classification(" Yes") and not si.parse_is_classification(" Yes, it is")
    assert not si.parse_is_classification("No")


def test_verb_noun_skips_function_words():
    assert si.verb_noun("Write a poem about the sea.") == ("write", "poem")
    assert si.verb_noun("") == ("", "")
