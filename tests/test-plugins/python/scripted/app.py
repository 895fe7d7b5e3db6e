"""`scripted` in Python: the port of the Rust test plugin `tests/test-plugins/scripted`, so the
pipeline-semantics tests run against the same behaviour in Python.

Same config language and trace as the Rust plugin (see its `//!` header): every hook appends
`<tag>.<hook>` to the context value `trace`, and the post-hook writes the whole trace into the
outcome (a response's body field `trace`, an error's code `trace:<trace>`). Supported actions:

| field               | values                                                                 |
|---------------------|------------------------------------------------------------------------|
| `tag`               | (required) names the plugin in the trace                               |
| `transport`         | `pass`, `rewrite-header:<name>=<value>`, `respond:<status>`, `error`, `trap`, `loop` |
| `pre`               | `continue`, `respond`, `fail`, `fail-no-fallbacks`, `error`, `trap`, `loop`, `set-model:<model>`, `sleep-ms:<n>`, `keep-state:<n>` |
| `post`              | `pass`, `keep`, `recover`, `to-error`, `error`, `trap`, `loop`, `annotate` |
| `pre_only_provider` | the pre action applies only to requests for this provider             |
| `init`              | `ok`, `fail`, `trap` (`inits` counted in kv)                           |
| `cleanup`           | `ok`, `trap`, `loop` (`cleanups` counted in kv)                        |
| `on_error`          | `pass`, `mask`, `error`, `trap`                                        |
| `chunk`             | `pass`, `upper`, `drop-odd`, `fail-at:<n>`, `error`, `trap`            |

`trap` raises an exception other than `PluginError`, which traps the instance (a Rust panic);
`error` raises `PluginError` (a plugin error). The Rust plugin's memory and stack actions (`grow`,
`recurse`, ...) exercise the runtime's limits, not the pipeline, and are not ported.
"""

from wasmgate_sdk import (
    Continue, Drop, Emit, EndStream, Fail, Failed, Keep, Pass, Plugin, PluginError, RespondHttp,
    Respond, Response, Rewrite, assistant_text, config_error, debug, error, export, kv_incr,
    now_ms, parse_config, set_extra,
)

ACTIONS = {
    "transport": ("pass", ["pass", "error", "trap", "loop"], ["rewrite-header:", "respond:"]),
    "pre": ("continue", ["continue", "pass", "respond", "fail", "fail-no-fallbacks", "error", "trap",
                         "loop"], ["set-model:", "sleep-ms:", "keep-state:"]),
    "post": ("pass", ["pass", "keep", "recover", "to-error", "error", "trap", "loop", "annotate"],
             []),
    "init": ("ok", ["ok", "fail", "trap"], []),
    "cleanup": ("ok", ["ok", "trap", "loop"], []),
    "on_error": ("pass", ["pass", "mask", "error", "trap"], []),
    "chunk": ("pass", ["pass", "upper", "drop-odd", "error", "trap"], ["fail-at:"]),
}


def action(config, field):
    """The checked action of `field`: a plain name, or (prefix, argument) for `name:<arg>`."""
    default, names, prefixes = ACTIONS[field]
    value = config[field] or default
    if value in names:
        return value
    for prefix in prefixes:
        if value.startswith(prefix):
            arg = value[len(prefix):]
            if prefix == "rewrite-header:":
                name, sep, header_value = arg.partition("=")
                if not sep or not name:
                    raise config_error(field, f"expected rewrite-header:<name>=<value>, got {value!r}")
                return prefix, (name.lower(), header_value)
            if prefix in ("respond:", "sleep-ms:", "fail-at:", "keep-state:"):
                if not arg.isdigit() or (prefix == "respond:" and not 100 <= int(arg) <= 599):
                    raise config_error(field, f"expected {prefix}<number>, got {value!r}")
                return prefix, int(arg)
            return prefix, arg
    expected = ", ".join(names + [p + "<...>" for p in prefixes])
    raise config_error(field, f"unknown action {value!r}, expected one of: {expected}")


def spin():
    """Spins forever (until the gateway's deadline or fuel stops the call)."""
    n = 0
    while True:
        n += 1


