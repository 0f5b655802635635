"""The one canonical protocol registry.

Every layer speaks its own dialect (nDPI says ``FTP_CONTROL`` and ``SMBv23``,
libprotoident says ``HTTP_NonStandard`` and ``SSL/TLS``).  Output must not, so
every name a layer produces goes through :func:`canonical` before it reaches a
flow record.  Plugins add names with the ``dpi_register_protocols`` hook; the
core owns the table, so duplicates and aliases are resolved in one place.
"""

from __future__ import annotations

from typing import Iterable

import attrs

UNKNOWN = "Unknown"


@attrs.define(slots=True, frozen=True)
class ProtocolSpec:
    """A protocol name plus the other spellings that mean the same thing."""

    name: str
    aliases: tuple[str, ...] = ()
    description: str = ""


# Canonical names and the spellings nDPI (4.2) and libprotoident (2.0.15) use.
# Encrypted "…S" variants (IMAPS, SMTPS, POPS, …) are TLS on the wire: that is
# what a port-independent classifier can see, so they map to TLS.
_BUILTIN: tuple[ProtocolSpec, ...] = (
    ProtocolSpec("HTTP", ("HTTP_NonStandard", "HTTP_Proxy", "HTTP_Connect", "HTTP_Badport",
                          "HTTP_443", "HTTP_Post", "Web_Proxy", "HTTP_Connect_Proxy",
                          "HTTPProxy", "HTTP_Proxy_Connect")),
    ProtocolSpec("HTTP2", ("HTTP/2", "H2", "HTTP2_Preface")),
    ProtocolSpec("WebSocket", ("Websocket",)),
    ProtocolSpec("TLS", ("SSL", "SSL/TLS", "SSL_No_Cert", "HTTPS", "TLS_443", "IMAPS", "POPS",
                         "POP3S", "SMTPS", "FTPS", "LDAPS", "SSL_v3", "SSL_v2", "Mail_SSL",
                         "SSL/TLS_443")),
    ProtocolSpec("DTLS", ()),
    ProtocolSpec("QUIC", ("gQUIC", "QUIC_Google", "Google_QUIC")),
    ProtocolSpec("DNS", ("DNS_TCP", "DNS_UDP", "DoT")),
    ProtocolSpec("MDNS", ("mDNS",)),
    ProtocolSpec("LLMNR", ()),
    ProtocolSpec("SSH", ("SSH_Port22",)),
    ProtocolSpec("SMTP", ("SMTP_Reject", "SMTP_Spam", "SMTP_Submission")),
    ProtocolSpec("POP3", ("POP",)),
    ProtocolSpec("IMAP", ()),
    ProtocolSpec("FTP", ("FTP_CONTROL", "FTP_Control", "FTPControl")),
    ProtocolSpec("FTP_DATA", ("FTP_Data", "FTPData")),
    ProtocolSpec("SMB", ("SMBv1", "SMBv23", "SMB2", "SMB3", "SMBV1", "SMBV23", "CIFS")),
    ProtocolSpec("NetBIOS", ("NETBIOS", "NetBIOS_UDP", "NetBIOS_SS", "NetBIOS_Name",
                             "NetBIOS_Datagram", "NETBIOS_DGM", "NETBIOS_NS")),
    ProtocolSpec("RDP", ("MS_RDP", "RDP_UDP")),
    ProtocolSpec("DCERPC", ("DCE_RPC", "DCE/RPC", "MS_RPC", "RPC_MS")),
    ProtocolSpec("MQTT", ()),
    ProtocolSpec("SIP", ("SIP_UDP", "SIP_TCP")),
    ProtocolSpec("RTP", ("RTP_Generic",)),
    ProtocolSpec("RTCP", ()),
    ProtocolSpec("STUN", ("TURN", "STUN_TURN", "STUN/TURN")),
    ProtocolSpec("NTP", ("NTPv4",)),
    ProtocolSpec("DHCP", ("BOOTP",)),
    ProtocolSpec("DHCPv6", ("DHCPV6",)),
    ProtocolSpec("SNMP", ("SNMPv1", "SNMPv2", "SNMPv3", "SNMP_Trap")),
    ProtocolSpec("Syslog", ("SYSLOG",)),
    ProtocolSpec("TFTP", ()),
    ProtocolSpec("Telnet", ("TELNET",)),
    ProtocolSpec("MySQL", ("MariaDB",)),
    ProtocolSpec("PostgreSQL", ("Postgres", "PGSQL")),
    ProtocolSpec("Redis", ("RESP",)),
    ProtocolSpec("MongoDB", ("Mongo",)),
    ProtocolSpec("Memcached", ("Memcache",)),
    ProtocolSpec("XMPP", ("Jabber", "XMPPS")),
    ProtocolSpec("IRC", ()),
    ProtocolSpec("LDAP", ("CLDAP",)),
    ProtocolSpec("Kerberos", ("KRB5",)),
    ProtocolSpec("RTSP", ()),
    ProtocolSpec("BitTorrent", ("BitTorrent_UDP", "BitTorrent_Extension", "Bittorrent",
                                "BT_DHT", "BitTorrent_DHT")),
    ProtocolSpec("SOCKS", ("SOCKS4", "SOCKS5")),
    ProtocolSpec("OpenVPN", ("OpenVPN_UDP",)),
    ProtocolSpec("WireGuard", ()),
    ProtocolSpec("IPsec", ("IKE", "ISAKMP", "IKEv2", "ESP", "AH", "IPSEC", "IPsec_UDP")),
    ProtocolSpec("SSDP", ("UPnP",)),
    ProtocolSpec("NFS", ("ONC-RPC", "ONC_RPC", "SunRPC", "RPC", "Portmap", "ONCRPC")),
    ProtocolSpec("Modbus", ("ModbusTCP", "Modbus_TCP")),
    ProtocolSpec("AMQP", ()),
    ProtocolSpec("Git", ()),
    ProtocolSpec("VNC", ("RFB",)),
    ProtocolSpec("Rsync", ("RSYNC",)),
    ProtocolSpec("BGP", ()),
    ProtocolSpec("MSSQL", ("MsSQL-TDS", "TDS", "MSSQL_TDS", "MS_SQL")),
    ProtocolSpec("ICMP", ("ICMPV6", "ICMPv6", "ICMP6")),
    ProtocolSpec("IGMP", ()),
    ProtocolSpec("SCTP", ()),
    ProtocolSpec(UNKNOWN, ("Unknown_TCP", "Unknown_UDP", "No_Payload", "Unsupported",
                           "Invalid", "Unknown_Protocol")),
)


