// Write wasmgate gateway plugins in JavaScript.
//
// A plugin is a class extending `Plugin` whose constructor takes the JSON config and which
// overrides the hooks it needs; `export const { getName, hooks, init, ... } = exportPlugin(MyPlugin)`
// in the plugin's `plugin.js` turns it into the component's implementation of the
// `wasmgate:plugin` world (build it with `componentize-js plugin.js --wit wit -n plugin
// -d http fetch-event -o plugin.wasm`). The gateway is told exactly which hooks the class
// overrides and never calls the others.
//
//   import { Plugin, Continue, Fail, error, exportPlugin, parseConfig } from './wasmgate.js';
//
//   /** Rejects requests whose x-api-key header is not one of `keys`. */
//   class KeyCheck extends Plugin {
//     constructor(config) {
//       super();
//       this.keys = parseConfig(config, { required: { keys: 'list' } }).keys;
//     }
//     preHook(ctx, req) {
//       if (this.keys.includes(ctx.header('x-api-key'))) return Continue();
//       return Fail(error(401, 'invalid API key', { kind: 'authentication_error', fallbacks: false }));
//     }
//   }
//   export const { getName, hooks, init, transportInterceptor, preHook, postHook, streamChunk,
//     onError, cleanup } = exportPlugin(KeyCheck);
//
// Values follow the component model's JavaScript mapping: records are objects with camelCase
// fields (`req.maxTokens`, `err.allowFallbacks`), `option` is a value or `undefined`, byte lists
// are `Uint8Array`s, variants are `{ tag, val }` (the constructors below build them).
//
// Errors: throw a `PluginError` (or use `parseConfig`, which does) for a plugin failure: the
// gateway handles it by the plugin's failure policy and names the plugin. Any other exception is
// a bug: the instance traps and the gateway discards it, as it does for a Rust panic.

import { log as hostLog } from 'wasmgate:plugin/logging@0.7.0';
import { nowMs as hostNowMs } from 'wasmgate:plugin/clock@0.7.0';
import * as context from 'wasmgate:plugin/context@0.7.0';
import * as kv from 'wasmgate:plugin/kv@0.7.0';

/** A plugin failure with a message: the hook returns the world's `err`. */
export class PluginError extends Error {
  constructor(message) {
    super(message);
    // componentize-js turns a thrown value with an own `payload` into the `err` case.
    this.payload = message;
  }
}

// ---- outcomes ------------------------------------------------------------------------------

/**
 * Pre-hook: go on. `Continue()` keeps the request exactly as received, the cheapest answer
 * (nothing is copied back to the gateway); `Continue(req)` goes on with an edited request.
 */
export const Continue = (req) => {
  if (req === undefined) return { tag: 'pass' };
  return { tag: 'continue', val: req instanceof Request ? req.toRequest() : req };
};
/** Pre-hook: skip the provider and answer with this response. */
export const Respond = (resp) => ({ tag: 'respond', val: resp });
/** Pre-hook: skip the provider and fail with this `error(...)`. */
export const Fail = (err) => ({ tag: 'fail', val: err });
/**
 * Post-hook or error stage: hand the outcome (the error) on exactly as received, the cheapest
 * answer (nothing is copied back to the gateway). Returning nothing (`undefined`) means the same.
 */
export const Keep = () => undefined;
/** Post-hook outcome: the request succeeded with this response. */
export const Response = (resp) => ({ tag: 'response', val: resp });
/** Post-hook outcome: the request failed with this `error(...)`. */
export const Failed = (err) => ({ tag: 'error', val: err });
/**
 * Stream-chunk hook: send the chunk on. `Emit()` sends it exactly as received, the cheapest
 * answer (nothing is copied back to the gateway); `Emit(chunk)` sends an edited chunk.
 */
export const Emit = (chunk) =>
  chunk === undefined ? { tag: 'pass' } : { tag: 'emit', val: chunk };
/** Stream-chunk hook: send nothing for this chunk. */
export const Drop = () => ({ tag: 'drop' });
/** Stream-chunk hook: end the stream with this `error(...)`. */
export const EndStream = (err) => ({ tag: 'fail', val: err });
/** Transport interceptor: go on unchanged. */
export const Pass = () => ({ tag: 'pass' });
/** Transport interceptor: go on with these headers ([name, value] pairs) and body. */
export const Rewrite = (headers, body) => ({ tag: 'rewrite', val: { headers, body: bytes(body) } });

/**
 * Transport interceptor: answer the client directly. A `body` that is not a string or bytes is
 * sent as JSON with `content-type: application/json`.
 */
