"""Batch C heuristics on payloads built from each protocol's wire format.

Where dpkt has an encoder for a protocol (DNS, NetBIOS names, SMB1 header,
NTP, DHCP, TFTP, ONC RPC, ICMP), the examples are built with it, so the
bytes do not come from the same hands as the detectors; the others follow
the specifications field by field (the section is named next to each).
Every positive example is also a negative one: no other batch-C heuristic
may claim it, and near misses (the look-alike each docstring names) must
stay unclaimed.
"""

from __future__ import annotations

import struct
import uuid

import dpkt
import pytest
from dpicore import Classifier
from dpicore.model import ICMP, ICMPV6, TCP, UDP, parse_ip

from dpi_heuristics.base import MORE, PORT_TIE
from dpi_heuristics.plugin import select
from dpi_heuristics.protocols import all_heuristics, netbios
from dpi_heuristics.testing import classify, make_flow, rpc_call, rpc_record, run_detector

BATCH_C = ("DNS", "MDNS", "LLMNR", "NetBIOS", "SMB", "RDP", "DCERPC", "NTP", "DHCP", "DHCPv6", "SNMP", "Syslog",
           "TFTP", "SSDP", "NFS", "ICMP")
MINE = [h for h in all_heuristics() if h.name in BATCH_C]


def only(*names: str) -> list:
    return [h for h in MINE if h.name in names]


# --- builders -------------------------------------------------------------------------------------------

def dns_query(name: str, qtype: int = dpkt.dns.DNS_A, ident: int = 0x1A2B, rd: bool = True,
              qclass: int = dpkt.dns.DNS_IN) -> bytes:
    q = dpkt.dns.DNS(id=ident, op=dpkt.dns.DNS_RD if rd else 0, qd=[dpkt.dns.DNS.Q(name=name, type=qtype, cls=qclass)])
    return bytes(q)


def dns_response(name: str, address: str, ident: int = 0x1A2B) -> bytes:
    r = dpkt.dns.DNS(id=ident, op=0x8000 | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA,  # QR=1 (response)
                     qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)],
                     an=[dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=300, rdata=parse_ip(address))])
    return bytes(r)


def nb_name(name: str, suffix: int = 0x20) -> bytes:
    """An encoded NetBIOS name as it appears on the wire (RFC 1001 §14.1): 0x20, 32 letters, empty scope."""
    raw = name.upper().ljust(15)[:15] + chr(suffix)
    encoded = "".join(chr((ord(c) >> 4) + 0x41) + chr((ord(c) & 0xF) + 0x41) for c in raw)
    assert encoded == dpkt.netbios.encode_name(raw)  # the independent encoder agrees
    return b"\x20" + encoded.encode() + b"\x00"


def nbns_query(name: str = "WORKGROUP", suffix: int = 0x1D, ident: int = 0x8123) -> bytes:
    """RFC 1002 §4.2.12: a broadcast name query (NM_FLAGS RD|B), question type NB, class IN."""
    return struct.pack("!HHHHHH", ident, 0x0110, 1, 0, 0, 0) + nb_name(name, suffix) + struct.pack("!HH", 0x20, 1)


def nbns_registration(name: str = "DESKTOP-1", ident: int = 0x4597) -> bytes:
    """RFC 1002 §4.2.2: opcode 5 with the question and an additional NB record (pointer to the question)."""
    rr = struct.pack("!HHHIH", 0xC00C, 0x20, 1, 300000, 6) + b"\x00\x00" + parse_ip("192.168.1.117")
    return struct.pack("!HHHHHH", ident, 0x2910, 1, 0, 0, 1) + nb_name(name, 0) + struct.pack("!HH", 0x20, 1) + rr


def nbds_direct_group(smb: bytes = b"\xffSMB%" + bytes(27)) -> bytes:
    """RFC 1002 §4.4.2: DIRECT_GROUP datagram, length = names + user data."""
    body = nb_name("DESKTOP-1", 0) + nb_name("WORKGROUP", 0x1E) + smb
    return struct.pack("!BBH4sHHH", 0x11, 0x02, 0xE45E, parse_ip("192.168.1.43"), 138, len(body), 0) + body


def nbss_request() -> bytes:
    """RFC 1002 §4.3.2: SESSION REQUEST with called and calling names."""
    names = nb_name("FILESERVER", 0x20) + nb_name("LAPTOP", 0x00)
    return struct.pack("!BBH", 0x81, 0, len(names)) + names


