"""The verifiable rewards on hand-made completions."""

from __future__ import annotations

import pytest

from labcli.reasoning import rewards, tasks

EX_NUM = tasks.Example("q", "14", "number")
EX_YES = tasks.Example("q", "yes", "choice")


@pytest.mark.parametrize("completion,truncated,correct,fmt", [
    (" 6 + 8 = 14. The answer is 14.", False, 1.0, 1.0),          # right
    (" 6 + 8 = 15. The answer is 15.", False, 0.0, 1.0),          # wrong, well formed
    (" The answer is 14.0.", False, 1.0, 1.0),                     # numerically equal
    (" 6 + 8 = 14. so 14", False, 0.0, 0.0),                       # malformed: no answer line
    (" The answer is 13. The answer is 14.", False, 1.0, 0.0),     # two answer lines: last counts, format fails
    (" The answer is 14. and more", False, 1.0, 0.0),              # trailing text
    (" 6 + 8 = 14. The answer is 14", True, 1.0, 0.0),             # truncated before EOS
    (" 6 + 8 = 14. The ans", True, 0.0, 0.0),                       # truncated mid-answer
])
def test_rewards_on_hand_made_completions(completion, truncated, correct, fmt):
    assert rewards.correctness_reward(completion, EX_NUM) == correct
    assert rewards.format_reward(completion, truncated) == fmt
    total, c = rewards.reward(completion, EX_NUM, truncated, format_weight=0.1)
    assert c == correct and total == pytest.approx(correct + 0.1 * fmt)


def test_choice_rewards_and_number_formats():
    assert rewards.correctness_reward("Facts. The answer is yes.", EX_YES) == 1.0
    assert rewards.correctness_reward("The answer is no.", EX_YES) == 0.0
    assert rewards.extract_answer("The answer is $1,250.") == "1250"
    assert rewards.correctness_reward("The answer is answer2.", tasks.Example("q", "answer2", "choice")) == 1.0


def test_overlong_penalty_is_dapo_soft_punishment():
    assert rewards.overlong_penalty(40, max_len=48, cache=8) == 0.0
    assert rewards.overlong_penalty(44, max_len=48, cache=8) == pytest.approx(-0.5)
    assert rewards.overlong_penalty(48, max_len=48, cache=8) == -1.0
    assert rewards.overlong_penalty(48, max_len=48, cache=0) == 0.0
