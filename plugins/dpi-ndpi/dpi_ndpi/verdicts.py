"""nDPI's answers as dpicore verdicts, and nDPI's names in the canonical registry.

The core registry already resolves the nDPI spellings that matter most
(``FTP_CONTROL`` -> FTP, ``SMBv23`` -> SMB, ``Jabber`` -> XMPP, ``ICMPV6`` ->
ICMP, ``IMAPS``/``POPS``/``SMTPS`` -> TLS, ``MsSQL-TDS`` -> MSSQL…).
:data:`ALIASES` adds the few nDPI names that mean a protocol the registry
knows under another name; every other nDPI name (the module enumerates them
at configure time) is registered as itself, so ``WhatsApp`` or
``HP_VIRTGRP`` reach records as nDPI spells them.

The verdict's protocol is nDPI's master protocol when there is one (``TLS``
for ``TLS.Google``), else the application (``Facebook``), canonicalised.
The full ``Master.App`` label, the application, category, host/SNI and
nDPI's own confidence name stay in the metadata.
"""

from __future__ import annotations

from typing import Iterable

from dpicore import ProtocolSpec, Verdict, canonical
from dpicore.protocols import UNKNOWN

from .detector import NdpiResult

LAYER_ID = "ndpi"

#: nDPI 4.2 names for protocols the core (or another layer) names differently.
ALIASES: tuple[ProtocolSpec, ...] = (
    ProtocolSpec("Whois", ("Whois-DAS",)),
    ProtocolSpec("NNTP", ("Usenet",)),
    ProtocolSpec("GTP", ("GTP_U", "GTP_C", "GTP_PRIME")),
)

#: Our mapping of nDPI's confidence to dpicore's 0..1 scale: payload
#: inspection is trusted, a guess from the port or the address is not (it
#: stays below the engine's default 0.5 threshold, so other layers still get
#: their say).
CONFIDENCE: dict[str, float] = {
    "DPI": 0.95,
    "DPI (cache)": 0.8,
    "Match by IP": 0.3,
    "Match by port": 0.2,
    "Unknown": 0.0,
}
_OTHER = 0.5


def protocol_specs(names: Iterable[str]) -> list[ProtocolSpec | str]:
    """Aliases first (so they bind to their canonical name), then every nDPI name."""
    specs: list[ProtocolSpec | str] = list(ALIASES)
    specs.extend(n for n in names if n and n != UNKNOWN)
    return specs


def to_verdict(result: NdpiResult) -> Verdict:
    """A dpicore verdict for nDPI's answer."""
    named = result.master if result.master != UNKNOWN else result.app
    protocol = canonical(named)
    metadata: dict[str, object] = {"ndpi_label": result.label, "ndpi_confidence": result.confidence}
    if result.host:
        metadata["host"] = result.host
    if result.gave_up:
        metadata["ndpi_gave_up"] = True
    if protocol == UNKNOWN:
        return Verdict(UNKNOWN, LAYER_ID, 0.0, category=result.category or None, metadata=metadata)
    app = result.app if result.app not in (UNKNOWN, named) else None
    return Verdict(protocol, LAYER_ID, CONFIDENCE.get(result.confidence, _OTHER), app=app,
                   category=result.category or None, metadata=metadata)