def framed(msg: bytes) -> bytes:
    """The 4-byte transport header of direct TCP SMB / a NetBIOS session message."""
    return b"\x00" + len(msg).to_bytes(3, "big") + msg


def smb1_negotiate() -> bytes:
    """MS-CIFS §2.2.4.52.1: SMB_COM_NEGOTIATE with the dialect strings smbclient sends."""
    dialects = b"".join(b"\x02" + d + b"\x00" for d in (b"NT LM 0.12", b"SMB 2.002", b"SMB 2.???"))
    header = dpkt.smb.SMB(cmd=0x72, flags=0x18, flags2=0xC853, mid=1)
    return framed(bytes(header) + b"\x00" + struct.pack("<H", len(dialects)) + dialects)


def smb2_header(command: int, flags: int = 0, message_id: int = 0) -> bytes:
    """MS-SMB2 §2.2.1.2: the 64-byte sync header."""
    return (b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ", 64, 1, 0, command, 31, flags, 0, message_id, 0xFEFF, 0, 0)
            + bytes(16))


def smb2_negotiate() -> bytes:
    """MS-SMB2 §2.2.3: NEGOTIATE request offering 2.0.2 to 3.1.1."""
    dialects = (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)
    body = struct.pack("<HHHHI16sQ", 36, len(dialects), 1, 0, 0x7F, uuid.uuid4().bytes, 0)
    body += struct.pack(f"<{len(dialects)}H", *dialects)
    return framed(smb2_header(0) + body)


def smb2_negotiate_response() -> bytes:
    """MS-SMB2 §2.2.4: NEGOTIATE response selecting 3.1.1 (no security buffer, no contexts)."""
    body = struct.pack("<HHHH16sIIIIQQHHI", 65, 1, 0x0311, 0, uuid.uuid4().bytes, 0x2F, 65536, 65536, 65536,
                       0, 0, 128, 0, 0) + b"\x00"
    return framed(smb2_header(0, flags=1) + body)


def smb3_transform(inner_size: int = 100) -> bytes:
    """MS-SMB2 §2.2.41: TRANSFORM_HEADER with Flags=Encrypted and the encrypted message after it."""
    return framed(b"\xfdSMB" + bytes(16) + bytes(16) + struct.pack("<IHHQ", inner_size, 0, 1, 0x1234)
                  + bytes(inner_size))


def tpkt(x224: bytes) -> bytes:
    return bytes(dpkt.tpkt.TPKT(len=4 + len(x224), data=x224))


def rdp_request(cookie: bytes | None = b"Cookie: mstshash=admin\r\n", neg: int | None = 3) -> bytes:
    """MS-RDPBCGR §2.2.1.1: X.224 CR, cookie, RDP_NEG_REQ."""
    var = (cookie or b"") + (struct.pack("<BBHI", 1, 0, 8, neg) if neg is not None else b"")
    return tpkt(bytes([6 + len(var), 0xE0]) + b"\x00\x00\x00\x00\x00" + var)


def rdp_confirm(selected: int = 1) -> bytes:
    """MS-RDPBCGR §2.2.1.2: X.224 CC with RDP_NEG_RSP."""
    return tpkt(bytes([14, 0xD0]) + b"\x00\x00\x12\x34\x00" + struct.pack("<BBHI", 2, 0x1F, 8, selected))


def dce_bind(little: bool = True) -> bytes:
    """C706 §12.6.4.3 / MS-RPCE: bind to the endpoint mapper with NDR 2.0."""
    order = "<" if little else ">"
    epm = uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa")
    ndr = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860")
    u = (lambda x: x.bytes_le) if little else (lambda x: x.bytes)
    ctx = struct.pack(order + "HBB", 0, 1, 0) + u(epm) + struct.pack(order + "I", 3) + u(ndr) + \
        struct.pack(order + "I", 2)
    body = struct.pack(order + "HHIB3x", 5840, 5840, 0, 1) + ctx
    drep = b"\x10\x00\x00\x00" if little else b"\x00\x00\x00\x00"
    return bytes([5, 0, 11, 3]) + drep + struct.pack(order + "HHI", 16 + len(body), 0, 1) + body


def dce_cl_request(body: bytes = bytes(40)) -> bytes:
    """C706 §12.5.1: connectionless request header (80 bytes) and body."""
    header = bytes([4, 0, 0x08, 0]) + b"\x10\x00\x00" + b"\x00" + uuid.uuid4().bytes_le + \
        uuid.UUID("dea00001-6c97-11d1-8271-00a02442df7d").bytes_le + uuid.uuid4().bytes_le + \
        struct.pack("<IIIHHHHHBB", 0, 1, 0, 5, 0xFFFF, 0xFFFF, len(body), 0, 0, 0)
    return header + body


