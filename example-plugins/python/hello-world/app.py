"""`hello-world` in Python: the smallest plugin that takes part in every hook, and logs each call.

The same plugin as the Rust `example-plugins/hello-world`: each hook logs one line at info level
with the request id (and, for the pre- and post-hook, the provider and model), then leaves the
request unchanged. The stream-chunk hook logs the first and the last chunk of a stream; the error
stage logs the final error's status.

Config (all optional, unknown fields rejected):

| field      | type   | default   | meaning                      |
|------------|--------|-----------|------------------------------|
| `greeting` | string | `"hello"` | first word of every log line |
"""

from wasmgate_sdk import Continue, Emit, Keep, Pass, Plugin, export, info, parse_config


class HelloWorld(Plugin):
    """Logs every hook it sees."""

    name = "hello-world"
    # Nothing about a request is kept in `self`: any instance may serve any call.
    shared_instances = True

    def __init__(self, config):
        self.greeting = parse_config(config, optional={"greeting": (str, "hello")})["greeting"]
        info(f"{self.greeting} from init")

    def transport_interceptor(self, ctx, req):
        info(f"{self.greeting} from transport: request {ctx.request_id()}, {req.method} {req.path}")
        return Pass()

    def pre_hook(self, ctx, req):
        info(f"{self.greeting} from pre-hook: request {ctx.request_id()}, "
             f"{req.provider}/{req.model}")
        return Continue()

    def post_hook(self, ctx, outcome):
        value = outcome.value
        if hasattr(value, "choices"):
            what = f"response from {value.provider}/{value.model}"
        else:
            what = f"error {value.status}: {value.message}"
        info(f"{self.greeting} from post-hook: request {ctx.request_id()}, {what}")
        return Keep()

    def stream_chunk(self, ctx, chunk):
        # Once per stream, not per chunk: streams can have hundreds.
        if chunk.index == 0:
            info(f"{self.greeting} from stream-chunk: request {ctx.request_id()}, first chunk")
        if chunk.finish_reason is not None:
            info(f"{self.greeting} from stream-chunk: request {ctx.request_id()}, chunk "
                 f"{chunk.index} ends the stream ({chunk.finish_reason})")
        return Emit()

    def on_error(self, ctx, err):
        info(f"{self.greeting} from on-error: request {ctx.request_id()} ends in error {err.status}")
        return Keep()

    def cleanup(self):
        info(f"{self.greeting} from cleanup")


WitWorld = export(HelloWorld)