export function RespondHttp(status, body, headers = []) {
  headers = [...headers];
  if (typeof body !== 'string' && !(body instanceof Uint8Array)) {
    body = JSON.stringify(body);
    headers.push(['content-type', 'application/json']);
  }
  return { tag: 'respond', val: { status, headers, body: bytes(body) } };
}

// ---- what a hook is lent --------------------------------------------------------------------

const REQUEST_FIELDS = [
  'provider', 'model', 'messages', 'temperature', 'topP', 'maxTokens', 'stream', 'user',
  'fallbacks', 'extra',
];

/**
 * The request a pre-hook is lent, as the plugins before this one left it. Its fields are those
 * of the world's `chat-request` (`provider`, `model`, `messages`, `temperature`, `topP`,
 * `maxTokens`, `stream`, `user`, `fallbacks`, `extra`); each is copied from the gateway the
 * first time it is read, so a hook pays only for what it reads. To edit the request, assign its
 * fields (or change a message in `req.messages`) and return `Continue(req)`.
 */
export class Request {
  constructor(handle) {
    this._handle = handle;
    this._values = {};
  }
  /** The number of messages, without copying them. */
  messageCount() {
    return 'messages' in this._values ? this._values.messages.length : this._handle.messageCount();
  }
  /** The text of the last `user` message, or undefined; only that text is copied. */
  lastUserText() {
    if ('messages' in this._values) return lastUserText(this._values);
    return this._handle.lastUserText();
  }
  /** The whole request as a plain `chat-request` object, with the changes made to this one. */
  toRequest() {
    return { ...this._handle.get(), ...this._values };
  }
}
for (const name of REQUEST_FIELDS) {
  Object.defineProperty(Request.prototype, name, {
    get() {
      if (!(name in this._values)) this._values[name] = this._handle[name]();
      return this._values[name];
    },
    set(value) {
      this._values[name] = value;
    },
  });
}

/**
 * The outcome a post-hook is lent: a response or an error, as the post-hooks before this one
 * left it. The cheap reads copy only what they return: `isError`, `status`, `usage`, `model`,
 * `text`, `finishReason`, `error`. `setExtra` adds a field to the response without copying it.
 * `tag` is 'response' or 'error' and `val` the whole response or error (copied on first read):
 * change `val` and return the outcome, or return `Response(..)` / `Failed(..)`, to go on with
 * a change.
 */
export class Outcome {
  constructor(handle) {
    this._handle = handle;
    this._whole = undefined;
  }
  /** Whether the outcome is an error. */
  get isError() {
    return this._whole === undefined ? this._handle.isError() : this._whole.tag === 'error';
  }
  /** 'response' or 'error'. */
  get tag() {
    return this.isError ? 'error' : 'response';
  }
  /** The whole response or error. */
  get val() {
    return this.toOutcome().val;
  }
  /** The HTTP status the client would get: 200 for a response, the error's otherwise. */
  get status() {
    return this._handle.status();
  }
  /** The response's token usage; undefined for an error or when unknown. */
  get usage() {
    return this._handle.usage();
  }
  /** The model that answered; undefined for an error. */
  get model() {
    return this._handle.model();
  }
  /** The text of the response's first choice; undefined for an error or without text. */
  get text() {
    return this._handle.text();
  }
  /** Why the response's first choice stopped; undefined for an error or when unknown. */
  get finishReason() {
    return this._handle.finishReason();
  }
  /** The error; undefined for a response. */
  get error() {
    return this._handle.error();
  }
  /** The whole outcome, `{ tag, val }`, as `Response(..)` or `Failed(..)` would make it. */
  toOutcome() {
    if (this._whole === undefined) this._whole = this._handle.get();
    return this._whole;
  }
  /**
   * Sets top-level field `key` of the response body to `value` (anything `JSON.stringify`
   * takes) without copying the response: `outcome.setExtra('x_cache', 'miss')`, then return
   * nothing. The field is set on whatever response the hook hands on, the lent one or one it
   * returns; it is dropped if the hook returns an error. Throws a `PluginError` for an error
   * outcome, for a field the response types itself (`id`, `created`, `model`, `choices`,
   * `usage`) and past the output limit.
   */
  setExtra(key, value) {
    try {
      this._handle.setExtra(key, JSON.stringify(value));
    } catch (e) {
      throw new PluginError(typeof e?.payload === 'string' ? e.payload : String(e?.message ?? e));
    }
  }
}

