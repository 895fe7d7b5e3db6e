// `scripted` in JavaScript: the port of the Rust test plugin `tests/test-plugins/scripted`, so
// the pipeline-semantics tests run against the same behaviour in JavaScript.
//
// Same config language and trace as the Rust plugin (see its `//!` header) and the Python port
// (`tests/test-plugins/python/scripted/app.py`, which lists the supported actions): every hook
// appends `<tag>.<hook>` to the context value `trace`, and the post-hook writes the whole trace
// into the outcome (a response's body field `trace`, an error's code `trace:<trace>`). `trap`
// throws an exception other than `PluginError`, which traps the instance (a Rust panic); `error`
// throws `PluginError` (a plugin error). The memory and stack actions are not ported.

import {
  Continue, Drop, Emit, EndStream, Fail, Failed, Keep, Pass, Plugin, PluginError, Respond,
  RespondHttp, Response, Rewrite, assistantText, configError, error, exportPlugin, log, nowMs,
  parseConfig, setExtra, store,
} from '../../../../plugin-sdk/js/wasmgate.js';

const ACTIONS = {
  transport: ['pass', ['pass', 'error', 'trap', 'loop'], ['rewrite-header:', 'respond:']],
  pre: ['continue', ['continue', 'pass', 'respond', 'fail', 'fail-no-fallbacks', 'error', 'trap', 'loop'], ['set-model:', 'sleep-ms:', 'keep-state:']],
  post: ['pass', ['pass', 'keep', 'recover', 'to-error', 'error', 'trap', 'loop', 'annotate'], []],
  init: ['ok', ['ok', 'fail', 'trap'], []],
  cleanup: ['ok', ['ok', 'trap', 'loop'], []],
  on_error: ['pass', ['pass', 'mask', 'error', 'trap'], []],
  chunk: ['pass', ['pass', 'upper', 'drop-odd', 'error', 'trap'], ['fail-at:']],
};

/** The checked action of `field`: `{ name }`, or `{ name: prefix, arg }` for `name:<arg>`. */
function action(config, field) {
  const [fallback, names, prefixes] = ACTIONS[field];
  const value = config[field] ?? fallback;
  if (names.includes(value)) return { name: value };
  for (const prefix of prefixes) {
    if (!value.startsWith(prefix)) continue;
    const arg = value.slice(prefix.length);
    if (prefix === 'rewrite-header:') {
      const at = arg.indexOf('=');
      if (at < 1) throw configError(field, `expected rewrite-header:<name>=<value>, got "${value}"`);
      return { name: prefix, arg: [arg.slice(0, at).toLowerCase(), arg.slice(at + 1)] };
    }
    if (prefix === 'set-model:') return { name: prefix, arg };
    const n = /^\d+$/.test(arg) ? Number(arg) : NaN;
    if (Number.isNaN(n) || (prefix === 'respond:' && (n < 100 || n > 599))) {
      throw configError(field, `expected ${prefix}<number>, got "${value}"`);
    }
    return { name: prefix, arg: n };
  }
  const expected = [...names, ...prefixes.map((p) => `${p}<...>`)].join(', ');
  throw configError(field, `unknown action "${value}", expected one of: ${expected}`);
}

/** Spins forever (until the gateway's deadline or fuel stops the call). */
function spin() {
  for (let n = 0; ; n++);
}

/** Does in each hook what its config says, and leaves a trace. */
class Scripted extends Plugin {
  static pluginName = 'scripted';

  constructor(config) {
    super();
    const optional = { pre_only_provider: 'string' };
    for (const field of Object.keys(ACTIONS)) optional[field] = 'string';
    const c = parseConfig(config, { required: { tag: 'string' }, optional });
    this.tag = c.tag;
    this.only = c.pre_only_provider;
    this.actions = {};
    for (const field of Object.keys(ACTIONS)) this.actions[field] = action(c, field);
    const what = this.actions.init.name;
    if (what === 'fail') throw new PluginError(`init failed by ${this.tag}`);
    if (what === 'trap') throw new Error(`trap in ${this.tag}`);
    // Counted so tests can check that init and cleanup run once per instance.
    store.incr('inits', 1);
  }

  /** Appends `<tag>.<hook>` to the context's `trace`; returns the new trace. */
  trace(ctx, hook) {
    const before = ctx.get('trace');
    const trace = before ? `${before},${this.tag}.${hook}` : `${this.tag}.${hook}`;
    ctx.set('trace', trace);
    return trace;
  }

