"""Write wasmgate gateway plugins in Python.

A plugin is a subclass of :class:`Plugin` whose ``__init__`` takes the JSON config and which
overrides the hooks it needs; ``WitWorld = export(MyPlugin)`` in the module ``app`` turns it into
the component's implementation of the ``wasmgate:plugin`` world (build it with
``componentize-py -d wit -w plugin componentize -p <this directory's parent> -p . app``).
The gateway is told exactly which hooks the class overrides and never calls the others.

    from wasmgate_sdk import Plugin, Continue, Fail, error, export, parse_config

    class KeyCheck(Plugin):
        \"\"\"Rejects requests whose x-api-key header is not one of `keys`.\"\"\"

        def __init__(self, config):
            self.keys = parse_config(config, required={"keys": list})["keys"]

        def pre_hook(self, ctx, req):
            if ctx.header("x-api-key") in self.keys:
                return Continue()
            return Fail(error(401, "invalid API key", kind="authentication_error",
                              fallbacks=False))

    WitWorld = export(KeyCheck)

Errors: raise :class:`PluginError` (or use :func:`parse_config`, which raises it) for a plugin
failure: the gateway handles it by the plugin's failure policy and names the plugin. Any other
exception is a bug: the instance traps (its traceback goes to the gateway's log and error
message) and the gateway discards it, as it does for a Rust panic.

One instance serves one request at a time and every hook of a request runs on the same
instance, so ``self`` may carry state from a pre-hook to its post-hook; state shared between
instances belongs in :mod:`kv <wasmgate_sdk>` (``kv_get``/``kv_set``/``kv_incr``).
"""

import json
import sys

import componentize_py_types
from wit_world.imports import clock as _clock
from wit_world.imports import context as _context
from wit_world.imports import kv as _kv
from wit_world.imports import logging as _logging
from wit_world.imports import types

# The world's data types (dataclasses), for typed access to requests and responses.
ChatRequest = types.ChatRequest
ChatResponse = types.ChatResponse
Message = types.Message
Choice = types.Choice
Usage = types.Usage
GatewayError = types.GatewayError
StreamChunk = types.StreamChunk
HttpRequest = types.HttpRequest
HttpResponse = types.HttpResponse
HttpRewrite = types.HttpRewrite

__all__ = [
    "ChatRequest", "ChatResponse", "Message", "Choice", "Usage", "GatewayError", "StreamChunk",
    "HttpRequest", "HttpResponse", "HttpRewrite", "Plugin", "PluginError", "Ctx", "export",
    "Request", "Outcome",
    "Continue", "Respond", "Fail", "Keep", "Response", "Failed", "Emit", "Drop", "EndStream", "Pass",
    "Rewrite", "RespondHttp", "error", "assistant_text", "response_text", "last_user_text",
    "extra_field", "set_extra", "header", "parse_config", "config_error", "now_ms", "trace",
    "debug", "info", "warn", "log_error", "kv_get", "kv_set", "kv_incr", "kv_delete",
    "kv_get_json", "kv_set_json",
]


class PluginError(Exception):
    """A plugin failure with a message: the hook returns the world's ``err``, and the gateway
    applies the plugin's failure policy."""


# ---- outcomes -------------------------------------------------------------------------------

def Continue(req=None):
    """Pre-hook: go on. ``Continue()`` keeps the request exactly as received, the cheapest
    answer (nothing is copied back to the gateway); ``Continue(req)`` goes on with an edited
    request: the lent :class:`Request` with its attributes changed, or a :class:`ChatRequest`."""
    if req is None:
        return types.PreOutcome_Pass()
    if isinstance(req, Request):
        req = req.to_request()
    return types.PreOutcome_Continue(req)


def Respond(resp):
    """Pre-hook: skip the provider and answer with this response."""
    return types.PreOutcome_Respond(resp)


def Fail(err):
    """Pre-hook: skip the provider and fail with this :func:`error`."""
    return types.PreOutcome_Fail(err)


def Keep():
    """Post-hook or error stage: hand the outcome (the error) on exactly as received, the
    cheapest answer (nothing is copied back to the gateway). Returning ``None`` means the
    same."""
    return None


def Response(resp):
    """Post-hook outcome: the request succeeded with this response."""
    return types.PostOutcome_Response(resp)


def Failed(err):
    """Post-hook outcome: the request failed with this :func:`error`."""
    return types.PostOutcome_Error(err)


def Emit(chunk=None):
    """Stream-chunk hook: send the chunk on. ``Emit()`` sends it exactly as received, the
    cheapest answer (nothing is copied back to the gateway); ``Emit(chunk)`` sends an edited
    chunk."""
    if chunk is None:
        return types.ChunkOutcome_Pass()
    return types.ChunkOutcome_Emit(chunk)


