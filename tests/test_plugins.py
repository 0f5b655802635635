"""The plugin loader (dpicore/plugins.py): broken plugins are reported with
status "failed" and a reason while the others load; configuration enables,
blocks and requires layers.

Fake entry points are real ``importlib.metadata.EntryPoint`` objects whose
modules the test writes to a temporary directory, so ``ep.load()`` really
imports them.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from dpicore import LayerInfo, hookimpl
from dpicore.config import Config, config_from_dict
from dpicore.plugins import DISABLED, FAILED, LOADED, ENTRY_POINT_GROUP, PluginError, PluginSet, discover
from dpicore.protocols import ProtocolRegistry

GOOD = """
from dpicore import LayerInfo, Verdict, hookimpl
CONFIG = {{}}
@hookimpl
def dpi_layer_info():
    return LayerInfo(id={id!r}, priority={priority}, protocols=("Zork",), description="test layer")
@hookimpl
def dpi_configure(config):
    CONFIG.update(config)
@hookimpl
def dpi_unconfigure():
    CONFIG["unconfigured"] = True
@hookimpl
def dpi_classify(packet):
    return Verdict("Zork", confidence=0.9) if packet.payload.startswith(b"ZORK") else None
"""

BROKEN = {
    "import_error": "import no_such_module_anywhere\n",
    "syntax_error": "def oops(:\n",
    "registration_error": """
from dpicore import hookimpl
@hookimpl
def dpi_classify(flow, not_a_parameter):
    return None
""",
    "info_raises": """
from dpicore import hookimpl
@hookimpl
def dpi_layer_info():
    raise RuntimeError("cannot describe myself")
""",
    "info_wrong_type": """
from dpicore import hookimpl
@hookimpl
def dpi_layer_info():
    return {"id": "info_wrong_type"}
""",
    "configure_raises": """
from dpicore import LayerInfo, hookimpl
UNCONFIGURED = []
@hookimpl
def dpi_configure(config):
    raise OSError("libfoo.so.1: cannot open shared object file")
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="configure_raises")
""",
    "id_mismatch": """
from dpicore import LayerInfo, hookimpl
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="something_else")
""",
    "bad_protocols": """
from dpicore import LayerInfo, hookimpl
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="bad_protocols")
@hookimpl
def dpi_register_protocols():
    return [42]
""",
    "exits_at_import": "import sys\nsys.exit('libfoo missing')\n",
    "own_base_exception": "class Boom(BaseException):\n    pass\nraise Boom('boom')\n",
    "misspelt_hook": """
from dpicore import LayerInfo, hookimpl
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="misspelt_hook")
@hookimpl
def dpi_clasify(flow, packet):
    return None
""",
    "no_hooks": "def dpi_classify(flow, packet):\n    return None\n",
    "info_bad_priority": """
from dpicore import LayerInfo, hookimpl
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="info_bad_priority", priority="5")
""",
    "info_bad_budget": """
from dpicore import LayerInfo, hookimpl
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="info_bad_budget", max_packets=None)
""",
    "info_bad_flag": """