/** The outcome's response when it is one (post-hook), else undefined. */
export const responseOf = (outcome) => (outcome.tag === 'response' ? outcome.val : undefined);
/** The outcome's error when it is one (post-hook), else undefined. */
export const errorOf = (outcome) => (outcome.tag === 'error' ? outcome.val : undefined);

// ---- helpers -------------------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string (bytes are returned as they are). */
export const bytes = (value) => (typeof value === 'string' ? encoder.encode(value) : value);
/** The string of UTF-8 bytes. */
export const text = (value) => decoder.decode(value);

/**
 * A gateway error the client gets with HTTP `status` (400-599) if it leaves the gateway.
 * `fallbacks: false` sends it to the client at once (authentication, validation, security);
 * undefined (the default) allows the request's fallbacks.
 */
export function error(status, message, { kind, code, fallbacks, headers = [] } = {}) {
  return { message, kind, code, status, allowFallbacks: fallbacks, headers: [...headers] };
}

/** A response with one assistant choice holding `text`: how a plugin answers a request itself. */
export function assistantText(provider, model, content) {
  const now = nowMs();
  const requestId = context.requestId();
  return {
    id: requestId ? `chatcmpl-${requestId}` : `chatcmpl-${now}`,
    provider,
    model,
    created: BigInt(Math.floor(now / 1000)),
    choices: [{ index: 0, message: { role: 'assistant', content }, finishReason: 'stop' }],
    usage: undefined,
    extra: '{}',
  };
}

/** The text of the request's last `user` message, or undefined. */
export function lastUserText(req) {
  if (req instanceof Request) return req.lastUserText();
  for (let i = req.messages.length - 1; i >= 0; i--) {
    if (req.messages[i].role === 'user') return req.messages[i].content;
  }
  return undefined;
}

/** A field of `obj.extra` (the JSON object of fields without a typed one), or undefined. */
export function extraField(obj, key) {
  try {
    const extra = JSON.parse(obj.extra || '{}');
    return extra && typeof extra === 'object' ? extra[key] : undefined;
  } catch {
    return undefined;
  }
}

/** Sets a field of `obj.extra` (a request, response, message or choice). */
export function setExtra(obj, key, value) {
  let extra;
  try {
    extra = JSON.parse(obj.extra || '{}');
  } catch (e) {
    throw new PluginError(`extra is not a JSON object: ${e.message}`);
  }
  if (!extra || typeof extra !== 'object' || Array.isArray(extra)) {
    throw new PluginError('extra is not a JSON object');
  }
  extra[key] = value;
  obj.extra = JSON.stringify(extra);
}

/** The first value of header `name` (case-insensitive) in a list of [name, value] pairs. */
export function header(headers, name) {
  const wanted = name.toLowerCase();
  const found = headers.find(([key]) => key.toLowerCase() === wanted);
  return found ? found[1] : undefined;
}

/** The error for a config value that is not acceptable: `invalid config: <path>: <problem>`. */
export const configError = (path, problem) => new PluginError(`invalid config: ${path}: ${problem}`);

const TYPES = {
  string: ['a string', (v) => typeof v === 'string'],
  number: ['a number', (v) => typeof v === 'number'],
  integer: ['an integer', (v) => Number.isInteger(v)],
  boolean: ['a boolean', (v) => typeof v === 'boolean'],
  list: ['a list', (v) => Array.isArray(v)],
  object: ['an object', (v) => v !== null && typeof v === 'object' && !Array.isArray(v)],
};

/**
 * Parses the JSON config into an object, checked like the Rust SDK's `parse_config`.
 * `required` and `optional` map field names to a type name (`string`, `number`, `integer`,
 * `boolean`, `list`, `object`); `optional` values may be `[type, default]`. Unknown fields,
 * missing required ones and values of the wrong type throw a `PluginError` naming the field.
 */
export function parseConfig(config, { required = {}, optional = {} } = {}) {
  let value;
  try {
    value = config.trim() ? JSON.parse(config) : {};
  } catch (e) {
    throw new PluginError(`invalid config: ${e.message}`);
  }
  if (!TYPES.object[1](value)) throw new PluginError('invalid config: expected a JSON object');
  const known = [...Object.keys(required), ...Object.keys(optional)];
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const expected = known.map((k) => `\`${k}\``).join(', ') || 'none';
      throw new PluginError(`invalid config: unknown field \`${key}\`, expected one of ${expected}`);
    }
  }
  const out = {};
  const check = (key, type) => {
    const [name, ok] = TYPES[type];
    if (!ok(value[key])) {
      throw configError(key, `expected ${name}, got ${JSON.stringify(value[key])}`);
    }
    return value[key];
  };
  for (const [key, type] of Object.entries(required)) {
    if (!(key in value)) throw new PluginError(`invalid config: missing field \`${key}\``);
    out[key] = check(key, type);
  }
  for (const [key, spec] of Object.entries(optional)) {
    const [type, fallback] = Array.isArray(spec) ? spec : [spec, undefined];
    out[key] = value[key] === undefined || value[key] === null ? fallback : check(key, type);
  }
  return out;
}

