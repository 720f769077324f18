"""The load loop of `lab bench serve`, without a server."""

from labcli.serving.loadtest import closed_loop


def test_closed_loop_counts_every_request_and_error():
    """Every request is timed or counted as an error, warm-ups are
    not, and at_start runs after every client's warm-up."""
    calls, order = [], []

    def send(client, i):
        calls.append((client, i))
        if i == 5:
            raise ValueError("request 5 is bad")

    row = closed_loop(lambda: "client", send, 3, 10, 60, at_start=lambda: order.append(len(calls)))
    assert (row["requests"], row["errors"], row["concurrency"]) == (10, 1, 3) and "request 5 is bad" in row["first_error"]
    assert order == [3] and len(calls) == 13  # 3 warm-ups, then 10 timed
    assert row["req_per_s"] > 0 and row["p50_ms"] <= row["p99_ms"]
    row = closed_loop(lambda: None, lambda client, i: None, 2, 4, 60)  # a client object is optional (TorchServe: urllib)
    assert (row["requests"], row["errors"]) == (4, 0)
