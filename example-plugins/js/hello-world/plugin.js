// `hello-world` in JavaScript: the smallest plugin that takes part in every hook, and logs each
// call.
//
// The same plugin as the Rust `example-plugins/hello-world`: each hook logs one line at info
// level with the request id (and, for the pre- and post-hook, the provider and model), then
// leaves the request unchanged. The stream-chunk hook logs the first and the last chunk of a
// stream; the error stage logs the final error's status.
//
// Config (all optional, unknown fields rejected):
//
// | field      | type   | default   | meaning                      |
// |------------|--------|-----------|------------------------------|
// | `greeting` | string | `"hello"` | first word of every log line |

import { Continue, Emit, Keep, Pass, Plugin, exportPlugin, log, parseConfig } from '../../../plugin-sdk/js/wasmgate.js';

/** Logs every hook it sees. */
class HelloWorld extends Plugin {
  static pluginName = 'hello-world';
  // Nothing about a request is kept in `this`: any instance may serve any call.
  static sharedInstances = true;

  constructor(config) {
    super();
    this.greeting = parseConfig(config, { optional: { greeting: ['string', 'hello'] } }).greeting;
    log.info(`${this.greeting} from init`);
  }

  transportInterceptor(ctx, req) {
    log.info(`${this.greeting} from transport: request ${ctx.requestId()}, ${req.method} ${req.path}`);
    return Pass();
  }

  preHook(ctx, req) {
    log.info(`${this.greeting} from pre-hook: request ${ctx.requestId()}, ${req.provider}/${req.model}`);
    return Continue();
  }

  postHook(ctx, outcome) {
    const what =
      outcome.tag === 'response'
        ? `response from ${outcome.val.provider}/${outcome.val.model}`
        : `error ${outcome.val.status}: ${outcome.val.message}`;
    log.info(`${this.greeting} from post-hook: request ${ctx.requestId()}, ${what}`);
    return Keep();
  }

  streamChunk(ctx, chunk) {
    // Once per stream, not per chunk: streams can have hundreds.
    if (chunk.index === 0) {
      log.info(`${this.greeting} from stream-chunk: request ${ctx.requestId()}, first chunk`);
    }
    if (chunk.finishReason !== undefined) {
      log.info(
        `${this.greeting} from stream-chunk: request ${ctx.requestId()}, chunk ${chunk.index} ` +
          `ends the stream (${chunk.finishReason})`,
      );
    }
    return Emit();
  }

  onError(ctx, err) {
    log.info(`${this.greeting} from on-error: request ${ctx.requestId()} ends in error ${err.status}`);
    return Keep();
  }

  cleanup() {
    log.info(`${this.greeting} from cleanup`);
  }
}

export const { getName, hooks, init, transportInterceptor, preHook, postHook, streamChunk, onError, cleanup } =
  exportPlugin(HelloWorld);
