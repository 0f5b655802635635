"""libprotoident's protocol names in dpicore's canonical registry, and its answers as verdicts.

The core already knows the common spellings (``HTTP_NonStandard`` -> HTTP,
``SSL/TLS`` -> TLS, ``DNS_TCP`` -> DNS, ``FTP_Control`` -> FTP, ``Unknown_TCP``
/ ``Unknown_UDP`` / ``No_Payload`` / ``Unsupported`` -> Unknown, …).  This
module adds the ones it does not, plus a few protocols libprotoident names
that the core has no entry for.  The registry is case-insensitive and lets
unregistered names through unchanged, so the hundreds of application names
libprotoident knows (``Steam``, ``Zoom``, ``Mystery_9000``…) still reach the
record as libprotoident spells them.
"""

from __future__ import annotations

from dpicore import ProtocolSpec, Verdict, canonical
from dpicore.protocols import UNKNOWN

from .binding import Guess

LAYER_ID = "lpi"

#: Spellings of libprotoident 2.0.15 modules that the core registry does not already resolve.
LPI_PROTOCOLS: tuple[ProtocolSpec, ...] = (
    ProtocolSpec("HTTP", ("HTTP_Tunnel",)),
    ProtocolSpec("TLS", ("NNTPS",)),
    ProtocolSpec("IPsec", ("ESP_UDP",)),
    ProtocolSpec("BitTorrent", ("BitExtensions",)),
    ProtocolSpec("Teredo", ()),
    ProtocolSpec("L2TP", ()),
    ProtocolSpec("RADIUS", ()),
    ProtocolSpec("PPTP", ()),
    ProtocolSpec("Tor", ()),
    ProtocolSpec("RTMP", ()),
    ProtocolSpec("NNTP", ()),
    ProtocolSpec("SVN", ()),
    ProtocolSpec("CVS", ()),
    ProtocolSpec("Whois", ()),
)

#: Confidence by libprotoident module priority: the library tries low
#: numbers first and gives its weaker, often port-assisted rules higher
#: ones (its DNS module, priority 5, is commented "not a high certainty").
#: Our mapping, not the library's.
_CONFIDENCE = ((3, 0.85), (5, 0.75), (10, 0.65))
_WEAK = 0.45


def confidence(priority: int) -> float:
    for limit, value in _CONFIDENCE:
        if priority <= limit:
            return value
    return _WEAK


def to_verdict(guess: Guess) -> Verdict:
    """A dpicore verdict for libprotoident's answer; its own name and category stay in the metadata."""
    metadata = {"lpi_protocol": guess.name, "lpi_category": guess.category_name,
                "lpi_priority": guess.priority}
    protocol = canonical(guess.name)
    if protocol == UNKNOWN:
        return Verdict(UNKNOWN, LAYER_ID, 0.0, category=guess.category_name, metadata=metadata)
    return Verdict(protocol, LAYER_ID, confidence(guess.priority), category=guess.category_name,
                   metadata=metadata)
