"""labcli.eval.profiler."""


def test_quiet_kineto_drops_the_profilers_lines_and_keeps_the_rest(capfd):
    """libkineto writes `USDT:` lines to fd 2 on profiler start/stop (issue 24: `lab profile train`
    printed them); other stderr output in the same window still reaches the user."""
    import os

    import torch
    from torch.profiler import profile

    from labcli.eval.profiler import quiet_kineto

    with quiet_kineto(), profile():
        torch.ones(3).add_(1)
        os.write(2, b"a real warning\n")
    err = capfd.readouterr().err
    assert "a real warning" in err and "USDT:" not in err and "profiler_start" not in err