// ---- host services -------------------------------------------------------------------------

/** The request being served: its id, its headers, and values shared by every plugin of it. */
export class Ctx {
  /** The gateway's id for the current request. */
  requestId() {
    return context.requestId();
  }
  /** A request header (case-insensitive name), as left by the transport interceptors. */
  header(name) {
    return context.header(name);
  }
  /** A value a hook of this or another plugin stored for this request. */
  get(key) {
    return context.get(key);
  }
  /** Stores `value` (a string) for the rest of this request, visible to every plugin. */
  set(key, value) {
    context.set(key, value);
  }
  /**
   * This plugin's name in the gateway's config (the context value `gateway.plugin`): two
   * entries of one component in a chain have different names. Asked once per instance.
   */
  pluginName() {
    return ownName();
  }
  /**
   * What this plugin kept for the current request with `setState` under `key` (decoded from
   * JSON), or undefined when nothing is kept or it was cleared. Request state lives in the
   * request's context, not in the instance, so the plugin works under every isolation the
   * gateway's config may choose, `shared` included, where each hook call may run on another
   * instance.
   */
  state(key) {
    const full = stateKey(key);
    const text = context.get(full);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) ?? undefined;
    } catch (e) {
      throw new PluginError(`context value ${JSON.stringify(full)} is not valid JSON: ${e.message}`);
    }
  }
  /**
   * Keeps `value` (as JSON) for this plugin's later hooks of the current request, under
   * `<plugin name>.<key>` in the context (which other plugins can read too). Throws a
   * `PluginError` when its JSON is longer than the gateway keeps per context value
   * (`MAX_CONTEXT_VALUE_BYTES`): the gateway would drop it, and a later hook would read what was
   * kept before.
   */
  setState(key, value) {
    const text = JSON.stringify(value);
    // A UTF-16 code unit is at most 3 bytes of UTF-8: only state near the limit is encoded to
    // be measured.
    const size = text.length * 3 <= MAX_CONTEXT_VALUE_BYTES ? 0 : encoder.encode(text).length;
    if (size > MAX_CONTEXT_VALUE_BYTES) {
      throw new PluginError(
        `the state ${JSON.stringify(key)} is ${size} bytes as JSON, over the gateway's ` +
          `${MAX_CONTEXT_VALUE_BYTES} bytes per context value; keep less of it`,
      );
    }
    context.set(stateKey(key), text);
  }
  /** Forgets what this plugin kept under `key` for the current request. */
  clearState(key) {
    context.set(stateKey(key), 'null');
  }
}

/** This plugin's name in the gateway's config, asked once per instance. */
const ownName = () => {
  if (pluginName === undefined) pluginName = context.get(PLUGIN_KEY) ?? '';
  return pluginName;
};
/** The context key of this plugin's request state `key`. */
const stateKey = (key) => `${ownName()}.${key}`;

/** The context key the gateway answers with the calling plugin's configured name. */
const PLUGIN_KEY = 'gateway.plugin';
/** The longest context value the gateway keeps, in bytes (`context.set` drops longer ones). */
export const MAX_CONTEXT_VALUE_BYTES = 64 * 1024;
/** That name, once asked (per instance). */
let pluginName;

/** Milliseconds since the Unix epoch, from the gateway's clock. */
export const nowMs = () => Number(hostNowMs());

/** Writes to the gateway's log (tagged with the plugin and request) at each level. */
export const log = {
  trace: (message) => hostLog('trace', String(message)),
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
};

const ttl = (ms) => (ms === undefined ? undefined : BigInt(ms));