def ntp(version: int = 4, mode: int = 3, stratum: int = 0, poll: int = 6, precision: int = -20,
        receive: int = 0, transmit: int = 0xE5A1B2C3) -> bytes:
    p = dpkt.ntp.NTP(flags=(version << 3) | mode, stratum=stratum, interval=poll & 0xFF, precision=precision & 0xFF,
                     receive_time=struct.pack("!II", receive, 0), transmit_time=struct.pack("!II", transmit, 0),
                     update_time=bytes(8), originate_time=bytes(8), id=b"\x00" * 4)
    return bytes(p)


def dhcp_discover() -> bytes:
    d = dpkt.dhcp.DHCP(chaddr=b"\x00\x1b\x63\x84\x45\xe6", xid=0x3903F326,
                       opts=((dpkt.dhcp.DHCP_OPT_MSGTYPE, b"\x01"), (dpkt.dhcp.DHCP_OPT_HOSTNAME, b"laptop"),
                             (dpkt.dhcp.DHCP_OPT_PARAM_REQ, b"\x01\x03\x06\x0f")))
    return bytes(d)


def dhcpv6_solicit() -> bytes:
    """RFC 8415 §16.2: Solicit with Client Identifier (DUID-LLT), Elapsed Time, IA_NA."""
    duid = struct.pack("!HHI", 1, 1, 0x1774D607) + bytes.fromhex("525400a014b8")
    opts = struct.pack("!HH", 1, len(duid)) + duid + struct.pack("!HHH", 8, 2, 0) + \
        struct.pack("!HHIII", 3, 12, 0x0E525400, 0, 0)
    return b"\x01\x66\x33\xdc" + opts


def ber(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + length + value


def ber_int(v: int) -> bytes:
    return ber(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def snmp_get(version: int = 1, community: bytes = b"public", pdu: int = 0xA0) -> bytes:
    """RFC 3416: GetRequest for sysDescr.0."""
    varbind = ber(0x30, ber(0x30, ber(0x06, bytes.fromhex("2b06010201010100")) + b"\x05\x00"))
    body = ber(pdu, ber_int(0x1EB1A1FB) + ber_int(0) + ber_int(0) + varbind)
    return ber(0x30, ber_int(version) + ber(0x04, community) + body)


def snmp_v3_discovery() -> bytes:
    """RFC 3414 §4: the engine-discovery request (noAuthNoPriv, reportable, empty USM parameters)."""
    header = ber(0x30, ber_int(0x4CB2D622) + ber_int(65507) + ber(0x04, b"\x04") + ber_int(3))
    usm = ber(0x04, ber(0x30, ber(0x04, b"") + ber_int(0) + ber_int(0) + ber(0x04, b"") + ber(0x04, b"")
                        + ber(0x04, b"")))
    scoped = ber(0x30, ber(0x04, b"") + ber(0x04, b"") + ber(0xA0, ber_int(0x6E75401D) + ber_int(0) + ber_int(0)
                                                             + ber(0x30, b"")))
    return ber(0x30, ber_int(3) + header + usm + scoped)


#: RFC 5424 §6.5 examples 1 and 3, RFC 3164 §5.4 example 1, a Cisco IOS message.
SYSLOG = [
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick on /dev/pts/8",
    b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"] An app',
    b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    b"<189>72: Mar  3 19:57:17.371: %LINK-5-CHANGED: Interface GigabitEthernet0/1, changed state to up",
]


def tftp_rrq(name: bytes = b"pxelinux.0", mode: bytes = b"octet", options: bytes = b"") -> bytes:
    return bytes(dpkt.tftp.TFTP(opcode=dpkt.tftp.OP_RRQ, filename=name, mode=mode)) + options


def tftp_data(block: int, data: bytes = bytes(512)) -> bytes:
    return struct.pack("!HH", dpkt.tftp.OP_DATA, block) + data


def tftp_ack(block: int) -> bytes:
    return struct.pack("!HH", dpkt.tftp.OP_ACK, block)


MSEARCH = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
           b"ST: urn:dial-multiscreen-org:service:dial:1\r\n\r\n")
NOTIFY = (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
          b"LOCATION: http://192.168.1.1:1900/rootDesc.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
          b"USN: uuid:824ff22b-8c7d-41c5-a131-44f534e12555::upnp:rootdevice\r\n\r\n")
SSDP_RESPONSE = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\n"
                 b"LOCATION: http://192.168.1.1:1900/rootDesc.xml\r\nSERVER: Linux UPnP/1.1 MiniUPnPd/2.2\r\n"
                 b"ST: upnp:rootdevice\r\nUSN: uuid:824ff22b-8c7d-41c5-a131-44f534e12555::upnp:rootdevice\r\n\r\n")


