"""Iterate the classified flows of a capture: the most common use of dpicore."""

from collections import Counter

from _common import capture_path

from dpicore import Classifier
from dpicore.model import format_ip

counts: Counter[str] = Counter()
with Classifier() as dpi:
    for flow in dpi.classify_pcap(capture_path()):
        protocol = flow.verdict.protocol if flow.verdict else "Unknown"
        counts[protocol] += 1
        print(f"{format_ip(flow.client)}:{flow.client_port} -> {format_ip(flow.server)}:{flow.server_port}"
              f"  {protocol}  {flow.packets} packets")
    for line in dpi.last_source.problems if dpi.last_source else ():
        print("problem:", line)
print(dict(counts))