/** State that outlives a request, namespaced per plugin and shared by its instances. */
export const store = {
  /** The bytes under `key`, or undefined (absent or expired). */
  get: (key) => kv.get(key),
  /** Stores `value` (string or bytes) under `key`; with `ttlMs` it expires. */
  set: (key, value, ttlMs) => kv.set(key, bytes(value), ttl(ttlMs)),
  /** Atomically adds `delta` to the integer under `key`; returns the new value (a number). */
  incr: (key, delta = 1, ttlMs) => Number(kv.incr(key, BigInt(delta), ttl(ttlMs))),
  /** Removes `key`. */
  delete: (key) => kv.delete(key),
  /** The value under `key` decoded from JSON, or undefined. */
  getJson(key) {
    const raw = kv.get(key);
    if (raw === undefined) return undefined;
    try {
      return JSON.parse(text(raw));
    } catch (e) {
      throw new PluginError(`kv entry ${JSON.stringify(key)} is not valid JSON: ${e.message}`);
    }
  },
  /** Stores `value` as JSON under `key`. */
  setJson: (key, value, ttlMs) => kv.set(key, bytes(JSON.stringify(value)), ttl(ttlMs)),
};

// ---- the plugin and its export -------------------------------------------------------------

/**
 * Base class of a plugin: every hook has a default that leaves the request as it is, and
 * `exportPlugin` reports to the gateway only the hooks a subclass overrides. Set a static
 * `pluginName` for the name shown in logs and the admin API (default: the class name).
 *
 * Set `static sharedInstances = true` when the plugin keeps nothing about a request in `this`
 * from one hook to the next (what a later hook needs goes in `ctx.setState`): the gateway then
 * shares its instances per hook call unless its config sets `isolation`, and a few warm
 * instances serve every request in flight instead of one per request.
 */
export class Plugin {
  /** The raw HTTP request. Return `Pass()`, `Rewrite(..)` or `RespondHttp(..)`. */
  transportInterceptor(ctx, req) {
    return Pass();
  }
  /**
   * Before the provider, with the lent `Request`. Return `Continue()`, `Continue(req)`,
   * `Respond(..)` or `Fail(..)`.
   */
  preHook(ctx, req) {
    return Continue();
  }
  /**
   * After the provider, in reverse order, with the lent `Outcome`. Return `Keep()` (or nothing)
   * to hand the outcome on unchanged, else the outcome to go on with (`outcome` edited,
   * `Response(..)`, `Failed(..)`).
   */
  postHook(ctx, outcome) {
    return Keep();
  }
  /**
   * Each chunk of a streamed answer: `Emit()` (unchanged), `Emit(chunk)`, `Drop()` or
   * `EndStream(..)`.
   */
  streamChunk(ctx, chunk) {
    return Emit();
  }
  /** The error stage: rewrite the final error and return it, or `Keep()` it unchanged. */
  onError(ctx, err) {
    return Keep();
  }
  /** Called once when the instance is retired. */
  cleanup() {}
}

const HOOKS = ['transportInterceptor', 'preHook', 'postHook', 'streamChunk', 'onError', 'cleanup'];

/**
 * The world's `hooks` flags for the hooks `cls` overrides, and `sharedInstances` when `cls`
 * declares it.
 */
export function hooksOf(cls) {
  const flags = { sharedInstances: cls.sharedInstances === true };
  for (const hook of HOOKS) flags[hook] = cls.prototype[hook] !== Plugin.prototype[hook];
  return flags;
}

/**
 * The world's exports running the plugin class `cls`; export every one of them from
 * `plugin.js` (see the example at the top).
 */
export function exportPlugin(cls) {
  // A bug (any exception but a PluginError) traps the instance; its message goes to stderr
  // first, which the gateway puts in the error it reports.
  const guard =
    (f) =>
    (...args) => {
      try {
        return f(...args);
      } catch (e) {
        // One line: the gateway keeps the last few lines, and the engine adds its own.
        if (!(e instanceof PluginError)) console.error(`uncaught ${e}`);
        throw e;
      }
    };
  const flags = hooksOf(cls);
  const name = cls.pluginName || cls.name;
  const ctx = new Ctx();
  let plugin;
  const instance = () => {
    if (plugin === undefined) throw new PluginError(`plugin ${name} not initialised`);
    return plugin;
  };
  return {
    getName: () => name,
    hooks: () => flags,
    init: guard((config) => {
      plugin = new cls(config);
    }),
    transportInterceptor: guard((req) => instance().transportInterceptor(ctx, req)),
    preHook: guard((req) => instance().preHook(ctx, new Request(req))),
    postHook: guard((outcome) => {
      const result = instance().postHook(ctx, new Outcome(outcome));
      return result instanceof Outcome ? result.toOutcome() : result;
    }),
    streamChunk: guard((chunk) => instance().streamChunk(ctx, chunk)),
    onError: guard((err) => instance().onError(ctx, err)),
    cleanup: guard(() => {
      const retired = plugin;
      plugin = undefined;
      if (retired !== undefined) retired.cleanup();
    }),
  };
}