from dpicore import LayerInfo, hookimpl
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="info_bad_flag", reads_payloads="no")
""",
}

REASONS = {
    "import_error": "import failed: ModuleNotFoundError: No module named 'no_such_module_anywhere'",
    "syntax_error": "import failed: SyntaxError",
    "registration_error": "registration failed: PluginValidationError: Plugin 'registration_error' for hook "
                          "'dpi_classify' hookimpl definition: dpi_classify(flow, not_a_parameter) Argument(s) "
                          "{'not_a_parameter'} are declared in the hookimpl but can not be found in the hookspec",
    "info_raises": "RuntimeError: cannot describe myself",
    "info_wrong_type": "dpi_layer_info returned dict, not LayerInfo",
    "configure_raises": "OSError: libfoo.so.1: cannot open shared object file",
    "id_mismatch": "layer id 'something_else' differs from its entry-point name 'id_mismatch'",
    "bad_protocols": "dpi_register_protocols yielded int",
    "exits_at_import": "import failed: SystemExit: libfoo missing",
    "own_base_exception": "import failed: Boom: boom",
    "misspelt_hook": "registration failed: unknown hook 'dpi_clasify'",
    "no_hooks": "registration failed: module implements no dpicore hook",
    "info_bad_priority": "LayerInfo.priority must be an int",
    "info_bad_budget": "LayerInfo.max_packets must be an int >= 1, not None",
    "info_bad_flag": "LayerInfo.reads_payloads must be a bool, not 'no'",
}


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a module into a directory on sys.path; returns its (unique) import name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(source: str) -> str:
        name = "fakeplugin_" + uuid.uuid4().hex[:10]
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def ep(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=module, group=ENTRY_POINT_GROUP)


def plugin_set(config: Config | None = None) -> PluginSet:
    return PluginSet(config or Config(), registry=ProtocolRegistry())


def test_good_plugin_loads(write_module) -> None:
    mod = write_module(GOOD.format(id="zork", priority=33))
    ps = plugin_set(config_from_dict({"layers": {"zork": {"priority": 7, "depth": 3}}}))
    ps.load_entry_points([ep("zork", mod)])
    st = ps.statuses["zork"]
    assert (st.status, st.priority, st.description, st.protocols) == (LOADED, 7, "test layer", 1)
    assert [(l.id, l.priority) for l in ps.layers] == [("zork", 7)]
    assert sys.modules[mod].CONFIG == {"priority": 7, "depth": 3}, "dpi_configure gets the layer's table"
    assert "Zork" in ps.registry
    ps.close()
    assert sys.modules[mod].CONFIG.get("unconfigured") is True


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_broken_plugin_is_reported_and_the_others_load(write_module, broken: str) -> None:
    good_a = write_module(GOOD.format(id="alpha", priority=10))
    bad = write_module(BROKEN[broken])
    good_z = write_module(GOOD.format(id="zulu", priority=20))
    ps = plugin_set()
    ps.load_entry_points([ep("zulu", good_z), ep(broken, bad), ep("alpha", good_a)])
    st = ps.statuses[broken]
    assert st.status == FAILED and REASONS[broken] in st.reason
    assert [l.id for l in ps.layers] == ["alpha", "zulu"]
    assert ps.statuses["alpha"].status == LOADED and ps.statuses["zulu"].status == LOADED
    assert ps.pm.get_plugin(broken) is None, "a failed plugin's hooks are never called"


def test_failed_after_configure_is_unconfigured(write_module) -> None:
    mod = write_module("""
from dpicore import hookimpl
STATE = []
@hookimpl
def dpi_configure(config):
    STATE.append("configured")
@hookimpl
def dpi_unconfigure():
    STATE.append("unconfigured")
@hookimpl
def dpi_layer_info():
    raise ValueError("late failure")
""")
    ps = plugin_set()
    ps.load_entry_points([ep("late", mod)])
    assert ps.statuses["late"].status == FAILED
    assert sys.modules[mod].STATE == ["configured", "unconfigured"]
    ps.close()
    assert sys.modules[mod].STATE == ["configured", "unconfigured"], "not unconfigured twice"


def test_duplicate_entry_point_ids(write_module) -> None:
    first = write_module(GOOD.format(id="dup", priority=10))
    second = write_module(GOOD.format(id="dup", priority=20))
    ps = plugin_set()
    ps.load_entry_points([ep("dup", first), ep("dup", second)])
    assert ps.statuses["dup"].status == LOADED and ps.statuses["dup"].priority == 10
    dups = [s for k, s in ps.statuses.items() if k != "dup"]
    assert len(dups) == 1 and dups[0].status == FAILED and "duplicate layer id 'dup'" in dups[0].reason
    assert len(ps.layers) == 1


def test_duplicate_id_between_entry_point_and_extra_object(write_module) -> None:
    """An extra plugin object with an id that is already loaded must not take over that id's status."""
    mod = write_module(GOOD.format(id="dup", priority=10))

    class Other:
        @hookimpl
        def dpi_layer_info(self) -> LayerInfo:
            return LayerInfo(id="dup", priority=99)

    ps = discover(Config(), extra=[("dup", Other())], eps=[ep("dup", mod)])
    assert ps.statuses["dup"].status == LOADED
    assert [l.id for l in ps.layers] == ["dup"]
    assert any(s.status == FAILED and "duplicate" in s.reason for s in ps.statuses.values())


