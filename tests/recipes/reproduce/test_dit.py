"""lab reproduce dit: error paths, the claims' verdicts from measured numbers, a tiny real run (slow)."""

import json

import pytest

from labcli.recipes.reproduce import dit


def test_patch_that_does_not_divide_the_image_is_one_line_error(lab_main):
    result = lab_main("reproduce", "dit", "image_size=16", "arms=[{conditioning: adaln-zero, patch: 3}]")
    assert result.returncode == 2 and "patch 3 does not divide" in result.stderr and "Traceback" not in result.stderr


def test_guidance_without_1_is_one_line_error(lab_main):
    result = lab_main("reproduce", "dit", "guidance=[2.0, 4.0]")
    assert result.returncode == 2 and "guidance must include 1" in result.stderr


def found_with(losses: dict, fds: dict, acc1: list, acc4: list, ours_at_init: float = 0.0) -> dict:
    """A run's findings: per arm name its test loss and FD at CFG 1; every arm's samples right as in acc1 / acc4."""
    arms, by = [], {}
    for name, loss in losses.items():
        conditioning, patch = name.split("/p")
        gflops = 0.01 * (16 // int(patch)) ** 2
        by_scale = {"1.0": {"accuracy": sum(acc1) / len(acc1), "correct": acc1, "fd": fds[name]},
                    "4.0": {"accuracy": sum(acc4) / len(acc4), "correct": acc4, "fd": fds[name]}}
        arms.append({"arm": name, "by_scale": by_scale})
        by[name] = {"test_loss": loss, "test_loss_ci": [loss - 0.001, loss + 0.001], "gflops": gflops,
                    "fd@1.0": fds[name], "fd_sd@1.0": 0.1, "acc@1.0": by_scale["1.0"]["accuracy"],
                    "acc@4.0": by_scale["4.0"]["accuracy"]}
    return {"by_arm": by, "arms": arms, "data": "digits",
            "zero_init": {"ours_max_abs": ours_at_init, "diffusers_max_abs": 2.5, "patch": 4}}


NAMES = ["in-context/p4", "cross-attention/p4", "adaln/p4", "adaln-zero/p4", "adaln-zero/p2"]


def verdicts(found) -> list[str]:
    return [c.verdict for c in dit.claims_for(dit.Config(), found)]


def test_verdicts_when_the_paper_holds():
    losses = dict(zip(NAMES, [0.30, 0.29, 0.28, 0.27, 0.25]))
    fds = dict(zip(NAMES, [9.0, 8.0, 7.0, 6.0, 5.0]))
    assert verdicts(found_with(losses, fds, [1, 0] * 50, [1, 1] * 50)) == ["holds"] * 4


def test_verdicts_when_it_does_not():
    losses = dict(zip(NAMES, [0.25, 0.29, 0.28, 0.30, 0.31]))  # in-context best; patch 2 worse than 4
    fds = dict(zip(NAMES, [5.0, 8.0, 7.0, 6.0, 6.5]))
    got = verdicts(found_with(losses, fds, [1, 1] * 50, [1, 0] * 50, ours_at_init=1e-3))
    assert got == ["does not hold"] * 4
    fds["adaln-zero/p4"] = 4.0  # best FD but not best loss: half of the evidence
    assert verdicts(found_with(losses, fds, [1, 1] * 50, [1, 0] * 50))[1] == "partly"


def test_a_difference_within_the_noise_is_no_win():
    losses = dict(zip(NAMES, [0.30, 0.29, 0.28, 0.27, 0.25]))
    fds = dict(zip(NAMES, [9.0, 8.0, 7.0, 6.0, 5.95]))  # patch 2's FD lower by 0.05, its sd 0.1: a tie
    found = found_with(losses, fds, [1, 0] * 50, [1, 1] * 50)
    assert verdicts(found)[2] == "partly"
    found["by_arm"]["adaln-zero/p2"]["test_loss_ci"] = [0.2, 0.3]  # a wide interval: the loss gain is noise too
    assert verdicts(found)[2] == "does not hold"


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "dit", "--output", str(tmp_path / "r"), "train.max_steps=3", "train.eval_every=3",
            "classifier.max_steps=3", "samples_per_class=3", "diffusion.sample_steps=2", "model.d_model=16",
            "model.depth=1", "val_draws=1")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [c["verdict"] in ("holds", "partly", "does not hold") for c in summary["claims"]] == [True] * 4
    assert summary["zero_init"]["ours_max_abs"] == 0.0 and summary["zero_init"]["diffusers_max_abs"] > 0.5
    assert list(summary["by_arm"]) == NAMES
    assert summary["by_arm"]["adaln-zero/p2"]["tokens"] == 4 * summary["by_arm"]["adaln-zero/p4"]["tokens"]
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| claim | paper | our setting | ours | verdict |" in report and "Scale gap" in report
    assert (tmp_path / "r" / "samples.png").exists()