class ProtocolRegistry:
    """Maps any known spelling to its canonical name.

    Lookup is case-insensitive because the two reference libraries disagree on
    case (``ICMPV6`` vs ``ICMPv6``).  Names nobody registered pass through
    unchanged: nDPI knows hundreds of application names we do not list, and
    losing them would throw away information.
    """

    def __init__(self, specs: Iterable[ProtocolSpec] = _BUILTIN) -> None:
        self._canonical: dict[str, str] = {}
        self._specs: dict[str, ProtocolSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ProtocolSpec | str, source: str = "core") -> None:
        """Add a protocol; an alias already bound to another name keeps its first owner."""
        if isinstance(spec, str):
            spec = ProtocolSpec(spec)
        key = spec.name.lower()
        existing = self._canonical.get(key)
        if existing is None:
            self._canonical[key] = spec.name
            self._specs[spec.name] = spec
            name = spec.name
        else:
            name = existing
        for alias in spec.aliases:
            self._canonical.setdefault(alias.lower(), name)

    def canonical(self, name: str | None) -> str:
        if not name:
            return UNKNOWN
        return self._canonical.get(name.lower(), name)

    def is_known(self, name: str) -> bool:
        return name.lower() in self._canonical

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.is_known(name)


#: The process-wide registry; plugins extend it through the registration hook.
registry = ProtocolRegistry()


def canonical(name: str | None) -> str:
    """Canonical spelling of ``name`` in the process-wide registry."""
    return registry.canonical(name)