def rpc_reply(xid: int = 0x5E1D0BDC) -> bytes:
    return struct.pack("!IIIIII", xid, 1, 0, 0, 0, 0) + bytes(84)


def icmp_echo() -> bytes:
    return bytes(dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_ECHO, data=dpkt.icmp.ICMP.Echo(id=7, seq=1, data=b"ping" * 8)))


def icmp6_ns() -> bytes:
    return bytes(dpkt.icmp6.ICMP6(type=dpkt.icmp6.ND_NEIGHBOR_SOLICIT, data=bytes(4) + parse_ip("fe80::1")))


# --- positives ------------------------------------------------------------------------------------------

MDNS_GROUP, LLMNR_GROUP = parse_ip("224.0.0.251"), parse_ip("ff02::1:3")

#: (id, transport, payloads, flow kwargs, expected protocol, expected metadata subset)
POSITIVES = [
    ("dns-udp-query", UDP, [(0, dns_query("www.example.com"))], {}, "DNS",
     {"query": "www.example.com", "query_type": "A"}),
    ("dns-udp-response", UDP, [(1, dns_response("example.org", "93.184.216.34"))], {}, "DNS", {"response": True}),
    ("dns-tcp", TCP, [(0, struct.pack("!H", len(q := dns_query("example.net", dpkt.dns.DNS_AAAA))) + q)], {},
     "DNS", {"query_type": "AAAA"}),
    ("mdns-group", UDP, [(0, dns_query("_googlecast._tcp.local", dpkt.dns.DNS_PTR, ident=0, rd=False))],
     {"server": MDNS_GROUP, "server_port": 5353, "client_port": 5353}, "MDNS", {"query_type": "PTR"}),
    ("mdns-unicast-qu", UDP, [(0, dns_query("printer.local", ident=0, rd=False, qclass=0x8001))],
     {"server_port": 40000}, "MDNS", {}),
    ("llmnr-group", UDP, [(0, dns_query("fileserver", ident=0x4FD6, rd=False))],
     {"client": parse_ip("fe80::91f9:3df3:7436:6cd6"), "server": LLMNR_GROUP, "server_port": 5355}, "LLMNR",
     {"query": "fileserver"}),
    ("nbns-query", UDP, [(0, nbns_query())], {}, "NetBIOS", {"service": "name", "name": "WORKGROUP",
                                                             "suffix": "0x1d"}),
    ("nbns-registration", UDP, [(0, nbns_registration())], {}, "NetBIOS", {"operation": "registration"}),
    ("nbds", UDP, [(0, nbds_direct_group())], {}, "NetBIOS", {"service": "datagram", "carries": "SMB"}),
    ("nbss-request", TCP, [(0, nbss_request()), (1, b"\x82\x00\x00\x00")], {}, "NetBIOS",
     {"service": "session", "called": "FILESERVER", "calling": "LAPTOP"}),
    ("smb1", TCP, [(0, smb1_negotiate())], {}, "SMB",
     {"version": "SMB1", "command": "negotiate", "dialects": ["NT LM 0.12", "SMB 2.002", "SMB 2.???"]}),
    ("smb2", TCP, [(0, smb2_negotiate())], {}, "SMB",
     {"version": "SMB3", "command": "negotiate", "dialects": ["2.0.2", "2.1", "3.0", "3.0.2", "3.1.1"]}),
    ("smb2-response-first", TCP, [(1, smb2_negotiate_response())], {}, "SMB", {"dialect": "3.1.1"}),
    ("smb3-transform", TCP, [(0, smb3_transform())], {}, "SMB", {"command": "encrypted"}),
    ("smb-after-keepalive", TCP, [(0, b"\x85\x00\x00\x00"), (0, smb2_negotiate())], {}, "SMB", {}),
    ("rdp-cookie", TCP, [(0, rdp_request())], {}, "RDP", {"user": "admin", "requested_protocols": ["ssl", "hybrid"]}),
    ("rdp-neg-only", TCP, [(0, rdp_request(cookie=None, neg=0))], {}, "RDP", {"requested_protocols": ["rdp"]}),
    ("rdp-bare-then-confirm", TCP, [(0, rdp_request(cookie=None, neg=None)), (1, rdp_confirm())], {}, "RDP",
     {"selected_protocol": "ssl"}),
    ("dcerpc-bind", TCP, [(0, dce_bind())], {}, "DCERPC", {"packet_type": "bind", "interface": "epmapper"}),
    ("dcerpc-bind-big-endian", TCP, [(0, dce_bind(little=False))], {}, "DCERPC", {"interface": "epmapper"}),
    ("dcerpc-cl", UDP, [(0, dce_cl_request())], {}, "DCERPC", {"version": "4", "interface": "pnio-device"}),
    ("ntp-client", UDP, [(0, ntp())], {}, "NTP", {"version": 4, "mode": "client"}),
    ("ntp-v2-server", UDP, [(1, ntp(2, 4, stratum=2, receive=0xE5A1B2C0, transmit=0xE5A1B2C1))], {}, "NTP",
     {"version": 2, "mode": "server", "stratum": 2}),
    ("ntp-v4-mac", UDP, [(0, ntp() + struct.pack("!I", 1) + bytes(20))], {}, "NTP", {}),
    ("ntp-monlist", UDP, [(0, b"\x17\x00\x03\x2a" + bytes(4) + bytes(40))], {}, "NTP",
     {"mode": "private", "request_code": 42}),
    ("ntp-control", UDP, [(0, b"\x16\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")], {}, "NTP",
     {"mode": "control"}),
    ("dhcp", UDP, [(0, dhcp_discover())], {"client_port": 68, "server_port": 67}, "DHCP",
     {"message_type": "discover", "hostname": "laptop"}),
    ("dhcpv6", UDP, [(0, dhcpv6_solicit())], {}, "DHCPv6", {"message_type": "solicit"}),
    ("snmp-v1", UDP, [(0, snmp_get(0))], {}, "SNMP", {"version": "v1", "pdu": "get-request", "community": "public"}),
    ("snmp-v2c-bulk", UDP, [(0, snmp_get(1, b"s3cret", 0xA5))], {}, "SNMP", {"version": "v2c",
                                                                         "pdu": "get-bulk-request"}),
    ("snmp-v3", UDP, [(0, snmp_v3_discovery())], {}, "SNMP", {"version": "v3", "security_model": 3}),
    *[(f"syslog-{i}", UDP, [(0, m)], {}, "Syslog", {}) for i, m in enumerate(SYSLOG)],
    ("syslog-tcp-octet-counted", TCP, [(0, b"%d %s" % (len(SYSLOG[0]), SYSLOG[0]))], {}, "Syslog",
     {"format": "rfc5424", "facility": "auth", "severity": "crit"}),
    ("tftp-rrq", UDP, [(0, tftp_rrq())], {}, "TFTP", {"opcode": "RRQ", "filename": "pxelinux.0", "mode": "octet"}),
    ("tftp-wrq-options", UDP, [(0, bytes(dpkt.tftp.TFTP(opcode=dpkt.tftp.OP_WRQ, filename=b"a.bin", mode=b"NETASCII"))
                                + b"blksize\x001468\x00tsize\x00100000\x00")], {}, "TFTP",
     {"opcode": "WRQ", "options": ["blksize", "tsize"]}),
    ("tftp-data-ack", UDP, [(0, tftp_data(1)), (1, tftp_ack(1))], {}, "TFTP", {"block": 1}),
    ("tftp-ack0-data", UDP, [(0, tftp_ack(0)), (1, tftp_data(1, b"x" * 100))], {}, "TFTP", {"opcode": "DATA"}),
    ("tftp-error", UDP, [(0, b"\x00\x05\x00\x01File not found\x00")], {}, "TFTP", {"error_code": 1}),
    ("ssdp-msearch", UDP, [(0, MSEARCH)], {}, "SSDP", {"method": "M-SEARCH"}),
    ("ssdp-notify", UDP, [(0, NOTIFY)], {}, "SSDP", {"notification_type": "upnp:rootdevice"}),
    ("ssdp-response", UDP, [(1, SSDP_RESPONSE)], {}, "SSDP", {"method": "response"}),
    ("ssdp-over-tcp-beats-http", TCP, [(0, MSEARCH)], {}, "SSDP", {}),
    ("nfs-call-udp", UDP, [(0, rpc_call())], {}, "NFS", {"program": "nfs", "program_version": 3}),
    ("portmap-call-tcp", TCP, [(0, rpc_record(rpc_call(100000, 2, 3)))], {},
     "NFS", {"program": "portmapper"}),
    ("mount-call", UDP, [(0, rpc_call(100005, 3, 1))], {}, "NFS", {"program": "mountd"}),
    ("icmp-echo", ICMP, [(0, icmp_echo())], {}, "ICMP", {"version": "ICMPv4", "message": "echo-request"}),
    ("icmp6-ns", ICMPV6, [(0, icmp6_ns())], {"client": parse_ip("fe80::2"), "server": parse_ip("ff02::1:ff00:1")},
     "ICMP", {"version": "ICMPv6", "message": "neighbor-solicitation"}),
]


