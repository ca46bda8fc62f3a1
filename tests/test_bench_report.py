"""The bench's Markdown report (``posed.bench.report``)."""

from posed.bench.report import to_markdown


def test_families_report_says_which_exports_were_refused_and_times_the_rest():
    record = {"results": {"families": {"rows": [
        {"family": "rtmpose_s", "runtime": "onnx-fp32", "multianimal": True, "stride": 1.0,
         "crop_batch": 8, "animals_per_frame": 3.0, "frames_per_s": 4.2, "p50_ms": 238.0},
        {"family": "top_down_resnet_50", "runtime": "onnx-fp32",
         "export_refused": "the onnx export disagrees with the model (boxes ...)"}]}}}
    lines = to_markdown(record).splitlines()
    timed = next(line for line in lines if "rtmpose_s onnx-fp32" in line)
    assert "| 4.2 | 238 |" in timed and "crop batch 8" in timed
    refused = next(line for line in lines if "top_down_resnet_50 onnx-fp32" in line)
    assert "| – | – |" in refused and "export refused (the onnx export disagrees" in refused
