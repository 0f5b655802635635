"""Build packets yourself and classify them as one flow (go-dpi's GetPacketFlow / ClassifyFlow)."""

from dpicore import Classifier, flow_from_packet, synthetic_packets
from dpicore.model import TCP, format_ip

# synthetic_packets wraps a payload in real IPv4/TCP packets (handshake included);
# packets decoded from your own source work the same way.
packets = synthetic_packets(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", TCP, 40000, 8080, False)
flow = flow_from_packet(packets[0])
print("new flow:", format_ip(flow.client), flow.client_port, "->", format_ip(flow.server), flow.server_port)

with Classifier() as dpi:
    classified = dpi.classify_flow(packets)
    print("verdict:", classified.verdict.protocol if classified.verdict else "Unknown")
with Classifier(all_layers=True) as dpi:
    classified = dpi.classify_flow(packets)
    print("all layers:", [(v.source, v.protocol) for v in classified.verdicts])