  /** The actions every hook shares. */
  common(what) {
    if (what.name === 'error') throw new PluginError(`error from ${this.tag}`);
    if (what.name === 'trap') throw new Error(`trap in ${this.tag}`);
    if (what.name === 'loop') spin();
  }

  transportInterceptor(ctx, req) {
    this.trace(ctx, 'transport');
    const what = this.actions.transport;
    this.common(what);
    if (what.name === 'rewrite-header:') {
      const [name, value] = what.arg;
      const headers = req.headers.filter(([n]) => n.toLowerCase() !== name);
      headers.push([name, value]);
      return Rewrite(headers, req.body);
    }
    if (what.name === 'respond:') return RespondHttp(what.arg, { by: this.tag });
    return Pass();
  }

  preHook(ctx, req) {
    this.trace(ctx, 'pre');
    // Kept in the request's context, not in the instance: any instance may serve the post-hook.
    ctx.setState('last', [req.provider, req.model]);
    if (this.only !== undefined && this.only !== req.provider) return Continue(req);
    const what = this.actions.pre;
    const tag = this.tag;
    this.common(what);
    switch (what.name) {
      case 'pass':
        return Continue();
      case 'respond':
        return Respond(assistantText(req.provider, req.model, `responded by ${tag}`));
      case 'fail':
        return Fail(error(503, `failed by ${tag}`, { kind: 'server_error' }));
      case 'fail-no-fallbacks':
        return Fail(error(403, `failed by ${tag}`, { kind: 'server_error', fallbacks: false }));
      case 'set-model:':
        req.model = what.arg;
        break;
      case 'sleep-ms:': {
        const end = nowMs() + what.arg;
        while (nowMs() < end);
        break;
      }
      case 'keep-state:':
        ctx.setState('pad', 'x'.repeat(what.arg));
        return Continue();
    }
    return Continue(req);
  }

  postHook(ctx, outcome) {
    const trace = this.trace(ctx, 'post');
    const what = this.actions.post;
    this.common(what);
    if (what.name === 'keep') return Keep();
    if (what.name === 'annotate') return this.annotate(outcome);
    if (what.name === 'recover' && outcome.tag === 'error') {
      const [provider, model] = ctx.state('last') ?? ['', ''];
      outcome = Response(assistantText(provider, model, `recovered by ${this.tag}`));
    } else if (what.name === 'to-error' && outcome.tag === 'response') {
      outcome = Failed(error(502, `converted by ${this.tag}`));
    }
    // The whole trace so far, this hook included.
    if (outcome.tag === 'response') setExtra(outcome.val, 'trace', trace);
    else outcome.val.code = `trace:${trace}`;
    return outcome;
  }

  /** Sets `annotated_by` and `typed_refusal` through the lent outcome (see the Rust plugin). */
  annotate(outcome) {
    let refused = null;
    try {
      outcome.setExtra('model', 'not a typed field');
    } catch (e) {
      refused = e.message;
    }
    try {
      outcome.setExtra('annotated_by', this.tag);
    } catch (e) {
      const err = outcome.error;
      err.message = `annotate refused: ${e.message}`;
      return Failed(err);
    }
    outcome.setExtra('typed_refusal', refused);
    return Keep();
  }

  streamChunk(ctx, chunk) {
    if (chunk.index === 0) this.trace(ctx, 'chunk');
    const what = this.actions.chunk;
    this.common(what);
    if (what.name === 'upper' && chunk.content !== undefined) {
      chunk.content = chunk.content.toUpperCase();
      return Emit(chunk);
    }
    if (what.name === 'drop-odd' && chunk.index % 2 === 1) return Drop();
    if (what.name === 'fail-at:' && chunk.index === what.arg) {
      return EndStream(error(502, `stream cut by ${this.tag}`));
    }
    return Emit();
  }

  onError(ctx, err) {
    this.trace(ctx, 'error');
    const what = this.actions.on_error;
    this.common(what);
    if (what.name === 'mask') {
      err.message = `masked by ${this.tag}`;
      err.headers.push(['x-masked-by', this.tag]);
      return err;
    }
    return Keep();
  }

  cleanup() {
    log.debug(`cleanup of ${this.tag}`);
    store.incr('cleanups', 1);
    this.common(this.actions.cleanup);
  }
}

export const { getName, hooks, init, transportInterceptor, preHook, postHook, streamChunk, onError, cleanup } =
  exportPlugin(Scripted);
