"""The agents' table: a row is the mean over repeats with the spread across them; episodes to learn."""

from __future__ import annotations

import pytest

from labcli.rl.agents import tables


def test_a_row_averages_repeats_and_keeps_their_spread():
    win, slow_win, loss = ({"success": True, "steps": 4, "walkthrough": 4}, {"success": True, "steps": 12, "walkthrough": 4},
                           {"success": False, "steps": 40, "walkthrough": 4})
    row = tables.row("ppo-graph", "easy", [[win, slow_win], [loss, loss]],
                     [{"episodes": 30, "learned": 22}, {"episodes": 34, "learned": None}])
    assert (row["success"], row["success_sd"]) == (0.5, 0.5)  # repeats at 1.0 and 0.0
    assert (row["success_2x"], row["success_2x_sd"]) == (0.25, 0.25)  # 12 steps > 2 x 4: a win, not within 2x
    assert row["steps_per_walkthrough"] == 2.0 and row["episodes"] == 4 and row["repeats"] == 2  # (1 + 3) / 2 over wins
    assert row["episodes_to_learn"] == [22, None] and row["train_episodes"] == 32
    shown = tables.display([row])[0]
    assert shown[tables.LABELS[3]] == "0.50 ± 0.50" and shown[tables.LABELS[6]] == "22, -"


@pytest.mark.parametrize("wins,expected", [([False] * 5 + [True] * 20, 21), ([True, False] * 20, None)])
def test_episodes_to_learn_is_the_first_window_at_the_threshold(wins, expected):
    assert tables.episodes_to_learn(wins) == expected  # episode 21: 16 of the last 20 won (0.8); alternating: 0.5
