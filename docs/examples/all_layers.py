"""Ask every installed layer about every flow and show where they agree."""

from _common import capture_path

from dpicore import Classifier

with Classifier(all_layers=True) as dpi:
    print("layers:", ", ".join(dpi.layers))
    for flow in dpi.classify_pcap(capture_path()):
        answers = {v.source: f"{v.protocol} ({v.confidence:.2f})" for v in flow.verdicts}
        chosen = flow.verdict.protocol if flow.verdict else "Unknown"
        print(f"{flow.server_port:>5}  {chosen:<12} {answers}")