@pytest.mark.parametrize("transport,payloads,flow_kw,expected,meta",
                         [p[1:] for p in POSITIVES], ids=[p[0] for p in POSITIVES])
def test_positive(transport: int, payloads: list, flow_kw: dict, expected: str, meta: dict) -> None:
    verdict = classify(payloads, transport, flow=make_flow(transport, **flow_kw))
    assert verdict is not None and verdict.protocol == expected, verdict
    assert verdict.confidence >= 0.7
    for key, value in meta.items():
        assert verdict.metadata.get(key) == value, (key, verdict.metadata)
    assert not verdict.metadata.get("port_hint")


@pytest.mark.parametrize("transport,payloads,flow_kw,expected,meta",
                         [p[1:] for p in POSITIVES], ids=[p[0] for p in POSITIVES])
def test_no_other_batch_c_heuristic_claims_it(transport: int, payloads: list, flow_kw: dict, expected: str,
                                              meta: dict) -> None:
    others = [h for h in MINE if h.name != expected]
    assert classify(payloads, transport, heuristics=others, flow=make_flow(transport, **flow_kw)) is None


@pytest.mark.parametrize("transport,payloads,flow_kw,expected,meta",
                         [p[1:] for p in POSITIVES], ids=[p[0] for p in POSITIVES])