def Drop():
    """Stream-chunk hook: send nothing for this chunk."""
    return types.ChunkOutcome_Drop()


def EndStream(err):
    """Stream-chunk hook: end the stream with this :func:`error`."""
    return types.ChunkOutcome_Fail(err)


def Pass():
    """Transport interceptor: go on unchanged."""
    return types.TransportOutcome_Pass()


def Rewrite(headers, body):
    """Transport interceptor: go on with these headers and body (bytes)."""
    return types.TransportOutcome_Rewrite(types.HttpRewrite(list(headers), bytes(body)))


def RespondHttp(status, body, headers=None):
    """Transport interceptor: answer the client directly. A ``body`` that is not bytes or str
    is sent as JSON with ``content-type: application/json``."""
    headers = list(headers or [])
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
        headers.append(("content-type", "application/json"))
    return types.TransportOutcome_Respond(types.HttpResponse(status, headers, bytes(body)))


# ---- helpers --------------------------------------------------------------------------------

def error(status, message, *, kind=None, code=None, fallbacks=None, headers=()):
    """A gateway error the client gets with HTTP ``status`` (400-599) if it leaves the gateway.
    ``fallbacks=False`` sends it to the client at once (authentication, validation, security);
    ``None`` (the default) allows the request's fallbacks."""
    return types.GatewayError(message, kind, code, status, fallbacks, list(headers))


