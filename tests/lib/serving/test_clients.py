"""Reading Triton's Prometheus page: the counters the batching test and the bench use."""

from labcli.serving.clients import prometheus_value

PAGE = """# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="m_text",version="1"} 37
nv_inference_count{model="m_text_nobatch",version="1"} 5
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
nv_inference_exec_count{model="m_text",version="1"} 9
"""


def test_prometheus_value_matches_the_labels():
    assert prometheus_value(PAGE, "nv_inference_count", model="m_text") == 37
    assert prometheus_value(PAGE, "nv_inference_count", model="m_text_nobatch") == 5
    assert prometheus_value(PAGE, "nv_inference_exec_count", model="m_text") == 9
    assert prometheus_value(PAGE, "nv_inference_exec_count", model="other") == 0.0