def test_truncations_never_raise(transport: int, payloads: list, flow_kw: dict, expected: str, meta: dict) -> None:
    """Every prefix of every example, through the heuristic that names it, called directly (no safety net)."""
    for h in only(expected):
        if transport not in h.transports:
            continue
        for direction, data in payloads:
            for n in range(1, len(data)):
                run_detector(h, [(direction, data[:n])], transport)


# --- negatives: near misses -------------------------------------------------------------------------------

S7_COTP_CR = tpkt(bytes.fromhex("11e00000000100c0010ac1020100c2020102"))  # ISO-TSAP CR of S7comm: TSAP params
H225_SETUP = tpkt(bytes.fromhex("08020001050404038890a5"))  # Q.931 over TPKT (H.323)
NEGATIVES = [
    ("bootp-without-cookie", UDP, bytes(dpkt.dhcp.DHCP(magic=0, opts=()))),
    ("tftp-bad-mode", UDP, b"\x00\x01file.txt\x00binary\x00"),
    ("tftp-lone-data-block-7", UDP, tftp_data(7)),
    ("ntp-version-0", UDP, bytes(48)),
    ("ntp-bad-stratum", UDP, b"\x23\x40" + bytes(46)),
    ("ntp-wrong-length", UDP, ntp() + b"\x00"),
    ("syslog-pri-too-big", UDP, b"<192>Oct 11 22:14:15 host app: message"),
    ("syslog-leading-zero", UDP, b"<034>Oct 11 22:14:15 host app: message"),
    ("xml-is-not-syslog", TCP, b"<?xml version='1.0'?><stream:stream to='example.com'>"),
    ("http-get-is-not-ssdp", TCP, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("http-200-without-ssdp-headers", UDP, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("s7-cotp-is-not-rdp", TCP, S7_COTP_CR),
    ("h225-is-not-rdp", TCP, H225_SETUP),
    ("socks5-greeting-is-not-dcerpc", TCP, b"\x05\x01\x00"),
    ("ldap-bind-is-not-snmp", TCP, bytes.fromhex("300c020101600702010304008000")),
    ("rpc-version-3", UDP, rpc_call()[:8] + struct.pack("!I", 3) + rpc_call()[12:]),
    ("smb-length-too-short", TCP, b"\x00\x00\x00\x10\xfeSMB" + bytes(12)),
    ("smb2-bad-structure-size", TCP, framed(b"\xfeSMB" + struct.pack("<H", 63) + bytes(58))),
    ("nbss-request-wrong-length", TCP, b"\x81\x00\x00\x40" + nbss_request()[4:]),
    ("dns-with-trailing-garbage", UDP, dns_query("example.com") + b"garbage"),
    ("dns-name-with-control-bytes", UDP, struct.pack("!6H", 1, 0x100, 1, 0, 0, 0) + b"\x03a\x01b\x00\x00\x01\x00\x01"),
    ("dns-response-without-question", UDP, struct.pack("!6H", 0x1234, 0x8180, 0, 1, 0, 0)
     + b"\x01a\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04"),
    ("dhcpv6-options-overrun", UDP, dhcpv6_solicit()[:-3]),
    ("dcerpc-cl-wrong-length", UDP, dce_cl_request() + b"\x00"),
]


@pytest.mark.parametrize("transport,payload", [n[1:] for n in NEGATIVES], ids=[n[0] for n in NEGATIVES])
def test_near_misses_are_not_claimed(transport: int, payload: bytes) -> None:
    assert classify([(0, payload)], transport, heuristics=MINE) is None


def test_netbios_name_service_is_not_dns() -> None:
    """NBNS is DNS-formatted: only the encoded name tells them apart, and it must."""
    assert classify([(0, nbns_query())], UDP, heuristics=only("DNS", "MDNS", "LLMNR")) is None
    assert classify([(0, dns_query("example.com"))], UDP, heuristics=only("NetBIOS")) is None


def test_name_service_pre_check_is_necessary() -> None:
    """detect_udp parses a message as NBNS only after a cheap look at its first name: every message
    name_service accepts (queries, a registration whose first name is a question, a response whose
    first name is an answer's owner) passes it; DNS messages do not."""
    answer_only = struct.pack("!HHHHHH", 0x1234, 0x8500, 0, 1, 0, 0) + nb_name("FILESERVER") + \
        struct.pack("!HHIH", 0x20, 1, 300000, 6) + b"\x00\x00" + parse_ip("192.168.1.5")
    for msg in (nbns_query(), nbns_query("X", 0x00), nbns_registration(), answer_only):
        assert netbios.name_service(msg) is not None and netbios.may_be_name_service(msg)
    for msg in (dns_query("example.com"), dns_response("example.com", "192.0.2.1"), answer_only[:44]):
        assert not netbios.may_be_name_service(msg)


# --- DNS family: structure first, ports only as a flagged tie-break ---------------------------------------

def test_mdns_marks_decide_on_any_port() -> None:
    """A zero ID and a cache-flush answer are mDNS's own (RFC 6762 §10.2, §18.1), whatever the ports."""
    announce = struct.pack("!6H", 0, 0x8400, 0, 1, 0, 0) + b"\x07printer\x05local\x00" + \
        struct.pack("!HHIH", 1, 0x8001, 120, 4) + parse_ip("192.168.1.9")
    v = classify([(0, announce)], UDP, flow=make_flow(UDP, client_port=40001, server_port=40002))
    assert v.protocol == "MDNS" and v.confidence > PORT_TIE and "port_hint" not in v.metadata


def test_plain_dns_on_5353_is_mdns_only_by_port_tie() -> None:
    query = dns_query("www.example.com", ident=0x7777)
    v = classify([(0, query)], UDP, flow=make_flow(UDP, client_port=5353, server_port=5353))
    assert v.protocol == "MDNS" and v.confidence == PORT_TIE and v.metadata["port_hint"] is True
    v = classify([(0, query)], UDP, flow=make_flow(UDP, client_port=5353, server_port=40002))
    assert v.protocol == "MDNS" and v.metadata["port_hint"] is True
    v = classify([(0, query)], UDP, flow=make_flow(UDP, client_port=40001, server_port=40002))
    assert v.protocol == "DNS" and "port_hint" not in v.metadata


def test_llmnr_unicast_answer_is_a_port_tie_and_recursive_answers_are_dns() -> None:
    answer = struct.pack("!6H", 0x4FD6, 0x8000, 1, 1, 0, 0) + b"\x0afileserver\x00\x00\x01\x00\x01" + \
        struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + parse_ip("192.168.1.100")
    v = classify([(0, answer)], UDP, flow=make_flow(UDP, client_port=5355, server_port=50440))
    assert v.protocol == "LLMNR" and v.confidence == PORT_TIE and v.metadata["port_hint"] is True
    # RA set: a recursive resolver's answer; LLMNR has no recursion, so the port does not matter.
    v = classify([(0, dns_response("fileserver", "192.168.1.100"))], UDP,
                 flow=make_flow(UDP, client_port=5355, server_port=50440))
    assert v.protocol == "DNS"


def test_each_dns_family_member_is_blockable_by_its_own_name() -> None:
    flow_kw = {"server": MDNS_GROUP, "server_port": 5353, "client_port": 5353}
    mdns = [(0, dns_query("_ipp._tcp.local", dpkt.dns.DNS_PTR, ident=0, rd=False))]
    no_mdns = select(all_heuristics(), {"block": ["MDNS"]})
    assert {h.name for h in no_mdns} >= {"DNS", "LLMNR"} and "MDNS" not in {h.name for h in no_mdns}
    # Blocking mDNS does not turn mDNS into "DNS".
    assert classify(mdns, UDP, heuristics=no_mdns, flow=make_flow(UDP, **flow_kw)) is None
    only_llmnr = select(all_heuristics(), {"enable": ["LLMNR"]})
    assert [h.name for h in only_llmnr] == ["LLMNR"]
    assert classify([(0, dns_query("example.com"))], UDP, heuristics=only_llmnr) is None
    only_mdns = select(all_heuristics(), {"enable": ["mdns"]})
    assert classify(mdns, UDP, heuristics=only_mdns, flow=make_flow(UDP, **flow_kw)).protocol == "MDNS"


# --- multi-packet logic -----------------------------------------------------------------------------------

def test_tftp_transfer_needs_the_peer_in_step() -> None:
    """DATA 1 alone is a guess; ACK of another block, or DATA and ACK from one side, is not TFTP."""
    v = classify([(0, tftp_data(1))], UDP, heuristics=only("TFTP"))
    assert v.protocol == "TFTP" and v.confidence < 0.8
    assert classify([(0, tftp_data(1)), (1, tftp_ack(5))], UDP, heuristics=only("TFTP")).confidence < 0.8
    results = run_detector(only("TFTP")[0], [(0, tftp_data(3)), (0, tftp_ack(3))], UDP)
    assert results == [MORE, None]


def test_rdp_bare_request_alone_is_only_a_guess_and_mcs_confirms_it() -> None:
    bare = rdp_request(cookie=None, neg=None)
    v = classify([(0, bare)], TCP, heuristics=only("RDP"))
    assert v.protocol == "RDP" and v.confidence < 0.8
    legacy_cc = tpkt(bytes([6, 0xD0]) + b"\x00\x00\x12\x34\x00")
    mcs = tpkt(b"\x02\xf0\x80\x7f\x65\x82\x01\x90" + bytes(20))
    v = classify([(0, bare), (1, legacy_cc), (0, mcs)], TCP, heuristics=only("RDP"))
    assert v.protocol == "RDP" and v.confidence >= 0.8 and v.metadata["variant"] == "mcs connect"


def test_netbios_keepalive_alone_is_a_guess() -> None:
    v = classify([(0, b"\x85\x00\x00\x00")], TCP)
    assert v is not None and v.protocol == "NetBIOS" and v.confidence < 0.8


def test_rpc_reply_before_call_is_a_guess() -> None:
    v = classify([(1, rpc_reply())], UDP, heuristics=only("NFS"))
    assert v.protocol == "NFS" and v.confidence < 0.8


# --- the first-payload API (honeypot use) ------------------------------------------------------------------

FIRST_PAYLOADS = [
    ("udp", dns_query("example.com"), "DNS"), ("udp", nbns_query(), "NetBIOS"), ("tcp", nbss_request(), "NetBIOS"),
    ("tcp", smb1_negotiate(), "SMB"), ("tcp", smb2_negotiate(), "SMB"), ("tcp", rdp_request(), "RDP"),
    ("tcp", dce_bind(), "DCERPC"), ("udp", ntp(), "NTP"), ("udp", dhcp_discover(), "DHCP"),
    ("udp", dhcpv6_solicit(), "DHCPv6"), ("udp", snmp_get(), "SNMP"), ("udp", SYSLOG[2], "Syslog"),
    ("udp", tftp_rrq(), "TFTP"), ("udp", MSEARCH, "SSDP"), ("udp", rpc_call(), "NFS"),
    ("udp", dns_query("tv.local", ident=0, rd=False), "MDNS"),
]


@pytest.fixture(scope="module")
def classifier():
    with Classifier(layers=["heuristics"]) as clf:
        yield clf


@pytest.mark.parametrize("transport,payload,expected", FIRST_PAYLOADS, ids=[f[2] + "-" + f[0] for f in FIRST_PAYLOADS])
def test_first_payload_api(classifier: Classifier, transport: str, payload: bytes, expected: str) -> None:
    """Through the engine, with arbitrary ports: the client's first payload alone names the protocol."""
    v = classifier.classify_payload(payload, transport, src_port=40000, dst_port=40001)
    assert v.protocol == expected and v.confidence >= 0.8