def assistant_text(provider, model, text):
    """A response with one assistant choice holding ``text`` (finish reason ``stop``): how a
    plugin answers a request itself."""
    now = now_ms()
    request_id = _context.request_id()
    rid = f"chatcmpl-{request_id}" if request_id else f"chatcmpl-{now}"
    choice = types.Choice(0, types.Message("assistant", text, None), "stop", None)
    return types.ChatResponse(rid, provider, model, now // 1000, [choice], None, "{}")


def response_text(resp):
    """The text of a response's first choice, or None."""
    return resp.choices[0].message.content if resp.choices else None


def last_user_text(req):
    """The text of the request's last ``user`` message, or None."""
    if isinstance(req, Request):
        return req.last_user_text()
    return _last_user_text(req.messages)


def _last_user_text(messages):
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return None


def extra_field(obj, key):
    """A field of ``obj.extra`` (the JSON object of fields without a typed attribute), or None."""
    try:
        extra = json.loads(obj.extra or "{}")
    except ValueError:
        return None
    return extra.get(key) if isinstance(extra, dict) else None


def set_extra(obj, key, value):
    """Sets a field of ``obj.extra`` (a request, response, message or choice)."""
    try:
        extra = json.loads(obj.extra or "{}")
    except ValueError as e:
        raise PluginError(f"extra is not a JSON object: {e}") from None
    if not isinstance(extra, dict):
        raise PluginError("extra is not a JSON object")
    extra[key] = value
    obj.extra = json.dumps(extra, separators=(",", ":"))


def header(headers, name):
    """The first value of header ``name`` (case-insensitive) in a list of (name, value) pairs."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               list: "a list", dict: "an object"}


def config_error(path, problem):
    """The :class:`PluginError` for a config value that is not acceptable:
    ``invalid config: <path>: <problem>``, the same shape as the Rust SDK's."""
    return PluginError(f"invalid config: {path}: {problem}")


def parse_config(text, required=None, optional=None):
    """Parses the JSON config into a dict, checking it like the Rust SDK's ``parse_config``.

    ``required`` and ``optional`` map field names to their type (``str``, ``int``, ``float``,
    ``bool``, ``list``, ``dict``) or, for ``optional``, to ``(type, default)``. Unknown fields,
    missing required ones and values of the wrong type raise a :class:`PluginError` naming the
    field: ``invalid config: greeting: expected a string, got 1``. An empty config is ``{}``.
    """
    required = required or {}
    optional = optional or {}
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise PluginError(f"invalid config: {e}") from None
    if not isinstance(value, dict):
        raise PluginError("invalid config: expected a JSON object")
    known = list(required) + list(optional)
    for key in value:
        if key not in known:
            expected = ", ".join(f"`{k}`" for k in known) or "none"
            raise PluginError(f"invalid config: unknown field `{key}`, expected one of {expected}")
    out = {}
    for key, ty in required.items():
        if key not in value:
            raise PluginError(f"invalid config: missing field `{key}`")
        out[key] = _checked(key, value[key], ty)
    for key, spec in optional.items():
        ty, default = spec if isinstance(spec, tuple) else (spec, None)
        out[key] = _checked(key, value[key], ty) if value.get(key) is not None else default
    return out


def _checked(key, value, ty):
    ok = isinstance(value, ty) and not (ty in (int, float) and isinstance(value, bool))
    if ty is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise config_error(key, f"expected {_TYPE_NAMES.get(ty, ty.__name__)}, got {value!r}")
    return value


# ---- host services --------------------------------------------------------------------------

class Ctx:
    """The request being served: its id, its headers, and values shared by every hook and
    plugin of the request (the gateway's ``gateway.*`` values among them)."""

    def request_id(self):
        """The gateway's id for the current request."""
        return _context.request_id()

    def header(self, name):
        """A request header (case-insensitive name), as left by the transport interceptors."""
        return _context.header(name)

    def get(self, key):
        """A value a hook of this or another plugin stored for this request."""
        return _context.get(key)

    def set(self, key, value):
        """Stores ``value`` (a string) for the rest of this request, visible to every plugin.
        Prefix keys with your plugin's name."""
        _context.set(key, value)

    def plugin_name(self):
        """This plugin's name in the gateway's config (the context value ``gateway.plugin``):
        two entries of one component in a chain have different names. Asked once per instance."""
        global _plugin_name
        if _plugin_name is None:
            _plugin_name = _context.get(_PLUGIN_KEY) or ""
        return _plugin_name

    def state(self, key):
        """What this plugin kept for the current request with :meth:`set_state` under ``key``
        (decoded from JSON), or ``None`` when nothing is kept or it was cleared.

        Request state lives in the request's context, not in the instance: a pre-hook keeps
        what its post-hook needs (or a stream chunk what the next needs) here, and the plugin
        works under every isolation the gateway's config may choose, ``shared`` included, where
        each hook call may run on another instance."""
        full = self._state_key(key)
        return _json_of(_context.get(full), f"context value {full!r}")

    def set_state(self, key, value):
        """Keeps ``value`` (as JSON) for this plugin's later hooks of the current request, under
        ``<plugin name>.<key>`` in the context (which other plugins can read too). Raises
        :class:`PluginError` when its JSON is longer than the gateway keeps per context value
        (``MAX_CONTEXT_VALUE_BYTES``): the gateway would drop it, and a later hook would read
        what was kept before."""
        # ASCII (json.dumps escapes the rest), so its length is its size in bytes.
        text = json.dumps(value, ensure_ascii=True)
        if len(text) > MAX_CONTEXT_VALUE_BYTES:
            raise PluginError(
                f"the state {json.dumps(key)} is {len(text)} bytes as JSON, over the gateway's "
                f"{MAX_CONTEXT_VALUE_BYTES} bytes per context value; keep less of it")
        _context.set(self._state_key(key), text)

    def clear_state(self, key):
        """Forgets what this plugin kept under ``key`` for the current request."""
        _context.set(self._state_key(key), "null")

    def _state_key(self, key):
        return f"{self.plugin_name()}.{key}"


# The longest context value the gateway keeps, in bytes (`context.set` drops longer ones).
MAX_CONTEXT_VALUE_BYTES = 64 * 1024

# The context key the gateway answers with the calling plugin's configured name, and that name
# once asked (per instance).
_PLUGIN_KEY = "gateway.plugin"
_plugin_name = None


def now_ms():
    """Milliseconds since the Unix epoch, from the gateway's clock."""
    return _clock.now_ms()


def _log(level, message):
    _logging.log(level, str(message))


def trace(message):
    """Writes ``message`` to the gateway's log at trace level (tagged with plugin and request)."""
    _log(_logging.Level.TRACE, message)


def debug(message):
    """Writes ``message`` to the gateway's log at debug level."""
    _log(_logging.Level.DEBUG, message)


def info(message):
    """Writes ``message`` to the gateway's log at info level."""
    _log(_logging.Level.INFO, message)


def warn(message):
    """Writes ``message`` to the gateway's log at warn level."""
    _log(_logging.Level.WARN, message)


def log_error(message):
    """Writes ``message`` to the gateway's log at error level."""
    _log(_logging.Level.ERROR, message)


def kv_get(key):
    """The bytes stored under ``key`` in this plugin's namespace, or None (absent or expired)."""
    return _kv.get(key)


def kv_set(key, value, ttl_ms=None):
    """Stores ``value`` (bytes or str) under ``key``; with ``ttl_ms`` it expires."""
    _kv.set(key, value.encode() if isinstance(value, str) else bytes(value), ttl_ms)


def kv_incr(key, delta=1, ttl_ms=None):
    """Atomically adds ``delta`` to the integer under ``key``; returns the new value."""
    return _kv.incr(key, delta, ttl_ms)


def kv_delete(key):
    """Removes ``key``."""
    _kv.delete(key)


def kv_get_json(key):
    """The value under ``key`` decoded from JSON, or None when absent."""
    return _json_of(_kv.get(key), f"kv entry {key!r}")


def _json_of(text, what):
    """``text`` (a string or bytes) decoded from JSON, None when it is None, and a
    :class:`PluginError` naming ``what`` when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise PluginError(f"{what} is not valid JSON: {e}") from None


def kv_set_json(key, value, ttl_ms=None):
    """Stores ``value`` as JSON under ``key``."""
    _kv.set(key, json.dumps(value).encode(), ttl_ms)


# ---- the plugin and its export --------------------------------------------------------------

# ---- what a hook is lent -------------------------------------------------------------------

_REQUEST_FIELDS = ("provider", "model", "messages", "temperature", "top_p", "max_tokens",
                   "stream", "user", "fallbacks", "extra")


class Request:
    """The request a pre-hook is lent, as the plugins before this one left it. Its attributes
    are those of :class:`ChatRequest` (``provider``, ``model``, ``messages``, ``temperature``,
    ``top_p``, ``max_tokens``, ``stream``, ``user``, ``fallbacks``, ``extra``); each is copied
    from the gateway the first time it is read, so a hook pays only for what it reads.

    To edit the request, change its attributes (``req.model = "..."``, or a message in
    ``req.messages``) and return ``Continue(req)``; :meth:`to_request` gives a whole copy.
    """

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, name):
        # Only called for attributes not read yet: read it from the gateway, keep it.
        if name not in _REQUEST_FIELDS:
            raise AttributeError(f"a request has no attribute {name!r}")
        value = getattr(self._handle, name)()
        setattr(self, name, value)
        return value

    def message_count(self):
        """The number of messages, without copying them."""
        if "messages" in self.__dict__:
            return len(self.messages)
        return self._handle.message_count()

    def last_user_text(self):
        """The text of the last ``user`` message, or None; only that text is copied."""
        if "messages" in self.__dict__:
            return _last_user_text(self.messages)
        return self._handle.last_user_text()

    def to_request(self):
        """The whole request as a :class:`ChatRequest`, with the changes made to this one."""
        whole = self._handle.get()
        for name in _REQUEST_FIELDS:
            if name in self.__dict__:
                setattr(whole, name, self.__dict__[name])
        return whole


class Outcome:
    """The outcome a post-hook is lent: a response or an error, as the post-hooks before this
    one left it. The cheap reads copy only what they return: :attr:`is_error`, :attr:`status`,
    :attr:`usage`, :attr:`model`, :attr:`text`, :attr:`finish_reason`, :attr:`error`.
    :meth:`set_extra` adds a field to the response without copying it. :attr:`value` copies the
    whole response or error; change it and return the outcome (or return :func:`Response` /
    :func:`Failed`) to go on with the change."""

    def __init__(self, handle):
        self._handle = handle
        self._whole = None

    @property
    def is_error(self):
        """Whether the outcome is an error."""
        return self._handle.is_error()

    @property
    def status(self):
        """The HTTP status the client would get: 200 for a response, the error's otherwise."""
        return self._handle.status()

    @property
    def usage(self):
        """The response's :class:`Usage`; None for an error or when unknown."""
        return self._handle.usage()

    @property
    def model(self):
        """The model that answered; None for an error."""
        return self._handle.model()

    @property
    def text(self):
        """The text of the response's first choice; None for an error or without text."""
        return self._handle.text()

    @property
    def finish_reason(self):
        """Why the response's first choice stopped; None for an error or when unknown."""
        return self._handle.finish_reason()

    @property
    def error(self):
        """The :class:`GatewayError`; None for a response."""
        return self._handle.error()

    @property
    def value(self):
        """The whole :class:`ChatResponse` or :class:`GatewayError`, copied on first read."""
        return self.to_outcome().value

    def to_outcome(self):
        """The whole outcome, as :func:`Response` or :func:`Failed` would make it."""
        if self._whole is None:
            self._whole = self._handle.get()
        return self._whole

    def set_extra(self, key, value):
        """Sets top-level field ``key`` of the response body to ``value`` (anything
        ``json.dumps`` takes) without copying the response: ``outcome.set_extra("x_cache",
        "miss")`` then ``return None``. The field is set on whatever response the hook hands on,
        the lent one or one it returns; it is dropped if the hook returns an error. Raises
        :class:`PluginError` for an error outcome, for a field the response types itself
        (``id``, ``created``, ``model``, ``choices``, ``usage``) and past the output limit."""
        try:
            self._handle.set_extra(key, json.dumps(value, separators=(",", ":")))
        except componentize_py_types.Err as e:
            raise PluginError(str(e.value)) from None


class Plugin:
    """Base class of a plugin: every hook has a default that leaves the request as it is, and
    :func:`export` reports to the gateway only the hooks a subclass overrides.

    ``name`` (class attribute) is shown in logs and the admin API; it defaults to the class name.
    ``__init__(self, config)`` gets the JSON config text (``{}`` when none is configured); raise
    :class:`PluginError` to reject it.

    ``shared_instances = True`` (class attribute) declares that the plugin keeps nothing about a
    request in ``self`` from one hook to the next (what a later hook needs goes in
    ``ctx.set_state``): the gateway then shares its instances per hook call unless its config
    sets ``isolation``, and a few warm instances serve every request in flight instead of one per
    request.
    """

    name = None
    shared_instances = False

    def __init__(self, config):
        pass

    def transport_interceptor(self, ctx, req):
        """The raw HTTP request (:class:`HttpRequest`), before it is parsed. Return
        :func:`Pass`, :func:`Rewrite` or :func:`RespondHttp`."""
        return Pass()

    def pre_hook(self, ctx, req):
        """Before the provider, in plugin order, with the lent :class:`Request`. Return
        :func:`Continue`, :func:`Respond` or :func:`Fail`."""
        return Continue()

    def post_hook(self, ctx, outcome):
        """After the provider, in reverse order, with the lent :class:`Outcome`
        (``outcome.value`` is the whole response or error). Return :func:`Keep` (or ``None``)
        to hand it on unchanged, else the outcome to go on with (``outcome`` edited,
        :func:`Response` or :func:`Failed`)."""
        return Keep()

    def stream_chunk(self, ctx, chunk):
        """Each chunk of a streamed answer. Return :func:`Emit` (``Emit()``: unchanged),
        :func:`Drop` or :func:`EndStream`."""
        return Emit()

    def on_error(self, ctx, err):
        """The error stage: rewrite the final :class:`GatewayError` and return it, or return
        :func:`Keep` (or ``None``) to hand it on unchanged."""
        return Keep()

    def cleanup(self):
        """Called once when the instance is retired."""


_HOOKS = {
    "transport_interceptor": types.Hooks.TRANSPORT_INTERCEPTOR,
    "pre_hook": types.Hooks.PRE_HOOK,
    "post_hook": types.Hooks.POST_HOOK,
    "stream_chunk": types.Hooks.STREAM_CHUNK,
    "on_error": types.Hooks.ON_ERROR,
    "cleanup": types.Hooks.CLEANUP,
}


def hooks_of(cls):
    """The world's ``hooks`` flags for the hooks ``cls`` overrides, and ``SHARED_INSTANCES`` when
    ``cls`` declares ``shared_instances``."""
    flags = types.Hooks.SHARED_INSTANCES if cls.shared_instances is True else types.Hooks(0)
    for method, flag in _HOOKS.items():
        if getattr(cls, method) is not getattr(Plugin, method):
            flags |= flag
    return flags


def export(cls):
    """The ``WitWorld`` class componentize-py exports, running the plugin class ``cls``: assign
    it to ``WitWorld`` in the module ``app``."""
    hooks = hooks_of(cls)
    name = cls.name or cls.__name__
    ctx = Ctx()
    state = {}

    def instance():
        plugin = state.get("plugin")
        if plugin is None:
            raise componentize_py_types.Err(f"plugin {name} not initialised")
        return plugin

    def call(method, *args):
        try:
            return method(*args)
        except PluginError as e:
            raise componentize_py_types.Err(str(e)) from None

    class WitWorld:
        def get_name(self):
            return name

        def hooks(self):
            return hooks

        def init(self, config):
            state["plugin"] = call(cls, config)

        def transport_interceptor(self, req):
            return call(instance().transport_interceptor, ctx, req)

        def pre_hook(self, req):
            return call(instance().pre_hook, ctx, Request(req))

        def post_hook(self, outcome):
            result = call(instance().post_hook, ctx, Outcome(outcome))
            if isinstance(result, Outcome):
                result = result.to_outcome()
            return result

        def stream_chunk(self, chunk):
            return call(instance().stream_chunk, ctx, chunk)

        def on_error(self, err):
            return call(instance().on_error, ctx, err)

        def cleanup(self):
            plugin = state.pop("plugin", None)
            if plugin is not None:
                call(plugin.cleanup)

    WitWorld.__module__ = sys._getframe(1).f_globals.get("__name__", "app")
    return WitWorld
