"""Plugin discovery and the layer table.

Loading is our own loop over ``importlib.metadata.entry_points`` with one
try/except per plugin, so a broken plugin is reported (``dpi plugins`` shows it
failed and why) and the rest keep working.  pluggy has no numeric priority,
so the order of layers is ours: ``LayerInfo.priority`` unless the
configuration overrides it, ties broken by id.

An entry point names either a class (or zero-argument function) or a module.
A class is called once per :class:`PluginSet`, so every plugin manager (every
:class:`dpicore.Classifier`) gets a layer object of its own: its settings,
open libraries and models are not shared with another classifier in the same
process.  A module is registered as it is and so shares its state with every
plugin manager of the process (third-party plugins written that way keep
working; they just cannot be configured differently per classifier).
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Iterable

import attrs
import pluggy

from . import hookspecs
from .config import Config
from .protocols import ProtocolRegistry, ProtocolSpec, registry as default_registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dpicore.plugins"

LOADED = "loaded"
DISABLED = "disabled"
FAILED = "failed"


class PluginError(RuntimeError):
    """A layer the configuration requires could not be loaded."""


#: What a plugin may raise that costs the plugin (its flow, or its load), not the run: any Exception,
#: and a ``sys.exit`` in a hook; KeyboardInterrupt still stops the run.  (At import, any BaseException
#: but KeyboardInterrupt: a module's own kinds too.)
PLUGIN_FAILURES = (Exception, SystemExit, GeneratorExit)


@attrs.define(slots=True, frozen=True)
class LayerInfo:
    """What a layer tells the core about itself (returned by ``dpi_layer_info``)."""

    id: str
    priority: int = 50
    protocols: tuple[str, ...] = ()
    #: Packets per flow the layer wants to see before it gives up.
    max_packets: int = 10
    #: Also call the layer for packets without payload (nDPI tracks TCP state).
    wants_empty: bool = False
    #: With ``wants_empty``: a layer that names no flow from its first ``hold_empty`` packets unless
    #: one carries payload lets the engine hold those of them that carry none, and hand them over,
    #: in order, just before the next packet it does not hold (one with payload, or the one past
    #: ``hold_empty``) or the flow's end; when a higher-priority layer decides the flow first the
    #: layer never gets them.  Every packet reaches the layer in the same order and at the same point
    #: of its own count as without holding; what it saves is a call per handshake packet of every flow
    #: another layer names (nDPI: its TCP state only matters once payload comes).  When every layer
    #: that wants such packets holds them, a new flow's layers start only once it has a packet they
    #: do not hold (see dpi_flow_new).  0: every packet on arrival.
    hold_empty: int = 0
    description: str = ""
    #: The layer reads ``Flow.payloads`` (``stream``, ``first_payload``).  When no layer still looking
    #: at a flow does, the engine keeps none of its payloads: a flow nDPI inspects after the heuristics
    #: layer left kept ~0.2 KB of them for nobody.  True unless the layer says otherwise.
    reads_payloads: bool = True


@attrs.define(slots=True)
class PluginStatus:
    """One row of ``dpi plugins``."""

    id: str
    distribution: str | None
    version: str | None
    priority: int | None
    status: str
    reason: str = ""
    description: str = ""
    protocols: int = 0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define(slots=True, eq=False)
class Layer:
    """A loaded layer as the pipeline uses it: plain callables, no pluggy dispatch."""

    id: str
    priority: int
    info: LayerInfo
    classify: Callable[[Any, Any, int, Any], Any] | None
    flow_new: Callable[[Any, Any], Any] | None
    flow_end: Callable[[Any, Any, str], Any] | None
    errors: int = 0
    last_error: str = ""
    disabled: bool = False


def instantiate(obj: object) -> object:
    """The object to register for an entry point's target: a class or function is called, once.

    Modules and ready-made objects (instances) are registered as they are.
    """
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return obj()  # type: ignore[operator]
    return obj


def _bind(impl: pluggy.HookImpl, params: tuple[str, ...]) -> Callable[..., Any]:
    """Adapt an implementation that accepts a subset of ``params`` to positional calls."""
    fn = impl.function
    names = tuple(impl.argnames)
    if names == params:
        return fn
    unknown = set(names) - set(params)
    if unknown:
        raise TypeError(f"{impl.plugin_name}: {fn.__name__} takes unknown arguments {sorted(unknown)}")
    index = [params.index(n) for n in names]
    return lambda *args: fn(*[args[i] for i in index])


def _impls(pm: pluggy.PluginManager, hook: str, name: str) -> pluggy.HookImpl | None:
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin_name == name:
            return impl
    return None


def _call(pm: pluggy.PluginManager, hook: str, name: str, **kwargs: Any) -> Any:
    impl = _impls(pm, hook, name)
    if impl is None:
        return None
    return impl.function(*[kwargs[a] for a in impl.argnames])


class PluginSet:
    """The plugin manager plus the status of every plugin it was offered."""

    def __init__(self, config: Config | None = None, registry: ProtocolRegistry | None = None) -> None:
        self.config = config or Config()
        self.registry = registry or default_registry
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.statuses: dict[str, PluginStatus] = {}
        self.layers: list[Layer] = []
        self._configured: list[str] = []

    # -- loading ---------------------------------------------------------
    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None) -> None:
        if eps is None:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(eps, key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else None
            version = dist.version if dist is not None else None
            if ep.name in self.statuses:
                self._duplicate(ep.name, dist_name, version)
                continue
            if not self.config.allows(ep.name):
                self.statuses[ep.name] = PluginStatus(ep.name, dist_name, version, None, DISABLED,
                                                      "disabled by configuration")
                continue
            try:
                obj = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # anything a third-party module raises at import, its own kinds too
                self._fail(ep.name, dist_name, version, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.add(ep.name, obj, dist_name, version)

    def add(self, name: str, obj: object, distribution: str | None = None, version: str | None = None) -> bool:
        """Register one plugin under ``name``; report instead of raising.

        ``obj`` is what an entry point names: a class or zero-argument
        function (called here, so this plugin set gets an instance of its
        own), a module (shared process-wide), or an object to register as is.
        """
        if self.pm.has_plugin(name):  # keep the loaded one's status: it still runs
            self._duplicate(name, distribution, version)
            return False
        if not self.config.allows(name):
            self.statuses[name] = PluginStatus(name, distribution, version, None, DISABLED,
                                               "disabled by configuration")
            return False
        try:
            plugin = instantiate(obj)
        except PLUGIN_FAILURES as exc:  # a third-party constructor
            self._fail(name, distribution, version, f"instantiation failed: {type(exc).__name__}: {exc}")
            return False
        try:
            self.pm.register(plugin, name=name)
        except PLUGIN_FAILURES as exc:
            self._fail(name, distribution, version, f"registration failed: {type(exc).__name__}: {_one_line(exc)}")
            return False
        try:
            # A misspelt hook (dpi_clasify) would otherwise be ignored, and an object with no hook at
            # all (an entry point naming None) listed as a loaded layer that does nothing.
            if not self.pm.get_hookcallers(plugin):
                raise TypeError(f"{type(plugin).__name__} implements no dpicore hook (no @hookimpl method)")
            self.pm.check_pending()
        except (TypeError, pluggy.PluginValidationError) as exc:
            self.pm.unregister(name=name)
            self._fail(name, distribution, version, f"registration failed: {_one_line(exc)}")
            return False
        try:
            # Configure first: a layer's info (packet budget, protocols) may depend on its settings.
            _call(self.pm, "dpi_configure", name, config=dict(self.config.layer_settings.get(name, {})))
            self._configured.append(name)
            info = _call(self.pm, "dpi_layer_info", name)
            if info is not None and not isinstance(info, LayerInfo):
                raise TypeError(f"dpi_layer_info returned {type(info).__name__}, not LayerInfo")
            if info is not None:
                _check_info(info)
            specs = _call(self.pm, "dpi_register_protocols", name) or ()
            count = 0
            for spec in specs:
                if not isinstance(spec, (str, ProtocolSpec)):
                    raise TypeError(f"dpi_register_protocols yielded {type(spec).__name__}")
                self.registry.register(spec, source=name)
                count += 1
            if info is not None:
                for proto in info.protocols:
                    self.registry.register(proto, source=name)
            layer = self._make_layer(name, info) if info is not None else None
        except PLUGIN_FAILURES as exc:
            if name in self._configured:
                self._configured.remove(name)
                try:
                    _call(self.pm, "dpi_unconfigure", name)
                except PLUGIN_FAILURES:
                    pass
            self.pm.unregister(name=name)
            self._fail(name, distribution, version, f"{type(exc).__name__}: {exc}")
            return False
        priority = layer.priority if layer else None
        self.statuses[name] = PluginStatus(
            name, distribution, version, priority, LOADED,
            description=info.description if info else "protocol names only",
            protocols=len(info.protocols) if info else count)
        if layer is not None:
            self.layers.append(layer)
            self.layers.sort(key=lambda l: (l.priority, l.id))
        return True

    def _make_layer(self, name: str, info: LayerInfo) -> Layer:
        if info.id != name:
            raise ValueError(f"layer id {info.id!r} differs from its entry-point name {name!r}")
        classify = _impls(self.pm, "dpi_classify", name)
        new = _impls(self.pm, "dpi_flow_new", name)
        end = _impls(self.pm, "dpi_flow_end", name)
        override = self.config.priority_override(name)
        return Layer(
            id=name,
            priority=info.priority if override is None else override,
            info=info,
            classify=_bind(classify, ("flow", "packet", "direction", "state")) if classify else None,
            flow_new=_bind(new, ("flow", "packet")) if new else None,
            flow_end=_bind(end, ("flow", "state", "reason")) if end else None,
        )

    def _duplicate(self, name: str, dist: str | None, version: str | None) -> None:
        first = self.statuses[name].distribution if name in self.statuses else None
        self.statuses[name + "@" + (dist or "?")] = PluginStatus(
            name, dist, version, None, FAILED,
            f"duplicate layer id {name!r} (already provided by {first or 'another plugin'})")

    def _fail(self, name: str, dist: str | None, version: str | None, reason: str) -> None:
        log.warning("plugin %s failed: %s", name, reason)
        self.statuses[name] = PluginStatus(name, dist, version, None, FAILED, reason)

    def check_required(self) -> None:
        """Raise :class:`PluginError` naming each required layer that is not loaded."""
        missing = []
        for name in self.config.require:
            st = self.statuses.get(name)
            if st is None:
                missing.append(f"{name}: not installed (no entry point in group {ENTRY_POINT_GROUP!r})")
            elif st.status != LOADED:
                missing.append(f"{name}: {st.status}: {st.reason}")
        if missing:
            raise PluginError("required layer unavailable: " + "; ".join(missing))

    def plugin(self, name: str) -> Any:
        """The object registered for layer ``name`` in this set (its instance), or None."""
        return self.pm.get_plugin(name)

    def close(self) -> None:
        for name in reversed(self._configured):
            try:
                _call(self.pm, "dpi_unconfigure", name)
            except PLUGIN_FAILURES as exc:
                log.warning("plugin %s failed to unconfigure: %s", name, exc)
        self._configured.clear()


def check_settings(layer_id: str, config: dict[str, Any], known: Iterable[str]) -> None:
    """Refuse a ``[layers.<id>]`` setting the layer does not know (for its ``dpi_configure``): a misspelt
    one (``modle``, ``threshhold``) would otherwise leave the default in force with nothing said."""
    known = tuple(known)
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"layers.{layer_id}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (pluggy's validation errors take several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _check_info(info: LayerInfo) -> None:
    """Refuse a LayerInfo whose fields the engine could not use (a string priority would break the
    sort of every layer, a string budget the first flow): the plugin fails to load, with this reason."""
    def whole(name: str, least: int) -> None:
        value = getattr(info, name)
        if type(value) is not int or value < least:
            raise TypeError(f"LayerInfo.{name} must be an int >= {least}, not {value!r}")

    whole("priority", -(1 << 31))
    whole("max_packets", 1)
    whole("hold_empty", 0)
    for flag in ("wants_empty", "reads_payloads"):
        if type(getattr(info, flag)) is not bool:
            raise TypeError(f"LayerInfo.{flag} must be a bool, not {getattr(info, flag)!r}")
    if isinstance(info.protocols, (str, bytes)) or not all(isinstance(p, str) for p in info.protocols):
        raise TypeError(f"LayerInfo.protocols must be a sequence of names, not {info.protocols!r}")
    if not isinstance(info.description, str):
        raise TypeError(f"LayerInfo.description must be a str, not {info.description!r}")


def discover(config: Config | None = None, extra: Iterable[tuple[str, object]] = (),
             eps: Iterable[EntryPoint] | None = None) -> PluginSet:
    """Load every installed plugin (plus ``extra`` objects) and check required layers."""
    plugins = PluginSet(config)
    plugins.load_entry_points(eps)
    for name, obj in extra:
        plugins.add(name, obj)
    plugins.check_required()
    return plugins