class Scripted(Plugin):
    """Does in each hook what its config says, and leaves a trace."""

    name = "scripted"

    def __init__(self, config):
        c = parse_config(config, required={"tag": str},
                         optional={field: str for field in ACTIONS} | {"pre_only_provider": str})
        self.tag = c["tag"]
        self.only = c["pre_only_provider"]
        self.actions = {field: action(c, field) for field in ACTIONS}
        what = self.actions["init"]
        if what == "fail":
            raise PluginError(f"init failed by {self.tag}")
        if what == "trap":
            raise RuntimeError(f"trap in {self.tag}")
        # Counted so tests can check that init and cleanup run once per instance.
        kv_incr("inits", 1)

    def trace(self, ctx, hook):
        """Appends `<tag>.<hook>` to the context's `trace`; returns the new trace."""
        before = ctx.get("trace")
        trace = f"{before},{self.tag}.{hook}" if before else f"{self.tag}.{hook}"
        ctx.set("trace", trace)
        return trace

    def common(self, what):
        """The actions every hook shares."""
        if what == "error":
            raise PluginError(f"error from {self.tag}")
        if what == "trap":
            raise RuntimeError(f"trap in {self.tag}")
        if what == "loop":
            spin()

    def transport_interceptor(self, ctx, req):
        self.trace(ctx, "transport")
        what = self.actions["transport"]
        self.common(what)
        if isinstance(what, tuple) and what[0] == "rewrite-header:":
            name, value = what[1]
            headers = [(n, v) for n, v in req.headers if n.lower() != name] + [(name, value)]
            return Rewrite(headers, req.body)
        if isinstance(what, tuple) and what[0] == "respond:":
            return RespondHttp(what[1], {"by": self.tag})
        return Pass()

    def pre_hook(self, ctx, req):
        self.trace(ctx, "pre")
        # Kept in the request's context, not in the instance: any instance may serve the post-hook.
        ctx.set_state("last", [req.provider, req.model])
        if self.only is not None and self.only != req.provider:
            return Continue(req)
        what, tag = self.actions["pre"], self.tag
        self.common(what)
        if what == "pass":
            return Continue()
        if what == "respond":
            return Respond(assistant_text(req.provider, req.model, f"responded by {tag}"))
        if what == "fail":
            return Fail(error(503, f"failed by {tag}", kind="server_error"))
        if what == "fail-no-fallbacks":
            return Fail(error(403, f"failed by {tag}", kind="server_error", fallbacks=False))
        if isinstance(what, tuple) and what[0] == "set-model:":
            req.model = what[1]
        elif isinstance(what, tuple) and what[0] == "sleep-ms:":
            end = now_ms() + what[1]
            while now_ms() < end:
                pass
        elif isinstance(what, tuple) and what[0] == "keep-state:":
            ctx.set_state("pad", "x" * what[1])
            return Continue()
        return Continue(req)

    def post_hook(self, ctx, outcome):
        trace = self.trace(ctx, "post")
        what, tag = self.actions["post"], self.tag
        self.common(what)
        if what == "keep":
            return Keep()
        if what == "annotate":
            return self.annotate(outcome)
        is_error = not hasattr(outcome.value, "choices")
        if what == "recover" and is_error:
            provider, model = ctx.state("last") or ["", ""]
            outcome = Response(assistant_text(provider, model, f"recovered by {tag}"))
        elif what == "to-error" and not is_error:
            outcome = Failed(error(502, f"converted by {tag}"))
        # The whole trace so far, this hook included.
        if hasattr(outcome.value, "choices"):
            set_extra(outcome.value, "trace", trace)
        else:
            outcome.value.code = f"trace:{trace}"
        return outcome

    def annotate(self, outcome):
        """Sets `annotated_by` and `typed_refusal` through the lent outcome (see the Rust plugin)."""
        try:
            outcome.set_extra("model", "not a typed field")
            refused = None
        except PluginError as e:
            refused = str(e)
        try:
            outcome.set_extra("annotated_by", self.tag)
        except PluginError as e:
            err = outcome.error
            err.message = f"annotate refused: {e}"
            return Failed(err)
        outcome.set_extra("typed_refusal", refused)
        return Keep()

    def stream_chunk(self, ctx, chunk):
        if chunk.index == 0:
            self.trace(ctx, "chunk")
        what = self.actions["chunk"]
        self.common(what)
        if what == "upper" and chunk.content is not None:
            chunk.content = chunk.content.upper()
            return Emit(chunk)
        if what == "drop-odd" and chunk.index % 2 == 1:
            return Drop()
        if isinstance(what, tuple) and chunk.index == what[1]:
            return EndStream(error(502, f"stream cut by {self.tag}"))
        return Emit()

    def on_error(self, ctx, err):
        self.trace(ctx, "error")
        what = self.actions["on_error"]
        self.common(what)
        if what == "mask":
            err.message = f"masked by {self.tag}"
            err.headers.append(("x-masked-by", self.tag))
            return err
        return Keep()

    def cleanup(self):
        debug(f"cleanup of {self.tag}")
        kv_incr("cleanups", 1)
        self.common(self.actions["cleanup"])


WitWorld = export(Scripted)