def test_config_enable_and_block(write_module) -> None:
    mods = {n: write_module(GOOD.format(id=n, priority=i)) for i, n in enumerate(("a", "b", "c", "d"))}
    eps = [ep(n, m) for n, m in mods.items()]
    ps = discover(config_from_dict({"layers": {"enable": ["a", "b", "c"], "block": ["b"]}}), eps=eps)
    assert {k: s.status for k, s in ps.statuses.items()} == {"a": LOADED, "b": DISABLED, "c": LOADED,
                                                             "d": DISABLED}
    assert [l.id for l in ps.layers] == ["a", "c"]
    assert ps.statuses["d"].reason == "disabled by configuration"


def test_disabled_plugin_is_not_imported(write_module) -> None:
    mod = write_module("raise SystemExit('must not be imported')\n")
    ps = discover(config_from_dict({"layers": {"block": ["nope"]}}), eps=[ep("nope", mod)])
    assert ps.statuses["nope"].status == DISABLED and mod not in sys.modules


def test_required_layer_missing_raises(write_module) -> None:
    good = write_module(GOOD.format(id="good", priority=1))
    bad = write_module(BROKEN["configure_raises"])
    with pytest.raises(PluginError) as info:
        discover(config_from_dict({"layers": {"require": ["absent"]}}), eps=[ep("good", good)])
    assert "absent: not installed" in str(info.value)
    with pytest.raises(PluginError) as info:
        discover(config_from_dict({"layers": {"require": ["configure_raises"]}}),
                 eps=[ep("configure_raises", bad)])
    assert "configure_raises: failed" in str(info.value) and "libfoo" in str(info.value)
    with pytest.raises(PluginError, match="good: disabled"):
        discover(config_from_dict({"layers": {"require": ["good"], "block": ["good"]}}), eps=[ep("good", good)])
    ps = discover(config_from_dict({"layers": {"require": ["good"]}}), eps=[ep("good", good)])
    assert ps.statuses["good"].status == LOADED


def test_with_layers_selects_and_requires() -> None:
    cfg = Config().with_layers(["x", "y"])
    assert cfg.enable == ["x", "y"] and set(cfg.require) == {"x", "y"}
    with pytest.raises(PluginError, match="x: not installed"):
        discover(cfg, eps=[])


def test_protocol_only_plugin(write_module) -> None:
    mod = write_module("""
from dpicore import ProtocolSpec, hookimpl
@hookimpl
def dpi_register_protocols():
    return [ProtocolSpec("Gadget", aliases=("GADGET_v2",)), "Widget"]
""")
    ps = plugin_set()
    ps.load_entry_points([ep("names", mod)])
    st = ps.statuses["names"]
    assert st.status == LOADED and st.priority is None and st.protocols == 2 and ps.layers == []
    assert ps.registry.canonical("GADGET_v2") == "Gadget" and "Widget" in ps.registry


def test_plugin_with_a_subset_of_arguments_is_called(write_module) -> None:
    from dpicore.engine import Engine
    from tests.helpers.frames import PSH, ACK, packet

    mod = write_module(GOOD.format(id="zork", priority=1))
    ps = plugin_set()
    ps.load_entry_points([ep("zork", mod)])
    (flow,) = Engine(ps, ps.config).run([packet(1.0, flags=PSH | ACK, payload=b"ZORK 1")])
    assert flow.verdict.protocol == "Zork" and flow.verdict.source == "zork"
